"""Where a FoCLIP manipulation lives: spatial frequency and luma vs chroma (numpy only).

For pairs of (original, manipulated) images of the same size, in [0, 1] RGB, the perturbation
``delta = manipulated - original`` is split into BT.601 YCbCr (luma Y, chroma Cb and Cr; a linear
map, so the split of ``delta`` is exact), and each channel's energy is divided into radial
spatial-frequency bands of its 2-D FFT (frequency in cycles per pixel, 0 to ~0.71). Figures are
averaged over the set: each channel's share of the total energy, and each band's share of a
channel's energy.

Single-image statistics that such a split suggests (no original needed), compared by ROC-AUC with
the grayscale rule in ``foclip reproduce``: the share of an image's chroma energy above a cut-off
frequency (``chroma_hf``), the same for luma (``luma_hf``), and the chroma share of its
high-frequency energy (``hf_chroma_share``).
"""

from __future__ import annotations

# Lazy imports: matplotlib (the plots extra) is imported only where a figure is drawn.
import itertools
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from foclip.runtime.stats import roc_auc
from foclip.scoring import LUMA

# Radial frequency band edges in cycles per pixel (Nyquist is 0.5 per axis).
BANDS = (0.0, 1 / 32, 1 / 16, 1 / 8, 1 / 4, 1.0)
HF_CUTOFF = 1 / 8
# Statistics offered as detectors (the spectral section's AUC table). hf_chroma_share is measured
# (the wild section reports its FPR) but no longer offered: at thresholds calibrated on the
# reference ViT's plain attack it flagged 52 % of digital-art wallpapers, 35 % of photos and 81 %
# of saturated photos (docs/science.md, "In the wild"), far above its 5 % target.
DETECTOR_STATISTICS = ("chroma_hf", "luma_hf")
RETIRED = {"hf_chroma_share": "FPR above its 5 % target on clean photos, art and saturated photos (wild section)"}
_YCBCR = np.array([LUMA, (-0.168736, -0.331264, 0.5), (0.5, -0.418688, -0.081312)])
CHANNELS = ("Y", "Cb", "Cr")


def ycbcr(rgb: np.ndarray) -> np.ndarray:
    """(H, W, 3) RGB -> (3, H, W) Y, Cb, Cr (no offsets: a linear map, applicable to differences)."""
    return np.tensordot(_YCBCR, np.asarray(rgb, np.float64), axes=([1], [2]))


def _radius(h: int, w: int) -> np.ndarray:
    fy = np.fft.fftfreq(h)[:, None]
    fx = np.fft.fftfreq(w)[None, :]
    return np.sqrt(fx ** 2 + fy ** 2)


def band_energy(channel: np.ndarray, bands: Sequence[float] = BANDS) -> np.ndarray:
    """Energy of one (H, W) channel in each radial frequency band (Parseval-scaled: sums to the
    channel's sum of squares)."""
    power = np.abs(np.fft.fft2(channel)) ** 2 / channel.size
    r = _radius(*channel.shape)
    return np.array([power[(r >= lo) & (r < hi)].sum() for lo, hi in itertools.pairwise(bands)])


def perturbation_spectrum(originals: Sequence[np.ndarray], manipulated: Sequence[np.ndarray],
                          bands: Sequence[float] = BANDS) -> dict[str, Any]:
    """Energy of the perturbations by channel and band, averaged over the pairs.

    Args:
        originals: (H, W, 3) float RGB in [0, 1].
        manipulated: the same images after the attack, same shapes.
        bands: radial band edges (cycles per pixel).

    Returns:
        ``{"bands": [[lo, hi], ...], "channel_share": {Y, Cb, Cr}`` (mean share of total energy),
        ``"band_share": {Y: [...], Cb: [...], Cr: [...]}`` (mean share of that channel's energy per
        band), ``"luma_share"``, ``"rms_delta"`` (mean RMS of the perturbation, 0..1 scale), ``"pairs"}``.

    Raises:
        ValueError: no pairs, or a pair of different shapes.
    """
    if not originals or len(originals) != len(manipulated):
        raise ValueError("perturbation_spectrum needs as many manipulated images as originals (at least one)")
    shares, bands_share, rms = [], {c: [] for c in CHANNELS}, []
    for o, m in zip(originals, manipulated):
        if o.shape != m.shape:
            raise ValueError(f"pair shapes differ: {o.shape} vs {m.shape}")
        delta = ycbcr(np.asarray(m, np.float64) - np.asarray(o, np.float64))
        energies = [band_energy(ch, bands) for ch in delta]
        total = sum(e.sum() for e in energies) or 1.0
        shares.append([e.sum() / total for e in energies])
        for c, e in zip(CHANNELS, energies):
            bands_share[c].append(e / (e.sum() or 1.0))
        rms.append(float(np.sqrt(np.mean((np.asarray(m, np.float64) - np.asarray(o, np.float64)) ** 2))))
    mean_share = np.mean(shares, axis=0)
    return {"bands": [[float(lo), float(hi)] for lo, hi in itertools.pairwise(bands)],
            "channel_share": {c: float(v) for c, v in zip(CHANNELS, mean_share)},
            "band_share": {c: [float(x) for x in np.mean(v, axis=0)] for c, v in bands_share.items()},
            "luma_share": float(mean_share[0]), "rms_delta": float(np.mean(rms)), "pairs": len(originals)}


def image_statistics(rgb: np.ndarray, cutoff: float = HF_CUTOFF) -> dict[str, float]:
    """Single-image statistics (no original needed).

    Args:
        rgb: (H, W, 3) float RGB in [0, 1].
        cutoff: frequency (cycles per pixel) above which energy counts as high.

    Returns:
        ``chroma_hf`` (share of chroma energy above the cut-off), ``luma_hf`` (the same for luma)
        and ``hf_chroma_share`` (chroma's share of all energy above the cut-off); the mean of each
        channel is removed first. A channel whose energy has an RMS below half an 8-bit step (a
        grayscale image's chroma) has no structure to share out: its statistics are 0.
    """
    x = ycbcr(rgb)
    x = x - x.mean(axis=(1, 2), keepdims=True)
    edges = (0.0, cutoff, 1.0)
    y, cb, cr = (band_energy(ch, edges) for ch in x)
    chroma = cb + cr
    # A grayscale image has no chroma, only float rounding (~1e-17): the ratio of two rounding
    # errors flagged 86 % of grayscale photos (issue 23). Chroma (or luma) energy whose RMS is below
    # half an 8-bit step carries no colour (or luma) structure: its share counts as 0.
    floor = x[0].size * (0.5 / 255) ** 2
    has_c, has_y = chroma.sum() > floor, y.sum() > floor
    return {"chroma_hf": float(chroma[1] / chroma.sum()) if has_c else 0.0,
            "luma_hf": float(y[1] / y.sum()) if has_y else 0.0,
            "hf_chroma_share": float(chroma[1] / (chroma[1] + y[1])) if has_c and chroma[1] + y[1] > 0 else 0.0}


def spectral_detectors(originals: Sequence[np.ndarray], manipulated: Sequence[np.ndarray]) -> dict[str, float]:
    """ROC-AUC of each single-image statistic offered as a detector (:data:`DETECTOR_STATISTICS`)
    at telling manipulated from originals.

    Higher statistic = more likely manipulated; an AUC below 0.5 means the statistic points the
    other way (reported as measured, not flipped).

    Returns:
        ``{statistic name: AUC}``.
    """

    so = [image_statistics(o) for o in originals]
    sm = [image_statistics(m) for m in manipulated]
    return {k: roc_auc(np.array([s[k] for s in sm]), np.array([s[k] for s in so])) for k in DETECTOR_STATISTICS}


def plot_spectrum(result: dict[str, Any], path: str | Path, title: str) -> None:
    """Bar chart of each channel's energy per band, weighted by the channel's share (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3.6))
    n = len(result["bands"])
    xs = np.arange(n)
    for i, c in enumerate(CHANNELS):
        vals = np.array(result["band_share"][c]) * result["channel_share"][c]
        ax.bar(xs + (i - 1) * 0.27, vals, width=0.27, label=f"{c} ({result['channel_share'][c]:.0%} of energy)")
    ax.set_xticks(xs, [f"{lo:.3g}-{hi:.3g}" for lo, hi in result["bands"]])
    ax.set_xlabel("radial spatial frequency band (cycles per pixel)")
    ax.set_ylabel("share of perturbation energy")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
