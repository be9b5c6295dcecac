"""`foclip bench detect BUNDLE IMAGES...`: the runtime against PyTorch eager open_clip, in one process.

Rows, all on the same image files, each after one warm-up batch:

(a) PyTorch eager open_clip doing the same detection work (the baseline): PIL decode + open_clip's
    eval transform, colour and luma copies stacked, one ``ImageEncoder`` call per batch, scores
    with :func:`foclip.scoring.clipscore` against the bundle's prompts embedded by torch;
(b) runtime fp32, (c) runtime int8 (when the bundle has it), (d) runtime fp32 with cascade on
    clean-dominated traffic (tau_score set so that ``--clean-fraction`` of the images fall below it),
    (e) the fused detection graph when the bundle has one, and encoder-only rows (pre-decoded
    pixels) that give the bare encoder rate the end-to-end rows are compared against.

Printed per row: detections/s from files, ratio to (a), the share of decode/preprocess vs
encoder work (CPU seconds; the runtime decodes the next batch in threads while the encoder
runs), decision agreement with (a) and the largest score difference. Figures are printed, never
asserted. torch is imported only inside :func:`run_torch_baseline`.
"""

from __future__ import annotations

import argparse
import os
import re
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np


def add_parser(bench_sub: Any) -> None:
    """Register ``foclip bench detect``."""
    p = bench_sub.add_parser("detect", help="runtime detection vs PyTorch eager open_clip (one process)")
    p.add_argument("bundle", help="bundle folder written by `foclip export`")
    p.add_argument("images", nargs="*", help="image files, folders, globs or @lists (default: --samples)")
    p.add_argument("--samples", type=int, default=48,
                   help="without IMAGES: write this many sample photos (skimage/sklearn/matplotlib, "
                        "with crops and flips) to a temp folder (default 48)")
    p.add_argument("--batch", type=int, default=32, help="images per batch (default 32)")
    p.add_argument("--repeat", type=int, default=3, help="interleaved timed rounds; median reported (default 3)")
    p.add_argument("--threads", type=int, default=0, help="torch and ORT intra-op threads (0 = cores)")
    p.add_argument("--decode-workers", type=int, default=2, help="runtime decode threads (default 2)")
    p.add_argument("--clean-fraction", type=float, default=0.9,
                   help="cascade row: fraction of images below tau_score (default 0.9)")
    p.add_argument("--calibration", default=None, help="use these thresholds instead of bench-derived ones")
    p.add_argument("--checkpoint", default=None, help="weights for the baseline when the bundle's model "
                                                      "came from a checkpoint file")
    p.add_argument("--skip-torch", action="store_true", help="skip the PyTorch baseline")
    p.add_argument("--out", default=None, help="also write the figures as JSON here")
    p.set_defaults(func=run)


@dataclass
class Row:
    """One benchmark row."""

    name: str
    seconds: float
    n: int
    decode_s: float = 0.0
    encode_s: float = 0.0
    score_color: np.ndarray = field(default_factory=lambda: np.zeros(0))
    drop: np.ndarray = field(default_factory=lambda: np.zeros(0))
    gray_rows: int = 0
    note: str = ""

    @property
    def rate(self) -> float:
        return self.n / self.seconds if self.seconds > 0 else float("nan")


def _baseline_weights(pretrained: str, checkpoint: str | None) -> tuple[str, int]:
    m = re.fullmatch(r"random\(seed=(\d+)\)", pretrained)
    if m:
        return "random", int(m.group(1))
    if checkpoint:
        return checkpoint, 0
    if Path(pretrained).suffix in (".safetensors", ".pt", ".bin", ".pth"):
        from foclip.errors import InputError

        raise InputError("baseline weights", f"the bundle was exported from checkpoint {pretrained!r}",
                         "--checkpoint PATH to that file, or --skip-torch")
    return pretrained, 0


def torch_baseline(bundle: Any, paths: list[str], batch: int, threads: int, prompts: tuple[str, ...],
                   checkpoint: str | None) -> Callable[[], Row]:
    """Row (a): PyTorch eager open_clip doing the same detection on the same files.

    Args:
        bundle: the opened :class:`foclip.runtime.Bundle`.
        paths: image files.
        batch: images per batch.
        threads: torch intra-op threads.
        prompts: the text bank's prompts (embedded here with torch).
        checkpoint: weights file when the bundle came from one.

    Returns:
        A function that runs one timed pass (after this call's warm-up) and returns the row.
    """
    import open_clip
    import torch
    from PIL import Image, ImageOps

    from foclip.models import ImageEncoder, TextEncoder, load_clip
    from foclip.scoring import LUMA, clipscore

    torch.set_num_threads(threads)
    m = bundle.manifest
    pretrained, seed = _baseline_weights(m.pretrained, checkpoint)
    clip = load_clip(m.model_name, pretrained, seed=seed)
    image_encoder = ImageEncoder(clip.model, clip.preprocess).eval()
    with torch.no_grad():
        text = TextEncoder(clip.model)(clip.tokenizer(list(prompts))).numpy()
    spec = clip.preprocess
    transform = open_clip.image_transform(spec.image_size, is_train=False, mean=(0.0, 0.0, 0.0),
                                          std=(1.0, 1.0, 1.0), interpolation=spec.interpolation)
    luma = torch.tensor(LUMA).view(1, 3, 1, 1)
    scale = bundle.score_scale

    def one_batch(chunk: list[str]) -> tuple[np.ndarray, np.ndarray, float, float]:
        t0 = time.perf_counter()
        tensors = []
        for p in chunk:
            with Image.open(p) as im:
                tensors.append(transform(ImageOps.exif_transpose(im)))
        x = torch.stack(tensors)
        gray = (x * luma).sum(dim=1, keepdim=True).expand(-1, 3, -1, -1)
        t1 = time.perf_counter()
        with torch.inference_mode():
            emb = image_encoder(torch.cat([x, gray])).numpy()
        t2 = time.perf_counter()
        s = clipscore(emb, text, scale)
        return s[: len(chunk)], s[len(chunk):], t1 - t0, t2 - t1

    from foclip.scoring import drop

    def one_pass() -> Row:
        torch.set_num_threads(threads)
        colors, grays, dec, enc = [], [], 0.0, 0.0
        t0 = time.perf_counter()
        for i in range(0, len(paths), batch):
            c, g, d, e = one_batch(paths[i:i + batch])
            colors.append(c)
            grays.append(g)
            dec += d
            enc += e
        seconds = time.perf_counter() - t0
        color, gray = np.concatenate(colors), np.concatenate(grays)
        return Row("(a) PyTorch eager open_clip", seconds, len(paths), dec, enc, color, drop(color, gray),
                   2 * len(paths), f"torch {torch.__version__}, {threads} threads")

    one_batch(paths[:batch])  # warm-up
    return one_pass


def runtime_row(name: str, bundle_dir: str, paths: list[str], **kwargs: Any) -> Callable[[], Row]:
    """One runtime row: a Detector on the files, after a warm-up batch.

    Args:
        name: row label.
        bundle_dir: the bundle.
        paths: image files.
        **kwargs: :meth:`foclip.runtime.Detector.from_bundle` arguments.

    Returns:
        A function that runs one timed pass and returns the row.
    """
    from foclip.runtime import Detector

    det = Detector.from_bundle(bundle_dir, **kwargs)
    det.detect(paths[: det.config.batch_size])  # warm-up

    def one_pass() -> Row:
        det.reset_stats()
        t0 = time.perf_counter()
        results = det.detect(paths)
        seconds = time.perf_counter() - t0
        st = det.stats
        nan = float("nan")
        color = np.array([r.score_color if r.ok else nan for r in results], dtype=np.float64)
        drop = np.array([r.drop if r.ok and r.drop is not None else nan for r in results], dtype=np.float64)
        return Row(name, seconds, len(paths), st["decode_s"] + st["prepare_s"], st["encode_s"] + st["score_s"],
                   color, drop, int(st["gray_rows"]),
                   f"{det.config.backend}, {det.info()['graph']}, tau_score {det.config.tau_score:.4g}")

    return one_pass


def encoder_only_row(name: str, bundle_dir: str, paths: list[str], **kwargs: Any) -> Callable[[], Row]:
    """Bare encoder rate: the same batches, pre-decoded, through the image encoder only.

    Args:
        name: row label.
        bundle_dir: the bundle.
        paths: image files.
        **kwargs: :meth:`foclip.runtime.Detector.from_bundle` arguments.

    Returns:
        A function that runs one timed pass and returns the row (no scores).
    """
    from foclip.runtime import Detector
    from foclip.runtime.decode import decode_item
    from foclip.scoring import to_gray

    det = Detector.from_bundle(bundle_dir, **kwargs)
    u8 = np.stack([decode_item(p, p, det.spec, det.config.limits) for p in paths])
    x = u8.transpose(0, 3, 1, 2).astype(np.float32) / np.float32(255.0)
    bs = det.config.batch_size
    batches = [np.concatenate([x[i:i + bs], to_gray(x[i:i + bs], channel_axis=1)])
               for i in range(0, len(paths), bs)]
    det._encode(batches[0])  # warm-up

    def one_pass() -> Row:
        t0 = time.perf_counter()
        for b in batches:
            det._encode(b)
        seconds = time.perf_counter() - t0
        return Row(name, seconds, len(paths), 0.0, seconds, note="pre-decoded pixels, 2N rows per call")

    return one_pass


def _agreement(row: Row, ref: Row, tau_score: float, tau_drop: float) -> tuple[float, float, float]:
    def decide(r: Row) -> np.ndarray:
        return (r.score_color >= tau_score) & (np.nan_to_num(r.drop, nan=-np.inf) >= tau_drop)

    gated = float((decide(row) == decide(ref)).mean())
    med = float(np.nanmedian(ref.drop))
    drop_only = float(((np.nan_to_num(row.drop, nan=-np.inf) >= med) == (ref.drop >= med)).mean())
    diff = float(np.nanmax(np.abs(row.score_color - ref.score_color)))
    return gated, drop_only, diff


def run(args: argparse.Namespace) -> int:
    """Run every row, print the table (and write JSON with --out)."""
    from rich.table import Table

    from foclip.cli.common import console, err_console, random_weights_notice
    from foclip.errors import InputError
    from foclip.manifest import atomic_write_json
    from foclip.runtime import Calibration, open_bundle
    from foclip.runtime.inputs import expand_inputs

    bundle = open_bundle(args.bundle)
    random_weights_notice(bundle.manifest.pretrained)
    tmp = None
    if args.images:
        paths = list(expand_inputs(args.images))
    else:
        from foclip.benchmarks.images import write_sample_images

        tmp = tempfile.TemporaryDirectory(prefix="foclip-bench-")
        paths = [str(p) for p in write_sample_images(tmp.name, args.samples)]
    if not paths:
        raise InputError("images", "matched no files", "image files, folders or globs, or --samples N")
    threads = args.threads or os.cpu_count() or 1
    bank = bundle.text_bank(bundle.default_bank)
    common = {"batch_size": args.batch, "threads": threads, "decode_workers": args.decode_workers,
                  "prompts": bank.name}
    err_console.print(f"bench detect: {len(paths)} images, batch {args.batch}, {threads} threads, "
                      f"{args.repeat} interleaved rounds, model {bundle.manifest.model_name} "
                      f"({bundle.manifest.pretrained})", highlight=False)
    runners: list[Callable[[], Row]] = []
    if not args.skip_torch:
        runners.append(torch_baseline(bundle, paths, args.batch, threads, bank.prompts, args.checkpoint))
    runners.append(runtime_row("(b) runtime fp32", args.bundle, paths, precision="fp32", graph="encoder", **common))
    first = runners[0]()  # thresholds come from the first row's scores
    if args.calibration:
        cal = Calibration.load(args.calibration)
        tau_score, tau_drop, how = cal.tau_score, cal.tau_drop, f"from {args.calibration}"
    else:
        tau_score = float(np.nanquantile(first.score_color, args.clean_fraction))
        tau_drop = float(np.nanmedian(first.drop))
        how = (f"bench-derived: tau_score = {args.clean_fraction:.0%} quantile of score_color of the first row, "
               "tau_drop = its median drop")
    precisions = bundle.manifest.image_encoders
    gate = {"cascade": True, "tau_score": tau_score, "tau_drop": tau_drop}
    if "int8" in precisions:
        runners.append(runtime_row("(c) runtime int8", args.bundle, paths, precision="int8", graph="encoder",
                                   **common))
    runners.append(runtime_row("(d) runtime fp32 + cascade", args.bundle, paths, precision="fp32",
                               graph="encoder", **gate, **common))
    if "int8" in precisions:
        runners.append(runtime_row("(d') runtime int8 + cascade", args.bundle, paths, precision="int8",
                                   graph="encoder", **gate, **common))
    if "fp32" in bundle.manifest.detect_graphs:
        runners.append(runtime_row("(e) fused detect graph fp32", args.bundle, paths, precision="fp32",
                                   graph="fused", **common))
    for p in ("fp32", "int8"):
        if p in precisions:
            runners.append(encoder_only_row(f"encoder only {p}", args.bundle, paths, precision=p, graph="encoder",
                                            **common))
    # Interleaved rounds: every row once per round, so a change in machine load hits all rows alike;
    # each row reports its median-time pass.
    passes: list[list[Row]] = [[] for _ in runners]
    for _ in range(args.repeat):
        for k, runner in enumerate(runners):
            passes[k].append(runner())
    rows = [sorted(ps, key=lambda r: r.seconds)[len(ps) // 2] for ps in passes]
    ref = rows[0]
    enc = {r.name.split()[-1]: r for r in rows if r.name.startswith("encoder only")}

    table = Table(title=f"foclip bench detect — {bundle.manifest.model_name} ({bundle.manifest.pretrained}), "
                        f"{len(paths)} images, batch {args.batch}, {threads} threads")
    for col in ("row", "det/s", "vs (a)", "decode/enc", "gray", "agree", "agree drop", "max|Δscore|"):
        table.add_column(col, justify="right" if col != "row" else "left")
    figures = []
    for r in rows:
        work = r.decode_s + r.encode_s
        share = f"{r.decode_s / work:.0%} / {r.encode_s / work:.0%}" if work > 0 else "-"
        if r.score_color.size:
            gated, drop_only, diff = _agreement(r, ref, tau_score, tau_drop)
            if np.isnan(r.drop).any():  # cascade rows have no drop where the gate skipped the gray pass
                drop_only = None
            agree = (f"{gated:.1%}", "-" if drop_only is None else f"{drop_only:.1%}", f"{diff:.1e}")
        else:
            gated = drop_only = diff = None
            agree = ("-", "-", "-")
        table.add_row(r.name, f"{r.rate:.2f}", f"{r.rate / ref.rate:.2f}x", share,
                      f"{r.gray_rows}/{r.n}" if r.score_color.size else "-", *agree)
        figures.append({"row": r.name, "detections_per_s": r.rate, "ratio_to_first": r.rate / ref.rate,
                        "seconds": r.seconds, "n": r.n, "decode_prep_s": r.decode_s, "encoder_s": r.encode_s,
                        "gray_rows": r.gray_rows, "agreement_gated": gated, "agreement_drop_median": drop_only,
                        "max_abs_score_diff": diff, "note": r.note})
    from rich.console import Console

    Console(width=max(console.width, 132)).print(table)
    console.print("det/s: detections per second from files; decode/enc: share of CPU seconds in decode + "
                  "preprocess vs encoder + scoring; gray: gray passes run; agree: same tampered decision as "
                  "the first row (rule with the thresholds below); agree drop: same side of the first row's "
                  "median drop; max|Δscore|: largest score_color difference to the first row "
                  f"(0..{bundle.score_scale:g} scale).", highlight=False)
    for p, e in enc.items():
        e2e = next((r for r in rows if r.name.startswith("(b)" if p == "fp32" else "(c)")), None)
        if e2e is not None:
            console.print(f"{p}: end-to-end from files {e2e.rate:.2f}/s vs bare encoder {e.rate:.2f}/s "
                          f"({e2e.seconds / e.seconds - 1:+.1%} time)", highlight=False)
    console.print(f"thresholds {how}: tau_score {tau_score:.4g} (0..{bundle.score_scale:g}), "
                  f"tau_drop {tau_drop:.4g}; first row = {ref.name}", highlight=False)
    if args.out:
        atomic_write_json(args.out, {"model_name": bundle.manifest.model_name,
                                     "pretrained": bundle.manifest.pretrained, "images": len(paths),
                                     "batch": args.batch, "threads": threads, "tau_score": tau_score,
                                     "tau_drop": tau_drop, "score_scale": bundle.score_scale, "rows": figures})
    if tmp is not None:
        tmp.cleanup()
    return 0
