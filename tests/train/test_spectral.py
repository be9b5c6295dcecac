"""Spectral split of perturbations: known synthetic perturbations land where they should."""

from __future__ import annotations

import numpy as np
import pytest

from foclip_train.spectral import (
    band_energy,
    image_statistics,
    perturbation_spectrum,
    spectral_detectors,
    ycbcr,
)


def _photo(seed: int = 0, size: int = 64) -> np.ndarray:
    from skimage import data, transform

    img = data.astronaut()[::4, ::4] / 255.0
    rng = np.random.default_rng(seed)
    y, x = rng.integers(0, img.shape[0] - size, 2)
    return transform.resize(img[y:y + size, x:x + size], (size, size), anti_aliasing=True)


def test_parseval_and_linearity():
    rng = np.random.default_rng(0)
    ch = rng.normal(size=(32, 48))
    assert band_energy(ch).sum() == pytest.approx((ch ** 2).sum(), rel=1e-9)
    a, b = rng.random((8, 8, 3)), rng.random((8, 8, 3))
    assert np.allclose(ycbcr(a) - ycbcr(b), ycbcr(a - b))


def test_a_chroma_checkerboard_is_chroma_and_high_frequency():
    o = _photo()
    checker = (np.indices((64, 64)).sum(0) % 2 * 2 - 1) * 0.02  # +-0.02 at Nyquist
    cb_dir = np.array([-0.168736, -0.331264, 0.5])
    cb_dir = cb_dir / (cb_dir @ cb_dir)  # an RGB change that moves Cb only... almost: check below
    delta = checker[..., None] * (cb_dir - np.dot(cb_dir, [0.299, 0.587, 0.114]) * np.ones(3))
    r = perturbation_spectrum([o], [o + delta])
    assert r["luma_share"] < 0.01 and r["channel_share"]["Cb"] + r["channel_share"]["Cr"] > 0.99
    assert r["band_share"]["Cb"][-1] > 0.99  # all in the top band


def test_a_smooth_gray_wave_is_luma_and_low_frequency():
    o = _photo(1)
    wave = 0.05 * np.cos(2 * np.pi * np.arange(64) / 64)[None, :, None] * np.ones((64, 1, 3))  # 1/64 cycle/px
    r = perturbation_spectrum([o], [o + wave])
    assert r["luma_share"] > 0.99 and r["band_share"]["Y"][0] > 0.99


def test_detectors_separate_what_they_measure():
    origs = [_photo(s) for s in range(6)]
    rng = np.random.default_rng(0)
    noisy = [o + rng.normal(0, 0.03, o.shape) * np.array([1.0, -1.0, 0.5]) for o in origs]  # chroma-ish noise
    aucs = spectral_detectors(origs, noisy)
    assert set(aucs) == {"chroma_hf", "luma_hf"} and aucs["chroma_hf"] > 0.9  # hf_chroma_share retired (issue 23)
    assert 0.0 <= image_statistics(origs[0])["chroma_hf"] <= 1.0
