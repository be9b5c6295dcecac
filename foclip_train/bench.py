"""`foclip bench generate`: speed of the FoCLIP attack step against the bare model it drives.

Measured side by side in one run, alternating, median over rounds:

* bare: ``iters`` forward+backward passes of the image encoder on a (B, 3, S, S) batch (no loss,
  no optimiser, no checks) — the floor the attack cannot beat;
* attack: :func:`foclip_train.attack.foclip_attack` on the same B images at the model size (so the
  resize is a no-op): loss, SGD step and the best-iterate checks (step 0, every k, last);
* attack at native size: the same on the photos at their own resolutions (adds the resize).

Reported: image-iterations/s of each and the overhead of the attack over bare, in percent; the
checks' share is estimated from a forward-only pass. Torch is imported inside :func:`run` only.
"""

from __future__ import annotations

import argparse
import statistics
import time


def add_parser(bench_sub) -> None:
    """Register ``foclip bench generate``."""
    p = bench_sub.add_parser("generate", help="image-iterations/s of the FoCLIP step vs bare forward+backward")
    p.add_argument("--model", default="ViT-B-32", help="open_clip model name (default: %(default)s)")
    p.add_argument("--pretrained", default="random", help="tag, checkpoint file or random (default: %(default)s)")
    p.add_argument("--batch", type=int, default=4, help="images per step (default: %(default)s)")
    p.add_argument("--iters", type=int, default=10, help="steps per timed run (default: %(default)s)")
    p.add_argument("--check-every", type=int, default=10, help="best-iterate check interval k (default: %(default)s)")
    p.add_argument("--rounds", type=int, default=3, help="timed rounds, alternating (default: %(default)s)")
    p.add_argument("--threads", type=int, default=0, help="torch threads, 0 = torch's default (default: %(default)s)")
    p.add_argument("--device", default="cpu", help="cpu or cuda (default: %(default)s)")
    p.add_argument("--no-native", action="store_true", help="skip the native-resolution attack row")
    p.set_defaults(func=run)


def _photos(n: int) -> list:
    """n real photos (skimage, cycled) as uint8 HWC arrays; synthetic gradients if skimage is missing."""
    import numpy as np

    try:
        from skimage import data

        base = [getattr(data, k)() for k in ("astronaut", "chelsea", "coffee", "rocket")]
    except ImportError:  # pragma: no cover - dev extra missing
        yy, xx = np.mgrid[0:384, 0:512]
        base = [np.stack([(xx + 40 * i) % 256, (yy * 2) % 256, (xx + yy) % 256], -1).astype(np.uint8)
                for i in range(4)]
    return [base[i % len(base)] for i in range(n)]


def run(args: argparse.Namespace) -> int:
    """Run the benchmark and print the table; returns 0."""
    import numpy as np
    import torch
    from PIL import Image
    from rich.table import Table

    from foclip.cli.common import console, random_weights_notice
    from foclip.errors import InputError
    from foclip.models import ImageEncoder, load_clip
    from foclip.prompts import load_prompt_set
    from foclip.runtime.preprocess import resize_crop_pil
    from foclip_train.attack import AttackConfig, foclip_attack
    from foclip_train.text_bank import build_text_bank

    if args.batch < 1 or args.iters < 1 or args.rounds < 1:
        raise InputError("bench generate", "batch, iters and rounds must be >= 1", "positive integers")
    if args.threads:
        torch.set_num_threads(args.threads)
    loaded = load_clip(args.model, args.pretrained, device=args.device)
    random_weights_notice(loaded.pretrained)
    bank = build_text_bank(loaded, load_prompt_set("artistic")).embeddings
    encoder = ImageEncoder(loaded.model, loaded.preprocess).to(args.device)
    spec, s = loaded.preprocess, loaded.preprocess.image_size
    photos = _photos(args.batch)
    to_t = lambda a: torch.from_numpy(np.array(a)).permute(2, 0, 1).to(args.device)
    small = [to_t(np.asarray(resize_crop_pil(Image.fromarray(a), spec))) for a in photos]
    native = [to_t(a) for a in photos]
    cfg = AttackConfig(iters=args.iters, check_every=args.check_every)
    sync = torch.cuda.synchronize if args.device.startswith("cuda") else (lambda: None)

    def bare() -> float:
        x = torch.stack(small).float().div(255).requires_grad_(True)
        sync()
        t0 = time.perf_counter()
        for _ in range(args.iters):
            encoder(x).sum().backward()
            x.grad = None
        sync()
        return time.perf_counter() - t0

    def forward_only() -> float:
        x = torch.stack(small).float().div(255)
        sync()
        t0 = time.perf_counter()
        with torch.no_grad():
            encoder(x)
        sync()
        return time.perf_counter() - t0

    def attack(images) -> float:
        sync()
        t0 = time.perf_counter()
        foclip_attack(images, encoder, bank, cfg, s, spec.interpolation)
        sync()
        return time.perf_counter() - t0

    foclip_attack(small, encoder, bank, AttackConfig(iters=1), s)  # warm-up (allocator, kernels)
    bare()
    times: dict[str, list[float]] = {"bare": [], "attack": [], "native": [], "fwd": []}
    for _ in range(args.rounds):
        times["bare"].append(bare())
        times["attack"].append(attack(small))
        times["fwd"].append(forward_only())
        if not args.no_native:
            times["native"].append(attack(native))
    med = {k: statistics.median(v) for k, v in times.items() if v}
    ips = lambda t: args.batch * args.iters / t
    checks = len({0, args.iters} | set(range(args.check_every, args.iters + 1, args.check_every)))
    t = Table(title=f"foclip bench generate: {args.model} ({loaded.pretrained}), batch {args.batch}, "
                    f"{args.iters} iters, k={args.check_every}, {args.device}, {torch.get_num_threads()} threads, "
                    f"median of {args.rounds}")
    for col in ("path", "image-iters/s", "s per step", "vs bare"):
        t.add_column(col, justify="right" if col != "path" else "left")
    t.add_row(f"bare forward+backward ({s}x{s})", f"{ips(med['bare']):.2f}", f"{med['bare'] / args.iters:.3f}", "1.00x")
    t.add_row(f"attack step ({s}x{s})", f"{ips(med['attack']):.2f}", f"{med['attack'] / args.iters:.3f}",
              f"{med['attack'] / med['bare']:.2f}x")
    if "native" in med:
        sizes = ", ".join(f"{a.shape[1]}x{a.shape[0]}" for a in photos)
        t.add_row(f"attack step (native: {sizes})", f"{ips(med['native']):.2f}",
                  f"{med['native'] / args.iters:.3f}", f"{med['native'] / med['bare']:.2f}x")
    console.print(t)
    overhead = (med["attack"] / med["bare"] - 1) * 100
    check_share = checks * med["fwd"] / med["bare"] * 100
    console.print(f"overhead of the attack step over bare forward+backward: {overhead:+.1f} % "
                  f"(of which ~{check_share:.1f} % is {checks} best-iterate checks, one forward each; "
                  f"{checks}/{args.iters} checks here, ~1/k of a forward per step in long runs)", highlight=False)
    return 0
