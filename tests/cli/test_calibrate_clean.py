"""`foclip calibrate --clean DIR`: the FPR target set on clean traffic, per-group FPR printed (issue 23)."""

from __future__ import annotations

import json

import numpy as np
from PIL import Image

from foclip.cli.main import main


def test_calibrate_with_clean_groups(tiny_bundle, sample_photos, tmp_path, capsys):
    rng = np.random.default_rng(0)
    for d in ("gen/original", "gen/manipulated", "clean/gray", "clean/saturated"):
        (tmp_path / d).mkdir(parents=True)
    for i, (name, arr) in enumerate(sample_photos.items()):
        crop = arr[i * 10:, i * 7:]
        Image.fromarray(crop).save(tmp_path / "gen/original" / f"{name}.png")
        noisy = np.clip(crop.astype(int) + rng.integers(-60, 60, crop.shape), 0, 255).astype(np.uint8)
        Image.fromarray(noisy[:, :, ::-1].copy()).save(tmp_path / "gen/manipulated" / f"{name}.png")
        Image.fromarray(arr).convert("L").convert("RGB").save(tmp_path / "clean/gray" / f"{name}.png")
        Image.fromarray(arr[::-1].copy()).save(tmp_path / "clean/saturated" / f"{name}.png")
    Image.fromarray(sample_photos["coffee"]).save(tmp_path / "clean" / "top.jpg")
    cal = tmp_path / "calibration.json"
    assert main(["calibrate", str(tiny_bundle), "--originals", str(tmp_path / "gen"), "--clean",
                 str(tmp_path / "clean"), "--out", str(cal), "--folds", "2"]) == 0
    m = json.loads(cal.read_text())["metrics"]
    assert m["n_originals"] == 4 + 9  # the clean images joined the originals
    groups = m["clean_groups"]
    assert set(groups) == {"clean", "gray", "saturated"} and groups["gray"]["n"] == 4 and groups["clean"]["n"] == 1
    for g in groups.values():
        assert 0 <= g["fit_fp"] <= g["n"] and 0 <= g["held_out_fp"] <= g["n"] and len(g["held_out_ci95"]) == 2
    assert isinstance(m["threshold_warnings"], list)
    out = capsys.readouterr().out
    assert "false positives on clean traffic" in out and "gray" in out and "saturated" in out


def test_calibrate_clean_folder_must_hold_images(tiny_bundle, tmp_path, capsys):
    for d in ("gen/original", "gen/manipulated", "empty"):
        (tmp_path / d).mkdir(parents=True)
    for d in ("gen/original", "gen/manipulated"):
        for k in range(2):
            Image.new("RGB", (40, 40), (k * 90, 20, 200)).save(tmp_path / d / f"{k}.png")
    assert main(["calibrate", str(tiny_bundle), "--originals", str(tmp_path / "gen"), "--clean",
                 str(tmp_path / "empty"), "--out", str(tmp_path / "c.json")]) == 1
    assert "holds no image" in capsys.readouterr().err
