"""Readable output (issue 25): 80-column tables, "did you mean" for flag names and values, plots that
say what they show."""

from __future__ import annotations

import io

import pytest
from rich.console import Console

from foclip.cli.main import main


def test_inspect_verify_is_readable_at_80_columns(tiny_bundle, monkeypatch):
    from foclip.cli import common

    buf = io.StringIO()
    monkeypatch.setattr(common, "console", Console(file=buf, width=80, color_system=None))
    assert main(["inspect", str(tiny_bundle), "--verify"]) == 0
    text = buf.getvalue()
    # nothing cut (the rows once read `image_enc…`); the one "…" is the text bank's shortened sha256
    cut = [line for line in text.splitlines() if "…" in line]
    assert all(len(line.split("…")[0].split()[-1]) == 16 for line in cut), cut
    assert max(len(line) for line in text.splitlines()) <= 80
    for key in ("image.fp32", "image.fp16", "image.int8", "text.fp32", "detect.fp32"):
        assert text.count(f"│ {key} ") == 2, key  # in the parity table and in the self-check table


@pytest.mark.parametrize(("argv", "hint"), [
    (["generate", "x.png", "--output", "adv2/"], "did you mean --out adv2/?"),  # --output is a real flag here
    (["export", "--output", "b/", "--model", "foclip-tiny"], "did you mean --out (for --output)?"),
    (["detect", "b", "x.png", "--graph", "fuse"], "did you mean 'fused'?"),
])
def test_mistyped_flag_names_get_did_you_mean(argv, hint, capsys):
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2 and hint in " ".join(capsys.readouterr().err.split())


def _error_line(capsys) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return " ".join(err.split())


@pytest.mark.parametrize(("extra", "hint"), [
    (["--precision", "fp61"], "(did you mean 'fp16'?)"),
    (["--backend", "ort-cpy"], "(did you mean 'ort-cpu'"),
    (["--probes", "grey"], "(did you mean 'gray'?)"),
    (["--prompts", "artstic"], "(did you mean 'artistic'?)"),
])
def test_mistyped_detect_values_get_did_you_mean(extra, hint, tiny_bundle, sample_photo_dir, capsys):
    assert main(["detect", str(tiny_bundle), str(sample_photo_dir), "--no-self-check", *extra]) == 1
    assert hint in _error_line(capsys)


@pytest.mark.parametrize(("extra", "hint"), [
    (["--precision", "fp32,fp61"], "(did you mean 'fp16'?)"),
    (["--int8-method", "dynamic-u8s8"], "(did you mean 'dynamic-u8u8' or 'dynamic-u8s7'?)"),
    (["--prompts", "clipar"], "(did you mean 'clipart'?)"),
    (["--prompts", "imagnet-50"], "(did you mean 'imagenet-50'?)"),
])
def test_mistyped_export_values_get_did_you_mean(extra, hint, tmp_path, capsys):
    assert main(["export", "--out", str(tmp_path / "b"), "--model", "foclip-tiny", "--pretrained", "random",
                 *extra]) == 1
    assert hint in _error_line(capsys)


@pytest.mark.parametrize(("extra", "hint"), [
    (["--device", "cda"], "(did you mean 'cuda'?)"),
    (["--adaptive", "grey"], "(did you mean 'gray'?)"),
    (["--prompts", "masterpeices"], "(did you mean 'masterpieces'?)"),
])
def test_mistyped_generate_values_get_did_you_mean(extra, hint, tmp_path, sample_photo_dir, capsys):
    assert main(["generate", str(sample_photo_dir), "--out", str(tmp_path / "g"), "--model", "foclip-tiny",
                 "--pretrained", "random", "--iters", "1", *extra]) == 1
    assert hint in _error_line(capsys)


def test_mistyped_pretrained_and_sections_get_did_you_mean(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert main(["export", "--out", str(tmp_path / "b"), "--model", "foclip-tiny", "--pretrained", "randon"]) == 1
    assert "(did you mean 'random'?)" in _error_line(capsys)
    assert main(["reproduce", "--out", str(tmp_path / "r"), "--model", "foclip-tiny", "--pretrained", "random",
                 "--sections", "tabel1"]) == 1
    assert "(did you mean 'table1'" in _error_line(capsys)
