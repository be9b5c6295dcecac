"""Issue 36.4 and 36.8: folder scans say what they skip (and why), ``--strict`` refuses it, an
extension-less image is read; generate's per-file errors keep their ``[code]``."""

from __future__ import annotations

import json

import pytest
from PIL import Image

from foclip.cli.main import main


@pytest.fixture()
def mixed(tmp_path, sample_photos):
    """Two PNGs, a README.txt, an extension-less JPEG, an extension-less text file and a hidden file."""
    d = tmp_path / "mixed"
    (d / "sub").mkdir(parents=True)
    photos = list(sample_photos.values())
    Image.fromarray(photos[0][::8, ::8]).save(d / "a.png")
    Image.fromarray(photos[1][::8, ::8]).save(d / "sub" / "b.png")
    Image.fromarray(photos[2][::8, ::8]).save(d / "camera_dump", format="JPEG")
    (d / "README.txt").write_text("photos from the shoot\n")
    (d / "NOTES").write_text("not an image\n")
    (d / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
    return d


def test_a_scan_reads_extensionless_images_and_records_the_rest(mixed):
    from foclip.runtime.inputs import Skipped, expand_inputs

    skipped = Skipped()
    found = sorted(p.rsplit("/", 1)[-1] for p in expand_inputs([str(mixed)], skipped))
    assert found == ["a.png", "b.png", "camera_dump"]
    why = {p.rsplit("/", 1)[-1]: reason for p, reason in skipped.items}
    assert set(why) == {"README.txt", "NOTES"}  # hidden files are ignored, not reported
    assert ".txt" in why["README.txt"] and "PIL" in why["NOTES"]
    line = skipped.summary()
    assert line.startswith("skipped 2 file(s)") and "README.txt" in line and "\n" not in line


def test_detect_reports_skipped_files_on_stderr_and_scores_the_extensionless_jpeg(tiny_bundle, mixed, capsys):
    assert main(["detect", str(tiny_bundle), str(mixed), "--format", "jsonl"]) in (0, 3)
    cap = capsys.readouterr()
    ids = [json.loads(line)["id"].rsplit("/", 1)[-1] for line in cap.out.splitlines()]
    assert sorted(ids) == ["a.png", "b.png", "camera_dump"]  # 9b2574a: camera_dump was skipped
    err = " ".join(cap.err.split())
    assert "skipped 2 file(s)" in err and "README.txt" in err and "NOTES" in err  # 9b2574a: nothing said


@pytest.mark.parametrize("command", ["detect", "calibrate", "generate"])
def test_strict_makes_a_skipped_file_an_error(tiny_bundle, mixed, tmp_path, capsys, command):
    argv = {
        "detect": ["detect", str(tiny_bundle), str(mixed), "--strict"],
        "calibrate": ["calibrate", str(tiny_bundle), "--originals", str(mixed), "--manipulated", str(mixed / "sub"),
                      "--out", str(tmp_path / "c.json"), "--strict"],
        "generate": ["generate", str(mixed), "--out", str(tmp_path / "adv"), "--model", "foclip-tiny",
                     "--pretrained", "random", "--strict"],
    }[command]
    assert main(argv) == 1
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    text = " ".join(" ".join(err).split())
    assert "error:" in err[0] and "README.txt" in text and "--strict" in text and "Traceback" not in text
    assert not (tmp_path / "c.json").exists() and not (tmp_path / "adv").exists()


def test_generate_keeps_the_error_code_of_an_unreadable_file(tmp_path, sample_photos, capsys):
    """36.8: rich took ``[not_an_image]`` for markup and printed "PIL can identify ."."""
    src = tmp_path / "in"
    src.mkdir()
    Image.fromarray(sample_photos["coffee"][::8, ::8]).save(src / "ok.png")
    (src / "junk.png").write_bytes(b"not a png")
    main(["generate", str(src), "--out", str(tmp_path / "adv"), "--model", "foclip-tiny", "--pretrained", "random",
          "--iters", "2", "--batch", "2"])
    out = " ".join(capsys.readouterr().out.split())
    assert "PIL can identify [not_an_image]." in out and "identify ." not in out
