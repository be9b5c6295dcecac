"""Calibration maths: AUC against sklearn, the 2-D search against brute force, the file round trip."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest

from foclip.errors import InputError
from foclip.runtime.calibration import Calibration, evaluate, fit_calibration, roc_auc, search_thresholds


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
