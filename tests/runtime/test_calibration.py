"""Calibration maths: AUC against sklearn, the 2-D search against brute force, the file round trip."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest

from foclip.errors import InputError
from foclip.runtime.calibration import Calibration, fit_calibration
from foclip.runtime.stats import evaluate, roc_auc, search_thresholds


def _data(seed: int, n_o: int = 60, n_m: int = 40):
    rng = np.random.default_rng(seed)
    so = rng.uniform(10, 30, n_o).round(1)  # rounding makes ties
    do = rng.normal(0.1, 0.15, n_o).round(2)
    sm = rng.uniform(15, 40, n_m).round(1)
    dm = rng.normal(0.5, 0.2, n_m).round(2)
    return so, do, sm, dm


@pytest.mark.parametrize("seed", range(5))
def test_auc_matches_sklearn(seed):
    from sklearn.metrics import roc_auc_score

    so, do, sm, dm = _data(seed)
    y = np.r_[np.zeros(len(do)), np.ones(len(dm))]
    assert roc_auc(dm, do) == pytest.approx(roc_auc_score(y, np.r_[do, dm]), abs=1e-12)
    gated_o, gated_m = np.where(so >= 20, do, -np.inf), np.where(sm >= 20, dm, -np.inf)
    finite = lambda a: np.where(np.isinf(a), -1e9, a)
    want = roc_auc_score(y, finite(np.r_[gated_o, gated_m]))
    assert roc_auc(gated_m, gated_o) == pytest.approx(want, abs=1e-12)


def _brute(so, do, sm, dm):
    s_all, d_all = np.r_[so, sm], np.r_[do, dm]
    ts_c = np.r_[0.0, np.unique(s_all)]
    td_c = np.r_[np.unique(d_all), np.inf]
    for ts, td in itertools.product(ts_c, td_c):
        fp = ((so >= ts) & (do >= td)).mean()
        tp = ((sm >= ts) & (dm >= td)).mean()
        yield fp, tp, (tp * len(sm) + (1 - fp) * len(so)) / (len(so) + len(sm))


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("target", [0.0, 0.05, 0.2])
def test_fpr_search_is_optimal_and_respects_target(seed, target):
    so, do, sm, dm = _data(seed)
    ts, td = search_thresholds(so, do, sm, dm, target, "fpr")
    m = evaluate(so, do, sm, dm, ts, td)
    assert m["fpr"] <= target + 1e-12
    best = max(tp for fp, tp, _ in _brute(so, do, sm, dm) if fp <= target + 1e-12)
    assert m["tpr"] == pytest.approx(best)


@pytest.mark.parametrize("seed", range(4))
def test_max_accuracy_search_is_optimal(seed):
    so, do, sm, dm = _data(seed)
    ts, td = search_thresholds(so, do, sm, dm, mode="max-accuracy")
    best = max(acc for _, _, acc in _brute(so, do, sm, dm))
    assert evaluate(so, do, sm, dm, ts, td)["accuracy"] == pytest.approx(best)


def test_bad_arguments():
    so, do, sm, dm = _data(0)
    with pytest.raises(InputError):
        search_thresholds(so[:0], do[:0], sm, dm)
    with pytest.raises(InputError):
        search_thresholds(so, do, sm, dm, mode="youden")
    with pytest.raises(InputError):
        search_thresholds(so, do, sm, dm, target_fpr=1.5)


def test_round_trip_and_bad_file(tmp_path):
    so, do, sm, dm = _data(1)
    cal = fit_calibration(so, do, sm, dm, bundle_hash="a" * 64, backend="ort-cpu", precision="int8",
                          score_scale=100.0, text_bank={"name": "artistic", "sha256": "b" * 64, "count": 62})
    m = cal.metrics
    assert m["n_originals"] == 60 and m["n_manipulated"] == 40 and 0.5 < m["roc_auc"] <= 1.0
    assert set(m["tpr_at_fpr"]) == {"0.01", "0.05"} and m["paper_mean_drop"]["manipulated"] == 0.632
    cal.save(tmp_path / "c.json")
    assert Calibration.load(tmp_path / "c.json") == cal
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(InputError, match="cannot be read"):
        Calibration.load(tmp_path / "bad.json")
    with pytest.raises(InputError, match="does not exist"):
        Calibration.load(tmp_path / "nope.json")
    for text in ("[1, 2]", json.dumps({**cal.to_dict(), "text_bank": "artistic"})):
        (tmp_path / "bad.json").write_text(text)
        with pytest.raises(InputError, match="is invalid"):
            Calibration.load(tmp_path / "bad.json")


# ----------------------------------------------------------------------------- held-out evaluation


def test_wilson_interval_known_values():
    from foclip.runtime.stats import wilson_interval

    assert wilson_interval(5, 10) == pytest.approx((0.23659, 0.76341), abs=1e-5)
    assert wilson_interval(0, 10) == pytest.approx((0.0, 0.27753), abs=1e-5)
    assert wilson_interval(10, 10)[1] == pytest.approx(1.0)
    lo, hi = wilson_interval(0, 0)
    assert np.isnan(lo) and np.isnan(hi)


def test_bootstrap_auc_interval_is_seeded_and_brackets_the_auc():
    from foclip.runtime.stats import bootstrap_auc_interval, roc_auc

    rng = np.random.default_rng(1)
    pos, neg = rng.normal(1, 1, 40), rng.normal(0, 1, 40)
    a = bootstrap_auc_interval(pos, neg, reps=300, seed=3)
    assert a == bootstrap_auc_interval(pos, neg, reps=300, seed=3)
    assert a[0] < roc_auc(pos, neg) < a[1] and a[1] - a[0] > 0.05


def _sim(seed, n=40):
    r = np.random.default_rng(seed)
    return r.normal(10, 2, n), r.normal(0.1, 0.1, n), r.normal(12, 2, n), r.normal(0.35, 0.15, n)


def test_held_out_fpr_is_not_the_fit_set_fpr():
    """The fit set's FPR is at most the target by construction; thresholds judged on unseen originals
    exceed it (measured over 30 seeds: fit 0.050, held-out 0.073, fresh originals 0.095)."""
    from foclip.runtime.stats import held_out_evaluation

    fit, held = [], []
    for seed in range(30):
        so, do, sm, dm = _sim(seed)
        ts, td = search_thresholds(so, do, sm, dm, 0.05)
        fit.append(evaluate(so, do, sm, dm, ts, td)["fpr"])
        held.append(held_out_evaluation(so, do, sm, dm, 0.05, reps=50, seed=seed)["fpr"])
    assert max(fit) <= 0.05
    assert np.mean(held) > np.mean(fit) + 0.01


def test_held_out_evaluation_fields_and_intervals():
    from foclip.runtime.stats import held_out_evaluation

    so, do, sm, dm = _sim(0)
    h = held_out_evaluation(so, do, sm, dm, 0.05, folds=5, seed=0, reps=100)
    assert h["folds"] == 5 and h["tp"] + h["fn"] == 40 and h["fp"] + h["tn"] == 40
    for key in ("tpr", "fpr", "accuracy", "roc_auc"):
        lo, hi = h["ci95"][key]
        assert lo <= h[key] <= hi
    assert h == held_out_evaluation(so, do, sm, dm, 0.05, folds=5, seed=0, reps=100)
    assert h["tau_drop_range"][0] <= h["tau_drop_range"][1]
    # Separable classes: perfect out-of-fold too.
    sep = held_out_evaluation(so, do, sm, dm + 5, 0.05, mode="max-accuracy", reps=20)
    assert sep["tpr"] == 1.0 and sep["fpr"] == 0.0 and sep["roc_auc"] == 1.0


def test_held_out_evaluation_skips_tiny_classes():
    from foclip.runtime.stats import held_out_evaluation

    assert "at least 2" in held_out_evaluation([1.0], [0.1], [2.0, 3.0], [0.5, 0.6])["skipped"]
    assert "off" in held_out_evaluation([1.0, 2.0], [0.1, 0.2], [2.0, 3.0], [0.5, 0.6], folds=0)["skipped"]
    # Fewer images than folds: k shrinks to the smaller class.
    assert held_out_evaluation([1.0, 2, 3], [0.1, 0.2, 0.3], [2.0, 3, 4, 5], [0.5, 0.6, 0.7, 0.8],
                               folds=5, reps=10)["folds"] == 3


def test_sample_size_warnings():
    from foclip.runtime.stats import sample_size_warnings

    w = sample_size_warnings(12, 12, 0.05)
    assert len(w) == 2 and w[0].startswith("originals: 12 images cannot resolve a 5.0% FPR target")
    assert "needs at least 20 (25 for the 5-fold held-out figures)" in w[0]
    assert sample_size_warnings(30, 30, 0.05) == []
    assert sample_size_warnings(12, 12, 0.05, mode="max-accuracy") == []
    assert sample_size_warnings(22, 40, 0.05) == [
        ("originals: 22 images resolve a 5.0% FPR target, but each 5-fold held-out fit sees only about 17; "
        "needs at least 25 for the held-out figures")]


def test_fit_calibration_saves_held_out_and_warnings(tmp_path):
    so, do, sm, dm = _sim(2, n=12)
    cal = fit_calibration(so, do, sm, dm, bundle_hash="a" * 64, backend="ort-cpu", precision="fp32",
                          score_scale=100.0, text_bank={"name": "artistic", "sha256": "b" * 64, "count": 62})
    cal.save(tmp_path / "c.json")
    again = Calibration.load(tmp_path / "c.json")
    assert again.metrics["held_out"]["folds"] == 5 and len(again.metrics["warnings"]) == 2
    assert again.tau_drop == cal.tau_drop
