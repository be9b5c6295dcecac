"""``export_bundle``: one CLIP -> a self-contained, self-verifying bundle folder.

Everything is written into a hidden temp folder beside the target and renamed into place only
after every parity gate has passed, so a failed gate or a crash never leaves a bundle that looks
finished. See :mod:`foclip.manifest` for the layout the runtime reads.
"""

from __future__ import annotations

# Lazy imports: torch, open_clip, onnx, onnxruntime and tokenizers are imported inside the functions that use them:
# `foclip export` runs this module's checks (rerun, --out) before paying seconds for them.
import glob
import io
import json
import os
import re
import shutil
import tempfile
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

import foclip
from foclip import samples  # called as samples.sample_photos: tests swap the photos on the module
from foclip.errors import InputError, require
from foclip.exporter import parity
from foclip.exporter.config import ExportConfig
from foclip.exporter.parity import GATES, ORT_CPU_DISABLED_OPTIMIZERS
from foclip.exporter.tokenizer_asset import write_tokenizer
from foclip.manifest import (
    MANIFEST_NAME,
    GraphSpec,
    GrayscaleSpec,
    Manifest,
    ReferenceSpec,
    ScoringSpec,
    TensorSpec,
    TextBankSpec,
    TokenizerSpec,
    atomic_write_bytes,
    atomic_write_json,
    sha256_file,
)
from foclip.prompts import imagenet_prompts, load_prompt_set
from foclip.runtime.parity import probe_stack
from foclip.runtime.preprocess import to_uint8
from foclip.runtime.tokenizer import load_tokenizer
from foclip.scoring import CLAMP, LUMA

PARITY_NAME = "parity.json"
TOKENIZER_NAME = "tokenizer.json"
TOKENIZER_CONFIG_NAME = "tokenizer_config.json"
Log = Callable[[str], None]


def _quiet(_: str) -> None:
    pass


def bank_stem(name: str) -> str:
    """File-name-safe form of a prompt-set name (``file:my set`` -> ``file-my_set``).

    Args:
        name: prompt-set name.

    Returns:
        The stem used for ``banks/<stem>.prompts.json`` and ``banks/<stem>.fp32.npy``.
    """
    return re.sub(r"[^A-Za-z0-9._-]", "_", name.replace(":", "-", 1)).strip(".") or "prompts"


def check_out_dir(out_dir: Path, force: bool) -> None:
    """Refuse an output folder that cannot be (re)placed.

    Args:
        out_dir: target bundle folder.
        force: allow replacing a non-empty folder.

    Raises:
        InputError: the target is a file, non-empty without ``force``, or its parent is not writable.
    """
    if out_dir.exists() and not out_dir.is_dir():
        raise InputError(f"output {str(out_dir)!r}", "is a file", "a new or empty folder")
    if out_dir.is_dir() and any(out_dir.iterdir()) and not force:
        raise InputError(f"output {str(out_dir)!r}", "is not empty", "a new or empty folder, or --force to replace it")
    parent = out_dir.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"output {str(out_dir)!r}", f"cannot be created ({exc.strerror})",
                         "a folder whose parent is writable") from exc
    if not os.access(parent, os.W_OK | os.X_OK):
        raise InputError(f"output {str(out_dir)!r}", f"its parent {str(parent)!r} is not writable",
                         "a folder whose parent is writable")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def clean_leftovers(out_dir: Path) -> list[str]:
    """Remove what a killed export of ``out_dir`` left next to it, and say what was done.

    An export builds in ``.<name>.partial-<pid>-*`` beside the bundle and moves an old bundle aside to
    ``.<name>.old-*`` while publishing; a SIGKILL leaves these hidden folders behind. Partial folders
    of processes that are gone are deleted (older ones, without a pid, too); an old bundle is put back
    when the kill came between the two renames (no bundle at ``out_dir``), else deleted.

    Args:
        out_dir: the bundle folder (absolute).

    Returns:
        One line per folder removed or restored.
    """
    lines = []
    parent = out_dir.parent
    if not parent.is_dir():
        return lines
    for p in sorted(parent.glob(f".{glob.escape(out_dir.name)}.partial-*")):
        pid = p.name[len(f".{out_dir.name}.partial-"):].split("-", 1)[0]
        if p.is_dir() and not (pid.isdigit() and int(pid) != os.getpid() and _alive(int(pid))):
            shutil.rmtree(p, ignore_errors=True)
            lines.append(f"removed {p.name}, the unfinished build of an export that was killed")
    for p in sorted(parent.glob(f".{glob.escape(out_dir.name)}.old-*")):
        if not p.is_dir():
            continue
        if (p / "bundle").is_dir() and not out_dir.exists():
            os.replace(p / "bundle", out_dir)
            lines.append(f"restored {out_dir.name} from {p.name} (an export was killed while replacing it)")
        else:
            lines.append(f"removed {p.name}, the previous bundle an interrupted export had set aside")
        shutil.rmtree(p, ignore_errors=True)
    return lines


def _publish(tmp: Path, out_dir: Path) -> None:
    """Move the finished temp folder into place (replacing an old bundle as late as possible)."""
    umask = os.umask(0)
    os.umask(umask)
    for p in [tmp, *tmp.rglob("*")]:  # temp files are created 0600/0700; give the bundle normal modes
        os.chmod(p, (0o777 if p.is_dir() else 0o666) & ~umask)
    old = None
    if out_dir.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.old-", dir=out_dir.parent))
        os.replace(out_dir, old / "bundle")
    os.replace(tmp, out_dir)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _save_npy(path: Path, arr: np.ndarray) -> None:
    buf = io.BytesIO()
    arr = np.asarray(arr)
    np.save(buf, np.ascontiguousarray(arr, dtype=np.float32 if arr.dtype.kind == "f" else arr.dtype),
            allow_pickle=False)
    atomic_write_bytes(path, buf.getvalue())


def _versions() -> dict[str, str]:
    import onnx
    import onnxruntime
    import open_clip
    import tokenizers
    import torch

    return {"foclip": foclip.__version__, "torch": torch.__version__, "open_clip": open_clip.__version__,
            "onnx": onnx.__version__, "onnxruntime": onnxruntime.__version__, "tokenizers": tokenizers.__version__}


def _graph_specs(size: int, ctx: int, dim: int, scale: float) -> dict[str, Callable[..., GraphSpec]]:
    pixels = (TensorSpec("pixels", "float32", ("batch", 3, size, size)),)
    tokens = (TensorSpec("tokens", "int64", ("batch", ctx)),)
    emb = (TensorSpec("embedding", "float32", ("batch", dim)),)
    io_note = "fp32 inputs/outputs at every precision"

    def spec(role: str, prec: str, inputs: tuple[TensorSpec, ...], outputs: tuple[TensorSpec, ...], notes: str,
             quantization: dict[str, Any] | None = None) -> GraphSpec:
        return GraphSpec(key=f"{role}.{prec}", role=role, precision=prec, file=f"{role}_encoder.{prec}.onnx"
                         if role != "detect" else f"detect.{prec}.onnx", inputs=inputs, outputs=outputs,
                         gate_min_cosine=GATES[prec], disabled_optimizers=tuple(ORT_CPU_DISABLED_OPTIMIZERS.get(prec, ())),
                         quantization=quantization or {}, notes=notes)

    return {
        "image": lambda p, note, q=None: spec("image", p, pixels, emb, f"{note}; RGB in [0,1] NCHW, resized+cropped, "
                                              f"mean/std normalisation inside; output L2-normalised; {io_note}", q),
        "text": lambda p, note: spec("text", p, tokens, emb, f"{note}; open_clip token ids (SOT ... EOT, zero "
                                     f"padded); EOT pooled by argmax; output L2-normalised; {io_note}"),
        "detect": lambda p, note: spec(
            "detect", p, (TensorSpec("pixels_u8", "uint8", ("batch", size, size, 3)),
                          TensorSpec("text_bank", "float32", ("prompts", dim))),
            (TensorSpec("score_color", "float32", ("batch",)), TensorSpec("score_gray", "float32", ("batch",))),
            f"{note}; RGB uint8 NHWC resized+cropped; inside: /255, luma gray copy, 2N stack, encoder, per-pair "
            f"clamped cosine mean x {scale:g}; text_bank rows L2-normalised"),
    }


class _Exporter:
    """One export run; holds the model, the temp folder and the parity report as it grows."""

    def __init__(self, cfg: ExportConfig, tmp: Path, log: Log) -> None:
        self.cfg, self.tmp, self.log = cfg, tmp, log
        self.parity: dict[str, Any] = {}

    def load(self) -> None:
        from foclip.exporter.onnx_export import check_opset
        from foclip.models import ImageEncoder, TextEncoder, load_clip

        cfg = self.cfg
        self.precisions = cfg.resolved_precisions()
        check_opset(cfg.opset)
        if not cfg.prompts:
            raise InputError("prompts", "no prompt set given", "at least one of artistic, imagenet-N or a file")
        self.prompt_sets = [load_prompt_set(p, seed=cfg.seed) for p in cfg.prompts]
        stems = [bank_stem(ps.name) for ps in self.prompt_sets]
        if len(set(stems)) != len(stems):
            raise InputError(f"prompts {', '.join(cfg.prompts)}", "name the same prompt set twice",
                             "distinct prompt sets")
        self.log(f"loading {cfg.model_name} ({cfg.pretrained})")
        self.clip = load_clip(cfg.model_name, cfg.pretrained, device="cpu", seed=cfg.seed)
        self.image_encoder = ImageEncoder(self.clip.model, self.clip.preprocess).eval()
        self.text_encoder = TextEncoder(self.clip.model).eval()

    def export_graphs(self) -> dict[str, GraphSpec]:
        from foclip.exporter import convert, onnx_export
        from foclip.exporter.detect_graph import export_detect_graph

        c, cfg, tmp = self.clip, self.cfg, self.tmp
        specs = _graph_specs(c.preprocess.image_size, c.context_length, c.embed_dim, cfg.score_scale)
        graphs: dict[str, GraphSpec] = {}

        def add(g: GraphSpec) -> None:
            graphs[g.key] = g

        self.log("exporting image_encoder.fp32.onnx")
        onnx_export.export_image_encoder(self.image_encoder, c.preprocess.image_size, tmp / "image_encoder.fp32.onnx",
                                         cfg.opset)
        add(specs["image"]("fp32", "fp32"))
        self.log("exporting text_encoder.fp32.onnx")
        onnx_export.export_text_encoder(self.text_encoder, c.context_length, tmp / "text_encoder.fp32.onnx", cfg.opset)
        add(specs["text"]("fp32", "fp32"))
        if "fp16" in self.precisions:
            self.log("converting to fp16 (ONNX Runtime float16 converter, fp32 IO)")
            for kind in ("image", "text"):
                convert.to_fp16(tmp / f"{kind}_encoder.fp32.onnx", tmp / f"{kind}_encoder.fp16.onnx")
                add(specs[kind]("fp16", "fp16 weights and compute (ONNX Runtime float16 converter)"))
        if "int8" in self.precisions:
            method = convert.int8_method(cfg.int8_method)
            self.log(f"quantising to int8 ({method.name}: ONNX Runtime {method.kind} quantisation, "
                     f"{method.weight_type} weights, reduce_range={method.reduce_range})")
            calib = self.reference_pixels() if method.kind == "static" else None
            convert.to_int8(tmp / "image_encoder.fp32.onnx", tmp / "image_encoder.int8.onnx", method.name,
                            optimize=cfg.int8_optimize, calibration_pixels=calib)
            add(specs["image"]("int8", f"int8 {method.name}", {**method.to_dict(),
                                                                "transformer_optimizer": cfg.int8_optimize}))
        if cfg.detect_graph:
            self.log("exporting detect.fp32.onnx (fused detection graph)")
            export_detect_graph(self.image_encoder, c.preprocess.image_size, c.embed_dim, cfg.score_scale,
                                tmp / "detect.fp32.onnx", cfg.opset)
            add(specs["detect"]("fp32", "fp32"))
            if "fp16" in self.precisions:  # a TensorRT fp16 engine is built from it (precision lives in the graph)
                convert.to_fp16(tmp / "detect.fp32.onnx", tmp / "detect.fp16.onnx")
                add(specs["detect"]("fp16", "fp16 weights and compute (ONNX Runtime float16 converter)"))
        return graphs

    def reference_pixels(self) -> np.ndarray:
        """float32 colour + gray rows of the parity photos (static int8 calibration input)."""

        return probe_stack(np.stack([to_uint8(img, self.clip.preprocess) for _, img in samples.sample_photos(8)]))

    def write_reference(self, n_photos: int = 4, n_prompts: int = 8) -> ReferenceSpec:
        """The self-check reference set: a few photos' model inputs and prompts, with fp32 PyTorch
        embeddings, so any machine can check a graph where it runs (``foclip inspect --verify``)."""
        import torch

        c = self.clip
        photos = samples.sample_photos(n_photos)
        u8 = np.stack([to_uint8(img, c.preprocess) for _, img in photos])
        pixels = probe_stack(u8)
        img_emb = self.image_encoder(torch.from_numpy(pixels)).numpy().astype(np.float32)
        prompts = [p for ps in self.prompt_sets for p in ps.prompts][:n_prompts]
        tokens = c.tokenizer(prompts).numpy().astype(np.int64)
        txt_emb = self.text_encoder(torch.from_numpy(tokens)).numpy().astype(np.float32)
        spec = ReferenceSpec(tuple(n for n, _ in photos), "reference/pixels_u8.npy",
                             "reference/image_embeddings.fp32.npy", tuple(prompts), "reference/tokens.npy",
                             "reference/text_embeddings.fp32.npy")
        for rel, arr in ((spec.pixels_file, u8), (spec.image_embeddings_file, img_emb), (spec.tokens_file, tokens),
                         (spec.text_embeddings_file, txt_emb)):
            _save_npy(self.tmp / rel, arr)
        return spec

    def write_banks(self) -> dict[str, TextBankSpec]:
        import torch

        banks: dict[str, TextBankSpec] = {}
        self.bank_embeddings: dict[str, np.ndarray] = {}
        for ps in self.prompt_sets:
            self.log(f"embedding prompt set {ps.name} ({len(ps)} prompts)")
            tokens = self.clip.tokenizer(list(ps.prompts))
            emb = torch.cat([self.text_encoder(tokens[i:i + 64]) for i in range(0, len(tokens), 64)]).numpy()
            stem = bank_stem(ps.name)
            prompts_file, emb_file = f"banks/{stem}.prompts.json", f"banks/{stem}.fp32.npy"
            atomic_write_json(self.tmp / prompts_file, list(ps.prompts))
            _save_npy(self.tmp / emb_file, emb)
            banks[ps.name] = TextBankSpec(ps.name, prompts_file, emb_file, len(ps), ps.sha256)
            self.bank_embeddings[ps.name] = emb.astype(np.float32)
        return banks

    def run_parity(self, graphs: dict[str, GraphSpec]) -> dict[str, Any]:
        """Check every graph against PyTorch; drop (and delete) a non-fp32 graph that misses its gate.

        Returns:
            The parity report; ``report["omitted"]`` maps each dropped graph key to why.

        Raises:
            ParityError: an fp32 graph or the tokenizer misses its gate (nothing can be kept).
        """
        import torch

        c, cfg, tmp = self.clip, self.cfg, self.tmp
        self.log("checking parity with PyTorch (ONNX Runtime CPU; batch sizes 1, 3, 16)")
        photos = samples.sample_photos(8)
        u8 = np.stack([to_uint8(img, c.preprocess) for _, img in photos])
        n_color = len(u8)
        pixels = probe_stack(u8)  # colour rows, then the probes' (as the detector and self-check run them)
        while len(pixels) < 16:  # keep batch 16 meaningful when fewer photos are installed
            pixels = np.concatenate([pixels, pixels])[:16]
        img_ref = self.image_encoder(torch.from_numpy(pixels)).numpy().astype(np.float64)

        bank_prompts = [p for ps in self.prompt_sets for p in ps.prompts][:16]
        sot, eot = int(c.tokenizer.sot_token_id), int(c.tokenizer.eot_token_id)
        tokens = np.concatenate([
            parity.random_token_rows(max(16, 32 - len(bank_prompts)), c.context_length, sot, eot, cfg.seed),
            c.tokenizer(bank_prompts).numpy() if bank_prompts else np.zeros((0, c.context_length), np.int64),
        ])
        txt_ref = self.text_encoder(torch.from_numpy(tokens)).numpy().astype(np.float64)

        report: dict[str, Any] = {
            "score_scale": cfg.score_scale, "clamp": CLAMP, "gates_min_cosine": dict(parity.GATES),
            "reference": "PyTorch fp32 (open_clip) on CPU", "runtime": "ONNX Runtime CPUExecutionProvider",
            "inputs": {"photos": [n for n, _ in photos], "image_rows": len(pixels),
                       "image_rows_note": "colour photos then their luma-gray copies",
                       "text_rows": len(tokens),
                       "text_rows_note": "seeded random token sequences of every length, then bundled prompts"},
            "image_encoder": {}, "text_encoder": {}, "detect_graph": {}, "omitted": {},
        }

        def omit_or_raise(spec: GraphSpec, exc: parity.ParityError) -> None:
            if spec.precision == "fp32":
                raise exc
            report["omitted"][spec.key] = str(exc)
            (tmp / spec.file).unlink(missing_ok=True)
            del graphs[spec.key]
            self.log(f"  OMITTED {spec.file}: {exc}")

        for spec in [g for g in graphs.values() if g.role in ("image", "text")]:
            image = spec.role == "image"
            with parity.graph_runner(tmp, spec) as runner:
                r = parity.encoder_parity(runner, spec.inputs[0].name, pixels if image else tokens,
                                          img_ref if image else txt_ref, parity.GATES[spec.precision])
            got = r.pop("_embeddings")
            if image:
                r["banks"] = {name: parity.score_parity(img_ref, got, n_color, bank, cfg.score_scale)
                              for name, bank in self.bank_embeddings.items()}
            report[f"{spec.role}_encoder"][spec.precision] = r
            if not r["passed"]:
                omit_or_raise(spec, parity.gate_error(r, spec.file, spec.precision))
                continue
            self.log(f"  {spec.file}: min cosine {r['min_cosine']:.7f}, max abs diff {r['max_abs_diff']:.2e}")
        ref2 = img_ref[:2 * n_color]  # colour rows, then their gray copies (what the fused graph scores)
        for spec in [g for g in graphs.values() if g.role == "detect"]:
            with parity.graph_runner(tmp, spec) as runner:
                report["detect_graph"][spec.precision] = {
                    name: parity.detect_parity(runner, u8, bank, ref2, cfg.score_scale, spec.precision, spec.file)
                    for name, bank in self.bank_embeddings.items()}
        probe = TokenizerSpec(TOKENIZER_NAME, TOKENIZER_CONFIG_NAME)
        texts = [p for ps in self.prompt_sets for p in ps.prompts] + imagenet_prompts(200, cfg.seed)
        report["tokenizer"] = parity.tokenizer_parity(
            load_tokenizer(tmp, probe, c.context_length), c.tokenizer, texts)
        report["passed"] = not report["omitted"]
        return report


def _summary(report: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for enc, role in (("image_encoder", "image"), ("text_encoder", "text")):
        for prec, r in report[enc].items():
            out[f"{role}.{prec}"] = {"min_cosine": r["min_cosine"], "max_abs_diff": r["max_abs_diff"],
                                     "passed": r.get("passed", False)}
    for prec, banks in report.get("detect_graph", {}).items():
        out[f"detect.{prec}"] = {"max_abs_diff_score": max(b["max_abs_diff_score"] for b in banks.values())}
    return out


def export_bundle(cfg: ExportConfig, out_dir: str | os.PathLike[str], force: bool = False,
                  log: Log | None = None) -> Manifest:
    """Export a CLIP into a bundle folder, check it against PyTorch, and publish it atomically.

    Args:
        cfg: what to export.
        out_dir: the bundle folder to create (must be new or empty unless ``force``).
        force: replace a non-empty ``out_dir`` (only once the new bundle has passed its gates).
        log: receives one line per step (the CLI prints them); silent when None.

    Returns:
        The written manifest. A non-fp32 graph that misses its parity gate is left out of the
        bundle, not fatal: ``manifest.info["omitted"]`` maps its key to the reason (the CLI then
        exits with code 4 and names the option that fixes it).

    Raises:
        InputError: bad output folder, opset, precision or prompt set.
        ModelError: unknown model name (close names listed), unreadable checkpoint, unsupported tokenizer.
        ParityError: an fp32 graph or the tokenizer misses its gate (no bundle is left behind).
        MissingExtraError: an export dependency is missing.
    """

    sink = log or _quiet
    t0 = time.perf_counter()

    def log(line: str) -> None:
        sink(f"[{time.perf_counter() - t0:6.1f} s] {line}")

    for module in ("torch", "open_clip", "onnx", "onnxruntime"):
        require(module, "export" if module != "onnxruntime" else "cpu")
    out_dir = Path(out_dir).expanduser().absolute()
    check_out_dir(out_dir, force)
    for line in clean_leftovers(out_dir):
        sink(line)
    try:
        # The pid in the name lets a later export tell a killed run's leftovers from a live one's.
        tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.partial-{os.getpid()}-", dir=out_dir.parent))
    except OSError as exc:
        raise InputError(f"output {str(out_dir)!r}", f"cannot be written ({exc.strerror})",
                         "a writable location") from exc
    import torch

    grad = torch.is_grad_enabled()
    torch.set_grad_enabled(False)  # restored below: callers (and tests in the same process) may train
    try:
        ex = _Exporter(cfg, tmp, log)
        ex.load()
        c = ex.clip
        write_tokenizer(tmp, c.tokenizer, c.context_length)
        graphs = ex.export_graphs()
        banks = ex.write_banks()
        reference = ex.write_reference()
        report = ex.run_parity(graphs)
        report["export_seconds"] = round(time.perf_counter() - t0, 2)
        atomic_write_json(tmp / PARITY_NAME, report)
        files = {p.relative_to(tmp).as_posix(): sha256_file(p)
                 for p in sorted(tmp.rglob("*")) if p.is_file() and p.name != MANIFEST_NAME}
        manifest = Manifest(
            model_name=c.model_name, pretrained=c.pretrained, random_init=c.random_init, embed_dim=c.embed_dim,
            context_length=c.context_length, preprocess=c.preprocess,
            grayscale=GrayscaleSpec("luma-rgb01-float", tuple(LUMA)),
            scoring=ScoringSpec(cfg.score_scale, CLAMP, "mean", "relative"),
            tokenizer=TokenizerSpec(TOKENIZER_NAME, TOKENIZER_CONFIG_NAME), graphs=graphs, text_banks=banks,
            reference=reference, opset=cfg.opset, versions=_versions(), files=files,
            created=datetime.now(timezone.utc).isoformat(timespec="seconds"), parity_file=PARITY_NAME,
            info={"parity_summary": _summary(report), "omitted": report["omitted"], "settings": cfg.settings(),
                  "export_seconds": report["export_seconds"], "seed": cfg.seed,
                  "detect_graph_note": "" if cfg.detect_graph else "not written (--detect-graph to add it)"},
        )
        atomic_write_json(tmp / MANIFEST_NAME, manifest.to_dict())
        _publish(tmp, out_dir)
        log(f"bundle written to {out_dir} in {time.perf_counter() - t0:.1f} s")
        return manifest
    finally:
        torch.set_grad_enabled(grad)
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def parity_report(bundle: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a bundle's ``parity.json`` (empty dict when absent)."""
    path = Path(bundle) / PARITY_NAME
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
