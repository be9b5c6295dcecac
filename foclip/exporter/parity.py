"""Parity of the exported graphs with PyTorch, run through ONNX Runtime (CPU).

Reference: the fp32 PyTorch wrappers (:class:`foclip.models.ImageEncoder` / ``TextEncoder``) on
the same inputs. Inputs: real photos (and their luma-gray copies, as the detector sees them) and
prompts (the bundled sets plus seeded random token sequences of every length up to the context).
Figures per encoder and precision: min cosine, max abs difference, the same at batch 1, 3 and 16,
and for image encoders the CLIPscore / gray-score / drop differences on each bundled prompt set
(scores on the 0..``score_scale`` scale, per-pair clamp; drop a fraction).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from foclip.errors import BundleError
from foclip.scoring import CLAMP, clipscore, drop

GATES = {"fp32": 0.99999, "fp16": 0.999, "int8": 0.99}
DETECT_SCORE_TOL = {"fp32": 0.01}  # max |score difference| at w = 100 (1e-4 in cosine); scaled by w / 100
BATCH_SIZES = (1, 3, 16)
# ONNX Runtime 1.32's NchwcTransformer (part of ORT_ENABLE_ALL on CPU) crashes the process on
# fp16 graphs from the float16 converter (cf. onnxruntime issue 15494); skip that one pass.
ORT_CPU_DISABLED_OPTIMIZERS = {"fp16": ["NchwcTransformer"]}


class ParityError(BundleError):
    """An exported graph disagrees with PyTorch beyond its gate."""


def ort_session(path: Path, precision: str) -> Any:
    """A CPU ONNX Runtime session for one bundle graph.

    Args:
        path: ONNX file.
        precision: ``fp32``, ``fp16`` or ``int8`` (fp16 skips the optimizer that crashes on it).

    Returns:
        ``onnxruntime.InferenceSession``.
    """
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.log_severity_level = 3
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"],
                                disabled_optimizers=ORT_CPU_DISABLED_OPTIMIZERS.get(precision, []))


def run_batched(session: Any, name: str, x: np.ndarray, batch: int) -> np.ndarray:
    """Run ``session`` over ``x`` in chunks of ``batch`` rows.

    Returns:
        float64 array of the concatenated first outputs.
    """
    outs = [session.run(None, {name: x[i:i + batch]})[0] for i in range(0, len(x), batch)]
    return np.concatenate(outs).astype(np.float64)


def cosine_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cosine of each row of ``a`` with the same row of ``b`` (float64)."""
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def compare(ref: np.ndarray, got: np.ndarray) -> dict[str, float]:
    """min cosine and max abs difference of two (N, D) embedding arrays."""
    return {"min_cosine": float(cosine_rows(ref, got).min()), "max_abs_diff": float(np.abs(ref - got).max())}


def encoder_parity(session: Any, name: str, x: np.ndarray, ref: np.ndarray) -> dict[str, Any]:
    """Figures of one graph: full input at batch 16, then batch 1 and 3 on the leading rows.

    Args:
        session: ONNX Runtime session.
        name: the graph's input name.
        x: all inputs (at least 16 rows).
        ref: PyTorch fp32 embeddings of ``x``.

    Returns:
        Dict with ``min_cosine``, ``max_abs_diff``, ``rows`` and ``batch_sizes``.
    """
    full = run_batched(session, name, x, 16)
    out: dict[str, Any] = {**compare(ref, full), "rows": len(x), "batch_sizes": {}}
    for b in BATCH_SIZES:
        got = run_batched(session, name, x[:b], b)
        out["batch_sizes"][str(b)] = {**compare(ref[:b], got),
                                      "max_abs_diff_vs_batch_16": float(np.abs(got - full[:b]).max())}
        out["min_cosine"] = min(out["min_cosine"], out["batch_sizes"][str(b)]["min_cosine"])
    out["_embeddings"] = full
    return out


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
        Max abs differences of score_color, score_gray (0..scale) and drop (fraction).
    """
    def scores(e: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return clipscore(e[:n_color], bank, scale), clipscore(e[n_color:2 * n_color], bank, scale)

    rc, rg = scores(ref)
    gc, gg = scores(got)
    return {
        "max_abs_diff_score_color": float(np.abs(rc - gc).max()),
        "max_abs_diff_score_gray": float(np.abs(rg - gg).max()),
        "max_abs_diff_drop": float(np.abs(drop(rc, rg) - drop(gc, gg)).max()),
        "ref_mean_score_color": float(rc.mean()),
        "ref_mean_drop": float(drop(rc, rg).mean()),
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


def check_gate(report: dict[str, Any], subject: str, precision: str) -> None:
    """Raise when a graph's min cosine is below its precision's gate.

    Raises:
        ParityError: with the observed figure.
    """
    gate = GATES[precision]
    report["gate_min_cosine"] = gate
    report["passed"] = bool(report["min_cosine"] >= gate)
    if not report["passed"]:
        raise ParityError(subject, f"min cosine vs PyTorch is {report['min_cosine']:.7f}, below the {precision} "
                          f"gate (max abs diff {report['max_abs_diff']:.3g})", f">= {gate}")


def detect_parity(session: Any, pixels_u8: np.ndarray, bank: np.ndarray, ref: np.ndarray, scale: float,
                  precision: str, subject: str) -> dict[str, Any]:
    """Fused detection graph vs the PyTorch scores of the same photos.

    Args:
        session: session of ``detect.<precision>.onnx``.
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
        sc, sg = session.run(["score_color", "score_gray"], {"pixels_u8": pixels_u8[:b], "text_bank": bank})
        fig = {"max_abs_diff_score_color": float(np.abs(sc - rc[:b]).max()),
               "max_abs_diff_score_gray": float(np.abs(sg - rg[:b]).max()),
               "max_abs_diff_drop": float(np.abs(drop(sc, sg) - drop(rc[:b], rg[:b])).max())}
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
    "check_gate",
    "detect_parity",
    "encoder_parity",
    "ort_session",
    "random_token_rows",
    "score_parity",
    "tokenizer_parity",
]
