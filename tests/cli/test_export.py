"""CLI: `foclip export`, `foclip inspect`, `foclip build-engine` (exit codes and one-line errors)."""

from __future__ import annotations

import importlib.util
import json
import shutil

import pytest

from foclip.cli.export import split_prompt_specs
from foclip.cli.main import main


def test_export_cli_writes_a_bundle(tmp_path, capsys):
    prompts = tmp_path / "my prompts.txt"
    prompts.write_text("a red apple\na painting, in oil\n", encoding="utf-8")
    out = tmp_path / "bundle"
    rc = main(["export", "--out", str(out), "--model", "foclip-tiny", "--precision", "fp32,int8",
               "--prompts", f"artistic,{prompts}", "--no-detect-graph"])
    cap = capsys.readouterr()
    assert rc == 0, cap.err
    assert "RANDOMLY INITIALISED" in cap.err and "min cosine" in cap.out
    m = json.loads((out / "manifest.json").read_text())
    assert set(m["text_banks"]) == {"artistic", "file:my prompts"}
    assert (out / "banks/file-my_prompts.prompts.json").is_file()
    assert set(m["image_encoders"]) == {"fp32", "int8"}
    # a second run into the same folder is refused without --force
    rc = main(["export", "--out", str(out), "--model", "foclip-tiny", "--precision", "fp32"])
    err = " ".join(capsys.readouterr().err.split())  # rich wraps long lines at the console width
    assert rc == 1 and "not empty" in err and "--force" in err and "Traceback" not in err


def test_export_cli_bad_model_is_one_line(tmp_path, capsys):
    rc = main(["export", "--out", str(tmp_path / "b"), "--model", "ViT-B-3"])
    err = " ".join(capsys.readouterr().err.split())
    assert rc == 1 and "ViT-B-32" in err and "Traceback" not in err
    assert not (tmp_path / "b").exists()


def test_split_prompt_specs(tmp_path):
    f = tmp_path / "a,b.txt"
    f.write_text("x\n")
    assert split_prompt_specs(None) == ("artistic",)
    assert split_prompt_specs(["artistic,imagenet-10", "artistic", str(f)]) == ("artistic", "imagenet-10", str(f))


def test_inspect_ok(tiny_bundle, capsys):
    rc = main(["inspect", str(tiny_bundle)])
    out = capsys.readouterr().out
    assert rc == 0
    assert "foclip-tiny" in out and "RANDOM WEIGHTS" in out and "min cosine" in out and "match their sha256" in out


def test_inspect_names_changed_and_missing_files(tiny_bundle, tmp_path, capsys):
    b = tmp_path / "b"
    shutil.copytree(tiny_bundle, b)
    with open(b / "text_encoder.fp16.onnx", "ab") as f:
        f.write(b"\0")
    (b / "tokenizer.json").unlink()
    rc = main(["inspect", str(b)])
    err = " ".join(capsys.readouterr().err.split())
    assert rc == 1
    assert "text_encoder.fp16.onnx" in err and "tokenizer.json" in err and "missing" in err and "changed" in err


def test_inspect_names_a_damaged_parity_report(tiny_bundle, tmp_path, capsys):
    b = tmp_path / "b"
    shutil.copytree(tiny_bundle, b)
    (b / "parity.json").write_text("{damaged")
    rc = main(["inspect", str(b)])
    err = " ".join(capsys.readouterr().err.split())
    assert rc == 1 and "parity.json cannot be parsed" in err and "parity.json: sha256 mismatch" in err
    assert "Traceback" not in err


def test_inspect_not_a_bundle(tmp_path, capsys):
    assert main(["inspect", str(tmp_path)]) == 1
    assert "manifest.json" in capsys.readouterr().err


def test_build_engine_bad_profile(tiny_bundle, capsys):
    assert main(["build-engine", str(tiny_bundle), "--batch", "8,4,16"]) == 1
    assert "--batch" in capsys.readouterr().err


@pytest.mark.skipif(importlib.util.find_spec("tensorrt") is not None, reason="tensorrt is installed")
def test_build_engine_without_tensorrt(tiny_bundle, capsys):
    assert main(["build-engine", str(tiny_bundle)]) == 1
    err = capsys.readouterr().err
    assert "pip install 'foclip[trt]'" in " ".join(err.split()) and err.count("error:") == 1
