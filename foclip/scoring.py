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
# A prompt bank whose mean score_color on a set of photos is below this fraction of the scale is "at
# the floor": the model finds no prompt of the bank in the photos, and the relative drop divides by a
# near-zero score (noise). Measured on the 4 reference photos of an export (docs/runtime.md): the
# reference ViT scores 0.8 / 1.0 on imagenet-25 / imagenet-100 and 11-21 on its own and the artistic
# sets; the reference RN 6.3-27.5 on all of them.
FLOOR_FRACTION = 0.05


def at_floor(mean_score: float, scale: float) -> bool:
    """Whether a mean score_color (0..scale) is at the floor (:data:`FLOOR_FRACTION` of the scale)."""
    return bool(mean_score < FLOOR_FRACTION * scale)


def floor_warning(bank: str, mean_score: float, scale: float, images: str) -> str | None:
    """One line when ``bank`` scores near the floor on ``images`` (see :data:`FLOOR_FRACTION`), else None.

    Args:
        bank: the text bank's name.
        mean_score: mean score_color of the images on it (0..scale).
        scale: the score scale w.
        images: what the images are (``the bundle's 4 reference photos``).

    Returns:
        The warning text, or None.
    """
    if not at_floor(mean_score, scale):
        return None
    return (f"text bank {bank!r} | scores {mean_score:.2f} on 0..{scale:g} on {images} (below "
            f"{FLOOR_FRACTION:.0%} of the scale): the model finds few of its prompts in such images, so drops "
            "on it are noise. Expected a bank in the model's vocabulary (e.g. clipart for the reference CLIPs)")


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


def _hue_rotation(degrees: float) -> np.ndarray:
    """RGB -> RGB matrix that rotates chroma by ``degrees`` in YIQ space and keeps luma."""
    to_yiq = np.array([[0.299, 0.587, 0.114], [0.595716, -0.274453, -0.321263], [0.211456, -0.522591, 0.311135]])
    t = np.deg2rad(degrees)
    rot = np.array([[1, 0, 0], [0, np.cos(t), -np.sin(t)], [0, np.sin(t), np.cos(t)]])
    return np.linalg.inv(to_yiq) @ rot @ to_yiq


def _desaturation(keep: float) -> np.ndarray:
    """RGB -> RGB matrix: ``keep`` of the colour, the rest luma (0 = gray, 1 = unchanged)."""
    return keep * np.eye(3) + (1 - keep) * np.repeat(np.asarray(LUMA)[None, :], 3, axis=0)


# Colour-space probes: each a 3x3 matrix applied to [0, 1] RGB, the result clipped to [0, 1].
# Gray, desaturation and hue rotations keep luma (where ordinary perturbations live) and remove or
# move chroma, where FoCLIP's manipulation leans; swap-rb exchanges the red and blue planes.
# "gray" is exactly :func:`to_gray`.
PROBES: dict[str, np.ndarray] = {
    "gray": _desaturation(0.0),
    "desat50": _desaturation(0.5),
    "hue90": _hue_rotation(90),
    "hue180": _hue_rotation(180),
    "hue270": _hue_rotation(270),
    "swap-rb": np.array([[0.0, 0, 1], [0, 1, 0], [1, 0, 0]]),
}
DEFAULT_PROBES = ("gray",)


def check_probes(names: tuple[str, ...] | list[str]) -> tuple[str, ...]:
    """Validate probe names (``gray`` first when present).

    Raises:
        ValueError: an unknown or repeated probe, or an empty list.
    """
    names = tuple(names)
    bad = [n for n in names if n not in PROBES]
    if not names or bad or len(set(names)) != len(names):
        raise ValueError(f"probes {list(names)} are not distinct names from {', '.join(PROBES)}")
    return names


def apply_probe(rgb: np.ndarray, name: str, channel_axis: int = -1) -> np.ndarray:
    """One colour-space probe of [0, 1] RGB images (``gray`` is :func:`to_gray` exactly).

    Args:
        rgb: float array with three channels on ``channel_axis``.
        name: a key of :data:`PROBES`.
        channel_axis: the axis that holds R, G, B.

    Returns:
        Array of the same shape and dtype, in [0, 1].
    """
    if name == "gray":
        return to_gray(rgb, channel_axis)
    rgb = np.asarray(rgb)
    m = PROBES[name].astype(rgb.dtype if rgb.dtype.kind == "f" else np.float32)
    out = np.tensordot(np.moveaxis(rgb, channel_axis, -1), m, axes=([-1], [1]))
    return np.clip(np.moveaxis(out, -1, channel_axis), 0.0, 1.0).astype(m.dtype, copy=False)


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
