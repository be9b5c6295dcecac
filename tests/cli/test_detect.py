"""`foclip detect`: files, folders, globs, @lists; verdict table, JSONL/CSV, atomic --out; exit codes."""

from __future__ import annotations

import csv
import io
import json
import shutil

import pytest

from foclip.cli.main import main
from foclip.runtime import Detector
from foclip.runtime.calibration import Calibration


def _calibration(bundle, path, tau_score: float, tau_drop: float):
    """A calibration.json for ``bundle`` with chosen thresholds (to force every verdict one way)."""
    with Detector.from_bundle(bundle, threads=1) as det:
        bank = det.text_bank
        Calibration(tau_score=tau_score, tau_drop=tau_drop, mode="fpr", target_fpr=0.05,
                    bundle_hash=det.bundle.bundle_hash, backend="ort-cpu", precision="fp32",
                    score_scale=det.score_scale,
                    text_bank={"name": bank.name, "sha256": bank.sha256, "count": len(bank.prompts)}).save(path)
    return path


def test_detect_folder_glob_list_and_bad_items(tiny_bundle, sample_photo_dir, tmp_path):
    bad = tmp_path / "bad.jpg"
    bad.write_text("not an image")
    listing = tmp_path / "list.txt"
    png = min(sample_photo_dir.glob("*.png"))
    listing.write_text(f"# one path a line\n{png}\n")
    out = tmp_path / "out" / "results.jsonl"
    rc = main(["detect", str(tiny_bundle), str(sample_photo_dir), str(sample_photo_dir / "*.jpg"), f"@{listing}",
               str(bad), str(tmp_path / "missing.png"), "--batch", "3", "--threads", "1", "--out", str(out)])
    assert rc in (4, 5)  # inputs unreadable (and maybe some flagged with the default thresholds)
    lines = [json.loads(ln) for ln in out.read_text().splitlines()]
    n_photos = len(list(sample_photo_dir.iterdir()))
    n_jpg = len(list(sample_photo_dir.glob("*.jpg")))
    assert len(lines) == n_photos + n_jpg + 1 + 2
    codes = [ln["error"]["code"] for ln in lines if ln["error"]]
    assert codes == ["not_an_image", "not_found"]
    ok = [ln for ln in lines if not ln["error"]]
    assert all(isinstance(ln["score_color"], float) and isinstance(ln["tampered"], bool) for ln in ok)
    assert all(ln["calibrated"] is False and ln["score_scale"] == 100.0 for ln in lines)
    assert not [p for p in out.parent.iterdir() if p.name.endswith(".tmp")]


def test_detect_exits_1_when_nothing_readable(tiny_bundle, tmp_path, capsys):
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"")
    assert main(["detect", str(tiny_bundle), str(bad), "--threads", "1"]) == 1
    assert "none of the inputs" in capsys.readouterr().err


def test_detect_bad_backend_is_one_line_error(tiny_bundle, sample_photo_dir, capsys):
    assert main(["detect", str(tiny_bundle), str(sample_photo_dir), "--backend", "nope"]) == 1
    err = capsys.readouterr().err
    assert "ort-cpu" in err and "Traceback" not in err


def test_small_run_prints_a_verdict_per_image_and_names_unreadable_files(tiny_bundle, sample_photo_dir, tmp_path,
                                                                          capsys):
    photos = tmp_path / "in"
    shutil.copytree(sample_photo_dir, photos)
    bad = photos / "notes.jpg"
    bad.write_text("not an image")
    cal = _calibration(tiny_bundle, tmp_path / "cal.json", tau_score=0.0, tau_drop=-1e9)  # flags every image
    rc = main(["detect", str(tiny_bundle), str(photos), "--calibration", str(cal), "--threads", "1"])
    out, err = capsys.readouterr()
    assert rc == 5  # flagged and unreadable
    text = out.replace("\n", "")
    for photo in sample_photo_dir.iterdir():
        assert photo.name in text
    n = len(list(sample_photo_dir.iterdir()))
    assert out.count("TAMPERED") == n and out.count("unreadable") == 2  # its row and the count
    assert f"{n + 1} image(s): {n} flagged as tampered, 0 clean, 1 unreadable." in " ".join(out.split())
    assert "images under" in out and str(photos / "chelsea.jpg") not in text  # rows are relative to the folder
    assert "unreadable (not_an_image): " in err and "notes.jpg" in err


@pytest.mark.parametrize(("tau_score", "expected"), [(100.0, 0), (0.0, 3)])  # 100: the top of the scale
def test_exit_code_says_whether_anything_was_flagged(tiny_bundle, sample_photo_dir, tmp_path, tau_score, expected):
    cal = _calibration(tiny_bundle, tmp_path / "cal.json", tau_score=tau_score, tau_drop=-1e9)
    args = ["detect", str(tiny_bundle), str(sample_photo_dir), "--calibration", str(cal), "--threads", "1"]
    assert main(args) == expected
    assert main([*args, "--exit-zero"]) == 0


def test_jsonl_and_csv_on_stdout_and_csv_out_file(tiny_bundle, sample_photo_dir, tmp_path, capsys):
    bad = tmp_path / "empty.png"
    bad.write_bytes(b"")
    out_csv = tmp_path / "r.csv"
    base = ["detect", str(tiny_bundle), str(sample_photo_dir), str(bad), "--threads", "1", "--exit-zero"]
    assert main([*base, "--format", "jsonl"]) == 0
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    n = len(list(sample_photo_dir.iterdir())) + 1
    assert len(lines) == n and lines[-1]["id"] == str(bad) and lines[-1]["error"]["code"]
    assert main([*base, "--format", "csv", "--out", str(out_csv)]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert len(rows) == n and rows[-1]["error_code"] == lines[-1]["error"]["code"] and rows[0]["error_code"] == ""
    assert float(rows[0]["score_color"]) == pytest.approx(lines[0]["score_color"])
    assert list(csv.DictReader(out_csv.open())) == rows


def test_large_run_lists_only_flagged_and_unreadable(tiny_bundle, sample_photo_dir, tmp_path, capsys, monkeypatch):
    from foclip.cli import detect

    monkeypatch.setattr(detect, "TABLE_ROWS", 2)
    bad = tmp_path / "broken.gif"
    bad.write_text("x")
    cal = _calibration(tiny_bundle, tmp_path / "cal.json", tau_score=100.0, tau_drop=-1e9)  # top of the scale: flags nothing
    assert main(["detect", str(tiny_bundle), str(sample_photo_dir), str(bad), "--calibration", str(cal),
                 "--threads", "1"]) == 4
    out = capsys.readouterr().out
    assert "broken.gif" in out and "flagged and unreadable images" in out and "images/s" in out
    assert not any(p.name in out for p in sample_photo_dir.iterdir())


def test_paths_are_checked_before_the_model_loads(tiny_bundle, tmp_path, capsys, monkeypatch):
    def no_loading(*a, **k):
        raise AssertionError("the bundle was loaded")

    monkeypatch.setattr(Detector, "from_bundle", no_loading)
    (tmp_path / "photos").mkdir()
    assert main(["detect", str(tiny_bundle), str(tmp_path / "photo")]) == 1
    err = capsys.readouterr().err
    assert "does not exist (did you mean" in err and "photos" in err and err.count("\n") <= 2
    assert main(["detect", str(tmp_path / "bundel"), str(tmp_path / "photos")]) == 1
    assert "bundle" in capsys.readouterr().err
    assert main(["detect", str(tiny_bundle), str(tmp_path / "photos")]) == 1  # an empty folder
    assert "match no image files" in capsys.readouterr().err
