"""Serve checks the detector in the driver first; outputs are checked writable first, follow the umask and fail in one line."""

from __future__ import annotations

import errno
import os
import shutil
import stat
import tempfile

import pytest

from foclip.cli.main import main


def one_line(capsys) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    return " ".join(err.split())


def test_serve_with_missing_precision_fails_in_the_driver_with_one_line(tiny_bundle, tmp_path, capsys):
    bundle = tmp_path / "b"
    shutil.copytree(tiny_bundle, bundle)
    (bundle / "image_encoder.int8.onnx").unlink()
    assert main(["serve", str(bundle), "--precision", "int8", "--port", "1"]) == 1
    err = one_line(capsys)
    assert "int8" in err and "Ray" not in err


def test_serve_with_a_foreign_calibration_fails_in_the_driver(tiny_bundle, tmp_path, capsys):
    import json

    cal = tmp_path / "calibration.json"
    cal.write_text(json.dumps({"tau_score": 1.0, "tau_drop": 0.1, "bundle_hash": "0" * 64}))
    assert main(["serve", str(tiny_bundle), "--calibration", str(cal)]) == 1
    assert "calibration" in one_line(capsys).lower()


def test_unwritable_output_folder_fails_before_any_work(tiny_bundle, sample_photo_dir, tmp_path, capsys, monkeypatch):
    import foclip.runtime

    opened: list[str] = []
    monkeypatch.setattr(foclip.runtime.Detector, "from_bundle",
                        classmethod(lambda cls, *a, **k: opened.append("x") or pytest.fail("loaded a model")))

    def read_only(*_a, **_k):  # what mkstemp raises on a read-only mount (root ignores chmod)
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(tempfile, "mkstemp", read_only)
    assert main(["detect", str(tiny_bundle), str(sample_photo_dir), "--out", str(tmp_path / "r.jsonl")]) == 1
    assert "read-only" in one_line(capsys) and opened == []


def test_generate_fails_on_an_unusable_output_before_optimising(sample_photo_dir, tmp_path, capsys, monkeypatch):
    import foclip_train.generate as gen

    monkeypatch.setattr(gen, "load_resources", lambda *a, **k: pytest.fail("loaded a model before checking --out"))
    not_a_folder = tmp_path / "file"
    not_a_folder.write_text("x")
    assert main(["generate", str(sample_photo_dir), "--out", str(not_a_folder), "--model", "foclip-tiny",
                 "--pretrained", "random"]) == 1
    assert "not a folder" in one_line(capsys)


def test_disk_full_while_writing_is_one_line(tmp_path):
    from foclip.outputs import OutputError, atomic_write_bytes

    real_fdopen = os.fdopen

    class Full:
        def __init__(self, f):
            self.f = f

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.f.close()

        def fileno(self):
            return self.f.fileno()

        def write(self, data):
            raise OSError(errno.ENOSPC, "No space left on device")

        def flush(self):
            pass

    import unittest.mock

    with unittest.mock.patch("os.fdopen", lambda fd, mode: Full(real_fdopen(fd, mode))), \
            pytest.raises(OutputError) as info:
        atomic_write_bytes(tmp_path / "x.png", b"data")
    assert "disk is full" in str(info.value) and "\n" not in str(info.value)
    assert list(tmp_path.iterdir()) == []  # no temp file left, nothing that looks finished


def test_outputs_follow_the_umask(tiny_bundle, sample_photo_dir, tmp_path):
    from foclip.outputs import atomic_write_bytes

    old = os.umask(0o027)
    try:
        atomic_write_bytes(tmp_path / "a.bin", b"1")
        assert main(["detect", str(tiny_bundle), str(sample_photo_dir), "--out", str(tmp_path / "r.jsonl"),
                     "--exit-zero"]) == 0
    finally:
        os.umask(old)
    for name in ("a.bin", "r.jsonl", "r.jsonl.meta.json"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o640, name
