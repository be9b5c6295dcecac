import json

import pytest

from foclip import manifest as m
from foclip.errors import BundleError


def _manifest(files):
    spec = m.GraphSpec("image_encoder.fp32.onnx", (m.TensorSpec("pixels", "float32", ("batch", 3, 64, 64)),),
                       (m.TensorSpec("embedding", "float32", ("batch", 32)),))
    return m.Manifest(
        model_name="foclip-tiny", pretrained="random(seed=0)", random_init=True, embed_dim=32,
        context_length=77, preprocess=m.PreprocessSpec(image_size=64), image_encoders={"fp32": spec},
        text_encoders={}, text_banks={"artistic": m.TextBankSpec("artistic", "a.json", "a.npy", 2, "ab")},
        tokenizer_file="tokenizer.json", opset=18, versions={"onnx": "1"}, files=files, created="now",
    )


def test_manifest_round_trips_through_json(tmp_path):
    man = _manifest({"x": "00"})
    m.atomic_write_json(tmp_path / m.MANIFEST_NAME, man.to_dict())
    back = m.read_manifest(tmp_path)
    assert back == man
    assert json.loads((tmp_path / m.MANIFEST_NAME).read_text())["schema_version"] == m.SCHEMA_VERSION


def test_verify_files_names_changed_and_missing(tmp_path):
    (tmp_path / "a.bin").write_bytes(b"abc")
    (tmp_path / "b.bin").write_bytes(b"def")
    man = _manifest({"a.bin": m.sha256_file(tmp_path / "a.bin"), "b.bin": m.sha256_file(tmp_path / "b.bin"),
                     "c.bin": "0" * 64})
    assert m.verify_files(tmp_path, man) == [("c.bin", "missing")]
    (tmp_path / "b.bin").write_bytes(b"changed")
    assert [p for p, _ in m.verify_files(tmp_path, man)] == ["b.bin", "c.bin"]


def test_read_manifest_errors_are_one_line(tmp_path):
    with pytest.raises(BundleError, match="has no manifest.json"):
        m.read_manifest(tmp_path)
    (tmp_path / m.MANIFEST_NAME).write_text("{not json")
    with pytest.raises(BundleError, match="cannot be parsed"):
        m.read_manifest(tmp_path)
    with pytest.raises(BundleError, match="is not a folder"):
        m.read_manifest(tmp_path / "nope")


def test_atomic_write_leaves_no_temp_on_failure(tmp_path):
    class Boom:
        pass

    with pytest.raises(TypeError):
        m.atomic_write_json(tmp_path / "x.json", {"a": Boom()})
    assert list(tmp_path.iterdir()) == []


def test_newer_schema_and_non_object_manifests_are_refused(tmp_path):
    man = _manifest({}).to_dict()
    man["schema_version"] = m.SCHEMA_VERSION + 1
    m.atomic_write_json(tmp_path / m.MANIFEST_NAME, man)
    with pytest.raises(BundleError, match="newer than this foclip reads"):
        m.read_manifest(tmp_path)
    m.atomic_write_json(tmp_path / m.MANIFEST_NAME, [1, 2])
    with pytest.raises(BundleError, match="cannot be parsed"):
        m.read_manifest(tmp_path)
