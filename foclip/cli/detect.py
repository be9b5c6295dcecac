"""`foclip detect BUNDLE INPUTS...`: grayscale-sensitivity detection over files, folders, globs, @lists."""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

from foclip.outputs import output_error, umask_mode


def add_parser(sub: Any) -> None:
    """Register the ``detect`` sub-command."""
    p = sub.add_parser(
        "detect", help="detect FoCLIP-manipulated images with an exported bundle (torch-free)",
        description="Score each image and its grayscale copy against the bundle's text bank; "
                    "tampered = score_color >= tau_score and drop >= tau_drop.")
    p.add_argument("bundle", help="bundle folder written by `foclip export`")
    p.add_argument("inputs", nargs="+", help="image files, folders, globs, or @FILE (one path a line)")
    p.add_argument("--backend", default="ort-cpu", help="ort-cpu | ort-cuda | trt (default ort-cpu)")
    p.add_argument("--precision", default="fp32", help="fp32 | fp16 | int8 (must be in the bundle)")
    p.add_argument("--calibration", default=None, help="calibration.json from `foclip calibrate`")
    p.add_argument("--prompts", default=None,
                   help="a text bank of the bundle or a prompt file (default: the bundle's first bank)")
    p.add_argument("--cascade", action="store_true", help="gray pass only where score_color >= tau_score")
    p.add_argument("--batch", type=int, default=32, help="images per encoder call (default 32)")
    p.add_argument("--graph", default="auto", choices=("auto", "encoder", "fused"),
                   help="encoder + numpy scoring, or the bundle's fused detection graph (default auto)")
    p.add_argument("--threads", type=int, default=0, help="ONNX Runtime intra-op threads (0 = one per core)")
    p.add_argument("--max-file-mb", type=float, default=256.0,
                   help="larger files get the error file_too_large instead of being read (default 256)")
    p.add_argument("--out", default=None, help="write one JSON line per image here (atomically)")
    p.set_defaults(func=run)


def _open_out(out: str | None) -> tuple[Any, str | None]:
    if not out:
        return None, None
    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.fchmod(fd, umask_mode())  # mkstemp makes 0600; the result should look like any file the user writes
    return os.fdopen(fd, "w", encoding="utf-8"), tmp


def run(args: argparse.Namespace) -> int:
    """Run detection; exit 0 when at least one image was read, 1 when none could be."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
    from rich.table import Table

    from foclip.cli.common import console, ensure_writable, err_console, random_weights_notice
    from foclip.errors import InputError
    from foclip.runtime import Detector
    from foclip.runtime.decode import DecodeLimits
    from foclip.runtime.inputs import expand_inputs

    if not args.max_file_mb > 0:
        raise InputError("--max-file-mb", f"is {args.max_file_mb:g}", "a size in MiB > 0")
    if args.out:
        ensure_writable(args.out)  # before loading anything: a read-only folder fails in a second
    limits = DecodeLimits(max_file_bytes=int(args.max_file_mb * 1024 * 1024))
    det = Detector.from_bundle(args.bundle, backend=args.backend, precision=args.precision,
                               calibration=args.calibration, prompts=args.prompts, cascade=args.cascade,
                               batch_size=args.batch, graph=args.graph, threads=args.threads, limits=limits)
    random_weights_notice(det.manifest.pretrained)
    if not det.calibrated:
        err_console.print(f"[yellow]note:[/] no --calibration: default thresholds tau_score="
                          f"{det.config.tau_score:g}, tau_drop={det.config.tau_drop:g}; results say "
                          "\"calibrated\": false.", highlight=False)
    total = sum(1 for _ in expand_inputs(args.inputs))
    if total == 0:
        raise InputError("inputs", "matched no image files", "image files, folders with images, globs or @lists")
    fh, tmp = _open_out(args.out)
    codes: Counter[str] = Counter()
    n_ok = n_tampered = 0
    t0 = time.perf_counter()
    try:
        columns = (TextColumn("[bold]detect"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
        with Progress(*columns, console=err_console, transient=False) as progress:
            task = progress.add_task("detect", total=total)
            for r in det.detect_iter(expand_inputs(args.inputs)):
                if r.ok:
                    n_ok += 1
                    n_tampered += bool(r.tampered)
                else:
                    codes[r.error["code"]] += 1
                if fh is not None:
                    fh.write(json.dumps(r.to_dict()) + "\n")
                progress.advance(task)
        if fh is not None:
            fh.flush()
            os.fsync(fh.fileno())
            fh.close()
            os.replace(tmp, args.out)
    except BaseException as exc:
        if fh is not None:
            try:
                fh.close()
            except OSError:
                pass  # the close of a file on a full disk fails too; the first error is the one to report
            if tmp and os.path.exists(tmp):
                os.unlink(tmp)
        if isinstance(exc, OSError) and fh is not None:
            raise output_error(args.out, exc) from exc
        raise
    finally:
        det.close()
    seconds = time.perf_counter() - t0
    table = Table(title=f"foclip detect: {det.manifest.model_name} ({det.manifest.pretrained}), "
                        f"{det.config.backend}/{det.config.precision}", show_header=True)
    table.add_column("measure")
    table.add_column("value", justify="right")
    table.add_row("images", str(total))
    table.add_row("scored", str(n_ok))
    table.add_row("tampered", f"{n_tampered}" + ("" if det.calibrated else " (uncalibrated thresholds)"))
    table.add_row("errors", str(sum(codes.values())))
    for code, count in sorted(codes.items()):
        table.add_row(f"  {code}", str(count))
    table.add_row("images/s", f"{total / seconds:.1f}" if seconds > 0 else "-")
    table.add_row("tau_score / tau_drop", f"{det.config.tau_score:.4g} / {det.config.tau_drop:.4g} "
                                          f"(score 0..{det.score_scale:g}, drop as a fraction)")
    if args.out:
        table.add_row("results", str(args.out))
    console.print(table)
    if n_ok == 0:
        err_console.print("[bold red]error:[/] none of the inputs could be read as an image.", highlight=False)
        return 1
    return 0
