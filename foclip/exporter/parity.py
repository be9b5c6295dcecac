"""Parity of the exported graphs with PyTorch, run by the runtime's own runner (ONNX Runtime CPU).

The comparison (cosine rows, the gate, ``compare``) and the pixel pipeline are the runtime's
(:mod:`foclip.runtime.parity`); the graphs run through the ``OrtRunner(SessionFromBundle)`` the
detector opens, so export-time parity checks the session that will serve.

Reference: the fp32 PyTorch wrappers (:class:`foclip.models.ImageEncoder` / ``TextEncoder``) on
the same inputs. Inputs: real photos (and their luma-gray copies, as the detector sees them) and
prompts (the bundled sets plus seeded random token sequences of every length up to the context).
Figures per encoder and precision: min cosine, max abs difference, the same at batch 1, 3 and 16,
and for image encoders the CLIPscore / gray-score / drop differences on each bundled prompt set
(scores on the 0..``score_scale`` scale, per-pair clamp; drop a fraction).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np

from foclip.errors import BundleError
from foclip.manifest import GraphSpec
from foclip.runtime.backends import OrtRunner, SessionFromBundle
from foclip.runtime.parity import Runs, compare, cosine_rows, passes_gate
from foclip.scoring import CLAMP, at_floor, clipscore, drop

GATES = {"fp32": 0.99999, "fp16": 0.999, "int8": 0.99}
# max |score difference| at w = 100, scaled by w / 100: fp32 1e-4 in cosine; fp16 the fp16 gate's 1e-3
# (the cosine error the detector's self-check allows an fp16 detect graph or engine)
DETECT_SCORE_TOL = {"fp32": 0.01, "fp16": 0.1}
BATCH_SIZES = (1, 3, 16)
# ONNX Runtime 1.32's NchwcTransformer (part of ORT_ENABLE_ALL on CPU) crashes the process on
# fp16 graphs from the float16 converter (cf. onnxruntime issue 15494); skip that one pass.
ORT_CPU_DISABLED_OPTIMIZERS = {"fp16": ["NchwcTransformer"]}


class ParityError(BundleError):
    """An exported graph disagrees with PyTorch beyond its gate."""


@dataclass(frozen=True)
class StagedGraphs:
    """The export's temp folder, opened the way the runtime opens a bundle (by ``file(rel)``).

    Parity runs before the manifest exists, so there is no closed world to check yet; the
    session itself is the runtime's (:class:`foclip.runtime.backends.SessionFromBundle`).
    """

    path: Path

    def file(self, rel: str) -> Path:
        """Path of a staged file."""
        return self.path / rel


def graph_runner(folder: Path, spec: GraphSpec) -> OrtRunner:
    """The runner the runtime opens for ``spec`` (``ort-cpu``), over the export's temp folder.

    Returns:
        An inactive :class:`OrtRunner` (use it in a ``with`` block).
    """
    return OrtRunner(SessionFromBundle(StagedGraphs(folder), spec, "ort-cpu"))  # type: ignore[arg-type]


def ort_session(path: Path, precision: str) -> Any:
    """A raw CPU ONNX Runtime session of one graph file, opened by the runtime's loader (tests, scripts).

    Args:
        path: ONNX file.
        precision: ``fp32``, ``fp16`` or ``int8`` (fp16 skips the optimizer that crashes on it).

    Returns:
        ``onnxruntime.InferenceSession``.
    """
    graph = SimpleNamespace(file=Path(path).name,
                            disabled_optimizers=tuple(ORT_CPU_DISABLED_OPTIMIZERS.get(precision, ())))
    return SessionFromBundle(StagedGraphs(Path(path).parent), graph, "ort-cpu")()  # type: ignore[arg-type]


def encoder_parity(runner: Runs, name: str, x: np.ndarray, ref: np.ndarray, gate: float) -> dict[str, Any]:
    """Figures of one graph: full input at batch 16, then batch 1 and 3 on the leading rows.

    Args:
        runner: an active runner of the graph.
        name: the graph's input name.
        x: all inputs (at least 16 rows).
        ref: PyTorch fp32 embeddings of ``x``.
        gate: least cosine the graph must reach (:data:`GATES` of its precision).

    Returns:
        Dict with ``min_cosine``, ``max_abs_diff``, ``rows``, ``batch_sizes``, ``gate_min_cosine``
        and ``passed`` (over every batch size).
    """
    full = compare(runner, {name: x}, ref, gate, batch=16)
    out: dict[str, Any] = {"min_cosine": full.min_cosine, "max_abs_diff": full.max_abs_diff, "rows": len(x),
                           "batch_sizes": {}}
    for b in BATCH_SIZES:
        c = compare(runner, {name: x[:b]}, ref[:b], gate, batch=b)
        out["batch_sizes"][str(b)] = {"min_cosine": c.min_cosine, "max_abs_diff": c.max_abs_diff,
                                      "max_abs_diff_vs_batch_16": float(np.abs(c.output - full.output[:b]).max())}
        out["min_cosine"] = min(out["min_cosine"], c.min_cosine)
    out["gate_min_cosine"] = gate
    out["passed"] = passes_gate(out["min_cosine"], gate)
    out["_embeddings"] = full.output
    return out


def gate_error(report: dict[str, Any], subject: str, precision: str) -> ParityError:
    """The error of a graph whose :func:`encoder_parity` report did not pass."""
    return ParityError(subject, f"min cosine vs PyTorch is {report['min_cosine']:.7f}, below the {precision} "
                       f"gate (max abs diff {report['max_abs_diff']:.3g})", f">= {report['gate_min_cosine']}")


def score_parity(ref: np.ndarray, got: np.ndarray, n_color: int, bank: np.ndarray,
                 scale: float) -> dict[str, float]:
    """CLIPscore, gray score and drop differences on one prompt set.

    Args:
        ref: PyTorch embeddings, colour rows first then their gray copies.
        got: ONNX Runtime embeddings in the same order.
        n_color: number of colour rows.
        bank: (P, D) prompt embeddings.
        scale: score scale w.

    Returns:
        Max abs differences of score_color, score_gray (0..scale), drop (fraction) and the absolute
        drop ``score_color - score_gray`` (0..scale), the reference's mean score_color and drop, and
        ``ref_at_floor``: whether that mean is at the floor (:func:`foclip.scoring.at_floor`), where
        the relative drop divides by near-zero scores and only the absolute one means something.
    """
    def scores(e: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return clipscore(e[:n_color], bank, scale), clipscore(e[n_color:2 * n_color], bank, scale)

    rc, rg = scores(ref)
    gc, gg = scores(got)
    return {
        "max_abs_diff_score_color": float(np.abs(rc - gc).max()),
        "max_abs_diff_score_gray": float(np.abs(rg - gg).max()),
        "max_abs_diff_drop": float(np.abs(drop(rc, rg) - drop(gc, gg)).max()),
        "max_abs_diff_drop_abs": float(np.abs((rc - rg) - (gc - gg)).max()),
        "ref_mean_score_color": float(rc.mean()),
        "ref_mean_drop": float(drop(rc, rg).mean()),
        "ref_at_floor": at_floor(float(rc.mean()), scale),
    }


def random_token_rows(n: int, context_length: int, sot: int, eot: int, seed: int) -> np.ndarray:
    """Seeded random prompts as token rows: every length from 0 ids to a full context (EOT last).

    Returns:
        int64 (n, context_length).
    """
    rng = np.random.default_rng(seed)
    rows = np.zeros((n, context_length), np.int64)
    lengths = np.linspace(0, context_length - 2, n).round().astype(int)
    for i, k in enumerate(lengths):
        rows[i, 0] = sot
        rows[i, 1:k + 1] = rng.integers(1, sot, size=k)
        rows[i, k + 1] = eot
    return rows


def detect_parity(runner: Runs, pixels_u8: np.ndarray, bank: np.ndarray, ref: np.ndarray, scale: float,
                  precision: str, subject: str) -> dict[str, Any]:
    """Fused detection graph vs the PyTorch scores of the same photos.

    Args:
        runner: an active runner of ``detect.<precision>.onnx``.
        pixels_u8: (N, S, S, 3) uint8 photos.
        bank: (P, D) prompt embeddings.
        ref: PyTorch embeddings, N colour rows then N gray rows.
        scale: score scale.
        precision: graph precision (gate key).
        subject: file name for messages.

    Returns:
        Figures per batch size.

    Raises:
        ParityError: when a score differs by more than the tolerance.
    """
    n = len(pixels_u8)
    rc, rg = clipscore(ref[:n], bank, scale), clipscore(ref[n:2 * n], bank, scale)
    tol = DETECT_SCORE_TOL[precision] * scale / 100.0  # the same cosine tolerance at any score scale
    out: dict[str, Any] = {"batch_sizes": {}, "score_tolerance": tol}
    worst = 0.0
    for b in sorted({1, 3, n}):
        got = runner.run({"pixels_u8": np.ascontiguousarray(pixels_u8[:b]), "text_bank": bank})
        sc, sg = got["score_color"], got["score_gray"]
        fig = {"max_abs_diff_score_color": float(np.abs(sc - rc[:b]).max()),
               "max_abs_diff_score_gray": float(np.abs(sg - rg[:b]).max()),
               "max_abs_diff_drop": float(np.abs(drop(sc, sg) - drop(rc[:b], rg[:b])).max()),
               "max_abs_diff_drop_abs": float(np.abs((sc - sg) - (rc[:b] - rg[:b])).max())}
        out["batch_sizes"][str(b)] = fig
        worst = max(worst, fig["max_abs_diff_score_color"], fig["max_abs_diff_score_gray"])
    out["max_abs_diff_score"] = worst
    out["passed"] = bool(worst <= tol)
    if not out["passed"]:
        raise ParityError(subject, f"scores differ from PyTorch by up to {worst:.4g} (0..{scale:g} scale)",
                          f"<= {tol:g}")
    return out


def tokenizer_parity(runtime_tok: Callable[[list[str]], np.ndarray], open_clip_tok: Any,
                     texts: list[str]) -> dict[str, Any]:
    """Bundle tokenizer vs open_clip's on ``texts``.

    Raises:
        ParityError: when any row differs.
    """
    ours = runtime_tok(texts)
    theirs = open_clip_tok(texts).numpy()
    bad = [texts[i] for i in np.nonzero((ours != theirs).any(1))[0]]
    if bad:
        raise ParityError("tokenizer.json", f"{len(bad)} of {len(texts)} prompts tokenise differently from "
                          f"open_clip (first: {bad[0]!r})", "identical token ids")
    return {"strings": len(texts), "mismatches": 0, "passed": True}


__all__ = [
    "CLAMP",
    "GATES",
    "ParityError",
    "StagedGraphs",
    "cosine_rows",
    "detect_parity",
    "encoder_parity",
    "gate_error",
    "graph_runner",
    "ort_session",
    "random_token_rows",
    "score_parity",
    "tokenizer_parity",
]
