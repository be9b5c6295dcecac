"""alpha/beta sweep of the FoCLIP loss on real photos (the table in docs/generate.md).

    python scripts/measure/alpha_beta_sweep.py --model foclip-tiny --iters 100
    python scripts/measure/alpha_beta_sweep.py --model ViT-B-32 --iters 30 --alphas 0 1 10 --betas 0 10

Prints one markdown row per (alpha, beta). Scores are torch-side (8-bit best iterate, per-pair
clamp, 0..w); with ``--pretrained random`` they describe the optimiser's mechanics, not CLIP.
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import time


def _photos(resize: int = 0) -> dict:
    """The four skimage photos as uint8 (3, H, W) tensors; ``resize`` > 0 squashes them to resize x resize."""
    import numpy as np
    import torch
    from PIL import Image

    from foclip.samples import sample_arrays, short_name

    out = {}
    for key, arr in sample_arrays(4).items():
        n = short_name(key)
        if resize:
            arr = np.asarray(Image.fromarray(arr).resize((resize, resize), Image.BICUBIC))
        out[n] = torch.from_numpy(arr.copy()).permute(2, 0, 1).contiguous()
    return out


def sweep_row(images: list, encoder, bank, spec, alpha: float, beta: float, iters: int, lr: float) -> dict:
    """Run one configuration on all images and measure it.

    Returns:
        Means over the images of start/best score, the prompt-wise std of the pair scores at the
        best iterate, the gray drop of the best iterate, the raw iterate's pixel guard, and timing.
    """
    import numpy as np
    import torch

    from foclip.scoring import drop, to_gray
    from foclip_train.attack import AttackConfig, clipscore_torch, embed_images, foclip_attack

    cfg = AttackConfig(iters=iters, lr=lr, alpha=alpha, beta=beta)
    t0 = time.perf_counter()
    res = foclip_attack(images, encoder, bank, cfg, spec.image_size, spec.interpolation)
    wall = time.perf_counter() - t0
    adv = [(img.float() / 255).unsqueeze(0) for img in res.images]
    gray = [torch.from_numpy(to_gray(a.numpy(), channel_axis=1)) for a in adv]
    with torch.no_grad():
        emb = embed_images(adv, encoder, spec.image_size, spec.interpolation)
        emb_gray = embed_images(gray, encoder, spec.image_size, spec.interpolation)
        pair = cfg.score_scale * (emb @ bank.T).clamp_min(0)
        s_gray = clipscore_torch(emb_gray, bank, cfg.score_scale)
    impr = [(b - s) / s * 100 for b, s in zip(res.best_score, res.start_score) if s > 0]
    return {
        "alpha": alpha, "beta": beta,
        "score_orig": statistics.fmean(res.start_score), "score_adv": statistics.fmean(res.best_score),
        "median_impr": statistics.median(impr) if impr else float("nan"),
        "pair_std": float(pair.std(dim=1, correction=0).mean()),
        "drop_adv": float(np.mean(drop(np.array(res.best_score), s_gray.numpy()))),
        "guard": statistics.fmean(res.final_guard),
        "best_step": statistics.fmean(res.best_step),
        "zero": sum(1 for b in res.best_score if b == 0),
        "wall_s": wall,
    }


def main(argv: list[str] | None = None) -> None:
    """Parse arguments, run the grid, print the markdown table."""
    import torch

    from foclip.models import ImageEncoder, load_clip
    from foclip.prompts import load_prompt_set
    from foclip_train.text_bank import build_text_bank

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="foclip-tiny")
    ap.add_argument("--pretrained", default="random")
    ap.add_argument("--prompts", default="artistic")
    ap.add_argument("--iters", type=int, default=100)
    ap.add_argument("--lr", type=float, default=7.0)
    ap.add_argument("--alphas", type=float, nargs="+", default=[0.0, 0.1, 1.0, 10.0])
    ap.add_argument("--betas", type=float, nargs="+", default=[0.0, 0.1, 1.0, 10.0, 100.0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--resize", type=int, default=0, help="squash the photos to N x N first (0: native size)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    loaded = load_clip(args.model, args.pretrained)
    bank = build_text_bank(loaded, load_prompt_set(args.prompts)).embeddings
    encoder = ImageEncoder(loaded.model, loaded.preprocess)
    images = list(_photos(args.resize).values())
    print(f"# {args.model} ({loaded.pretrained}; random weights: {loaded.random_init}), prompts {args.prompts}, "
          f"{args.iters} iters, lr {args.lr}, 4 skimage photos at "
          f"{f'{args.resize}x{args.resize}' if args.resize else 'native size'}; scores 0..100 per-pair clamp")
    print("| alpha | beta | mean S_orig | mean S_adv | median impr. % | prompt std of pair score | "
          "drop_adv | raw guard | mean best_step | S_adv=0 | wall s |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for alpha, beta in itertools.product(args.alphas, args.betas):
        r = sweep_row(images, encoder, bank, loaded.preprocess, alpha, beta, args.iters, args.lr)
        print(f"| {alpha:g} | {beta:g} | {r['score_orig']:.3f} | {r['score_adv']:.3f} | {r['median_impr']:.0f} | "
              f"{r['pair_std']:.3f} | {r['drop_adv']:.3f} | {r['guard']:.2e} | {r['best_step']:.0f} | "
              f"{r['zero']} | {r['wall_s']:.1f} |", flush=True)


if __name__ == "__main__":
    main()
