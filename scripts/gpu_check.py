#!/usr/bin/env python3
"""One GPU check for foclip's TensorRT / CUDA path: tests, engines, self-checks, one table.

On a machine with CUDA it:

1. runs the fast ``gpu``-marked tests (``pytest -m "gpu and not slow"``; ``--slow`` adds the slow
   ones, e.g. the hour-long paper protocol), under ``--step-timeout`` seconds;
2. exports fp32/fp16 bundles (with the fused detect graph) of the reference ViT
   (``foclip-ref-vit``, shipped weights) and, with ``--slow``, of ViT-B-32 (random weights), and
   builds strongly typed fp32 and fp16 TensorRT engines from their ``image.fp32`` / ``image.fp16``
   graphs (profile 1..2x the largest batch: a detection is a colour and a gray row), each
   self-checked against its precision's gate while being built;
3. measures every row on the same pre-decoded photos: TensorRT engines, ONNX Runtime CUDA
   (fp32/fp16 graphs) and PyTorch CUDA (fp32/fp16) beside them: min cosine against the bundle's
   fp32 PyTorch reference, det/s at each batch (colour + gray encoder rows and scoring, no
   decode) and p50/p99 latency per batch call;
4. prints one table and writes ``gpu_check.json`` into ``--out``.

Every row runs in its own try, under ``--step-timeout`` seconds (a hung GPU call ends that row,
not the check), and the JSON is written whatever fails (also after Ctrl-C). The default run (one
small model, batches 1 and 32, fast tests) fits a 10-minute GPU slot.

A row whose software is missing (no tensorrt, no onnxruntime-gpu) is skipped with the reason; with
only torch-CUDA the PyTorch rows still run.

Exit codes: 0 every row that ran passed its gate and the tests passed; 1 something failed (a row
below its gate, a row error or timeout, a failing test); 2 nothing could be verified (no CUDA:
every row is listed as skipped and the JSON says so); 3 the check itself crashed (the JSON still
holds what ran).

    python scripts/gpu_check.py --out /tmp/foclip-gpu-check              # ~10 min slot
    python scripts/gpu_check.py --out /tmp/g --slow                       # + ViT-B-32, slow tests
    python scripts/gpu_check.py --out /tmp/g --models foclip-ref-vit:reference --skip-tests
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

DEFAULT_MODELS = ("foclip-ref-vit:reference",)
SLOW_MODELS = ("foclip-ref-vit:reference", "ViT-B-32:random")
DEFAULT_BATCHES = (1, 32)
SLOW_BATCHES = (1, 32, 256)
STEP_TIMEOUT_S = 240.0
ROW_KINDS = (("trt", "fp32"), ("trt", "fp16"), ("ort-cuda", "fp32"), ("ort-cuda", "fp16"),
             ("torch-cuda", "fp32"), ("torch-cuda", "fp16"))


@dataclass
class Row:
    """One line of the table."""

    model: str
    backend: str
    precision: str
    status: str = "skipped"  # ran | skipped | failed
    reason: str = ""
    gate: float | None = None
    min_cosine: float | None = None
    passed: bool | None = None
    det_per_s: dict[str, float] = field(default_factory=dict)  # batch -> detections per second
    p50_ms: dict[str, float] = field(default_factory=dict)
    p99_ms: dict[str, float] = field(default_factory=dict)
    engine: str = ""


def probe() -> dict[str, Any]:
    """What this machine has: CUDA through torch, TensorRT, ONNX Runtime's CUDA provider.

    Returns:
        ``{"cuda": bool, "device": str, "skip": {backend: reason or ""}}``.
    """
    env: dict[str, Any] = {"cuda": False, "device": "", "skip": {}}
    try:
        import torch

        env["cuda"] = bool(torch.cuda.is_available())
        if env["cuda"]:
            major, minor = torch.cuda.get_device_capability(0)
            env["device"] = f"{torch.cuda.get_device_name(0)} (sm {major}.{minor})"
    except ImportError:
        env["torch_missing"] = True
    env["skip"] = skip_reasons(env["cuda"], importlib.util.find_spec("tensorrt") is not None,
                               _ort_has_cuda(), not env.get("torch_missing", False))
    return env


def _ort_has_cuda() -> bool:
    if importlib.util.find_spec("onnxruntime") is None:
        return False
    import onnxruntime as ort

    return "CUDAExecutionProvider" in ort.get_available_providers()


def skip_reasons(cuda: bool, has_trt: bool, has_ort_cuda: bool, has_torch: bool) -> dict[str, str]:
    """Why each backend's rows cannot run here ("" where they can).

    Args:
        cuda: a CUDA GPU is usable through torch.
        has_trt: ``tensorrt`` is importable.
        has_ort_cuda: ONNX Runtime offers CUDAExecutionProvider.
        has_torch: torch is importable.

    Returns:
        backend -> reason.
    """
    no_gpu = "no CUDA GPU on this machine (torch.cuda.is_available() is False)" if has_torch else \
        "torch is not installed (needed to export bundles and to find the GPU)"
    return {
        "trt": no_gpu if not cuda else "" if has_trt else "tensorrt is not installed (pip install 'foclip[trt]')",
        "ort-cuda": no_gpu if not cuda else "" if has_ort_cuda else
        "onnxruntime has no CUDAExecutionProvider (pip install 'foclip[gpu]' instead of foclip[cpu])",
        "torch-cuda": no_gpu if not cuda else "",
        "tests": no_gpu if not cuda else "",
    }


def run_gpu_tests(out: Path, marker: str = "gpu and not slow", timeout: float = STEP_TIMEOUT_S) -> dict[str, Any]:
    """Run every test ``marker`` selects (default: the fast gpu-marked ones) under ``timeout``
    seconds; return its exit code and pytest's summary line (the full log goes to ``out/gpu_tests.log``)."""
    log = out / "gpu_tests.log"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
           "HF_HUB_OFFLINE": "1"}
    t0 = time.perf_counter()
    try:
        proc = subprocess.run([sys.executable, "-m", "pytest", "-m", marker, "-q", "-p", "no:cacheprovider", "tests"],
                              cwd=ROOT, env=env, capture_output=True, text=True, check=False, timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        log.write_text(f"{exc.stdout or ''}{exc.stderr or ''}" if isinstance(exc.stdout, str) else "")
        return {"marker": marker, "returncode": 124, "summary": f"timed out after {timeout:g} s", "log": str(log),
                "seconds": round(time.perf_counter() - t0, 1)}
    log.write_text(proc.stdout + proc.stderr)
    lines = [ln for ln in proc.stdout.splitlines() if ln.strip()]
    return {"marker": marker, "returncode": proc.returncode, "summary": lines[-1] if lines else "", "log": str(log),
            "seconds": round(time.perf_counter() - t0, 1)}


def _export(model: str, pretrained: str, out: Path) -> Path:
    from foclip.exporter import ExportConfig, export_bundle

    path = out / "bundles" / model
    if not (path / "manifest.json").is_file():
        export_bundle(ExportConfig(model_name=model, pretrained=pretrained, precisions=("fp32", "fp16"),
                                   detect_graph=True), path, force=True)
    return path


def _photos(size: int, n: int) -> Any:
    """``n`` uint8 (size, size, 3) photos: the sample photos, resized and cropped, repeated."""
    import numpy as np

    from foclip.manifest import PreprocessSpec
    from foclip.runtime.decode import DecodeLimits, decode_item
    from foclip.samples import sample_arrays

    spec = PreprocessSpec(image_size=size)
    arrays = [decode_item(a, name, spec, DecodeLimits()) for name, a in sample_arrays().items()]
    return np.stack([arrays[i % len(arrays)] for i in range(n)])


SECONDS_PER_BATCH = 2.0


def _time(fn: Any, pixels: Any, batches: tuple[int, ...], row: Row, sync: Any = None) -> None:
    """det/s, p50 and p99 latency of ``fn(batch)`` for each batch size (2 warm-up calls)."""
    import numpy as np

    for b in batches:
        x = pixels[:b]
        for _ in range(2):
            fn(x)
        if sync:
            sync()
        lat = []
        t_end = time.perf_counter() + SECONDS_PER_BATCH
        while time.perf_counter() < t_end or len(lat) < 10:
            t0 = time.perf_counter()
            fn(x)
            if sync:
                sync()
            lat.append(time.perf_counter() - t0)
        lat_ms = np.array(lat) * 1000
        row.det_per_s[str(b)] = round(b / float(np.mean(lat)), 1)
        row.p50_ms[str(b)] = round(float(np.percentile(lat_ms, 50)), 3)
        row.p99_ms[str(b)] = round(float(np.percentile(lat_ms, 99)), 3)


def _runtime_row(bundle: Path, row: Row, pixels: Any, batches: tuple[int, ...]) -> None:
    from foclip.exporter.engine import EngineRequest, build_engine, graph_for
    from foclip.runtime import Detector

    if row.backend == "trt":  # strongly typed: the engine's precision is its graph's
        spec, _ = build_engine(bundle, EngineRequest(graph_for("image", row.precision), row.precision,
                                                     (1, min(64, 2 * max(batches)), 2 * max(batches))),
                               log=lambda s: print(f"  {s}", file=sys.stderr))
        row.engine = spec.file
    with Detector.from_bundle(bundle, backend=row.backend, precision=row.precision, graph="encoder",
                              batch_size=max(batches)) as det:
        r = det.self_check
        row.gate, row.min_cosine, row.passed = r.gate, r.min_cosine, r.passed
        _time(det.score_pixels, pixels, batches, row)


def _torch_row(bundle: Path, model: str, pretrained: str, row: Row, pixels: Any, batches: tuple[int, ...],
               device: str = "cuda") -> None:
    """PyTorch CUDA, same inputs, same gray copy, same scoring; min cosine on the reference set."""
    import numpy as np
    import torch

    from foclip.exporter.parity import GATES
    from foclip.models.loader import load_clip
    from foclip.runtime.bundle import open_bundle
    from foclip.scoring import clipscore

    b = open_bundle(bundle)
    torch.backends.cuda.matmul.allow_tf32 = False  # fp32 means fp32 (as the engines' TF32 switched off)
    torch.backends.cudnn.allow_tf32 = False
    dtype = torch.float16 if row.precision == "fp16" else torch.float32
    clip = load_clip(model, pretrained, device=device)
    enc = clip.model.to(dtype)
    mean = torch.tensor(b.manifest.preprocess.mean, device=device).view(1, 3, 1, 1)
    std = torch.tensor(b.manifest.preprocess.std, device=device).view(1, 3, 1, 1)
    luma = torch.tensor(b.manifest.grayscale.weights, device=device).view(1, 3, 1, 1)
    bank = b.text_bank(b.default_bank).embeddings

    @torch.no_grad()
    def embed(u8: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(u8).to(device).permute(0, 3, 1, 2).float() / 255
        gray = (x * luma).sum(1, keepdim=True).expand_as(x)
        rows = torch.cat([x, gray])
        e = enc.encode_image(((rows - mean) / std).to(dtype)).float()
        return torch.nn.functional.normalize(e, dim=-1).cpu().numpy()

    ref_pixels = np.load(b.file(b.manifest.reference.pixels_file))
    want = np.load(b.file(b.manifest.reference.image_embeddings_file)).astype(np.float64)
    got = embed(ref_pixels).astype(np.float64)
    cos = (got * want).sum(1) / (np.linalg.norm(got, axis=1) * np.linalg.norm(want, axis=1))
    row.gate, row.min_cosine = GATES[row.precision], float(cos.min())
    row.passed = row.min_cosine >= row.gate
    sync = torch.cuda.synchronize if device.startswith("cuda") else None
    _time(lambda u8: clipscore(embed(u8), bank, b.score_scale), pixels, batches, row, sync)


class StepTimeout(Exception):
    """A step ran past its time limit."""


def with_timeout(seconds: float, fn: Any, *args: Any) -> Any:
    """``fn(*args)`` with a SIGALRM time limit (main thread; no limit where SIGALRM does not exist).

    Raises:
        StepTimeout: when it runs longer than ``seconds``.
    """
    import signal

    if seconds <= 0 or not hasattr(signal, "SIGALRM"):
        return fn(*args)

    def expire(signum: int, frame: Any) -> None:
        raise StepTimeout(f"step timed out after {seconds:g} s")

    old = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        return fn(*args)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def run_rows(env: dict[str, Any], models: tuple[str, ...], batches: tuple[int, ...], out: Path,
             torch_device: str = "cuda", step_timeout: float = STEP_TIMEOUT_S, rows: list[Row] | None = None
             ) -> list[Row]:
    """Every row of every model: measured where it can run, skipped with the reason where not.

    Each row (and each model's export) runs in its own try under ``step_timeout`` seconds; rows are
    appended to ``rows`` as they finish, so a caller that writes them after a crash has them.
    ``torch_device`` exists for the CPU test of this script's own mechanics (the torch rows on CPU).
    """
    rows = [] if rows is None else rows
    for entry in models:
        model, _, pretrained = entry.partition(":")
        pretrained = pretrained or "random"
        todo = [Row(model, be, prec, reason=env["skip"][be]) for be, prec in ROW_KINDS]
        if all(r.reason for r in todo):
            rows += todo
            continue
        try:
            bundle = with_timeout(step_timeout, _export, model, pretrained, out)
            from foclip.manifest import read_manifest

            pixels = _photos(read_manifest(bundle).preprocess.image_size, max(batches))
        except Exception as exc:  # noqa: BLE001 - the model's rows say why, the other models still run
            for row in todo:
                row.status, row.reason = ("skipped", row.reason) if row.reason else (
                    "failed", f"export: {exc.__class__.__name__}: {exc}"[:400])
            rows += todo
            continue
        for row in todo:
            if row.reason:
                rows.append(row)
                continue
            print(f"{model} {row.backend} {row.precision} ...", file=sys.stderr, flush=True)
            try:
                if row.backend == "torch-cuda":
                    with_timeout(step_timeout, _torch_row, bundle, model, pretrained, row, pixels, batches, torch_device)
                else:
                    with_timeout(step_timeout, _runtime_row, bundle, row, pixels, batches)
                row.status = "ran"
            except Exception as exc:  # noqa: BLE001 - one failed row must not hide the others
                row.status, row.reason = "failed", f"{exc.__class__.__name__}: {exc}"[:400]
            rows.append(row)
    return rows


def render(env: dict[str, Any], tests: dict[str, Any], rows: list[Row], batches: tuple[int, ...]) -> str:
    """The one table, plain text, and the lines that say what was skipped and why."""
    head = ["model", "backend", "precision", "gate", "min cosine", "result"]
    head += [f"det/s b{b}" for b in batches] + [f"p50/p99 ms b{b}" for b in batches]
    tests_line = tests.get("summary") or f"skipped: {env['skip']['tests']}"
    lines = [f"device: {env['device'] or 'none'}; gpu tests: {tests_line}"]
    table = [head]
    for r in rows:
        result = {"ran": "pass" if r.passed else "FAIL", "failed": "ERROR", "skipped": "skipped"}[r.status]
        cells = [r.model, r.backend, r.precision, "" if r.gate is None else f">= {r.gate}",
                 "" if r.min_cosine is None else f"{r.min_cosine:.6f}", result]
        cells += [f"{r.det_per_s[str(b)]:.1f}" if str(b) in r.det_per_s else "-" for b in batches]
        cells += [f"{r.p50_ms[str(b)]:.2f}/{r.p99_ms[str(b)]:.2f}" if str(b) in r.p50_ms else "-" for b in batches]
        table.append(cells)
    widths = [max(len(str(row[i])) for row in table) for i in range(len(head))]
    for row in table:
        lines.append("  ".join(str(c).ljust(w) for c, w in zip(row, widths)))
    reasons = sorted({(r.backend, r.reason) for r in rows if r.status != "ran"})
    for backend, reason in reasons:
        lines.append(f"{'skipped' if any(r.status == 'skipped' and r.backend == backend for r in rows) else 'error'}"
                     f" {backend}: {reason}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Run the check; print the table; write gpu_check.json. Exit 0 ok, 1 a failure, 2 nothing
    verified, 3 the check itself crashed (the JSON is written in every case)."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True, help="folder for bundles, engines, the test log and gpu_check.json")
    ap.add_argument("--slow", action="store_true", help="also ViT-B-32, batch 256 and the slow gpu tests "
                                                        "(does not fit a 10-minute slot)")
    ap.add_argument("--models", default=None, help=f"MODEL:PRETRAINED,... (default {','.join(DEFAULT_MODELS)}; "
                                                   f"--slow: {','.join(SLOW_MODELS)})")
    ap.add_argument("--batches", default=None, help="default 1,32 (--slow: 1,32,256)")
    ap.add_argument("--skip-tests", action="store_true", help="do not run the gpu-marked tests")
    ap.add_argument("--test-marker", default=None, help="pytest -m expression for the tests (default 'gpu and not "
                                                        "slow'; --slow: 'gpu')")
    ap.add_argument("--step-timeout", type=float, default=STEP_TIMEOUT_S,
                    help="seconds each step (the tests, one export, one row) may take (default %(default)s)")
    args = ap.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    models = args.models or ",".join(SLOW_MODELS if args.slow else DEFAULT_MODELS)
    batches = tuple(int(b) for b in (args.batches or ",".join(map(str, SLOW_BATCHES if args.slow
                                                                    else DEFAULT_BATCHES))).split(","))
    marker = args.test_marker or ("gpu" if args.slow else "gpu and not slow")
    env: dict[str, Any] = {"cuda": False, "device": "", "skip": skip_reasons(False, False, False, False)}
    tests: dict[str, Any] = {}
    rows: list[Row] = []
    crash = ""
    try:
        env = probe()
        if not args.skip_tests and not env["skip"]["tests"]:
            tests = run_gpu_tests(out, marker, args.step_timeout)
        run_rows(env, tuple(m for m in models.split(",") if m), batches, out, step_timeout=args.step_timeout,
                 rows=rows)
    except BaseException as exc:  # noqa: BLE001 - whatever happens, the JSON below says what ran
        crash = f"{exc.__class__.__name__}: {exc}"[:400]
    return _report(out, env, tests, rows, batches, crash)


def _report(out: Path, env: dict[str, Any], tests: dict[str, Any], rows: list[Row], batches: tuple[int, ...],
            crash: str) -> int:
    """Print the table, write gpu_check.json, and return the exit code (see the module docstring)."""
    print(render(env, tests, rows, batches))
    ran = [r for r in rows if r.status == "ran"]
    verified = bool(ran) or tests.get("returncode") == 0
    ok = all(r.passed for r in ran) and not any(r.status == "failed" for r in rows) and tests.get("returncode", 0) in (
        0, 5) and not crash  # pytest 5: no gpu test collected
    report = {"device": env["device"], "cuda": env["cuda"], "verified": verified, "ok": ok and verified,
              "skip_reasons": env["skip"], "tests": tests, "batches": list(batches), "rows": [asdict(r) for r in rows],
              "crash": crash,
              "note": ("det/s: images scored per second (colour + gray encoder rows and scoring; decode "
                       "excluded); latency per batch call")}
    import json

    tmp = out / "gpu_check.json.tmp"
    tmp.write_text(json.dumps(report, indent=2))
    os.replace(tmp, out / "gpu_check.json")
    print(f"wrote {out / 'gpu_check.json'}")
    if crash:
        print(f"the check crashed: {crash}", file=sys.stderr)
        return 3
    if not verified:
        print("nothing was verified on this machine (see the skipped rows above)", file=sys.stderr)
        return 2
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
