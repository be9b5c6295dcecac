"""`foclip bench generate`: speed of the FoCLIP attack step against the bare model it drives.

Measured side by side in one run, alternating, median over rounds:

* bare: ``iters`` forward+backward passes of the image encoder on a (B, 3, S, S) batch (no loss,
  no optimiser, no checks) — the floor the attack cannot beat;
* attack: :func:`foclip_train.attack.foclip_attack` on the same B images at the model size (so the
  resize is a no-op): loss, SGD step and the best-iterate checks (step 0, every k, last);
* attack at native size: the same on the photos at their own resolutions (adds the resize);
* with ``compile``: the attack at the model size with the encoder wrapped in ``torch.compile``
  (inductor); with ``channels_last``: the encoder's weights in channels-last memory format; with
  either, an unchanged copy of the encoder as the control (each variant works on its own copy).
  Each such row also reports how far its result is from eager's on the same images: the largest
  8-bit pixel difference of the returned images and the largest CLIPscore difference.

Reported: image-iterations/s of each and the overhead of the attack over bare, in percent; the
checks' share is estimated from a forward-only pass. Torch is imported inside
:func:`measure_generate` only. This module measures; :mod:`foclip.cli.bench` draws the table.
"""

from __future__ import annotations

import copy
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

from foclip.benchmarks.cpu import cpu_info
from foclip.errors import InputError
from foclip.prompts import load_prompt_set
from foclip.runtime.preprocess import resize_crop_pil
from foclip.samples import sample_arrays


def _photos(n: int) -> list:
    """n real sample photos (cycled) as uint8 HWC arrays."""

    base = list(sample_arrays(4).values())
    return [base[i % len(base)] for i in range(n)]


@dataclass(frozen=True)
class BenchGenerateConfig:
    """What ``foclip bench generate`` measures (see the module docstring)."""

    model: str = "ViT-B-32"
    pretrained: str = "random"
    batch: int = 4
    iters: int = 10
    check_every: int = 10
    rounds: int = 3
    threads: int = 0
    device: str = "cpu"
    native: bool = True
    compile: bool = False
    channels_last: bool = False


def measure_generate(args: BenchGenerateConfig, on_loaded: Callable[[str], None] | None = None,
                     on_estimate: Callable[[float], None] | None = None) -> dict[str, Any]:
    """Time bare forward+backward, the attack step and (optionally) the native-size attack.

    Args:
        args: what to measure.
        on_loaded: called with the loaded model's pretrained id (the CLI prints its notes).
        on_estimate: called once after the warm-up, before the timed rounds, with their projected
            seconds (from the warm-up's own step times; a ceiling, since warm-up steps are slower).

    Returns:
        Figures: ``rows`` (path, image-iterations/s, s per step, ratio to bare), ``overhead_pct``,
        ``check_share_pct``, ``checks``, ``threads``, ``pretrained``.

    Raises:
        InputError: batch, iters or rounds below 1.
    """
    import torch

    from foclip.models import ImageEncoder, load_clip
    from foclip_train.attack import AttackConfig, foclip_attack
    from foclip_train.text_bank import build_text_bank

    if args.batch < 1 or args.iters < 1 or args.rounds < 1:
        raise InputError("bench generate", "batch, iters and rounds must be >= 1", "positive integers")
    if args.threads:
        torch.set_num_threads(args.threads)
    loaded = load_clip(args.model, args.pretrained, device=args.device)
    if on_loaded is not None:
        on_loaded(loaded.pretrained)
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

    def attack(images, enc=encoder) -> float:
        sync()
        t0 = time.perf_counter()
        foclip_attack(images, enc, bank, cfg, s, spec.interpolation)
        sync()
        return time.perf_counter() - t0

    variants = {}  # name -> (encoder, seconds of its first short attack: compilation for inductor)
    for k, enc in _variants(loaded, args).items():
        t0 = time.perf_counter()
        foclip_attack(small, enc, bank, AttackConfig(iters=2, check_every=1), s)  # every graph the loop uses
        variants[k] = (enc, time.perf_counter() - t0)
    t0 = time.perf_counter()
    foclip_attack(small, encoder, bank, AttackConfig(iters=1), s)  # warm-up (allocator, kernels)
    attack_step = time.perf_counter() - t0
    bare_run = bare()
    if on_estimate is not None:  # each round: bare, forward, attack (+ native, + each variant); then the checks
        attacks = 1 + bool(args.native) + len(variants)
        per_round = bare_run * (1 + 1 / args.iters) + attack_step * args.iters * attacks
        on_estimate(per_round * args.rounds + (attack_step * args.iters * attacks if variants else 0.0))
    times: dict[str, list[float]] = {"bare": [], "attack": [], "native": [], "fwd": [], **{k: [] for k in variants}}
    for _ in range(args.rounds):
        times["bare"].append(bare())
        times["attack"].append(attack(small))
        times["fwd"].append(forward_only())
        if args.native:
            times["native"].append(attack(native))
        for k, (enc, _) in variants.items():
            times[k].append(attack(small, enc))
    med = {k: statistics.median(v) for k, v in times.items() if v}
    ips = lambda t: args.batch * args.iters / t
    checks = len({0, args.iters} | set(range(args.check_every, args.iters + 1, args.check_every)))
    rows = [(f"bare forward+backward ({s}x{s})", ips(med["bare"]), med["bare"] / args.iters, 1.0),
            (f"attack step ({s}x{s})", ips(med["attack"]), med["attack"] / args.iters, med["attack"] / med["bare"])]
    if "native" in med:
        sizes = ", ".join(f"{a.shape[1]}x{a.shape[0]}" for a in photos)
        rows.append((f"attack step (native: {sizes})", ips(med["native"]), med["native"] / args.iters,
                     med["native"] / med["bare"]))
    out_rows = [{"path": p, "image_iters_per_s": r, "s_per_step": t, "vs_bare": v} for p, r, t, v in rows]
    if variants:
        ref = foclip_attack(small, encoder, bank, cfg, s, spec.interpolation)
        for k, (enc, build_s) in variants.items():
            got = foclip_attack(small, enc, bank, cfg, s, spec.interpolation)
            px = max(int((a.int() - b.int()).abs().max()) for a, b in zip(got.images, ref.images, strict=True))
            sc = max(abs(a - b) for a, b in zip(got.best_score, ref.best_score, strict=True))
            out_rows.append({"path": f"attack step, {k} ({s}x{s})", "image_iters_per_s": ips(med[k]),
                             "s_per_step": med[k] / args.iters, "vs_bare": med[k] / med["bare"],
                             "vs_eager_attack": med["attack"] / med[k], "max_pixel_diff_vs_eager": px,
                             "max_score_diff_vs_eager": sc, "first_call_s": build_s})
    return {"rows": out_rows,
            "overhead_pct": (med["attack"] / med["bare"] - 1) * 100,
            "check_share_pct": checks * med["fwd"] / med["bare"] * 100, "checks": checks,
            "threads": torch.get_num_threads(), "pretrained": loaded.pretrained, "cpu": cpu_info()}


def _variants(loaded: Any, args: BenchGenerateConfig) -> dict[str, Any]:
    """Encoders to time against eager: ``torch.compile`` (inductor) and/or channels-last weights.

    Each wraps a separate copy of the model, so the eager rows keep theirs; a plain copy ("eager
    copy") runs too, as the control for what copying alone changes.
    """

    import torch

    from foclip.models import ImageEncoder

    out: dict[str, Any] = {}
    if args.channels_last or args.compile:
        # The control: a plain copy, so that a gain of the rows below is not the copy's fresh memory.
        out["eager copy"] = ImageEncoder(copy.deepcopy(loaded.model), loaded.preprocess).to(args.device).eval()
    if args.channels_last:
        model = copy.deepcopy(loaded.model).to(memory_format=torch.channels_last)
        out["channels-last"] = ImageEncoder(model, loaded.preprocess).to(args.device).eval()
    if args.compile:
        enc = ImageEncoder(copy.deepcopy(loaded.model), loaded.preprocess).to(args.device).eval()
        out["torch.compile (inductor)"] = torch.compile(enc, backend="inductor")
    return out
