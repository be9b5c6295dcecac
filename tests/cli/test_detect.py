"""`foclip detect`: files, folders, globs, @lists; JSONL written atomically; exit codes."""

from __future__ import annotations

import json

from foclip.cli.main import main


def test_detect_folder_glob_list_and_bad_items(tiny_bundle, sample_photo_dir, tmp_path):
    bad = tmp_path / "bad.jpg"
    bad.write_text("not an image")
    listing = tmp_path / "list.txt"
    png = min(sample_photo_dir.glob("*.png"))
    listing.write_text(f"# one path a line\n{png}\n")
    out = tmp_path / "out" / "results.jsonl"
    rc = main(["detect", str(tiny_bundle), str(sample_photo_dir), str(sample_photo_dir / "*.jpg"), f"@{listing}",
               str(bad), str(tmp_path / "missing.png"), "--batch", "3", "--threads", "1", "--out", str(out)])
    assert rc == 0
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
