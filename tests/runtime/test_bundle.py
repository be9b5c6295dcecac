"""Bundle loading: every sha256 checked, the failing file named; the bundle hash."""

from __future__ import annotations

import json
import re
import shutil

import pytest

from foclip.errors import BundleError
from foclip.runtime import Detector, open_bundle
from foclip.runtime.bundle import bundle_hash


@pytest.fixture
def bundle_copy(tiny_bundle, tmp_path):
    dst = tmp_path / "bundle"
    shutil.copytree(tiny_bundle, dst)
    return dst


def test_open_verifies(tiny_bundle):
    b = open_bundle(tiny_bundle)
    assert b.bundle_hash == bundle_hash(b.manifest) and len(b.bundle_hash) == 64
    assert b.default_bank == "artistic"
    assert b.score_scale == 100.0


def test_changed_file_is_named(bundle_copy):
    target = bundle_copy / "image_encoder.int8.onnx"
    data = bytearray(target.read_bytes())
    data[len(data) // 2] ^= 0xFF
    target.write_bytes(bytes(data))
    with pytest.raises(BundleError, match=r"image_encoder\.int8\.onnx.*has changed"):
        Detector.from_bundle(bundle_copy)


def test_missing_file_is_named(bundle_copy):
    manifest = json.loads((bundle_copy / "manifest.json").read_text())
    bank = manifest["text_banks"]["artistic"]["embeddings_file"]
    (bundle_copy / bank).unlink()
    with pytest.raises(BundleError, match=re.escape(bank) + r".* \| is missing"):
        open_bundle(bundle_copy)


def test_not_a_bundle(tmp_path):
    with pytest.raises(BundleError, match="manifest.json"):
        open_bundle(tmp_path)


def test_hash_ignores_engines_but_not_graphs(tiny_bundle):
    m = open_bundle(tiny_bundle).manifest
    base = bundle_hash(m)
    with_engine = m.with_changes(files={**m.files, "engines/image.fp16.engine": "0" * 64})
    assert bundle_hash(with_engine) == base
    changed = m.with_changes(files={**m.files, "image_encoder.fp32.onnx": "1" * 64})
    assert bundle_hash(changed) != base
