"""The one definition of CLIPscore, grayscale and drop used everywhere in foclip (numpy only).

Definitions (fixed; every output names ``score_scale`` and ``clamp``):

* cosine of an image embedding and a prompt embedding, both L2-normalised;
* pair score = ``w * max(cos, 0)`` (clamp each pair, Hessel et al. style), ``w = 100`` by
  default (torchmetrics' scale) or 2.5 (Hessel et al.);
* image score = mean of pair scores over the prompt set;
* grayscale = luma ``0.299 R + 0.587 G + 0.114 B`` of the [0, 1] RGB image, replicated to three
  channels, computed in float (not rounded to 8 bits);
* ``drop = (score_color - score_gray) / score_color`` as a fraction (0.632 means 63.2 %); 0 when
  ``score_color`` is 0;
* ``improvement_pct = (S_adv - S_orig) / S_orig * 100``.
"""

from __future__ import annotations

import numpy as np

LUMA = (0.299, 0.587, 0.114)
DEFAULT_SCALE = 100.0
HESSEL_SCALE = 2.5
CLAMP = "per-pair"


def clipscore(image_emb: np.ndarray, text_emb: np.ndarray, scale: float = DEFAULT_SCALE) -> np.ndarray:
    """Mean clamped CLIPscore of each image over a prompt set.

    Args:
        image_emb: (N, D) L2-normalised image embeddings.
        text_emb: (P, D) L2-normalised prompt embeddings.
        scale: w, the multiplier of each clamped cosine.

    Returns:
        (N,) float64 scores on the 0..scale scale.
    """
    cos = np.asarray(image_emb, dtype=np.float64) @ np.asarray(text_emb, dtype=np.float64).T
    return scale * np.maximum(cos, 0.0).mean(axis=1)


def to_gray(rgb: np.ndarray, channel_axis: int = -1) -> np.ndarray:
    """Luma grayscale replicated to three channels.

    Args:
        rgb: float array with three channels on ``channel_axis`` (any range; linear op).
        channel_axis: the axis that holds R, G, B.

    Returns:
        Array of the same shape and dtype, each channel equal to the luma.
    """
    rgb = np.asarray(rgb)
    w = np.asarray(LUMA, dtype=rgb.dtype if rgb.dtype.kind == "f" else np.float32)
    luma = np.tensordot(np.moveaxis(rgb, channel_axis, -1), w, axes=([-1], [0]))
    out = np.repeat(luma[..., None], 3, axis=-1)
    return np.moveaxis(out, -1, channel_axis).astype(w.dtype, copy=False)


def drop(score_color: np.ndarray | float, score_gray: np.ndarray | float) -> np.ndarray:
    """Relative score lost to grayscale, as a fraction; 0 where ``score_color`` is 0.

    Args:
        score_color: score(s) of the colour image(s).
        score_gray: score(s) of the grayscale copies.

    Returns:
        float64 array of drops.
    """
    c = np.asarray(score_color, dtype=np.float64)
    g = np.asarray(score_gray, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        d = np.where(c > 0, (c - g) / np.where(c > 0, c, 1.0), 0.0)
    return d


def improvement_pct(score_orig: float, score_adv: float) -> float:
    """Improvement in percent, ``(S_adv - S_orig) / S_orig * 100``; ``inf`` when S_orig is 0 < S_adv."""
    if score_orig > 0:
        return (score_adv - score_orig) / score_orig * 100.0
    return 0.0 if score_adv <= 0 else float("inf")
