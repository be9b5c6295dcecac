"""ViT-B-32 (random weights) export: the real-size graphs pass every gate (slow: ~1-2 min on 2 cores)."""

from __future__ import annotations

import json

import pytest

from foclip.manifest import read_manifest, verify_files


@pytest.mark.slow
def test_vit_b32_export_passes_gates(tmp_path):
    from foclip.exporter import ExportConfig, export_bundle

    out = tmp_path / "vitb32"
    m = export_bundle(ExportConfig(model_name="ViT-B-32", pretrained="random", prompts=("artistic", "imagenet-100"),
                                   precisions=("fp32", "fp16", "int8"), opset=18, seed=0), out)
    assert m.embed_dim == 512 and m.preprocess.image_size == 224 and m.context_length == 77
    assert verify_files(out, read_manifest(out)) == []
    rep = json.loads((out / "parity.json").read_text())
    assert rep["image_encoder"]["fp32"]["min_cosine"] >= 0.99999
    assert rep["image_encoder"]["fp16"]["min_cosine"] >= 0.999
    assert rep["image_encoder"]["int8"]["min_cosine"] >= 0.99
    assert rep["text_encoder"]["fp16"]["min_cosine"] >= 0.999
    sizes = {p.name: round(p.stat().st_size / 1e6, 1) for p in out.rglob("*.onnx")}
    print(json.dumps({"export_seconds": rep["export_seconds"], "parity": m.info["parity_summary"], "mb": sizes}))
