#!/usr/bin/env python3
"""GPU check of FoCLIP generation speed: ViT-L-14-336 (random init), batch 8, 100 iterations.

Runs the real attack step (:func:`foclip_train.attack.foclip_attack`: resize/crop from the images'
own resolution, loss, SGD, best-iterate checks every 10 steps) in fp32, fp32 with TF32 matmuls,
and bf16 autocast, and prints seconds per image extrapolated to 1000 iterations
(goal: <= 3 s per image; the compute limit is about 1 s).

Needs only torch, open_clip and this repository (no install):

    python scripts/gpu_generate_check.py              # on a CUDA machine
    python scripts/gpu_generate_check.py --smoke      # seconds on a CPU: tiny model, 3 iterations

Random weights: the scores printed say nothing about a trained CLIP; only the timings matter.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _images(n: int, h: int, w: int, device: str):
    """n deterministic, photo-like uint8 (3, h, w) images: smooth colour fields plus texture."""
    import torch

    g = torch.Generator().manual_seed(0)
    out = []
    for _ in range(n):
        low = torch.rand(1, 3, 6, 8, generator=g)
        field = torch.nn.functional.interpolate(low, size=(h, w), mode="bicubic", align_corners=False)[0]
        img = (field + 0.08 * torch.randn(3, h, w, generator=g)).clamp(0, 1)
        out.append((img * 255).round().to(torch.uint8).to(device))
    return out


def main(argv: list[str] | None = None) -> int:
    """Time the attack in each precision and print a table and one JSON line."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="ViT-L-14-336")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--iters", type=int, default=100)
    ap.add_argument("--size", default="480x640", help="input images HxW (resized inside each step)")
    ap.add_argument("--smoke", action="store_true", help="tiny model, batch 2, 3 iterations, CPU if no GPU")
    args = ap.parse_args(argv)

    import torch

    from foclip.models import ImageEncoder, load_clip
    from foclip.prompts import load_prompt_set
    from foclip_train.attack import AttackConfig, foclip_attack
    from foclip_train.text_bank import build_text_bank

    if args.smoke:
        args.model, args.batch, args.iters, args.size = "foclip-tiny", 2, 3, "96x128"
    cuda = torch.cuda.is_available()
    if not cuda and not args.smoke:
        print("no CUDA GPU: run with --smoke for a CPU syntax check", file=sys.stderr)
        return 2
    device = "cuda" if cuda else "cpu"
    h, w = (int(v) for v in args.size.split("x"))
    loaded = load_clip(args.model, "random", device=device)
    bank = build_text_bank(loaded, load_prompt_set("artistic")).embeddings
    encoder = ImageEncoder(loaded.model, loaded.preprocess).to(device)
    images = _images(args.batch, h, w, device)
    spec = loaded.preprocess
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    name = torch.cuda.get_device_name() if cuda else "cpu"
    print(f"{args.model} RANDOM weights, batch {args.batch}, {args.iters} iters, inputs {h}x{w} -> "
          f"{spec.image_size}, device {name}, torch {torch.__version__}")
    rows = []
    for label, amp, tf32 in (("fp32", "none", False), ("fp32+tf32", "none", True), ("bf16 autocast", "bf16", False)):
        torch.backends.cuda.matmul.allow_tf32 = tf32
        torch.backends.cudnn.allow_tf32 = tf32
        cfg = AttackConfig(iters=args.iters, amp=amp)
        foclip_attack(images, encoder, bank, AttackConfig(iters=2, amp=amp), spec.image_size)  # warm-up
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        sync()
        t0 = time.perf_counter()
        res = foclip_attack(images, encoder, bank, cfg, spec.image_size, spec.interpolation)
        sync()
        wall = time.perf_counter() - t0
        per_image_1000 = wall / args.batch * (1000 / args.iters)
        rows.append({
            "precision": label, "wall_s": round(wall, 3), "s_per_step": round(wall / args.iters, 4),
            "s_per_image_at_1000_iters": round(per_image_1000, 3),
            "peak_mem_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2) if cuda else None,
            "mean_start_score": round(sum(res.start_score) / len(res.start_score), 4),
            "mean_best_score": round(sum(res.best_score) / len(res.best_score), 4),
        })
        r = rows[-1]
        print(f"{label:>14}: {r['wall_s']:8.2f} s for {args.iters} iters | {r['s_per_step']:.4f} s/step | "
              f"{per_image_1000:6.2f} s/image at 1000 iters | peak {r['peak_mem_gib']} GiB | "
              f"score {r['mean_start_score']} -> {r['mean_best_score']} (0..100, random weights)")
    torch.backends.cuda.matmul.allow_tf32 = False
    print(json.dumps({"model": args.model, "batch": args.batch, "iters": args.iters, "device": name,
                      "goal_s_per_image": 3.0, "rows": rows}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
