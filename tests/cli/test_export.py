"""CLI: `foclip export`, `foclip inspect`, `foclip build-engine` (exit codes and one-line errors)."""

from __future__ import annotations

import json
import shutil

import pytest

from foclip.cli.export import split_prompt_specs
from foclip.cli.main import main
from foclip.runtime.trt_env import tensorrt_available


def test_export_cli_writes_a_bundle(tmp_path, capsys):
    prompts = tmp_path / "my prompts.txt"
    prompts.write_text("a red apple\na painting, in oil\n", encoding="utf-8")
    out = tmp_path / "bundle"
    rc = main(["export", "--out", str(out), "--model", "foclip-tiny", "--pretrained", "random", "--precision", "fp32,int8",
               "--prompts", f"artistic,{prompts}"])
    cap = capsys.readouterr()
    assert rc == 0, cap.err
    assert "RANDOMLY INITIALISED" in cap.err and "min cosine" in cap.out
    m = json.loads((out / "manifest.json").read_text())
    assert set(m["text_banks"]) == {"artistic", "file:my prompts"}
    assert (out / "banks/file-my_prompts.prompts.json").is_file()
    assert set(m["graphs"]) == {"image.fp32", "image.int8", "text.fp32"}  # no fused graph unless asked
    # a second run into the same folder with other settings is refused without --force, naming them
    rc = main(["export", "--out", str(out), "--model", "foclip-tiny", "--pretrained", "random", "--precision", "fp32"])
    err = " ".join(capsys.readouterr().err.split())  # rich wraps long lines at the console width
    assert rc == 1 and "precisions fp32,int8 (this run: fp32)" in err and "--force" in err
    assert "Traceback" not in err and len(err.splitlines()) == 1
    # the same settings: nothing to do
    rc = main(["export", "--out", str(out), "--model", "foclip-tiny", "--pretrained", "random", "--precision",
               "fp32,int8", "--prompts", f"artistic,{prompts}"])
    assert rc == 0 and "nothing to do" in " ".join(capsys.readouterr().out.split())
    # a folder that holds something else than a bundle is still refused as not empty
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("x")
    rc = main(["export", "--out", str(other), "--model", "foclip-tiny", "--pretrained", "random"])
    assert rc == 1 and "not empty" in " ".join(capsys.readouterr().err.split())


def test_export_cli_bad_model_is_one_line(tmp_path, capsys):
    rc = main(["export", "--out", str(tmp_path / "b"), "--model", "ViT-B-3", "--pretrained", "random"])
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


@pytest.mark.skipif(tensorrt_available(), reason="tensorrt is installed")
def test_build_engine_without_tensorrt(tiny_bundle, capsys):
    assert main(["build-engine", str(tiny_bundle)]) == 1
    err = capsys.readouterr().err
    assert "pip install 'foclip[trt]'" in " ".join(err.split()) and err.count("error:") == 1


def _damage_int8(src, dst, factor=8.0):
    """Copy a bundle and multiply one int8 weight scale: a graph that computes something else, with
    its manifest hashes updated so that only the self-check can notice."""
    import numpy as np
    import onnx
    from onnx import numpy_helper

    from foclip.manifest import MANIFEST_NAME, atomic_write_json, sha256_file

    shutil.copytree(src, dst)
    model = onnx.load(str(dst / "image_encoder.int8.onnx"))
    scales = [t for t in model.graph.initializer if t.name.endswith("_scale") and t.dims]
    scales = scales or [t for t in model.graph.initializer if t.name.endswith("_scale")]
    t = max(scales, key=lambda t: int(np.prod(t.dims)) if t.dims else 1)
    t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(t) * np.float32(factor), t.name))
    onnx.save(model, str(dst / "image_encoder.int8.onnx"))
    raw = json.loads((dst / MANIFEST_NAME).read_text())
    raw["files"]["image_encoder.int8.onnx"] = sha256_file(dst / "image_encoder.int8.onnx")
    atomic_write_json(dst / MANIFEST_NAME, raw)
    return t.name


def test_inspect_verify_prints_each_graph_against_its_gate(tiny_bundle, capsys):
    rc = main(["inspect", str(tiny_bundle), "--verify"])
    out = " ".join(capsys.readouterr().out.split())
    assert rc == 0, out
    for key in ("image.fp32", "image.fp16", "image.int8", "text.fp32", "text.fp16", "detect.fp32"):
        assert key in out
    assert "FAIL" not in out and out.count("pass") >= 6 and ">= 0.99" in out


def test_damaged_int8_is_refused_at_load_and_by_inspect_verify(tiny_bundle, sample_photo_dir, tmp_path, capsys):
    from foclip.runtime import Detector
    from foclip.runtime.selfcheck import SelfCheckError

    b = tmp_path / "b"
    _damage_int8(tiny_bundle, b)
    with pytest.raises(SelfCheckError) as info:
        Detector.from_bundle(b, precision="int8", threads=1)
    msg = str(info.value)
    assert "\n" not in msg and "graph image.int8 on ort-cpu" in msg and "below its gate 0.99" in msg
    assert "--int8-method dynamic-u8s7" in msg
    with Detector.from_bundle(b, precision="int8", threads=1, self_check=False) as det:  # the escape hatch
        assert det.info()["self_check"] == {"skipped": True}
    with Detector.from_bundle(b, precision="fp32", threads=1) as det:  # other graphs are unaffected
        assert det.info()["self_check"]["passed"] and det.info()["self_check"]["graph"] == "image.fp32"
    rc = main(["inspect", str(b), "--verify", "--precision", "int8"])
    cap = capsys.readouterr()
    assert rc == 1 and "FAIL" in cap.out and "miss their gate" in " ".join(cap.err.split())
    assert main(["detect", str(b), str(sample_photo_dir), "--precision", "int8"]) == 1
    err = " ".join(capsys.readouterr().err.split())
    assert "below its gate" in err and "Traceback" not in err


def test_an_old_manifest_gets_a_clear_message(tiny_bundle, tmp_path, capsys):
    b = tmp_path / "b"
    shutil.copytree(tiny_bundle, b)
    raw = json.loads((b / "manifest.json").read_text())
    raw["schema_version"] = 1
    del raw["reference"]
    (b / "manifest.json").write_text(json.dumps(raw))
    assert main(["inspect", str(b)]) == 1
    err = " ".join(capsys.readouterr().err.split())
    assert "schema version 1" in err and "re-export" in err and "Traceback" not in err
