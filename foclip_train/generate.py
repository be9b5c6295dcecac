"""Write a FoCLIP adversarial test set: resumable, atomic, one bad image never stops the run.

Output layout of ``DIR`` (see docs/generate.md)::
    DIR/manipulated/<name>.png     best 8-bit iterate, lossless, the input's size (or S x S, output="model")
    DIR/original/<name>.<ext>      byte copy of the input
    DIR/manifest.jsonl             one JSON record per processed image (append-only)
    DIR/summary.json               aggregate of the latest record of every source

The pieces are separate so that a distributed runner can reuse them: :func:`plan_jobs` (what is
left to do), :func:`process_batch` (optimise, write images, score; never raises for one bad
image), :func:`append_records` (crash-safe manifest append) and :func:`write_summary`.
:func:`run_generate` strings them together for one process.

Scores in the manifest are measured as a consumer sees them: the saved PNG and the copied
original are read back from disk, decoded and preprocessed by
:func:`foclip.runtime.decode.decode_item` (the detector's own path) and embedded by the torch
image encoder; grayscale is :func:`foclip.scoring.to_gray` of those [0, 1] pixels; scores,
drops and improvements come from :mod:`foclip.scoring`.
"""

from __future__ import annotations

# Lazy imports: torch and open_clip are imported inside the functions that run the model: planning, records and
# summaries (used by the CLI before the model loads, and by the report) do not need them.
import fcntl
import hashlib
import io
import json
import math
import os
import re
import shutil
import statistics
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from foclip.errors import FoclipError, InputError
from foclip.manifest import sha256_file
from foclip.outputs import atomic_write_bytes, atomic_write_json  # umask modes, one-line write errors
from foclip.prompts import load_prompt_set
from foclip.rerun import refuse_changed, weights_desc
from foclip.runtime.decode import DecodeLimits, ItemError, decode_item
from foclip.runtime.decode import load_image as runtime_load_image
from foclip.runtime.inputs import IMAGE_EXTENSIONS, expand_inputs
from foclip.scoring import CLAMP, clipscore, drop, improvement_pct, to_gray
from foclip_train.config import MAX_PIXELS, MIN_SIDE, GenerateConfig

__all__ = [
    "GenerateConfig",
    "Job",
    "append_records",
    "batches",
    "collect_inputs",
    "latest_records",
    "load_image",
    "load_resources",
    "plan_jobs",
    "process_batch",
    "read_records",
    "resolve_device",
    "run_generate",
    "score_files",
    "summarize",
    "write_summary",
]

MANIFEST_JSONL = "manifest.jsonl"
SUMMARY_JSON = "summary.json"
IMAGE_EXTS = IMAGE_EXTENSIONS  # the runtime's list: generate reads what detect reads


@dataclass(frozen=True)
class Job:
    """One input image and where its outputs go.

    Attributes:
        source: absolute path of the input.
        name: output stem, unique within the output folder and stable across reruns.
        ext: the input's suffix (kept for the original copy).
        sha256_input: hash of the input bytes, or None when it could not be read.
        out_dir: the output folder.
    """

    source: str
    name: str
    ext: str
    sha256_input: str | None
    out_dir: str

    @property
    def manipulated(self) -> Path:
        return Path(self.out_dir) / "manipulated" / f"{self.name}.png"

    @property
    def original(self) -> Path:
        return Path(self.out_dir) / "original" / f"{self.name}{self.ext}"


# ----------------------------------------------------------------------------- planning


def collect_inputs(inputs: Iterable[str | os.PathLike[str]], exclude: str | os.PathLike[str] | None = None
                   ) -> list[Path]:
    """The runtime's :func:`foclip.runtime.inputs.expand_inputs` (files, folders, globs, @lists),
    as absolute paths, deduplicated, without anything under ``exclude``.

    Args:
        inputs: files, folders, globs and @lists.
        exclude: a folder whose contents are never taken (the output folder).

    Returns:
        Absolute paths in input order. Paths that do not exist are kept so they can be reported.
    """

    ex = Path(exclude).resolve() if exclude is not None else None
    seen: set[Path] = set()
    out: list[Path] = []
    for raw in expand_inputs(str(i) for i in inputs):
        q = Path(raw).expanduser().resolve()
        if q in seen or (ex is not None and (q == ex or ex in q.parents)):
            continue
        seen.add(q)
        out.append(q)
    return out


def _stem(path: Path) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "_", path.stem).lstrip(".") or "image"


def _suffixed(stem: str, source: str) -> str:
    return f"{stem}-{hashlib.sha256(source.encode('utf-8')).hexdigest()[:8]}"


def plan_jobs(inputs: Sequence[str | os.PathLike[str]], out_dir: str | os.PathLike[str],
              cfg: GenerateConfig) -> list[Job]:
    """The jobs still to do, with stable, unique output names.

    A source is done when its latest manifest record has no error, the same input hash, and its
    manipulated image exists; done sources are skipped. Names: the input's stem, or
    ``stem-<8 hex of sha256(source path)>`` when the stem is shared by several inputs or already
    used by another source in the manifest; a source keeps the name it had in the manifest.

    Args:
        inputs: image files and folders (folders are searched recursively for image files).
        out_dir: the output folder (its own files are never taken as inputs).
        cfg: the run's config (unused today beyond validation; kept for callers' symmetry).

    Returns:
        Jobs in input order; sources that cannot be read get ``sha256_input=None`` and fail later
        as per-file errors.
    """
    del cfg
    out = Path(out_dir).resolve()
    latest = latest_records(out)
    used_by = {r["name"]: src for src, r in latest.items() if r.get("name")}
    paths = collect_inputs(inputs, exclude=out)
    stems = Counter(_stem(p) for p in paths if str(p) not in latest)
    jobs = []
    for p in paths:
        src = str(p)
        try:
            digest: str | None = sha256_file(p)
        except OSError:
            digest = None
        prev = latest.get(src)
        if prev and prev.get("name"):
            name = prev["name"]
        else:
            stem = _stem(p)
            taken = stem in used_by and used_by[stem] != src
            name = _suffixed(stem, src) if (stems[stem] > 1 or taken) else stem
        job = Job(src, name, p.suffix, digest, str(out))
        if prev and not prev.get("error") and prev.get("sha256_input") == digest and job.manipulated.is_file():
            continue
        jobs.append(job)
    return jobs


# ----------------------------------------------------------------------------- rerun settings

# The record fields that decide what an image of the folder looks like (batch, device and Ray do not).
ATTACK_SETTINGS = ("iters", "lr", "momentum", "alpha", "beta", "check_every", "score_scale", "amp", "space",
                   "output", "adaptive", "adaptive_weight")


def run_settings(cfg: GenerateConfig, prompt_set: Any = None) -> dict[str, Any]:
    """The settings that define a folder's images, as its manifest records them.

    Args:
        cfg: the run's config.
        prompt_set: the resolved :class:`foclip.prompts.PromptSet` (read from ``cfg.prompts`` when None).

    Returns:
        ``{"model", "pretrained", "prompts", <attack fields>}``; ``prompts`` carries the set's sha256
        under ``prompts_sha256`` for the comparison.
    """

    ps = prompt_set or load_prompt_set(cfg.prompts, seed=cfg.seed)
    a = cfg.attack
    return {"model": cfg.model, "pretrained": weights_desc(cfg.pretrained, cfg.seed), "prompts": ps.name,
            "prompts_sha256": ps.sha256, **{k: list(getattr(a, k)) if k == "adaptive" else getattr(a, k)
                                             for k in ATTACK_SETTINGS}}


def recorded_settings(out_dir: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The settings of the folder's last manifest record (None when it has none)."""
    records = read_records(out_dir)
    if not records:
        return None
    r = records[-1]
    old = {"model": r.get("model"), "pretrained": r.get("pretrained"), "prompts": r.get("prompt_set"),
           "prompts_sha256": r.get("prompt_set_sha256")}
    old.update({k: r[k] for k in ATTACK_SETTINGS if k in r})
    return old


def check_rerun(out_dir: str | os.PathLike[str], cfg: GenerateConfig) -> None:
    """Refuse a rerun into a folder whose images were made with other settings.

    Without this a rerun with another model, prompt set or step count found every image "done" and
    kept the old ones. Checked before any model loads.

    Args:
        out_dir: the output folder.
        cfg: this run's config.

    Raises:
        SettingsChanged: one line naming each differing setting and ``--fresh``.
    """

    old = recorded_settings(out_dir)
    if old is None:
        return
    new = run_settings(cfg)
    old_sha, new_sha = old.pop("prompts_sha256", None), new.pop("prompts_sha256")
    if old_sha == new_sha:  # the same prompts, whatever the set is called
        old["prompts"] = new["prompts"]
    elif old_sha is not None and old["prompts"] == new["prompts"]:  # an edited prompt file
        old["prompts"] = f"{old['prompts']} (sha256 {old_sha[:8]})"
        new["prompts"] = f"{new['prompts']} (sha256 {new_sha[:8]})"
    refuse_changed(f"--out {str(out_dir)!r}", "images", old, new, "--fresh to discard the earlier results")


def clear_outputs(out_dir: str | os.PathLike[str]) -> int:
    """Remove what `foclip generate` wrote in ``out_dir`` (``--fresh``); nothing else is touched.

    Returns:
        The number of files removed.
    """

    out = Path(out_dir)
    n = 0
    for sub in ("manipulated", "original"):
        if (out / sub).is_dir():
            n += sum(1 for p in (out / sub).rglob("*") if p.is_file())
            shutil.rmtree(out / sub)
    for name in (MANIFEST_JSONL, SUMMARY_JSON):
        if (out / name).is_file():
            (out / name).unlink()
            n += 1
    return n


# ----------------------------------------------------------------------------- manifest


def read_records(out_dir: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Every complete record of ``manifest.jsonl`` in order (a torn last line is ignored)."""
    path = Path(out_dir) / MANIFEST_JSONL
    if not path.is_file():
        return []
    records = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            rec = json.loads(line)
        except ValueError:
            continue  # a line torn by a kill mid-write
        if isinstance(rec, dict) and "source" in rec:
            records.append(rec)
    return records


def latest_records(out_dir: str | os.PathLike[str]) -> dict[str, dict[str, Any]]:
    """The latest record of each source (later lines win: a retried failure replaces its error)."""
    return {r["source"]: r for r in read_records(out_dir)}


def append_records(out_dir: str | os.PathLike[str], records: Sequence[dict[str, Any]]) -> None:
    """Append records to ``manifest.jsonl``, crash-safe.

    One ``write`` of all lines under an exclusive lock, then fsync. If an earlier writer was
    killed mid-line, that torn line is first terminated so it cannot swallow the new ones; readers
    skip it. Call this only after the records' images are on disk.

    Args:
        out_dir: the output folder.
        records: JSON-serialisable dicts.
    """
    if not records:
        return
    path = Path(out_dir) / MANIFEST_JSONL
    path.parent.mkdir(parents=True, exist_ok=True)
    data = "".join(json.dumps(r, allow_nan=False) + "\n" for r in records).encode("utf-8")
    fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        size = os.fstat(fd).st_size
        if size and os.pread(fd, 1, size - 1) != b"\n":
            data = b"\n" + data
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)  # closing releases the lock


def summarize(records: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """Aggregate records (one per source) into the summary dict written as ``summary.json``."""
    recs = list(records)
    ok = [r for r in recs if not r.get("error")]
    failed = [{"source": r["source"], "error": r["error"]} for r in recs if r.get("error")]

    def mean(key: str) -> float | None:
        vals = [r[key] for r in ok if r.get(key) is not None]
        return statistics.fmean(vals) if vals else None

    impr = [r["improvement_pct"] for r in ok if r.get("improvement_pct") is not None]
    scales = sorted({r["score_scale"] for r in recs if r.get("score_scale") is not None})
    return {
        "images": len(ok),
        "failures": len(failed),
        "score_scale": scales[0] if len(scales) == 1 else scales,
        "clamp": CLAMP,
        "units": {"score": "0..score_scale, per-pair clamp, mean over prompts",
                  "drop": "fraction (0.632 = 63.2 %)", "improvement_pct": "percent", "wall_s": "seconds"},
        "mean_score_orig": mean("score_orig"),
        "mean_score_adv": mean("score_adv"),
        "mean_improvement_pct": statistics.fmean(impr) if impr else None,
        "median_improvement_pct": statistics.median(impr) if impr else None,
        "improvement_undefined": len(ok) - len(impr),
        "mean_score_gray_orig": mean("score_gray_orig"),
        "mean_score_gray_adv": mean("score_gray_adv"),
        "mean_drop_orig": mean("drop_orig"),
        "mean_drop_adv": mean("drop_adv"),
        "mean_best_step": mean("best_step"),
        "total_wall_s": sum(r.get("wall_s") or 0.0 for r in recs),
        "models": sorted({f"{r.get('model')}/{r.get('pretrained')}" for r in ok}),
        "prompt_sets": sorted({f"{r.get('prompt_set')}:{r.get('prompt_set_sha256')}" for r in ok}),
        "failed": failed,
    }


def write_summary(out_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """Summarise the latest record of every source into ``DIR/summary.json`` (atomically).

    Returns:
        The summary dict.
    """
    summary = summarize(latest_records(out_dir).values())
    atomic_write_json(Path(out_dir) / SUMMARY_JSON, summary)
    return summary


# ----------------------------------------------------------------------------- images


def load_image(path: str | os.PathLike[str], max_pixels: int = MAX_PIXELS, min_side: int = MIN_SIDE):
    """Read and decode one input exactly as the runtime detector does, refusing absurd sizes first.

    Decoding is :func:`foclip.runtime.decode.load_image` (header limits before any pixel is
    decoded, EXIF orientation, first frame of an animation), so the image optimised here is the
    image the detector will see.

    Args:
        path: the image file.
        max_pixels: largest accepted width * height.
        min_side: smallest accepted side.

    Returns:
        ``(bytes, PIL RGB image)``.

    Raises:
        InputError: missing, empty, not an image, truncated/corrupt, or absurd dimensions; the
            message carries the runtime's error code in brackets (e.g. ``[too_many_pixels]``).
    """

    limits = DecodeLimits(max_pixels=max_pixels, min_side=min_side)
    try:
        data = Path(path).read_bytes() if Path(path).is_file() else b""
        # Decode the bytes just read (the copy written to original/ is then exactly what was
        # optimised, and the file is read once); a missing path or a folder goes by path for its code.
        img = runtime_load_image(data if data else Path(path), repr(str(path)), limits)
        return data, img.convert("RGB")
    except ItemError as exc:
        raise InputError(f"image {exc.subject}", f"{exc.problem} [{exc.code}]", exc.expected) from exc
    except OSError as exc:  # read errors, and decoders failing during convert()
        raise InputError(f"image {str(path)!r}", f"cannot be read or decoded ({exc.__class__.__name__}) [decode_failed]",
                         "a complete image file") from exc


def _png_bytes(chw_uint8) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(chw_uint8.permute(1, 2, 0).contiguous().numpy()).save(buf, format="PNG")
    return buf.getvalue()


def score_files(paths: Sequence[Path], loaded, text_bank, scale: float) -> list[tuple[float, float]]:
    """Score image files as a consumer would: (colour score, grayscale score) of each.

    Each file is decoded and preprocessed by :func:`foclip.runtime.decode.decode_item` (the
    detector's path: EXIF orientation, then open_clip's eval transform), its grayscale copy
    is :func:`foclip.scoring.to_gray` of those pixels, both are embedded by the torch image
    encoder in fp32 and scored by :func:`foclip.scoring.clipscore`.

    Args:
        paths: image files.
        loaded: the :class:`foclip.models.LoadedClip`.
        text_bank: the :class:`foclip_train.text_bank.TorchTextBank`.
        scale: w, the CLIPscore scale.

    Returns:
        ``(score, score_gray)`` per path on the 0..w scale.
    """
    import torch

    from foclip.models import ImageEncoder

    if not paths:
        return []
    # The runtime detector's own decode + resize/crop (bit-exact with open_clip's eval transform).
    limits = DecodeLimits(max_pixels=2**62, max_aspect=float("inf"), min_side=1)
    pix = [decode_item(p, repr(str(p)), loaded.preprocess, limits).transpose(2, 0, 1).astype(np.float32) / 255.0
           for p in paths]
    gray = [to_gray(x, channel_axis=0) for x in pix]
    encoder = ImageEncoder(loaded.model, loaded.preprocess).to(text_bank.device)
    with torch.no_grad():
        x = torch.from_numpy(np.stack(pix + gray)).to(text_bank.device)
        emb = encoder(x).float().cpu().numpy()
    s = clipscore(emb, text_bank.embeddings.float().cpu().numpy(), scale=scale)
    n = len(paths)
    return [(float(s[i]), float(s[n + i])) for i in range(n)]


# ----------------------------------------------------------------------------- processing


def _base_record(job: Job, cfg: GenerateConfig, loaded, text_bank) -> dict[str, Any]:
    a = cfg.attack
    ps = text_bank.prompt_set
    return {
        "source": job.source, "name": job.name,
        "manipulated": f"manipulated/{job.name}.png", "original": f"original/{job.name}{job.ext}",
        "sha256_input": job.sha256_input, "sha256_output": None,
        "model": loaded.model_name, "pretrained": loaded.pretrained, "random_init": loaded.random_init,
        "prompt_set": ps.name, "prompt_set_sha256": ps.sha256, "prompt_count": len(ps),
        "alpha": a.alpha, "beta": a.beta, "lr": a.lr, "momentum": a.momentum, "iters": a.iters,
        "check_every": a.check_every, "amp": a.amp, "seed": cfg.seed,
        "space": a.space, "output": a.output, "lr_effective": None, "score_opt": None,
        "adaptive": list(a.adaptive), "adaptive_weight": a.adaptive_weight,
        "score_scale": a.score_scale, "clamp": CLAMP,
        "width": None, "height": None,
        "score_orig": None, "score_adv": None, "improvement_pct": None,
        "score_gray_orig": None, "score_gray_adv": None, "drop_orig": None, "drop_adv": None,
        "best_step": None, "wall_s": None, "batch_size": None, "error": None,
    }


def process_batch(jobs: Sequence[Job], cfg: GenerateConfig, loaded, text_bank,
                  on_step: Callable[[int, list[float] | None], None] | None = None) -> list[dict[str, Any]]:
    """Optimise a batch, write its images atomically, and score them as a consumer would.

    Per-file problems (unreadable, corrupt, absurd size) become records with an ``error`` field;
    they never raise. Images are on disk before this returns, so the caller may then append the
    records (:func:`append_records`).

    Args:
        jobs: the batch (any size; all optimised together).
        cfg: the run's config.
        loaded: the :class:`foclip.models.LoadedClip` (frozen, eval, on its device).
        text_bank: the :class:`foclip_train.text_bank.TorchTextBank` on the same device.
        on_step: progress callback forwarded to :func:`foclip_train.attack.foclip_attack`.

    Returns:
        One record per job, in job order (field list in docs/generate.md).
    """
    import torch

    from foclip.models import ImageEncoder
    from foclip_train.attack import foclip_attack

    t0 = time.perf_counter()
    records = [_base_record(j, cfg, loaded, text_bank) for j in jobs]
    good: list[int] = []
    tensors, inputs = [], []
    for i, job in enumerate(jobs):
        try:
            if job.sha256_input is None:
                raise InputError(f"image {job.source!r}", "cannot be read", "a readable image file")
            data, rgb = load_image(job.source, cfg.max_pixels, cfg.min_side)
        except FoclipError as exc:
            records[i]["error"] = str(exc)
            continue
        records[i]["width"], records[i]["height"] = rgb.size
        good.append(i)
        inputs.append(data)
        tensors.append(torch.from_numpy(np.asarray(rgb).copy()).permute(2, 0, 1).to(text_bank.device))
    if good:
        encoder = ImageEncoder(loaded.model, loaded.preprocess).to(text_bank.device)
        try:
            result = foclip_attack(tensors, encoder, text_bank.embeddings, cfg.attack,
                                   loaded.preprocess.image_size, loaded.preprocess.interpolation, on_step)
        except (MemoryError, torch.cuda.OutOfMemoryError) as exc:
            for i in good:
                records[i]["error"] = (f"batch | ran out of memory ({exc.__class__.__name__}) with "
                                       f"{len(good)} images. Expected a smaller --batch.")
            good = []
    if good:
        paths = []
        for k, i in enumerate(good):
            job = jobs[i]
            png = _png_bytes(result.images[k])
            atomic_write_bytes(job.manipulated, png)
            atomic_write_bytes(job.original, inputs[k])
            records[i]["sha256_output"] = hashlib.sha256(png).hexdigest()
            records[i]["best_step"] = result.best_step[k]
            records[i]["lr_effective"] = result.lr[k]
            records[i]["score_opt"] = result.best_score[k]
            paths += [job.original, job.manipulated]
        scores = score_files(paths, loaded, text_bank, cfg.attack.score_scale)
        for k, i in enumerate(good):
            (so, sgo), (sa, sga) = scores[2 * k], scores[2 * k + 1]
            impr = improvement_pct(so, sa)
            records[i].update(
                score_orig=so, score_adv=sa, improvement_pct=impr if math.isfinite(impr) else None,
                score_gray_orig=sgo, score_gray_adv=sga,
                drop_orig=float(drop(so, sgo)), drop_adv=float(drop(sa, sga)),
            )
    wall = time.perf_counter() - t0
    for r in records:
        r["wall_s"] = wall / max(len(jobs), 1)
        r["batch_size"] = len(jobs)
    return records


# ----------------------------------------------------------------------------- one-process runner


def resolve_device(device: str) -> str:
    """``auto`` -> ``cuda`` when available else ``cpu``; ``cuda`` without CUDA is an error.

    Raises:
        InputError: CUDA asked for but not available.
    """
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise InputError(f"device {device!r}", "is not available (torch sees no CUDA GPU)", "--device cpu or auto")
    return device


def load_resources(cfg: GenerateConfig):
    """Load the model and embed the prompt set as ``cfg`` says.

    Returns:
        ``(LoadedClip, TorchTextBank)`` on the resolved device.

    Raises:
        ModelError, InputError: from the model loader and the prompt-set reader.
    """
    from foclip.models import load_clip
    from foclip_train.text_bank import build_text_bank

    prompt_set = load_prompt_set(cfg.prompts, seed=cfg.seed)
    loaded = load_clip(cfg.model, cfg.pretrained, device=resolve_device(cfg.device), seed=cfg.seed)
    return loaded, build_text_bank(loaded, prompt_set)


def batches(jobs: Sequence[Job], size: int) -> list[list[Job]]:
    """Jobs cut into consecutive batches of ``size``."""
    return [list(jobs[i:i + size]) for i in range(0, len(jobs), size)]


def run_generate(inputs: Sequence[str | os.PathLike[str]], out_dir: str | os.PathLike[str],
                 cfg: GenerateConfig, resources=None,
                 on_step: Callable[[int, list[float] | None], None] | None = None,
                 on_batch: Callable[[list[dict[str, Any]]], None] | None = None,
                 jobs: Sequence[Job] | None = None) -> dict[str, Any]:
    """Plan, process every batch, append its records, and write the summary (one process).

    Args:
        inputs: image files and folders.
        out_dir: the output folder (created).
        cfg: the run's config.
        resources: ``(LoadedClip, TorchTextBank)`` already loaded, or None to load them.
        on_step: per-step progress callback.
        on_batch: called with each batch's records after they are appended.
        jobs: the jobs already planned by :func:`plan_jobs` for these inputs (planned here when None).

    Returns:
        The summary dict (also written to ``DIR/summary.json``).
    """
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    loaded, bank = resources or load_resources(cfg)
    jobs = plan_jobs(inputs, out_dir, cfg) if jobs is None else jobs
    for batch in batches(jobs, cfg.batch):
        records = process_batch(batch, cfg, loaded, bank, on_step)
        append_records(out_dir, records)
        if on_batch is not None:
            on_batch(records)
    return write_summary(out_dir)
