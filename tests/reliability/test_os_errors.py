"""Issue 24, points 6-7: one line for every OS error on every command, and `--out` that refuses to
replace an input image or a file inside the bundle."""

from __future__ import annotations

import errno
import json
import os
import shutil

import pytest

from foclip.cli.main import main


def error_lines(text: str) -> list[str]:
    assert "Traceback" not in text, text
    return [ln for ln in text.splitlines() if ln.startswith("error:")]


@pytest.fixture
def manipulated_dir(sample_photo_dir, tmp_path):
    """A folder of images other than the originals (calibrate refuses identical sets)."""
    from PIL import Image

    d = tmp_path / "manipulated"
    d.mkdir()
    for p in sorted(sample_photo_dir.iterdir()):
        with Image.open(p) as img:
            img.transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(d / f"{p.stem}.png")
    return d


@pytest.fixture
def locked_bundle(tiny_bundle, tmp_path, monkeypatch):
    """A copy of the tiny bundle whose tokenizer.json this process may not read.

    Mode 000 does not stop root (these tests run as root in CI containers), so the denial is what
    a non-root user meets: every Python-level open of that file raises PermissionError (EACCES).
    """
    import builtins
    import io

    b = tmp_path / "b"
    shutil.copytree(tiny_bundle, b)
    locked = os.path.realpath(b / "tokenizer.json")
    os.chmod(locked, 0)
    real_open = builtins.open

    def guarded(file, *args, **kwargs):
        if isinstance(file, (str, os.PathLike)) and os.path.realpath(file) == locked:
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), os.fspath(file))
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", guarded)
    monkeypatch.setattr(io, "open", guarded)
    return b


@pytest.mark.parametrize("command", ["detect", "serve", "inspect", "calibrate"])
def test_an_unreadable_bundle_file_is_one_line_on_every_command(locked_bundle, sample_photo_dir, manipulated_dir,
                                                                tmp_path, capsys, command):
    argv = {"detect": ["detect", str(locked_bundle), str(sample_photo_dir), "--out", str(tmp_path / "r.jsonl")],
            "serve": ["serve", str(locked_bundle), "--port", "1"],
            "inspect": ["inspect", str(locked_bundle)],
            "calibrate": ["calibrate", str(locked_bundle), "--originals", str(sample_photo_dir), "--manipulated",
                          str(manipulated_dir), "--out", str(tmp_path / "c.json")]}[command]
    assert main(argv) == 1
    lines = error_lines(capsys.readouterr().err)
    assert len(lines) == 1 and "tokenizer.json" in lines[0] and "permission denied" in lines[0], lines


def test_disk_full_missing_and_folder_errors_are_one_line(tiny_bundle, capsys, monkeypatch, tmp_path):
    import foclip.cli.inspect as inspect_cmd

    for code, word in ((errno.ENOSPC, "disk is full"), (errno.ENOENT, "does not exist"), (errno.EISDIR, "is a folder")):
        def fail(*_a, code=code, **_k):
            raise OSError(code, os.strerror(code), str(tmp_path / "x.onnx"))

        monkeypatch.setattr(inspect_cmd, "run", fail)
        monkeypatch.setattr(inspect_cmd, "add_parser", inspect_cmd.add_parser)
        import foclip.cli.main as cli_main

        parser_run = cli_main.parse(["inspect", str(tiny_bundle)])
        parser_run.func = fail
        monkeypatch.setattr(cli_main, "parse", lambda argv, a=parser_run: a)
        assert main(["inspect", str(tiny_bundle)]) == 1
        lines = error_lines(capsys.readouterr().err)
        assert len(lines) == 1 and word in lines[0] and "x.onnx" in lines[0]


def test_an_os_error_naming_no_file_is_still_a_bug_with_its_traceback(tiny_bundle, monkeypatch):
    import foclip.cli.main as cli_main

    args = cli_main.parse(["inspect", str(tiny_bundle)])

    def fail(*_a, **_k):
        raise OSError(errno.ECONNRESET, "Connection reset by peer")

    args.func = fail
    monkeypatch.setattr(cli_main, "parse", lambda argv: args)
    with pytest.raises(OSError):
        main(["inspect", str(tiny_bundle)])


def test_out_onto_an_input_image_is_refused_before_loading(tiny_bundle, sample_photo_dir, tmp_path, capsys):
    photos = tmp_path / "photos"
    shutil.copytree(sample_photo_dir, photos)
    victim = min(photos.iterdir())
    before = victim.read_bytes()
    assert main(["detect", str(tiny_bundle), str(photos), "--out", str(victim)]) == 1
    lines = error_lines(capsys.readouterr().err)
    assert len(lines) == 1 and "is the input" in lines[0]
    assert victim.read_bytes() == before
    # Spelled another way (relative, through ..): the same file.
    other = os.path.relpath(photos / ".." / "photos" / victim.name)
    assert main(["detect", str(tiny_bundle), str(photos), "--out", other]) == 1


@pytest.mark.parametrize("name", ["manifest.json", "new-results.jsonl"])
def test_out_inside_the_bundle_is_refused(tiny_bundle, sample_photo_dir, tmp_path, capsys, name):
    b = tmp_path / "b"
    shutil.copytree(tiny_bundle, b)
    manifest = (b / "manifest.json").read_text()
    assert main(["detect", str(b), str(sample_photo_dir), "--out", str(b / name)]) == 1
    lines = error_lines(capsys.readouterr().err)
    assert len(lines) == 1 and "inside the bundle" in lines[0]
    assert (b / "manifest.json").read_text() == manifest and not (b / "new-results.jsonl").exists()
    json.loads(manifest)


def test_calibrate_out_inside_the_bundle_is_refused(tiny_bundle, sample_photo_dir, manipulated_dir, tmp_path, capsys):
    b = tmp_path / "b"
    shutil.copytree(tiny_bundle, b)
    assert main(["calibrate", str(b), "--originals", str(sample_photo_dir), "--manipulated", str(manipulated_dir),
                 "--out", str(b / "manifest.json")]) == 1
    assert "inside the bundle" in capsys.readouterr().err
