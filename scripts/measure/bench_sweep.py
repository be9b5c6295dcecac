"""How detection cost grows: det/s against batch size and against the number of images (PNG + JSON).

One Detector per (precision, batch size) on the same image files (offline sample photos written to a
temp folder, with crops and flips), each timed after a warm-up batch, best of ``--rounds``:

* batch sweep: all ``--images`` images at each batch size in ``--batches``;
* volume sweep: the first n images for each n in ``--counts`` at ``--batch``.

    python scripts/measure/bench_sweep.py BUNDLE --precision fp32 --precision int8 --out sweep
    # -> sweep.json, sweep.png

The CPU (model, cores, SIMD flags) is written next to the figures; nothing is asserted.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import tempfile
import time
from pathlib import Path

from foclip.benchmarks.cpu import cpu_info
from foclip.outputs import atomic_write_bytes, atomic_write_json


def rate(bundle: str, precision: str, paths: list[str], batch: int, rounds: int) -> float:
    """Detections/s of a fresh Detector on ``paths`` at ``batch`` (best of ``rounds`` after a warm-up)."""
    from foclip.runtime import Detector

    det = Detector.from_bundle(bundle, precision=precision, batch_size=batch, self_check=False)
    det.detect(paths[:batch])
    best = float("inf")
    for _ in range(rounds):
        t0 = time.perf_counter()
        det.detect(paths)
        best = min(best, time.perf_counter() - t0)
    return len(paths) / best


def plot(res: dict, png: Path) -> None:
    """Two panels: det/s against batch size, and against images per call, one line per precision."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 4))
    for p, sweep in res["batch_sweep"].items():
        xs = sorted(sweep, key=int)
        a1.plot([int(x) for x in xs], [sweep[x] for x in xs], marker="o", label=p)
    for p, sweep in res["volume_sweep"].items():
        xs = sorted(sweep, key=int)
        a2.plot([int(x) for x in xs], [sweep[x] for x in xs], marker="o", label=p)
    a1.set(xscale="log", xlabel="batch size (images per encoder call)", ylabel="detections/s",
           title=f"{res['images']} images, best of {res['rounds']}")
    a2.set(xscale="log", xlabel="images per detect() call", ylabel="detections/s",
           title=f"batch {res['batch']}, best of {res['rounds']}")
    for a in (a1, a2):
        a.set_ylim(bottom=0)
        a.grid(alpha=0.3)
        a.legend()
    cpu = res["cpu"]
    fig.suptitle(f"foclip detection cost: {Path(res['bundle']).name} on {cpu['model']}, {cpu['cores']} cores "
                 f"({', '.join(cpu['flags'])})", fontsize=9)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    atomic_write_bytes(png, buf.getvalue())


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("bundle")
    ap.add_argument("--precision", action="append", default=None, help="repeatable (default fp32)")
    ap.add_argument("--batches", default="1,2,4,8,16,32,64")
    ap.add_argument("--images", type=int, default=128, help="images of the batch sweep")
    ap.add_argument("--counts", default="8,32,128,512")
    ap.add_argument("--batch", type=int, default=32, help="batch of the volume sweep")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--out", type=Path, default=Path("sweep"))
    ap.add_argument("--replot", action="store_true", help="only redraw the PNG from an existing --out JSON")
    args = ap.parse_args()
    if args.replot:
        plot(json.loads(args.out.with_suffix(".json").read_text()), args.out.with_suffix(".png"))
        return 0
    from foclip.benchmarks.images import write_sample_images

    precisions = args.precision or ["fp32"]
    batches = [int(b) for b in args.batches.split(",")]
    counts = [int(c) for c in args.counts.split(",")]
    res: dict = {"cpu": cpu_info(), "bundle": args.bundle, "batch_sweep": {}, "volume_sweep": {},
                 "images": args.images, "batch": args.batch, "rounds": args.rounds}
    with tempfile.TemporaryDirectory(prefix="foclip-sweep-") as tmp:
        paths = [str(p) for p in write_sample_images(tmp, max(max(counts), args.images))]
        for p in precisions:
            res["batch_sweep"][p] = {b: rate(args.bundle, p, paths[:args.images], b, args.rounds) for b in batches}
            print(p, "batch sweep", {b: round(r, 2) for b, r in res["batch_sweep"][p].items()}, flush=True)
            res["volume_sweep"][p] = {n: rate(args.bundle, p, paths[:n], args.batch, args.rounds) for n in counts}
            print(p, "volume sweep", {n: round(r, 2) for n, r in res["volume_sweep"][p].items()}, flush=True)
    atomic_write_json(args.out.with_suffix(".json"), res)
    plot(res, args.out.with_suffix(".png"))
    print(f"wrote {args.out.with_suffix('.json')} and {args.out.with_suffix('.png')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
