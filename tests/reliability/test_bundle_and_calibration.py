"""A bundle that cannot be redirected, values checked at load, calibrations bound to what they were
made with, and calibrate's refusals (nothing readable, identical sets)."""

from __future__ import annotations

import json
import math
import shutil
import warnings

import numpy as np
import pytest

from foclip.cli.main import main
from foclip.errors import BundleError, InputError
from foclip.manifest import MANIFEST_NAME, atomic_write_json, sha256_file
from foclip.runtime import Calibration, Detector, open_bundle
from foclip.runtime.bundle import bundle_hash
from foclip.runtime.calibration import CalibrationWarning, fit_calibration


def _copy(tiny_bundle, tmp_path):
    b = tmp_path / "b"
    shutil.copytree(tiny_bundle, b)
    return b, json.loads((b / MANIFEST_NAME).read_text())


def _calibration(bundle, precision="fp32", backend="ort-cpu", **changes) -> Calibration:
    b = open_bundle(bundle)
    rng = np.random.default_rng(0)
    so, sm = rng.uniform(1, 2, 20), rng.uniform(1, 2, 20)
    do, dm = rng.uniform(0, 0.3, 20), rng.uniform(0.2, 0.9, 20)
    bank = b.text_bank(b.default_bank)
    cal = fit_calibration(so, do, sm, dm, bundle_hash=b.bundle_hash, backend=backend, precision=precision,
                          score_scale=b.score_scale, text_bank={"name": bank.name, "sha256": bank.sha256, "count": 1})
    return Calibration(**{**cal.to_dict(), **changes})


def test_a_listed_but_swapped_bank_changes_the_bundle_hash(tiny_bundle, tmp_path):
    """Pointing a bank at another listed file (zeros) gives another bundle hash: the old
    calibration no longer loads, so no silent "calibrated: true" with zero scores."""
    b, raw = _copy(tiny_bundle, tmp_path)
    cal = _calibration(tiny_bundle)
    zeros = np.zeros_like(np.load(b / raw["text_banks"]["artistic"]["embeddings_file"]))
    np.save(b / "banks/zeros.npy", zeros)
    raw["files"]["banks/zeros.npy"] = sha256_file(b / "banks/zeros.npy")
    raw["text_banks"]["artistic"]["embeddings_file"] = "banks/zeros.npy"
    atomic_write_json(b / MANIFEST_NAME, raw)
    assert open_bundle(b).bundle_hash != open_bundle(tiny_bundle).bundle_hash
    with pytest.raises(BundleError, match="was made with bundle"):
        Detector.from_bundle(b, calibration=cal, threads=1)


def test_a_symlink_out_of_the_bundle_is_refused(tiny_bundle, tmp_path):
    b, _ = _copy(tiny_bundle, tmp_path)
    outside = tmp_path / "outside.json"
    shutil.copy(b / "tokenizer.json", outside)
    (b / "tokenizer.json").unlink()
    (b / "tokenizer.json").symlink_to(outside)
    with pytest.raises(BundleError, match="tokenizer.json.*resolves outside the bundle|outside the bundle"):
        open_bundle(b)
    assert main(["inspect", str(b)]) == 1


def test_the_runtime_opens_only_listed_files(tiny_bundle):
    b = open_bundle(tiny_bundle)
    with pytest.raises(BundleError, match="not listed in the manifest"):
        b.file("manifest.json")
    with pytest.raises(BundleError, match="not listed"):
        b.file("../elsewhere.onnx")


def test_engines_do_not_change_the_bundle_hash_but_everything_else_does(tiny_bundle):
    from foclip.manifest import EngineSpec

    man = open_bundle(tiny_bundle).manifest
    base = bundle_hash(man)
    eng = EngineSpec("image.fp32", "fp16", "engines/x.engine", "0" * 64, "10.0", "9.0", (1, 4, 8), "k")
    with_engine = man.with_changes(engines=(eng,), files={**man.files, "engines/x.engine": "1" * 64})
    assert bundle_hash(with_engine) == base
    moved = dict(man.graphs)
    moved["text.fp16"] = moved["text.fp16"].__class__(**{**moved["text.fp16"].__dict__, "file": "text_encoder.fp32.onnx"})
    assert bundle_hash(man.with_changes(graphs=moved)) != base


def test_an_edited_image_size_is_refused_at_load(tiny_bundle, tmp_path):
    b, raw = _copy(tiny_bundle, tmp_path)
    raw["preprocess"]["image_size"] = 224  # the graphs take 64 px
    atomic_write_json(b / MANIFEST_NAME, raw)
    with pytest.raises(BundleError, match=r"takes .*\[batch, 3, 224, 224\]"):
        Detector.from_bundle(b, threads=1)


def test_a_pickled_bank_is_refused_without_a_traceback(tiny_bundle, tmp_path):
    b, raw = _copy(tiny_bundle, tmp_path)
    rel = raw["text_banks"]["artistic"]["embeddings_file"]
    np.save(b / rel, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    raw["files"][rel] = sha256_file(b / rel)
    atomic_write_json(b / MANIFEST_NAME, raw)
    with pytest.raises(BundleError, match="text bank 'artistic' \\| cannot be read"):
        Detector.from_bundle(b, threads=1)


def test_bad_prompts_json_is_refused(tiny_bundle, tmp_path):
    b, raw = _copy(tiny_bundle, tmp_path)
    rel = raw["text_banks"]["artistic"]["prompts_file"]
    (b / rel).write_text('{"not": "a list"}')
    raw["files"][rel] = sha256_file(b / rel)
    atomic_write_json(b / MANIFEST_NAME, raw)
    with pytest.raises(BundleError, match="cannot be read"):
        open_bundle(b).text_bank("artistic")


@pytest.mark.parametrize("field,value", [("tau_score", "0.5"), ("tau_score", float("nan")), ("tau_drop", True),
                                         ("tau_drop", float("inf")), ("schema", 99), ("mode", "magic"),
                                         ("score_scale", 0), ("target_fpr", 2.0), ("bundle_hash", 5),
                                         ("text_bank", "artistic")])
def test_calibration_values_are_checked_at_load(tiny_bundle, tmp_path, field, value):
    cal = _calibration(tiny_bundle).to_dict()
    cal[field] = value
    text = json.dumps(cal).replace("NaN", "NaN").replace("Infinity", "Infinity")
    (tmp_path / "c.json").write_text(text)
    with pytest.raises(InputError) as info:
        Calibration.load(tmp_path / "c.json")
    assert field in str(info.value) and "\n" not in str(info.value)


def test_a_calibration_at_another_score_scale_is_refused(tiny_bundle):
    cal = _calibration(tiny_bundle, score_scale=2.5)
    with pytest.raises(BundleError, match="score_scale 2.5"):
        Detector.from_bundle(tiny_bundle, calibration=cal, threads=1)


def test_calibration_made_at_fp32_does_not_drive_int8(tiny_bundle, sample_photo_dir, tmp_path, capsys):
    cal = _calibration(tiny_bundle, precision="fp32")
    with pytest.raises(BundleError, match="made at precision fp32, the detector runs int8"):
        Detector.from_bundle(tiny_bundle, precision="int8", calibration=cal, threads=1)
    cal.save(tmp_path / "c.json")
    assert main(["detect", str(tiny_bundle), str(sample_photo_dir), "--precision", "int8", "--calibration",
                 str(tmp_path / "c.json")]) == 1
    assert "--precision int8" in " ".join(capsys.readouterr().err.split())
    with Detector.from_bundle(tiny_bundle, precision="int8", calibration=_calibration(tiny_bundle, "int8"),
                              threads=1) as det:
        assert det.calibrated and det.info()["calibration"]["graph"] == "image.int8"


def test_the_close_pair_is_allowed_with_one_warning(tiny_bundle):
    cal = _calibration(tiny_bundle, backend="ort-cuda", graph="detect.fp32")
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        notes = cal.check_compatible(open_bundle(tiny_bundle).bundle_hash, cal.text_bank["sha256"],
                                     score_scale=100.0, graph="image.fp32", precision="fp32", backend="ort-cpu")
    assert len(notes) == 2 and all(issubclass(w.category, CalibrationWarning) for w in seen)
    assert not math.isnan(cal.tau_drop)


def test_a_calibration_for_other_probes_is_refused(tiny_bundle):
    cal = _calibration(tiny_bundle)  # made for the gray probe alone
    with pytest.raises(BundleError, match="probes gray, the detector uses gray,hue180"):
        Detector.from_bundle(tiny_bundle, calibration=cal, probes=("gray", "hue180"), threads=1)


def _labelled(tmp_path, sample_photos):
    """A generate-like folder with 4 originals and 4 different manipulated images."""
    from PIL import Image

    for d in ("gen/original", "gen/manipulated"):
        (tmp_path / d).mkdir(parents=True)
    for i, (name, arr) in enumerate(sample_photos.items()):
        small = arr[::4, ::4]
        Image.fromarray(small).save(tmp_path / "gen/original" / f"{name}.png")
        Image.fromarray(small[:, :, ::-1].copy()).save(tmp_path / "gen/manipulated" / f"{name}.png")
    return tmp_path / "gen"


def test_a_clean_folder_with_nothing_readable_is_an_error(tiny_bundle, sample_photos, tmp_path, capsys):
    gen = _labelled(tmp_path, sample_photos)
    clean = tmp_path / "clean"
    clean.mkdir()
    (clean / "empty.jpg").write_bytes(b"")
    (clean / "junk.png").write_bytes(b"not a png at all")
    out = tmp_path / "calibration.json"
    assert main(["calibrate", str(tiny_bundle), "--originals", str(gen), "--clean", str(clean),
                 "--out", str(out), "--folds", "0"]) == 1  # 9b2574a: exit 0, an empty group table
    err = " ".join(capsys.readouterr().err.split())
    assert "--clean" in err and "no readable image" in err and "Traceback" not in err
    assert not out.exists()


def test_every_group_table_row_counts_its_unreadable_files(tiny_bundle, sample_photos, tmp_path, capsys):
    from PIL import Image

    gen = _labelled(tmp_path, sample_photos)
    for d in ("clean/good", "clean/broken"):
        (tmp_path / d).mkdir(parents=True)
    for name, arr in sample_photos.items():
        Image.fromarray(arr[::-4, ::4].copy()).save(tmp_path / "clean/good" / f"{name}.png")
    (tmp_path / "clean/good/zero.jpg").write_bytes(b"")
    (tmp_path / "clean/broken/a.jpg").write_bytes(b"")
    (tmp_path / "clean/broken/b.png").write_bytes(b"junk")
    out = tmp_path / "calibration.json"
    assert main(["calibrate", str(tiny_bundle), "--originals", str(gen), "--clean", str(tmp_path / "clean"),
                 "--out", str(out), "--folds", "2"]) == 0
    m = json.loads(out.read_text())["metrics"]
    assert m["clean_unreadable"] == {"broken": 2, "good": 1} and m["clean_errors"] == 3
    rows = {line.split("│")[1].strip(): [c.strip() for c in line.split("│")[2:4]]
            for line in capsys.readouterr().out.splitlines() if line.count("│") >= 5}
    assert rows["good"] == ["4", "1"] and rows["broken"] == ["0", "2"]  # 9b2574a: no broken row, no count


def test_identical_originals_and_manipulated_sets_are_refused(tiny_bundle, sample_photos, tmp_path, capsys):
    gen = _labelled(tmp_path, sample_photos)
    out = tmp_path / "calibration.json"
    assert main(["calibrate", str(tiny_bundle), "--originals", str(gen / "original"),
                 "--manipulated", str(gen / "original"), "--out", str(out)]) == 1  # 9b2574a: exit 0
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert len(err) == 1 and "same 4 image(s)" in err[0] and "sha256" in err[0], err
    assert not out.exists()
