"""Bad export input: one clear FoclipError line each, and never a partial bundle."""

from __future__ import annotations

import pytest

from foclip.errors import FoclipError, InputError, ModelError
from foclip.exporter import ExportConfig, export_bundle

TINY = {"model_name": "foclip-tiny", "pretrained": "random", "precisions": ("fp32",), "detect_graph": False}


def _no_leftovers(parent):
    return [p.name for p in parent.iterdir() if p.name.startswith(".")]


def _fails(cfg, out, exc=FoclipError, match=None, force=False):
    with pytest.raises(exc, match=match) as info:
        export_bundle(cfg, out, force=force)
    msg = str(info.value)
    assert "\n" not in msg and " | " in msg
    return msg


def test_unknown_model_lists_close_names(tmp_path):
    msg = _fails(ExportConfig(model_name="ViT-B-23"), tmp_path / "b", ModelError)
    assert "ViT-B-32" in msg
    assert not (tmp_path / "b").exists() and _no_leftovers(tmp_path) == []


def test_unreadable_checkpoint(tmp_path):
    ckpt = tmp_path / "weights.safetensors"
    ckpt.write_bytes(b"this is not a checkpoint")
    _fails(ExportConfig(**{**TINY, "pretrained": str(ckpt)}), tmp_path / "b", ModelError, "cannot be read")
    assert not (tmp_path / "b").exists() and _no_leftovers(tmp_path) == []


def test_non_empty_out_dir_needs_force(tmp_path):
    out = tmp_path / "b"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    _fails(ExportConfig(**TINY), out, InputError, "not empty")
    assert (out / "keep.txt").read_text() == "mine"


def test_out_dir_that_is_a_file_or_under_a_file(tmp_path):
    f = tmp_path / "file"
    f.write_text("x")
    _fails(ExportConfig(**TINY), f, InputError, "is a file")
    _fails(ExportConfig(**TINY), f / "b", InputError, "cannot be created")


def test_unwritable_parent(tmp_path, monkeypatch):
    import os

    real = os.access
    monkeypatch.setattr(os, "access", lambda p, mode: False if str(p) == str(tmp_path) else real(p, mode))
    _fails(ExportConfig(**TINY), tmp_path / "b", InputError, "not writable")


def test_empty_and_non_utf8_prompt_files(tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_text("# only a comment\n\n")
    _fails(ExportConfig(**{**TINY, "prompts": (str(empty),)}), tmp_path / "b", InputError, "no prompts")
    latin = tmp_path / "latin.txt"
    latin.write_bytes("caf\xe9 au lait\n".encode("latin-1"))
    _fails(ExportConfig(**{**TINY, "prompts": (str(latin),)}), tmp_path / "b", InputError, "not UTF-8")
    assert not (tmp_path / "b").exists() and _no_leftovers(tmp_path) == []


@pytest.mark.parametrize("opset", [13, 16, 99])
def test_opset_the_exporter_cannot_produce(tmp_path, opset):
    msg = _fails(ExportConfig(**{**TINY, "opset": opset}), tmp_path / "b", InputError, "opset")
    assert "17 to" in msg


def test_unknown_precision_and_no_prompts(tmp_path):
    _fails(ExportConfig(**{**TINY, "precisions": ("fp8",)}), tmp_path / "b", InputError, "fp8")
    _fails(ExportConfig(**{**TINY, "prompts": ()}), tmp_path / "b", InputError, "prompt")


def test_failed_parity_gate_leaves_no_bundle_and_keeps_old_one(tmp_path, monkeypatch):
    from foclip.exporter import parity

    out = tmp_path / "b"
    out.mkdir()
    (out / "old.txt").write_text("previous bundle")
    monkeypatch.setitem(parity.GATES, "fp32", 1.5)  # impossible gate
    msg = _fails(ExportConfig(**TINY), out, parity.ParityError, "below the fp32 gate", force=True)
    assert "min cosine" in msg
    assert (out / "old.txt").read_text() == "previous bundle"
    assert sorted(p.name for p in out.iterdir()) == ["old.txt"]
    assert _no_leftovers(tmp_path) == []


def test_force_replaces_a_previous_bundle(tmp_path):
    out = tmp_path / "b"
    out.mkdir()
    (out / "old.txt").write_text("previous")
    m = export_bundle(ExportConfig(**TINY), out, force=True)
    assert not (out / "old.txt").exists() and (out / "manifest.json").is_file()
    assert set(m.image_encoders) == {"fp32"} and set(m.text_encoders) == {"fp32"} and not m.detect_graphs
    assert _no_leftovers(tmp_path) == []


def test_config_accepts_a_lone_string():
    cfg = ExportConfig(prompts="artistic", precisions="int8")
    assert cfg.prompts == ("artistic",) and cfg.resolved_precisions() == ("fp32", "int8")
