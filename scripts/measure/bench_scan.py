"""`foclip detect` (one process) vs `foclip detect --ray` (1 and N actors), side by side in one run.

    python scripts/measure/bench_scan.py --bundle B --images 2000 --precision int8
    python scripts/measure/bench_scan.py --model ViT-B-32 --images 2000     # exports a random-init bundle first
    python scripts/measure/bench_scan.py --model foclip-ref-vit --pretrained reference --images 2000
    python scripts/measure/bench_scan.py --bundle B --images 2000 --actors 2 --memory-copies 10   # + a 20,000-image run

The sample photos (scikit-image, scikit-learn, matplotlib) are re-encoded at several sizes and JPEG
qualities (11 photos x 4 sides x 15 qualities: 660 distinct encodings, repeated up to ``--images`` files;
no stage caches, so repeats cost what new files cost), written as a folder, as WebDataset tar shards
and as parquet shards. Each configuration runs as its own CLI process; the script prints one markdown
row per run: wall seconds, images/s over the wall (start-up included), the command's own images/s,
for --ray the rate after the first shard and per actor (scoring time only), and the driver's RSS a
quarter of the way in, at the end and at most (psutil, every 0.5 s), to show whether it stays flat. Scores of random-init or reference models
test mechanics only; the rates are what this script is for.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import re
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def make_dataset(root: Path, n: int, per_shard: int, sides: tuple[int, ...] = (224, 320, 480, 640)) -> dict[str, Path]:
    """``n`` JPEGs (short side in ``sides``; the encodings repeat after photos x sides x 15) as a folder,
    tar shards and parquet shards under ``root``."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from foclip.samples import sample_photos

    photos = [img.convert("RGB") for _, img in sample_photos()]
    qualities = (75, 85, 95)
    folder, tars, parquets = root / "folder", root / "tar", root / "parquet"
    for d in (folder, tars, parquets):
        d.mkdir(parents=True, exist_ok=True)
    items: list[tuple[str, bytes]] = []
    i = 0
    while len(items) < n:
        img = photos[i % len(photos)]
        side = sides[(i // len(photos)) % len(sides)]
        q = qualities[(i // (len(photos) * len(sides))) % len(qualities)] - (i // (len(photos) * 12)) % 5
        scale = side / min(img.size)
        buf = io.BytesIO()
        img.resize((round(img.width * scale), round(img.height * scale))).save(buf, "JPEG", quality=q)
        items.append((f"{i:06d}", buf.getvalue()))
        i += 1
    for key, data in items:
        (folder / f"{key}.jpg").write_bytes(data)
    for s in range(0, n, per_shard):
        chunk = items[s:s + per_shard]
        with tarfile.open(tars / f"shard-{s // per_shard:05d}.tar", "w") as tar:
            for key, data in chunk:
                info = tarfile.TarInfo(f"{key}.jpg")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
        pq.write_table(pa.table({"key": [k for k, _ in chunk], "image": pa.array([d for _, d in chunk], pa.binary())}),
                       parquets / f"shard-{s // per_shard:05d}.parquet")
    return {"folder": folder, "tar": tars, "parquet": parquets}


def export_bundle(model: str, pretrained: str, out: Path) -> Path:
    """A bundle of ``model`` with an int8 image encoder (needs foclip[export])."""
    from foclip.exporter import ExportConfig
    from foclip.exporter import export_bundle as export

    export(ExportConfig(model_name=model, pretrained=pretrained, prompts=("artistic",), precisions=("fp32", "int8"),
                        opset=18, seed=0, detect_graph=False), out)
    return out


def timed(argv: list[str], cwd: Path) -> dict:
    """Run a foclip command; wall seconds, its output and the driver's RSS samples (MiB)."""
    import psutil

    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "COLUMNS": "200"}
    # Files, not pipes: a pipe nobody reads while the command runs fills up and stalls it.
    with tempfile.TemporaryFile("w+") as fout, tempfile.TemporaryFile("w+") as ferr:
        t0 = time.perf_counter()
        proc = subprocess.Popen([sys.executable, "-m", "foclip.cli.main", *argv], cwd=cwd, env=env,
                                stdout=fout, stderr=ferr, text=True)
        ps, rss = psutil.Process(proc.pid), []
        while proc.poll() is None:
            try:
                rss.append(ps.memory_info().rss / 2**20)
            except psutil.Error:
                break
            time.sleep(0.5)
        wall = time.perf_counter() - t0
        fout.seek(0)
        ferr.seek(0)
        out, err = fout.read(), ferr.read()
    if proc.returncode not in (0, 3, 4, 5):
        raise SystemExit(f"{' '.join(argv)} failed ({proc.returncode}):\n{err[-3000:]}")
    return {"wall": wall, "stdout": out, "stderr": err, "rss": rss}


def own_rate(text: str) -> float | None:
    m = re.search(r"([\d.]+)\s+images/s", text)
    return float(m.group(1)) if m else None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bundle", default=None, help="an exported bundle (default: export --model first)")
    ap.add_argument("--model", default="ViT-B-32", help="model to export when no --bundle (random weights)")
    ap.add_argument("--pretrained", default="random", help="weights of --model (reference for foclip-ref-*)")
    ap.add_argument("--images", type=int, default=2000)
    ap.add_argument("--per-shard", type=int, default=250)
    ap.add_argument("--precision", default="int8")
    ap.add_argument("--actors", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--sides", type=int, nargs="+", default=[224, 320, 480, 640],
                    help="short sides of the re-encoded photos (small ones for a long run that measures memory)")
    ap.add_argument("--rounds", type=int, default=1, help="run every configuration this many times")
    ap.add_argument("--memory-copies", type=int, default=0,
                    help="then one long --ray run over the tar shards linked this many times (driver RSS along it)")
    ap.add_argument("--work", default=None, help="working folder (default: a temp folder)")
    args = ap.parse_args()
    work = Path(args.work or tempfile.mkdtemp(prefix="foclip-bench-scan-"))
    bundle = Path(args.bundle) if args.bundle else export_bundle(args.model, args.pretrained, work / "bundle")
    t0 = time.perf_counter()
    data = make_dataset(work / "data", args.images, args.per_shard, tuple(args.sides))  # rewritten each run
    print(f"dataset: {args.images} JPEGs in {time.perf_counter() - t0:.0f} s; shards of {args.per_shard}; "
          f"bundle {bundle}; {os.cpu_count()} CPUs", flush=True)
    common = ["--precision", args.precision, "--exit-zero"]
    runs = [("foclip detect (1 process)", ["detect", str(bundle), str(data["folder"]), "--format", "jsonl",
                                            "--out", str(work / "single.jsonl"), "--fresh", *common], None)]
    for n in args.actors:
        runs.append((f"--ray --actors {n}, tar shards", ["detect", str(bundle), str(data["tar"]), "--ray",
                     "--actors", str(n), "--out", str(work / f"ray{n}-tar"), *common], work / f"ray{n}-tar"))
    n = max(args.actors)
    runs.append((f"--ray --actors {n}, parquet shards", ["detect", str(bundle), str(data["parquet"]), "--ray",
                 "--actors", str(n), "--id-column", "key", "--out", str(work / f"ray{n}-parquet"), *common],
                 work / f"ray{n}-parquet"))
    print("| run | wall s | images/s (wall) | images/s (command) | after 1st shard | per actor, scoring only | "
          "driver RSS MiB at 1/4 / last / max |")
    print("|---|---|---|---|---|---|---|")
    # On a shared machine the load moves during a run: later rounds go in reverse order, so that no
    # configuration always runs first or last.
    order = [run for i in range(args.rounds) for run in (runs if i % 2 == 0 else runs[::-1])]
    for name, argv, out in order:
        if out is not None:
            argv = [*argv, "--fresh"]
        r = timed(argv, work)
        per_actor = "-"
        if out is not None:
            meta = json.loads((out / "_meta.json").read_text())
            per_actor = f"{meta['images'] / meta['actor_seconds']:.1f}" if meta.get("actor_seconds") else "-"
        rate = own_rate(r["stdout"] + r["stderr"])
        m = re.search(r"([\d.]+)\s+after\s+the\s+first\s+shard", r["stdout"] + r["stderr"])
        steady = m.group(1) if m else "-"
        rss = r["rss"] or [0.0]
        print(f"| {name} | {r['wall']:.1f} | {args.images / r['wall']:.1f} | {rate if rate is not None else '-'} | "
              f"{steady} | {per_actor} | {rss[len(rss) // 4]:.0f} / {rss[-1]:.0f} / {max(rss):.0f} |", flush=True)
    if args.memory_copies:
        memory_run(bundle, data["tar"], args.memory_copies, max(args.actors), args.precision, work)


def memory_run(bundle: Path, tars: Path, copies: int, actors: int, precision: str, work: Path) -> None:
    """The tar shards linked ``copies`` times (distinct shard names, the same bytes): one long --ray run,
    the driver's RSS along it."""
    many = work / "many"
    many.mkdir(exist_ok=True)
    shards = sorted(tars.glob("*.tar"))
    for c in range(copies):
        for f in shards:
            link = many / f"c{c:04d}-{f.name}"
            if not link.exists():
                link.symlink_to(f.resolve())
    n_images = 0
    for f in shards:
        with tarfile.open(f) as tar:
            n_images += sum(1 for m in tar if m.isfile()) * copies
    r = timed(["detect", str(bundle), str(many), "--ray", "--actors", str(actors), "--precision", precision,
               "--exit-zero", "--fresh", "--out", str(work / "many-out")], work)
    rss = r["rss"] or [0.0]
    at = " / ".join(f"{rss[min(len(rss) - 1, int(len(rss) * q))]:.0f}" for q in (0.1, 0.25, 0.5, 0.75, 1.0))
    print(f"memory run: {n_images} images in {copies * len(shards)} shards, {actors} actor(s), {r['wall']:.0f} s; "
          f"driver RSS MiB at 10/25/50/75/100 % of the run: {at}; max {max(rss):.0f}", flush=True)


if __name__ == "__main__":
    main()
