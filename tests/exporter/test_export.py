"""foclip-tiny export: files, manifest, hashes, parity report, dynamic batch, banks, detect graph."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from foclip.manifest import MANIFEST_NAME, read_manifest, sha256_file, sha256_text, verify_files

EXPECTED = {
    "manifest.json", "parity.json", "tokenizer.json", "tokenizer_config.json",
    "image_encoder.fp32.onnx", "image_encoder.fp16.onnx", "image_encoder.int8.onnx",
    "text_encoder.fp32.onnx", "text_encoder.fp16.onnx", "detect.fp32.onnx", "detect.fp16.onnx",
    "banks/artistic.prompts.json", "banks/artistic.fp32.npy",
    "reference/pixels_u8.npy", "reference/image_embeddings.fp32.npy", "reference/tokens.npy",
    "reference/text_embeddings.fp32.npy",
}


def _files(d):
    return {p.relative_to(d).as_posix() for p in d.rglob("*") if p.is_file()}


def test_every_file_and_nothing_else(tiny_bundle):
    assert _files(tiny_bundle) == EXPECTED
    leftovers = [p.name for p in tiny_bundle.parent.iterdir() if p.name.startswith(".")]
    assert leftovers == []


def test_manifest_hashes_and_contract(tiny_bundle):
    m = read_manifest(tiny_bundle)
    assert set(m.files) == EXPECTED - {MANIFEST_NAME}
    assert verify_files(tiny_bundle, m) == []
    assert m.random_init and m.pretrained == "random(seed=0)" and m.model_name == "foclip-tiny"
    assert set(m.image_encoders) == {"fp32", "fp16", "int8"} and set(m.text_encoders) == {"fp32", "fp16"}
    img = m.image_encoders["int8"]
    assert (img.inputs[0].name, img.inputs[0].dtype, img.inputs[0].shape) == (
        "pixels", "float32", ("batch", 3, m.preprocess.image_size, m.preprocess.image_size))
    assert (img.outputs[0].name, img.outputs[0].dtype) == ("embedding", "float32")
    txt = m.text_encoders["fp16"]
    assert (txt.inputs[0].name, txt.inputs[0].dtype, txt.inputs[0].shape) == ("tokens", "int64", ("batch", 77))
    assert m.grayscale.weights == (0.299, 0.587, 0.114) and m.grayscale.definition == "luma-rgb01-float"
    assert m.scoring.score_scale == 100 and m.scoring.clamp == "per-pair"
    assert set(m.graphs) == {"image.fp32", "image.fp16", "image.int8", "text.fp32", "text.fp16", "detect.fp32",
                             "detect.fp16"}
    assert all(g.key == k and g.gate_min_cosine == {"fp32": 0.99999, "fp16": 0.999, "int8": 0.99}[g.precision]
               for k, g in m.graphs.items())
    q = m.graphs["image.int8"].quantization
    assert q["method"] == "dynamic-u8s7" and q["reduce_range"] is True and "any x86-64" in q["cpus"]
    assert m.graphs["image.fp16"].disabled_optimizers == ("NchwcTransformer",)
    assert m.tokenizer.file == "tokenizer.json" and m.tokenizer.config_file == "tokenizer_config.json"
    ref = m.reference
    assert len(ref.photos) == 4 and len(ref.prompts) == 8
    assert np.load(tiny_bundle / ref.pixels_file).shape == (4, 64, 64, 3)
    assert np.load(tiny_bundle / ref.image_embeddings_file).shape == (8, m.embed_dim)
    assert m.opset == 18 and {"torch", "open_clip", "onnx", "onnxruntime"} <= set(m.versions)
    assert m.detect_graphs["fp32"].file == "detect.fp32.onnx"
    # round trip through JSON is lossless
    raw = json.loads((tiny_bundle / MANIFEST_NAME).read_text())
    assert type(m).from_dict(raw).to_dict() == raw


def test_onnx_opset_and_checker(tiny_bundle):
    import onnx

    for name in ("image_encoder.fp32.onnx", "text_encoder.fp16.onnx", "detect.fp32.onnx"):
        model = onnx.load(str(tiny_bundle / name))
        onnx.checker.check_model(model)
        assert max(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")) == 18


def test_parity_report_records_values_and_passes(tiny_bundle):
    rep = json.loads((tiny_bundle / "parity.json").read_text())
    assert rep["passed"] and rep["score_scale"] == 100
    assert rep["inputs"]["image_rows"] >= 16 and len(rep["inputs"]["photos"]) >= 4
    for enc, precs in (("image_encoder", ("fp32", "fp16", "int8")), ("text_encoder", ("fp32", "fp16"))):
        for p in precs:
            r = rep[enc][p]
            assert r["passed"] and r["min_cosine"] >= r["gate_min_cosine"] == rep["gates_min_cosine"][p]
            assert 0 <= r["max_abs_diff"] < 1 and set(r["batch_sizes"]) == {"1", "3", "16"}
    assert rep["image_encoder"]["fp32"]["min_cosine"] >= 0.99999
    bank = rep["image_encoder"]["int8"]["banks"]["artistic"]
    assert {"max_abs_diff_score_color", "max_abs_diff_score_gray", "max_abs_diff_drop"} <= set(bank)
    assert rep["detect_graph"]["fp32"]["artistic"]["passed"]
    assert rep["tokenizer"]["mismatches"] == 0 and rep["tokenizer"]["strings"] > 200


@pytest.mark.parametrize("precision", ["fp32", "fp16", "int8"])
def test_image_encoder_dynamic_batch_vs_torch(tiny_bundle, precision, sample_photos):
    import torch

    from foclip.exporter.parity import cosine_rows, ort_session
    from foclip.models import ImageEncoder, load_clip

    m = read_manifest(tiny_bundle)
    sess = ort_session(tiny_bundle / m.image_encoders[precision].file, precision)
    c = load_clip("foclip-tiny", "random", seed=0)
    enc = ImageEncoder(c.model, c.preprocess).eval()
    x = np.random.default_rng(1).random((16, 3, 64, 64), dtype=np.float32)
    with torch.no_grad():
        ref = enc(torch.from_numpy(x)).numpy()
    gate = {"fp32": 0.99999, "fp16": 0.999, "int8": 0.99}[precision]
    for b in (1, 3, 5, 16):
        got = sess.run(None, {"pixels": x[:b]})[0]
        assert got.shape == (b, 32) and got.dtype == np.float32
        assert cosine_rows(ref[:b], got).min() >= gate
        np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=2e-3)


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_text_encoder_eot_pooling_at_other_batch_sizes(tiny_bundle, precision):
    import torch

    from foclip.exporter.parity import cosine_rows, ort_session
    from foclip.models import TextEncoder, load_clip
    from foclip.runtime.tokenizer import load_tokenizer

    m = read_manifest(tiny_bundle)
    tok = load_tokenizer(tiny_bundle, m.tokenizer, m.context_length)
    texts = ["a", "a photo of a cat", "an oil painting " * 30, "🍕", "x y z"] * 4
    tokens = tok(texts)
    sess = ort_session(tiny_bundle / m.text_encoders[precision].file, precision)
    c = load_clip("foclip-tiny", "random", seed=0)
    with torch.no_grad():
        ref = TextEncoder(c.model).eval()(torch.from_numpy(tokens)).numpy()
    gate = {"fp32": 0.99999, "fp16": 0.999}[precision]
    for b in (1, 3, 16, 20):
        got = sess.run(None, {"tokens": tokens[:b]})[0]
        assert got.shape == (b, 32)
        assert cosine_rows(ref[:b], got).min() >= gate
    # rows with different EOT positions must differ (pooling really picks the EOT position)
    full = sess.run(None, {"tokens": tokens[:5]})[0]
    assert np.abs(full[0] - full[2]).max() > 1e-3


def test_text_bank_matches_prompts_hash_and_encoder(tiny_bundle):
    from foclip.exporter.parity import ort_session
    from foclip.prompts import load_prompt_set
    from foclip.runtime.tokenizer import load_tokenizer

    m = read_manifest(tiny_bundle)
    spec = m.text_banks["artistic"]
    prompts = json.loads((tiny_bundle / spec.prompts_file).read_text(encoding="utf-8"))
    assert prompts == list(load_prompt_set("artistic").prompts)
    assert spec.prompts_sha256 == sha256_text(prompts) == load_prompt_set("artistic").sha256
    emb = np.load(tiny_bundle / spec.embeddings_file)
    assert emb.shape == (spec.count, m.embed_dim) and emb.dtype == np.float32
    sess = ort_session(tiny_bundle / m.text_encoders["fp32"].file, "fp32")
    got = sess.run(None, {"tokens": load_tokenizer(tiny_bundle, m.tokenizer, m.context_length)(prompts)})[0]
    np.testing.assert_allclose(got, emb, atol=1e-5)


def test_detect_graph_matches_encoder_path(tiny_bundle, sample_photos):
    from PIL import Image

    from foclip.exporter.parity import ort_session
    from foclip.runtime.preprocess import to_pixels, to_uint8
    from foclip.scoring import clipscore, to_gray

    m = read_manifest(tiny_bundle)
    bank = np.load(tiny_bundle / m.text_banks["artistic"].embeddings_file)
    imgs = [Image.fromarray(a) for a in sample_photos.values()]
    u8 = np.stack([to_uint8(i, m.preprocess) for i in imgs])
    px = np.stack([to_pixels(i, m.preprocess) for i in imgs])
    enc = ort_session(tiny_bundle / "image_encoder.fp32.onnx", "fp32")
    emb = enc.run(None, {"pixels": np.concatenate([px, to_gray(px, channel_axis=1)])})[0]
    n = len(imgs)
    det = ort_session(tiny_bundle / "detect.fp32.onnx", "fp32")
    for b in (1, n):
        sc, sg = det.run(["score_color", "score_gray"], {"pixels_u8": u8[:b], "text_bank": bank})
        assert sc.shape == sg.shape == (b,)
        np.testing.assert_allclose(sc, clipscore(emb[:b], bank), atol=1e-3)
        np.testing.assert_allclose(sg, clipscore(emb[n:n + b], bank), atol=1e-3)
    # a different bank size works too (prompt axis dynamic)
    sc, _ = det.run(["score_color", "score_gray"], {"pixels_u8": u8[:2], "text_bank": bank[:3]})
    np.testing.assert_allclose(sc, clipscore(emb[:2], bank[:3]), atol=1e-3)


def test_tampered_and_missing_files_are_named(tiny_bundle, tmp_path):
    copy = tmp_path / "b"
    shutil.copytree(tiny_bundle, copy)
    m = read_manifest(copy)
    data = bytearray((copy / "image_encoder.int8.onnx").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (copy / "image_encoder.int8.onnx").write_bytes(bytes(data))
    (copy / "banks/artistic.fp32.npy").unlink()
    problems = dict(verify_files(copy, m))
    assert problems == {"image_encoder.int8.onnx": "sha256 mismatch (file changed)",
                        "banks/artistic.fp32.npy": "missing"}
    assert sha256_file(copy / "text_encoder.fp32.onnx") == m.files["text_encoder.fp32.onnx"]


def test_export_leaves_global_torch_state_alone(tiny_bundle):
    import torch

    assert torch.is_grad_enabled()
    assert torch.backends.mha.get_fastpath_enabled()


def test_default_export_has_no_fused_graph_and_keeps_going_past_a_failed_gate(tmp_path, monkeypatch):
    """A precision that misses its gate is left out (named in info.omitted); the rest is usable."""
    from foclip.exporter import ExportConfig, export_bundle, parity
    from foclip.runtime import Detector

    monkeypatch.setitem(parity.GATES, "int8", 0.9999999)  # no int8 graph reaches this
    m = export_bundle(ExportConfig(model_name="foclip-tiny", precisions=("fp32", "int8"), seed=0), tmp_path / "b")
    assert "image.int8" not in m.graphs and "detect.fp32" not in m.graphs
    assert "below the int8 gate" in m.info["omitted"]["image.int8"]
    assert not (tmp_path / "b" / "image_encoder.int8.onnx").exists()
    assert json.loads((tmp_path / "b" / "parity.json").read_text())["passed"] is False
    with Detector.from_bundle(tmp_path / "b", threads=1) as det:
        assert det.detect([np.zeros((70, 70, 3), np.uint8)])[0].ok
