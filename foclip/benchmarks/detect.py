"""The detection benchmark (``foclip bench detect``): the runtime against PyTorch eager open_clip.

Rows, all on the same image files, each after one warm-up batch:

(a) PyTorch eager open_clip doing the same detection work (the baseline): PIL decode + open_clip's
    eval transform, colour and luma copies stacked, one ``ImageEncoder`` call per batch, scores
    with :func:`foclip.scoring.clipscore` against the bundle's prompts embedded by torch;
(b) runtime fp32, (c) runtime int8 (when the bundle has it), (d) runtime fp32 with cascade on
    clean-dominated traffic (tau_score set so that ``--clean-fraction`` of the images fall below it),
    (e) the fused detection graph when the bundle has one, (f) multi-probe detection (the
    configured colour-space probes in the same encoder call), and encoder-only rows (pre-decoded
    pixels) that give the bare encoder rate the end-to-end rows are compared against.

Printed per row: detections/s from files, ratio to (a), the share of decode/preprocess vs
encoder work (CPU seconds; the runtime decodes the next batch in threads while the encoder
runs), decision agreement with (a) and the largest score difference. Figures are printed, never
asserted. torch is imported only inside :func:`torch_baseline`. This module computes; the CLI
(:mod:`foclip.cli.bench`) parses options and draws the table.
"""

from __future__ import annotations

import os
import re
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageOps

from foclip.benchmarks.cpu import cpu_info
from foclip.benchmarks.images import write_sample_images
from foclip.errors import InputError
from foclip.manifest import read_manifest
from foclip.runtime import Calibration, Detector, open_bundle
from foclip.runtime.decode import decode_item
from foclip.runtime.inputs import expand_inputs
from foclip.runtime.parity import probe_stack
from foclip.scoring import LUMA, clipscore, drop


@dataclass(frozen=True)
class BenchDetectConfig:
    """What ``foclip bench detect`` measures.

    Attributes:
        bundle: bundle folder.
        images: image files, folders, globs or @lists; empty -> ``samples`` sample photos.
        samples: how many sample photos to write when ``images`` is empty.
        batch: images per batch.
        repeat: interleaved timed rounds (the median pass of each row is reported).
        threads: torch and ORT intra-op threads (0 = cores).
        decode_workers: runtime decode threads.
        clean_fraction: cascade rows: fraction of images below tau_score.
        calibration: thresholds file instead of bench-derived ones.
        checkpoint: baseline weights when the bundle came from a checkpoint file.
        skip_torch: leave out the PyTorch baseline.
        probes: colour-space probes of the multi-probe row (empty: no such row).
        compare: more bundles of the same model and weights whose int8 graphs get rows too.
    """

    bundle: str
    images: tuple[str, ...] = ()
    samples: int = 48
    batch: int = 32
    repeat: int = 3
    threads: int = 0
    decode_workers: int = 2
    clean_fraction: float = 0.9
    calibration: str | None = None
    checkpoint: str | None = None
    skip_torch: bool = False
    probes: tuple[str, ...] = ("gray", "hue180", "swap-rb")
    compare: tuple[str, ...] = ()


@dataclass
class BenchDetectResult:
    """Rows, their figures and how the thresholds were set."""

    model_name: str
    pretrained: str
    images: int
    batch: int
    threads: int
    tau_score: float
    tau_drop: float
    thresholds: str
    score_scale: float
    rows: list[Row]
    figures: list[dict[str, Any]]
    end_to_end: list[str]
    cpu: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready figures."""
        return {"cpu": self.cpu, "model_name": self.model_name, "pretrained": self.pretrained, "images": self.images,
                "batch": self.batch, "threads": self.threads, "tau_score": self.tau_score,
                "tau_drop": self.tau_drop, "score_scale": self.score_scale, "rows": self.figures}


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

    from foclip.models import ImageEncoder, TextEncoder, load_clip

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
        drop = np.array([r.statistic if r.ok and r.statistic is not None else nan for r in results],
                        dtype=np.float64)  # what the row decides on: probe_drop with several probes
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

    det = Detector.from_bundle(bundle_dir, **kwargs)
    u8 = np.stack([decode_item(p, p, det.spec, det.config.limits) for p in paths])
    bs = det.config.batch_size
    batches = [probe_stack(u8[i:i + bs], det.config.probes) for i in range(0, len(paths), bs)]
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


def _int8_bundles(bundle: Any, compare: tuple[str, ...]) -> list[tuple[str, str]]:
    """The bundles whose int8 image graph gets rows: ``[(folder, "[method]"), ...]``.

    Compare bundles are only read here (their manifest); each row's Detector opens and verifies
    its bundle anyway, so hashing hundreds of MB here as well would be done twice.

    Raises:
        InputError: a compare bundle holds another model, other weights or no int8 graph, or two
            bundles carry the same int8 method.
    """

    out: list[tuple[str, str]] = []
    m0 = bundle.manifest
    for folder, m in ((str(bundle.path), m0), *((c, read_manifest(c)) for c in compare)):
        where = f"compare bundle {folder!r}"
        if (m.model_name, m.pretrained) != (m0.model_name, m0.pretrained):
            raise InputError(where, f"holds {m.model_name} ({m.pretrained})",
                             f"a bundle of {m0.model_name} ({m0.pretrained}), like the first")
        if "int8" not in m.image_encoders:
            if m is m0:
                continue
            raise InputError(where, "has no int8 image graph", "a bundle exported with --precision ...,int8")
        how = "[" + str(m.image_encoders["int8"].quantization.get("method", "?")) + "]"
        if any(h == how for _, h in out):
            raise InputError(where, f"repeats int8 method {how}", "bundles with different --int8-method")
        out.append((folder, how))
    return out


def run_bench_detect(cfg: BenchDetectConfig, log: Callable[[str], None] | None = None) -> BenchDetectResult:
    """Run every row in interleaved rounds and return the figures.

    Args:
        cfg: what to measure.
        log: receives progress lines.

    Returns:
        The result (rows in order; the first is the baseline the ratios refer to).

    Raises:
        InputError: no images.
    """

    log = log or (lambda _: None)
    bundle = open_bundle(cfg.bundle)
    tmp = None
    if cfg.images:
        paths = list(expand_inputs(list(cfg.images)))
    else:
        tmp = tempfile.TemporaryDirectory(prefix="foclip-bench-")
        paths = [str(p) for p in write_sample_images(tmp.name, cfg.samples)]
    if not paths:
        raise InputError("images", "matched no files", "image files, folders or globs, or --samples N")
    threads = cfg.threads or os.cpu_count() or 1
    bank = bundle.text_bank(bundle.default_bank)
    common = {"batch_size": cfg.batch, "threads": threads, "decode_workers": cfg.decode_workers,
              "prompts": bank.name}
    log(f"bench detect: {len(paths)} images, batch {cfg.batch}, {threads} threads, {cfg.repeat} interleaved "
        f"rounds, model {bundle.manifest.model_name} ({bundle.manifest.pretrained})")
    runners: list[Callable[[], Row]] = []
    if not cfg.skip_torch:
        runners.append(torch_baseline(bundle, paths, cfg.batch, threads, bank.prompts, cfg.checkpoint))
    runners.append(runtime_row("(b) runtime fp32", cfg.bundle, paths, precision="fp32", graph="encoder", **common))
    first = runners[0]()  # thresholds come from the first row's scores
    if cfg.calibration:
        cal = Calibration.load(cfg.calibration)
        tau_score, tau_drop, how = cal.tau_score, cal.tau_drop, f"from {cfg.calibration}"
    else:
        tau_score = float(np.nanquantile(first.score_color, cfg.clean_fraction))
        tau_drop = float(np.nanmedian(first.drop))
        how = (f"bench-derived: tau_score = {cfg.clean_fraction:.0%} quantile of score_color of the first row, "
               "tau_drop = its median drop")
    gate = {"cascade": True, "tau_score": tau_score, "tau_drop": tau_drop}
    int8_bundles = _int8_bundles(bundle, cfg.compare)  # (bundle dir, method) with an int8 image graph
    for b, how in int8_bundles:
        runners.append(runtime_row(f"(c) runtime int8 {how}", b, paths, precision="int8", graph="encoder",
                                   **common))
    runners.append(runtime_row("(d) runtime fp32 + cascade", cfg.bundle, paths, precision="fp32",
                               graph="encoder", **gate, **common))
    for b, how in int8_bundles:
        runners.append(runtime_row(f"(d') runtime int8 {how} + cascade", b, paths, precision="int8",
                                   graph="encoder", **gate, **common))
    if "fp32" in bundle.manifest.detect_graphs:
        runners.append(runtime_row("(e) fused detect graph fp32", cfg.bundle, paths, precision="fp32",
                                   graph="fused", **common))
    if cfg.probes and tuple(cfg.probes) != ("gray",):
        runners.append(runtime_row(f"(f) multi-probe fp32 ({','.join(cfg.probes)})", cfg.bundle, paths,
                                   precision="fp32", graph="encoder", probes=tuple(cfg.probes), **common))
    runners.append(encoder_only_row("encoder only fp32", cfg.bundle, paths, precision="fp32", graph="encoder",
                                    **common))
    for b, how in int8_bundles:
        runners.append(encoder_only_row(f"encoder only int8 {how}", b, paths, precision="int8", graph="encoder",
                                        **common))
    # Interleaved rounds: every row once per round, so a change in machine load hits all rows alike;
    # each row reports its median-time pass.
    passes: list[list[Row]] = [[] for _ in runners]
    for k in range(cfg.repeat):
        log(f"round {k + 1}/{cfg.repeat}")
        for i, runner in enumerate(runners):
            passes[i].append(runner())
    rows = [sorted(ps, key=lambda r: r.seconds)[len(ps) // 2] for ps in passes]
    ref = rows[0]
    figures = []
    for r in rows:
        gated = drop_only = diff = None
        if r.score_color.size:
            gated, drop_only, diff = _agreement(r, ref, tau_score, tau_drop)
            if np.isnan(r.drop).any():  # cascade rows have no drop where the gate skipped the gray pass
                drop_only = None
        figures.append({"row": r.name, "detections_per_s": r.rate, "ratio_to_first": r.rate / ref.rate,
                        "seconds": r.seconds, "n": r.n, "decode_prep_s": r.decode_s, "encoder_s": r.encode_s,
                        "gray_rows": r.gray_rows, "agreement_gated": gated, "agreement_drop_median": drop_only,
                        "max_abs_score_diff": diff, "note": r.note})
    e2e_notes = []
    for r in rows:
        if r.name.startswith("encoder only"):
            p = r.name.removeprefix("encoder only ")
            e2e = next((x for x in rows if x.name == ("(b) runtime fp32" if p == "fp32" else f"(c) runtime {p}")),
                       None)
            if e2e is not None:
                e2e_notes.append(f"{p}: end-to-end from files {e2e.rate:.2f}/s vs bare encoder {r.rate:.2f}/s "
                                 f"({e2e.seconds / r.seconds - 1:+.1%} time)")
    if tmp is not None:
        tmp.cleanup()
    m = bundle.manifest

    return BenchDetectResult(m.model_name, m.pretrained, len(paths), cfg.batch, threads, tau_score, tau_drop, how,
                             bundle.score_scale, rows, figures, e2e_notes, cpu_info())
