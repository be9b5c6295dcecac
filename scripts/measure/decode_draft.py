"""JPEG scale-on-decode (libjpeg DCT scaling via Pillow's ``draft``): what it saves and what it changes.

For a bundle, it writes large JPEGs made from the offline sample photos (each upscaled so that its
short side is ``--short`` pixels, quality 90; upscaled photos are smoother than camera photos, so
the score changes here are a lower bound for real high-resolution photos), then for each
``draft_factor`` (0 = full decode, open_clip's exact path) measures:

* decode + resize/crop time per image (one thread, best of ``--rounds``);
* score_color and drop of the runtime (fp32 by default) against draft_factor 0: largest and mean
  absolute difference, and decision agreement at thresholds set from the factor-0 run
  (tau_score = 50 % quantile of score_color, tau_drop = median drop: a cut through the middle of
  the data, where a change flips the most decisions).

    python scripts/measure/decode_draft.py BUNDLE --short 3024 --short 1000 --out decode_draft.json
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from foclip.outputs import atomic_write_json


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("bundle")
    ap.add_argument("--short", type=int, action="append", default=None, help="short side of the JPEGs (repeatable)")
    ap.add_argument("--factors", default="0,4,2,1", help="draft factors to compare (0 first)")
    ap.add_argument("--precision", default="fp32")
    ap.add_argument("--photos", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    from PIL import Image

    from foclip.runtime import Detector
    from foclip.runtime.decode import DecodeLimits, decode_item
    from foclip.samples import sample_arrays

    shorts = args.short or [3024, 1000]
    factors = [int(f) for f in args.factors.split(",")]
    with tempfile.TemporaryDirectory(prefix="foclip-draft-") as tmp:
        files = []
        for name, arr in sample_arrays(args.photos).items():
            img = Image.fromarray(arr)
            for s in shorts:
                w, h = img.size
                k = s / min(w, h)
                big = img.resize((round(w * k), round(h * k)), Image.BICUBIC)
                p = Path(tmp) / f"{name.split(':')[-1]}_{s}.jpg"
                big.save(p, quality=90)
                files.append(str(p))
        rows = {}
        ref = None
        for f in factors:
            limits = DecodeLimits(draft_factor=f)
            det = Detector.from_bundle(args.bundle, precision=args.precision, limits=limits, self_check=False)
            best = float("inf")
            for _ in range(args.rounds):
                t0 = time.perf_counter()
                for p in files:
                    decode_item(p, p, det.spec, limits)
                best = min(best, time.perf_counter() - t0)
            res = det.detect(files)
            score = np.array([r.score_color for r in res])
            drop = np.array([r.drop for r in res])
            if ref is None:
                ref = (score, drop, float(np.median(score)), float(np.median(drop)))
            s0, d0, ts, td = ref
            agree = float((((score >= ts) & (drop >= td)) == ((s0 >= ts) & (d0 >= td))).mean())
            rows[f] = {"decode_ms_per_image": 1000 * best / len(files),
                       "max_abs_score_diff": float(np.abs(score - s0).max()),
                       "mean_abs_score_diff": float(np.abs(score - s0).mean()),
                       "max_abs_drop_diff": float(np.abs(drop - d0).max()), "agreement": agree}
    base = rows[factors[0]]["decode_ms_per_image"]
    print(f"{len(files)} JPEGs ({args.photos} photos x short side {shorts}), bundle {args.bundle} ({args.precision}), "
          f"score scale 0..{det.score_scale:g}")
    print("| draft_factor | decode+resize ms/image | vs full decode | max abs score diff | mean abs score diff | "
          "max abs drop diff | decision agreement |")
    print("|---|---|---|---|---|---|---|")
    for f, r in rows.items():
        print(f"| {f} | {r['decode_ms_per_image']:.1f} | {base / r['decode_ms_per_image']:.2f}x | "
              f"{r['max_abs_score_diff']:.4f} | {r['mean_abs_score_diff']:.4f} | {r['max_abs_drop_diff']:.4f} | "
              f"{r['agreement']:.1%} |")
    if args.out:
        atomic_write_json(args.out, {"files": len(files), "shorts": shorts, "rows": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
