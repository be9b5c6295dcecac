#!/usr/bin/env python3
"""The FoCLIP paper's full protocol on a GPU: `foclip reproduce` with 1000 steps per image.

Runs :func:`foclip_train.reproduce.run_reproduce` (the same code as `foclip reproduce`) on CUDA
with the paper's setting (model-view optimisation, lr 7, momentum 0.5, 1000 steps, all five prompt
sets), prints the report folder's three tables and one JSON line with the timings, and leaves the
folder (REPORT.md, report.json, figures) for inspection.

Needs only torch, open_clip, matplotlib and this repository (no install):

    python scripts/gpu_reproduce.py --out /tmp/foclip-report                    # reference model, GPU
    python scripts/gpu_reproduce.py --model ViT-L-14-336 --pretrained FILE ...  # where weights exist
    python scripts/gpu_reproduce.py --smoke --out /tmp/r                        # seconds on a CPU (tiny)

Reruns with the same --out resume.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(argv: list[str] | None = None) -> int:
    """Run the protocol and print the tables and a JSON line."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--model", default="foclip-ref-vit")
    ap.add_argument("--pretrained", default="reference")
    ap.add_argument("--iters", type=int, default=1000)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--max-images", type=int, default=8)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--smoke", action="store_true", help="foclip-tiny, random weights, 3 steps, 2 sets, CPU")
    args = ap.parse_args(argv)

    import torch

    from foclip_train.config import AttackConfig
    from foclip_train.reproduce import DEFAULT_SETS, ReproduceConfig, run_reproduce

    sets = DEFAULT_SETS
    if args.smoke:
        args.model, args.pretrained, args.iters, args.device = "foclip-tiny", "random", 3, "cpu"
        sets = ("masterpieces", "imagenet-25")
    elif args.device.startswith("cuda") and not torch.cuda.is_available():
        print("no CUDA GPU here; use --device cpu (slow) or --smoke", file=sys.stderr)
        return 2
    if args.device.startswith("cuda"):
        torch.backends.cuda.matmul.allow_tf32 = False  # fp32 as on the CPU: numbers comparable across machines
    cfg = ReproduceConfig(model=args.model, pretrained=args.pretrained, max_images=args.max_images,
                          prompt_sets=sets, attack=AttackConfig(iters=args.iters, space="model", output="model"),
                          batch=args.batch, device=args.device)
    t0 = time.perf_counter()
    report = run_reproduce(cfg, args.out)
    wall = time.perf_counter() - t0
    md = (Path(args.out) / "REPORT.md").read_text(encoding="utf-8")
    print(md.split("## Figures")[0])
    t1 = report["sections"]["table1"]["rows"]
    t3 = {r["prompt_set"]: r for r in report["sections"]["table3"]["rows"]}
    held = t3["all sets"].get("held_out", {})
    print(json.dumps({
        "model": args.model, "pretrained": args.pretrained, "device": args.device,
        "gpu": torch.cuda.get_device_name(0) if args.device.startswith("cuda") else None,
        "iters": args.iters, "wall_s": round(wall, 1),
        "improvement_of_means_pct": {r["prompt_set"]: r["improvement_of_means_pct"] for r in t1},
        "held_out_accuracy_all_sets": held.get("accuracy"),
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
