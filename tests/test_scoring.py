import numpy as np
import pytest

from foclip import scoring


def test_clipscore_clamps_each_pair_then_averages():
    img = np.array([[1.0, 0.0], [0.0, 1.0]])
    txt = np.array([[1.0, 0.0], [-1.0, 0.0], [0.6, 0.8]])
    s = scoring.clipscore(img, txt, scale=100.0)
    # image 0: cos = 1, -1 -> 0, 0.6 -> mean 1.6/3; image 1: 0, 0, 0.8
    np.testing.assert_allclose(s, [100 * 1.6 / 3, 100 * 0.8 / 3])
    np.testing.assert_allclose(scoring.clipscore(img, txt, scale=2.5), s / 40)


def test_to_gray_is_luma_replicated_on_any_axis():
    rgb = np.array([[[1.0, 0.5, 0.25]]], dtype=np.float32)  # HWC
    luma = 0.299 + 0.587 * 0.5 + 0.114 * 0.25
    np.testing.assert_allclose(scoring.to_gray(rgb), [[[luma] * 3]], rtol=1e-6)
    chw = rgb.transpose(2, 0, 1)
    np.testing.assert_allclose(scoring.to_gray(chw, channel_axis=0)[:, 0, 0], [luma] * 3, rtol=1e-6)
    assert scoring.to_gray(chw, channel_axis=0).dtype == np.float32


def test_drop_is_a_fraction_and_zero_for_zero_score():
    np.testing.assert_allclose(scoring.drop([10.0, 0.0, 4.0], [3.7, 0.0, 5.0]), [0.63, 0.0, -0.25])


@pytest.mark.parametrize("orig,adv,expected", [(10.0, 14.27, 42.7), (2.0, 1.0, -50.0), (0.0, 0.0, 0.0)])
def test_improvement_pct(orig, adv, expected):
    assert scoring.improvement_pct(orig, adv) == pytest.approx(expected)


def test_improvement_from_zero_is_infinite():
    assert scoring.improvement_pct(0.0, 1.0) == float("inf")
