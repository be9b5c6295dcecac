"""The typed bundle contract: round trip, checked values, closed world, atomic writes."""

from __future__ import annotations

import json
import os
import shutil

import pytest

from foclip import manifest as m
from foclip.errors import BundleError


def _raw(bundle) -> dict:
    return json.loads((bundle / m.MANIFEST_NAME).read_text())


def _write(tmp_path, raw) -> None:
    (tmp_path / m.MANIFEST_NAME).write_text(json.dumps(raw))


def test_manifest_round_trips_through_json(tiny_bundle, tmp_path):
    man = m.read_manifest(tiny_bundle)
    m.atomic_write_json(tmp_path / m.MANIFEST_NAME, man.to_dict())
    assert m.read_manifest(tmp_path) == man
    assert _raw(tmp_path)["schema_version"] == m.SCHEMA_VERSION == 2
    assert man.image_encoders["int8"] is man.graphs["image.int8"] and man.tokenizer_file == "tokenizer.json"


def test_verify_files_names_changed_and_missing(tiny_bundle, tmp_path):
    b = tmp_path / "b"
    shutil.copytree(tiny_bundle, b)
    man = m.read_manifest(b)
    (b / "tokenizer.json").unlink()
    with open(b / "parity.json", "a") as f:
        f.write(" ")
    assert dict(m.verify_files(b, man)) == {"tokenizer.json": "missing", "parity.json": "sha256 mismatch (file changed)"}


def test_read_manifest_errors_are_one_line(tmp_path):
    with pytest.raises(BundleError, match="has no manifest.json"):
        m.read_manifest(tmp_path)
    (tmp_path / m.MANIFEST_NAME).write_text("{not json")
    with pytest.raises(BundleError, match="cannot be parsed"):
        m.read_manifest(tmp_path)
    with pytest.raises(BundleError, match="is not a folder"):
        m.read_manifest(tmp_path / "nope")


def test_atomic_write_leaves_no_temp_on_failure_and_uses_the_umask(tmp_path):
    class Boom:
        pass

    with pytest.raises(TypeError):
        m.atomic_write_json(tmp_path / "x.json", {"a": Boom()})
    assert list(tmp_path.iterdir()) == []
    old = os.umask(0o027)
    try:
        m.atomic_write_json(tmp_path / "y.json", {"a": 1})
    finally:
        os.umask(old)
    assert (tmp_path / "y.json").stat().st_mode & 0o777 == 0o640


def test_other_schemas_and_non_objects_are_refused(tiny_bundle, tmp_path):
    raw = _raw(tiny_bundle)
    _write(tmp_path, {**raw, "schema_version": 3})
    with pytest.raises(BundleError, match="newer than this foclip reads"):
        m.read_manifest(tmp_path)
    _write(tmp_path, {**raw, "schema_version": 1})
    with pytest.raises(BundleError, match="schema version 1 .* re-export the bundle"):
        m.read_manifest(tmp_path)
    _write(tmp_path, [1, 2])
    with pytest.raises(BundleError, match="is invalid"):
        m.read_manifest(tmp_path)


# Each edit changes one field that describes behaviour; the reader must refuse it, naming the field.
EDITS = {
    "preprocess.image_size": (lambda r: r["preprocess"].update(image_size="224"), "preprocess.image_size"),
    "preprocess.resize_mode": (lambda r: r["preprocess"].update(resize_mode="longest"), "preprocess.resize_mode"),
    "preprocess.interpolation": (lambda r: r["preprocess"].update(interpolation="nearest"),
                                 "preprocess.interpolation"),
    "preprocess.crop": (lambda r: r["preprocess"].update(crop="none"), "preprocess.crop"),
    "preprocess.std": (lambda r: r["preprocess"].update(std=[0, 1, 1]), "preprocess.std"),
    "grayscale.definition": (lambda r: r["grayscale"].update(definition="lightness"), "grayscale.definition"),
    "scoring.score_scale": (lambda r: r["scoring"].update(score_scale="100"), "scoring.score_scale"),
    "scoring.score_scale nan": (lambda r: r["scoring"].update(score_scale=float("nan")), "scoring.score_scale"),
    "scoring.clamp": (lambda r: r["scoring"].update(clamp="mean"), "scoring.clamp"),
    "scoring.reduce": (lambda r: r["scoring"].update(reduce="max"), "scoring.reduce"),
    "scoring.drop": (lambda r: r["scoring"].update(drop="absolute"), "scoring.drop"),
    "tokenizer.kind": (lambda r: r["tokenizer"].update(kind="sentencepiece"), "tokenizer.kind"),
    "embed_dim": (lambda r: r.update(embed_dim=True), "embed_dim"),
    "context_length": (lambda r: r.update(context_length=-1), "context_length"),
    "random_init": (lambda r: r.update(random_init="no"), "random_init"),
    "graph key": (lambda r: r["graphs"]["image.int8"].update(key="image.fp32"), "graphs.image.int8.key"),
    "graph gate": (lambda r: r["graphs"]["image.int8"].update(gate_min_cosine=1.5), "gate_min_cosine"),
    "graph role": (lambda r: r["graphs"]["image.int8"].update(role="audio"), "role"),
    "graph dtype": (lambda r: r["graphs"]["image.fp32"]["inputs"][0].update(dtype="float64"), "dtype"),
    "bank count": (lambda r: r["text_banks"]["artistic"].update(count=0), "count"),
    "bank hash": (lambda r: r["text_banks"]["artistic"].update(prompts_sha256="xyz"), "prompts_sha256"),
    "files hash": (lambda r: r["files"].update({"parity.json": "0"}), "sha256"),
    "engines": (lambda r: r.update(engines={}), "engines"),
}


@pytest.mark.parametrize("name", sorted(EDITS))
def test_every_behaviour_field_is_checked(tiny_bundle, tmp_path, name):
    edit, field = EDITS[name]
    raw = _raw(tiny_bundle)
    edit(raw)
    _write(tmp_path, raw)
    with pytest.raises(BundleError) as info:
        m.read_manifest(tmp_path)
    assert field in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize("path", ["/etc/passwd", "../outside.onnx", "a/../../b.onnx", "~/x.onnx", "a\\b.onnx", ""])
def test_paths_must_stay_inside_the_bundle(tiny_bundle, tmp_path, path):
    raw = _raw(tiny_bundle)
    raw["graphs"]["text.fp32"]["file"] = path
    raw["files"][path] = "0" * 64
    _write(tmp_path, raw)
    with pytest.raises(BundleError, match="relative path inside the bundle"):
        m.read_manifest(tmp_path)


def test_a_mapping_to_an_unlisted_file_is_refused(tiny_bundle, tmp_path):
    """D4: a bank, text encoder or detect graph entry pointing at a file without a sha256."""
    for edit in (lambda r: r["text_banks"]["artistic"].update(embeddings_file="zeros.npy"),
                 lambda r: r["graphs"]["text.fp32"].update(file="other.onnx"),
                 lambda r: r["graphs"]["detect.fp32"].update(file="evil.onnx"),
                 lambda r: r["reference"].update(pixels_file="mine.npy")):
        raw = _raw(tiny_bundle)
        edit(raw)
        _write(tmp_path, raw)
        with pytest.raises(BundleError, match="which files does not list with a sha256"):
            m.read_manifest(tmp_path)


def test_the_manifest_package_imports_only_the_standard_library():
    import subprocess
    import sys

    code = ("import sys; before = set(sys.modules); import foclip.manifest; "
            "print(sorted({n.partition('.')[0] for n in set(sys.modules) - before} - set(sys.stdlib_module_names)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "['foclip']"


def test_schema_and_files_are_one_contract_behind_one_import_path():
    from foclip.manifest import files, schema

    assert m.Manifest is schema.Manifest and m.read_manifest is files.read_manifest
    assert not any(name.startswith("foclip.manifest.files") for name in _imports_of(schema.__file__))


def _imports_of(path: str) -> set[str]:
    import ast
    from pathlib import Path

    tree = ast.parse(Path(path).read_text(encoding="utf-8"))
    return {n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)} | {
        a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
