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

from foclip.scoring import DEFAULT_PROBES, apply_probe


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


__all__ = ["Comparison", "Runs", "compare", "compare_arrays", "cosine_rows", "passes_gate", "probe_stack"]
