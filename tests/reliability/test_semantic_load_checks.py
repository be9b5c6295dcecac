"""Issue 24, point 5: values that pass the type checks but break detection are refused at load,
each with one line: thresholds outside the reachable range, NaN/inf in banks or the reference set,
a manifest.json that is not a regular file inside the bundle."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from foclip.cli.main import main
from foclip.errors import BundleError, InputError
from foclip.manifest import MANIFEST_NAME, atomic_write_json, read_manifest, sha256_file
from foclip.runtime import Calibration, Detector, open_bundle
from foclip.runtime.calibration import fit_calibration


def _copy(tiny_bundle, tmp_path):
    b = tmp_path / "b"
    shutil.copytree(tiny_bundle, b)
    return b, json.loads((b / MANIFEST_NAME).read_text())


def _calibration_file(bundle, tmp_path, **changes):
    b = open_bundle(bundle)
    rng = np.random.default_rng(0)
    bank = b.text_bank(b.default_bank)
    cal = fit_calibration(rng.uniform(1, 2, 20), rng.uniform(0, 0.3, 20), rng.uniform(1, 2, 20),
                          rng.uniform(0.2, 0.9, 20), bundle_hash=b.bundle_hash, backend="ort-cpu", precision="fp32",
                          score_scale=b.score_scale, text_bank={"name": bank.name, "sha256": bank.sha256, "count": 1})
    path = tmp_path / "calibration.json"
    path.write_text(json.dumps({**cal.to_dict(), **changes}))
    return path


@pytest.mark.parametrize("changes", [{"tau_score": 1e9}, {"tau_drop": 2.0}, {"tau_score": -1.0}],
                         ids=["tau_score-past-scale", "tau_drop-past-1", "tau_score-negative"])
def test_unreachable_calibration_thresholds_are_refused(tiny_bundle, tmp_path, changes):
    path = _calibration_file(tiny_bundle, tmp_path, **changes)
    with pytest.raises(InputError, match=next(iter(changes))):
        Calibration.load(path)


def test_reachable_edges_still_load(tiny_bundle, tmp_path):
    scale = open_bundle(tiny_bundle).score_scale
    Calibration.load(_calibration_file(tiny_bundle, tmp_path, tau_score=scale, tau_drop=1.0))


@pytest.mark.parametrize("kwargs", [{"tau_score": 1e9}, {"tau_drop": 2.0}, {"tau_score": float("nan")}])
def test_unreachable_thresholds_given_to_the_library_are_refused(tiny_bundle, kwargs):
    with pytest.raises(InputError, match=next(iter(kwargs))):
        Detector.from_bundle(tiny_bundle, threads=1, self_check=False, **kwargs)


def _rehash(b, raw, rel):
    raw["files"][rel] = sha256_file(b / rel)
    atomic_write_json(b / MANIFEST_NAME, raw)


def test_a_nan_text_bank_is_refused_with_one_line(tiny_bundle, tmp_path, sample_photo_dir, capsys):
    b, raw = _copy(tiny_bundle, tmp_path)
    rel = raw["text_banks"]["artistic"]["embeddings_file"]
    emb = np.load(b / rel)
    emb[0, 0] = np.nan
    np.save(b / rel, emb)
    _rehash(b, raw, rel)  # a consistent bundle: only the values are wrong
    with pytest.raises(BundleError, match="NaN or infinite"):
        open_bundle(b).text_bank("artistic")
    assert main(["detect", str(b), str(sample_photo_dir), "--out", str(tmp_path / "r.jsonl")]) == 1
    err = capsys.readouterr().err
    assert "NaN or infinite" in err and "Traceback" not in err
    assert not (tmp_path / "r.jsonl").exists()


def test_an_infinite_reference_set_is_refused(tiny_bundle, tmp_path):
    b, raw = _copy(tiny_bundle, tmp_path)
    rel = raw["reference"]["image_embeddings_file"]
    emb = np.load(b / rel)
    emb[1, 2] = np.inf
    np.save(b / rel, emb)
    _rehash(b, raw, rel)
    with pytest.raises(BundleError, match="NaN or infinite"):
        Detector.from_bundle(b, threads=1)


def test_manifest_json_must_be_a_regular_file_inside_the_bundle(tiny_bundle, tmp_path, capsys):
    b, _ = _copy(tiny_bundle, tmp_path)
    outside = tmp_path / "elsewhere.json"
    shutil.move(b / MANIFEST_NAME, outside)
    (b / MANIFEST_NAME).symlink_to(outside)
    with pytest.raises(BundleError, match="not a regular file"):
        read_manifest(b)
    assert main(["inspect", str(b)]) == 1
    err = capsys.readouterr().err
    assert "not a regular file" in err and len(err.strip().splitlines()) == 1
