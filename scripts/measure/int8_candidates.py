"""Measure foclip's int8 methods side by side: parity with fp32 and encoder speed on this CPU.

For one model (default ViT-B-32, random init unless --pretrained says otherwise) it exports the fp32
image encoder once, makes one int8 graph per method in ``foclip.exporter.convert.INT8_METHODS``,
and for each graph reports the min cosine against the fp32 ONNX graph on real sample photos (colour
and luma-gray rows, as the detector feeds them) and images/s at batch 32, encoder only. Timing
rounds are interleaved across graphs and the best round is kept, so a busy neighbour on the machine
slows every row alike. Prints a Markdown table, the CPU flags that matter, and writes JSON.

    python scripts/measure/int8_candidates.py --model ViT-B-32 --rounds 3 --out int8_candidates.json
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from foclip.benchmarks.cpu import cpu_info, cpu_line
from foclip.outputs import atomic_write_json


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="ViT-B-32")
    ap.add_argument("--pretrained", default="random")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()

    import onnxruntime as ort
    import torch

    from foclip.exporter import convert, onnx_export
    from foclip.exporter.parity import cosine_rows
    from foclip.models import ImageEncoder, load_clip
    from foclip.runtime.preprocess import to_pixels
    from foclip.samples import sample_photos
    from foclip.scoring import to_gray

    clip = load_clip(args.model, args.pretrained, device="cpu", seed=0)
    enc = ImageEncoder(clip.model, clip.preprocess).eval()
    photos = sample_photos(8)
    color = np.stack([to_pixels(img, clip.preprocess) for _, img in photos])
    x = np.concatenate([color, to_gray(color, channel_axis=1)]).astype(np.float32)
    bench = np.concatenate([x] * (args.batch // len(x) + 1))[:args.batch]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        fp32 = tmp / "fp32.onnx"
        onnx_export.export_image_encoder(enc, clip.preprocess.image_size, fp32, 18)
        graphs = {"fp32": fp32}
        for name in convert.INT8_METHODS:
            graphs[name] = tmp / f"{name}.onnx"
            convert.to_int8(fp32, graphs[name], name, calibration_pixels=x)
        so = ort.SessionOptions()
        so.log_severity_level = 3
        sessions = {k: ort.InferenceSession(str(p), so, providers=["CPUExecutionProvider"]) for k, p in graphs.items()}
        ref = sessions["fp32"].run(None, {"pixels": x})[0]
        with torch.no_grad():
            torch_ref = enc(torch.from_numpy(x)).numpy()
        rows = {}
        for k, s in sessions.items():
            got = s.run(None, {"pixels": x})[0]
            rows[k] = {"min_cosine_vs_fp32_onnx": float(cosine_rows(ref, got).min()),
                       "min_cosine_vs_pytorch": float(cosine_rows(torch_ref, got).min()),
                       "size_mb": graphs[k].stat().st_size / 1e6, "img_per_s": 0.0}
            s.run(None, {"pixels": bench})  # warm-up
        for _ in range(args.rounds):
            for k, s in sessions.items():
                t0 = time.perf_counter()
                s.run(None, {"pixels": bench})
                rows[k]["img_per_s"] = max(rows[k]["img_per_s"], args.batch / (time.perf_counter() - t0))
    base = rows["fp32"]["img_per_s"]
    cpu = cpu_info()
    print(cpu_line(cpu))
    print(f"model {args.model} ({args.pretrained}), {len(photos)} photos x (colour, gray) = {len(x)} rows, "
          f"batch {args.batch}, best of {args.rounds} interleaved rounds, onnxruntime {ort.__version__}")
    print("| graph | min cosine vs PyTorch | vs fp32 ONNX | img/s | vs fp32 | MB |")
    print("|---|---|---|---|---|---|")
    for k, r in rows.items():
        print(f"| {k} | {r['min_cosine_vs_pytorch']:.6f} | {r['min_cosine_vs_fp32_onnx']:.6f} | "
              f"{r['img_per_s']:.1f} | {r['img_per_s'] / base:.2f}x | {r['size_mb']:.1f} |")
    if args.out:
        atomic_write_json(args.out, {"cpu": cpu, "model": args.model, "pretrained": args.pretrained,
                                     "batch": args.batch, "rounds": args.rounds, "rows": rows})


if __name__ == "__main__":
    main()
