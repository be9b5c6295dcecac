"""`foclip calibrate`: a generate-style folder in, calibration.json and plots out, used by detect."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from foclip.cli.calibrate import resolve_class_dirs
from foclip.cli.main import main
from foclip.errors import InputError


@pytest.fixture(scope="module")
def generated(tmp_path_factory, sample_photos):
    """A folder shaped like `foclip generate` output: original/ photos and manipulated/ altered copies."""
    root = tmp_path_factory.mktemp("generated")
    (root / "original").mkdir()
    (root / "manipulated").mkdir()
    rng = np.random.default_rng(0)
    for i, (name, arr) in enumerate(sample_photos.items()):
        for k in range(3):
            crop = arr[k * 20:, k * 15:]
            Image.fromarray(crop).save(root / "original" / f"{name}{k}.png")
            noisy = np.clip(crop.astype(int) + rng.integers(-60, 60, crop.shape), 0, 255).astype(np.uint8)
            Image.fromarray(noisy[:, :, ::-1].copy()).save(root / "manipulated" / f"{name}{k}.png")
    return root


def test_calibrate_then_detect(tiny_bundle, generated, tmp_path):
    cal = tmp_path / "calibration.json"
    plots = tmp_path / "plots"
    rc = main(["calibrate", str(tiny_bundle), "--originals", str(generated), "--target-fpr", "0.1",
               "--out", str(cal), "--plots", str(plots), "--batch", "8"])
    assert rc == 0
    d = json.loads(cal.read_text())
    assert d["backend"] == "ort-cpu" and d["precision"] == "fp32" and len(d["bundle_hash"]) == 64
    assert d["metrics"]["n_originals"] == 12 and d["metrics"]["n_manipulated"] == 12
    assert d["metrics"]["fpr"] <= 0.1 and 0.0 <= d["metrics"]["roc_auc"] <= 1.0
    assert {p.name for p in plots.iterdir()} == {"roc.png", "hist_score_color.png", "hist_drop.png"}
    out = tmp_path / "r.jsonl"
    assert main(["detect", str(tiny_bundle), str(generated / "manipulated"), "--calibration", str(cal),
                 "--out", str(out)]) in (0, 3)  # 3: something was flagged
    lines = [json.loads(ln) for ln in out.read_text().splitlines()]
    assert all(ln["calibrated"] for ln in lines)


def test_calibration_with_another_bundle_fails(tiny_bundle, generated, tmp_path, capsys):
    cal = tmp_path / "calibration.json"
    assert main(["calibrate", str(tiny_bundle), "--originals", str(generated / "original"),
                 "--manipulated", str(generated / "manipulated"), "--mode", "max-accuracy",
                 "--out", str(cal)]) == 0
    d = json.loads(cal.read_text())
    d["bundle_hash"] = "0" * 64
    cal.write_text(json.dumps(d))
    assert main(["detect", str(tiny_bundle), str(generated / "original"), "--calibration", str(cal)]) == 1
    assert "was made with bundle 000000000000" in capsys.readouterr().err


def test_resolve_class_dirs(generated, tmp_path):
    assert resolve_class_dirs(str(generated), None) == (generated / "original", generated / "manipulated")
    assert resolve_class_dirs(str(generated), str(generated)) == (generated / "original", generated / "manipulated")
    with pytest.raises(InputError, match="--manipulated"):
        resolve_class_dirs(str(generated / "original"), None)
    with pytest.raises(InputError, match="not a folder"):
        resolve_class_dirs(str(tmp_path / "nope"), None)


def test_bad_target_fpr_is_refused_before_scoring(tmp_path, capsys):
    # The folders do not even exist: the option is checked first, so its error is the one reported.
    code = main(["calibrate", str(tmp_path / "no-bundle"), "--originals", str(tmp_path / "o"),
                 "--manipulated", str(tmp_path / "m"), "--target-fpr", "1.5"])
    assert code == 1
    assert "--target-fpr 1.5 | is out of range" in capsys.readouterr().err


def test_calibrate_prints_held_out_figures_and_small_sample_warning(tiny_bundle, generated, tmp_path, capsys):
    cal = tmp_path / "calibration.json"
    rc = main(["calibrate", str(tiny_bundle), "--originals", str(generated), "--out", str(cal),
               "--folds", "4", "--seed", "1"])
    assert rc == 0
    out, err = capsys.readouterr()
    h = json.loads(cal.read_text())["metrics"]["held_out"]
    assert "held out (4-fold)" in out and "fit set" in out
    lo, hi = h["ci95"]["fpr"]
    assert f"{h['fpr']:.1%} [{lo:.1%}, {hi:.1%}]" in out
    # 12 + 12 images at the default 5 % target: both classes are too small, and the user is told how many.
    assert err.count("small sample:") == 2
    assert "originals: 12 images cannot resolve a 5.0% FPR target" in err and "needs at least 20" in err
    assert h["folds"] == 4 and h["seed"] == 1 and h["n_originals"] == 12
    assert h["ci95"]["fpr"][0] <= h["fpr"] <= h["ci95"]["fpr"][1]


def test_calibrate_rejects_one_fold(tiny_bundle, generated, tmp_path, capsys):
    assert main(["calibrate", str(tiny_bundle), "--originals", str(generated), "--folds", "1",
                 "--out", str(tmp_path / "c.json")]) == 1
    assert "--folds 1 | is out of range" in capsys.readouterr().err


def test_histogram_view_is_not_squashed_by_one_outlier():
    import numpy as np

    from foclip.plots import _view

    rng = np.random.default_rng(0)
    orig, man = rng.normal(0.1, 0.05, 12), rng.normal(0.6, 0.1, 12)
    assert _view([orig, man], 0.3) is None  # nothing stray: the full range is shown
    orig[0] = -4.0
    lo, hi = _view([orig, man], 0.3)
    assert -1.0 < lo < 0.0 and 0.6 < hi < 1.2  # the threshold region fills the axis
    assert _view([orig, man], 5.0)[1] == 5.0  # the threshold is always in view


def test_calibrate_rerun_with_other_settings_is_refused_unless_forced(tiny_bundle, generated, tmp_path, capsys):
    cal = tmp_path / "calibration.json"
    base = ["calibrate", str(tiny_bundle), "--originals", str(generated), "--out", str(cal), "--folds", "0"]
    assert main(base) == 0
    first = cal.read_text()
    assert json.loads(first)["metrics"]["settings"]["precision"] == "fp32"
    capsys.readouterr()
    assert main([*base, "--precision", "int8", "--target-fpr", "0.1"]) == 1
    err = " ".join(capsys.readouterr().err.split())
    assert "precision fp32 (this run: int8)" in err and "target_fpr 0.05 (this run: 0.1)" in err
    assert "--force" in err and "Traceback" not in err and cal.read_text() == first
    assert main(base) == 0  # the same settings: computed again
    assert main([*base, "--precision", "int8", "--force"]) == 0
    assert json.loads(cal.read_text())["metrics"]["settings"]["precision"] == "int8"
