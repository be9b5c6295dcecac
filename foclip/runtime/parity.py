"""The one parity core: model inputs from uint8 pixels, cosine rows, the gate, ``compare``.

Everything that feeds an image graph or holds one to its PyTorch reference goes through here:
the detector (:mod:`foclip.runtime.detector`), the self-check at load
(:mod:`foclip.runtime.selfcheck`), the export-time parity report and reference set
(:mod:`foclip.exporter.bundle`, :mod:`foclip.exporter.parity`) and the benchmark
(:mod:`foclip.benchmarks.detect`). A new colour-space probe is defined once
(:func:`foclip.scoring.apply_probe`) and stacked here, so what is checked is what is served.

:func:`compare` follows Polygraphy's ``Comparator``: one comparison over any runner (anything
with ``run(feeds) -> {output: array}``: :class:`foclip.runtime.backends.OrtRunner`,
``TrtRunner``), with the gate as an argument. Torch-free.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from foclip.scoring import DEFAULT_PROBES, FLOOR_FRACTION, apply_probe, at_floor


class Runs(Protocol):
    """What :func:`compare` needs of a runner."""

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]: ...


def probe_stack(pixels_u8: np.ndarray, probes: Sequence[str] = DEFAULT_PROBES, color: bool = True) -> np.ndarray:
    """Image-encoder input of a batch: uint8 NHWC -> /255 -> NCHW float32, colour rows then probes.

    The one place the pixel pipeline is written. With ``probes=("gray",)`` (the default) the
    result is the 2N rows the paper's detector, the self-check and the parity report run.

    Args:
        pixels_u8: uint8 (N, S, S, 3) RGB, resized and centre-cropped.
        probes: names of :data:`foclip.scoring.PROBES`, stacked in this order after the colour rows.
        color: include the N colour rows first (False: only the probe rows, as cascade's second pass).

    Returns:
        float32 ((color + len(probes)) * N, 3, S, S) in [0, 1].
    """
    x = np.asarray(pixels_u8).transpose(0, 3, 1, 2).astype(np.float32)
    x /= np.float32(255.0)  # in place: the same values as `/`, one (N, 3, S, S) copy fewer
    blocks = [x] if color else []
    blocks += [apply_probe(x, p, channel_axis=1) for p in probes]
    if len(blocks) == 1:
        return blocks[0]
    return np.concatenate(blocks).astype(np.float32, copy=False)


def cosine_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cosine of each row of ``a`` with the same row of ``b``, in float64 (zero rows give 0)."""
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)).clip(min=1e-30)


def passes_gate(min_cosine: float, gate: float) -> bool:
    """The gate rule: the least cosine against the reference reaches ``gate``."""
    return bool(min_cosine >= gate)


@dataclass(frozen=True)
class Comparison:
    """One runner's output against a reference.

    Attributes:
        min_cosine: least row cosine against the reference.
        max_abs_diff: largest absolute element difference.
        gate: the gate it was held to.
        passed: :func:`passes_gate` of the two.
        rows: rows compared.
        output: the runner's output (float64), for further figures (scores, batch agreement).
    """

    min_cosine: float
    max_abs_diff: float
    gate: float
    passed: bool
    rows: int
    output: np.ndarray = field(repr=False)


def compare_arrays(got: np.ndarray, reference: np.ndarray, gate: float) -> Comparison:
    """:class:`Comparison` of two (N, D) arrays (no runner)."""
    got = np.asarray(got, np.float64)
    reference = np.asarray(reference, np.float64)
    cos = float(cosine_rows(got, reference).min())
    return Comparison(cos, float(np.abs(reference - got).max()), float(gate), passes_gate(cos, gate), len(got), got)


def compare(runner: Runs, feeds: dict[str, np.ndarray], reference: np.ndarray, gate: float,
            output: str | None = None, batch: int | None = None) -> Comparison:
    """Run ``runner`` on ``feeds`` and hold its output to ``reference`` under ``gate``.

    Args:
        runner: an active runner (``run(feeds) -> {name: array}``).
        feeds: one input name -> all rows (the runner sees ``batch`` rows a call).
        reference: (N, D) reference output of the same rows (PyTorch fp32).
        gate: least cosine each row must reach.
        output: output name to compare (default: the runner's first output).
        batch: rows per call (default: all in one call).

    Returns:
        The comparison (whether it passed or not).
    """
    (name, x), = feeds.items()
    step = batch or len(x)
    outs = []
    for i in range(0, len(x), step):
        got = runner.run({name: x[i:i + step]})
        outs.append(got[output] if output is not None else next(iter(got.values())))
    return compare_arrays(np.concatenate(outs), reference, gate)


@dataclass(frozen=True)
class BankParity:
    """One graph's score and drop differences from PyTorch on one text bank, as ``parity.json`` records them.

    At the floor (the reference photos score below :data:`foclip.scoring.FLOOR_FRACTION` of the
    scale on the bank) the relative drop is a ratio of two near-zero scores: a cosine error the gate
    accepts moves it by whole units. There the row carries the absolute drop difference
    (``score_color - score_gray``, 0..scale) instead.

    Attributes:
        graph: the graph's key (``image.int8``, ``detect.fp32``).
        bank: the text bank's name.
        ref_score: mean PyTorch score_color of the reference photos on the bank (0..scale); None when
            the report does not say.
        at_floor: ``ref_score`` is at the floor.
        max_abs_diff_score: largest |Δ score_color| or |Δ score_gray| (0..scale).
        drop_diff: |Δ drop| (a fraction), or at the floor |Δ (score_color - score_gray)| (0..scale);
            None at the floor when the report predates that figure.
        drop_absolute: ``drop_diff`` is the absolute one.
    """

    graph: str
    bank: str
    ref_score: float | None
    at_floor: bool
    max_abs_diff_score: float
    drop_diff: float | None
    drop_absolute: bool


def _bank_row(graph: str, bank: str, figs: list[dict], ref_score: float | None, scale: float) -> BankParity:
    floor = bool(figs[0].get("ref_at_floor", ref_score is not None and at_floor(ref_score, scale)))
    score = max(max(f.get("max_abs_diff_score_color", 0.0), f.get("max_abs_diff_score_gray", 0.0)) for f in figs)
    if floor:
        absolute = [f["max_abs_diff_drop_abs"] for f in figs if "max_abs_diff_drop_abs" in f]
        drop_diff = max(absolute) if len(absolute) == len(figs) else None
    else:
        drop_diff = max(f["max_abs_diff_drop"] for f in figs)
    return BankParity(graph, bank, ref_score, floor, float(score), drop_diff, floor)


def bank_parity(report: dict, scale: float) -> list[BankParity]:
    """The per-bank rows of a bundle's ``parity.json``: image encoders, then fused detection graphs.

    Args:
        report: the parsed ``parity.json``.
        scale: the bundle's score scale w.

    Returns:
        One :class:`BankParity` per graph and bank, in the report's order.
    """
    image = report.get("image_encoder", {})
    # The reference score is PyTorch's, the same for every graph: fp32's figures name it.
    ref = {name: b.get("ref_mean_score_color") for r in image.values() for name, b in r.get("banks", {}).items()}
    rows = [_bank_row(f"image.{prec}", name, [b], ref.get(name), scale)
            for prec, r in image.items() for name, b in r.get("banks", {}).items()]
    for prec, banks in report.get("detect_graph", {}).items():
        for name, b in banks.items():
            rows.append(_bank_row(f"detect.{prec}", name, list(b["batch_sizes"].values()), ref.get(name), scale))
    return rows


def floor_note(rows: Sequence[BankParity], scale: float) -> str | None:
    """The footnote of a table of :func:`bank_parity` rows when one is at the floor, else None."""
    low = sorted({(r.bank, r.ref_score) for r in rows if r.at_floor}, key=lambda b: b[0])
    if not low:
        return None
    banks = ", ".join(f"{b} ({s:.2f})" if s is not None else b for b, s in low)
    return (f"* at the floor: the reference photos score below {FLOOR_FRACTION * scale:g} of 0..{scale:g} on {banks}, "
            "so the relative drop divides by near-zero scores and a cosine error the gate accepts moves it by whole "
            f"units; these rows show |Δ(score_color - score_gray)| on 0..{scale:g} instead. Pass or fail is the "
            "min-cosine gate of each graph, which holds at any score.")


__all__ = ["BankParity", "Comparison", "Runs", "bank_parity", "compare", "compare_arrays", "cosine_rows",
           "floor_note", "passes_gate", "probe_stack"]
