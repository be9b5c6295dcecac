"""Tests of foclip_train/generate.py: planning, names, manifest safety, bad inputs, consumer-side scores."""

from __future__ import annotations

import json
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from foclip.errors import InputError
from foclip_train.config import AttackConfig, GenerateConfig
from foclip_train.generate import (
    append_records,
    latest_records,
    load_image,
    plan_jobs,
    process_batch,
    read_records,
    run_generate,
    write_summary,
)

CFG = GenerateConfig(model="foclip-tiny", attack=AttackConfig(iters=5), batch=4, device="cpu")


def _png_header_only(path: Path, w: int, h: int) -> None:
    """A PNG whose header claims w x h but holds almost no data (an absurd size without the memory)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b""))


@pytest.fixture()
def bad_dir(tmp_path, sample_photo_dir):
    d = tmp_path / "bad"
    d.mkdir()
    (d / "empty.jpg").write_bytes(b"")
    (d / "notes.png").write_text("not an image")
    jpg = (sample_photo_dir / "chelsea.jpg").read_bytes()
    (d / "truncated.jpg").write_bytes(jpg[: len(jpg) // 3])
    _png_header_only(d / "huge.png", 100_000, 100_000)
    Image.new("RGB", (4, 300)).save(d / "sliver.png")
    return d


@pytest.mark.parametrize("name,problem", [
    ("empty.jpg", r"is empty .*\[empty_file\]"), ("notes.png", r"\[not_an_image\]"),
    ("truncated.jpg", r"\[truncated\]"), ("huge.png", r"\[too_many_pixels\]"), ("sliver.png", r"\[extreme_aspect\]"),
])
def test_load_image_refuses_bad_inputs(bad_dir, name, problem):
    with pytest.raises(InputError, match=problem):
        load_image(bad_dir / name)


def test_load_image_refuses_by_pixel_count_before_decoding(tmp_path):
    _png_header_only(tmp_path / "big.png", 8000, 6000)  # 48 MP: under PIL's bomb limit, over ours
    with pytest.raises(InputError, match=r"8000x6000 = 48,000,000 pixels.*\[too_many_pixels\]"):
        load_image(tmp_path / "big.png")


def test_plan_names_are_unique_and_stable(tmp_path, sample_photos):
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    Image.fromarray(sample_photos["coffee"]).save(a / "cat.png")
    Image.fromarray(sample_photos["chelsea"]).save(b / "cat.jpg")
    Image.fromarray(sample_photos["rocket"]).save(a / "rocket.png")
    out = tmp_path / "out"
    jobs = plan_jobs([a, b], out, CFG)
    names = [j.name for j in jobs]
    assert len(set(names)) == 3 and "rocket" in names
    assert all(n.startswith("cat-") for n in names if n != "rocket")
    assert [j.name for j in plan_jobs([b, a], out, CFG)] == [names[2], names[0], names[1]]


def test_plan_skips_output_folder_and_duplicates(tmp_path, sample_photos):
    Image.fromarray(sample_photos["coffee"]).save(tmp_path / "coffee.png")
    (tmp_path / "out" / "manipulated").mkdir(parents=True)
    Image.fromarray(sample_photos["coffee"]).save(tmp_path / "out" / "manipulated" / "coffee.png")
    jobs = plan_jobs([tmp_path, tmp_path / "coffee.png"], tmp_path / "out", CFG)
    assert [Path(j.source).name for j in jobs] == ["coffee.png"]


def test_append_survives_a_torn_line(tmp_path):
    append_records(tmp_path, [{"source": "a", "error": None}])
    with open(tmp_path / "manifest.jsonl", "a") as f:
        f.write('{"source": "b", "err')  # a writer killed mid-line
    append_records(tmp_path, [{"source": "c", "error": None}, {"source": "d", "error": None}])
    assert [r["source"] for r in read_records(tmp_path)] == ["a", "c", "d"]


def test_process_batch_records_errors_and_writes_good_images(tiny, tmp_path, sample_photo_dir, bad_dir):
    loaded, bank = tiny
    good = sample_photo_dir / "rocket.jpg"
    out = tmp_path / "out"
    jobs = plan_jobs([good, bad_dir / "truncated.jpg", bad_dir / "empty.jpg", tmp_path / "missing.png"], out, CFG)
    records = process_batch(jobs, CFG, loaded, bank)
    assert [bool(r["error"]) for r in records] == [False, True, True, True]
    assert "missing.png" in records[3]["error"]
    rec = records[0]
    png = out / rec["manipulated"]
    with Image.open(png) as im, Image.open(good) as src:
        assert im.format == "PNG" and im.mode == "RGB" and im.size == src.size
    assert (out / rec["original"]).read_bytes() == good.read_bytes()
    assert not (out / "manipulated" / "truncated.png").exists()
    from foclip.manifest import sha256_file

    assert rec["sha256_output"] == sha256_file(png) and rec["sha256_input"] == sha256_file(good)
    assert rec["score_adv"] >= rec["score_orig"] * 0.99
    for key in ("score_orig", "score_adv", "score_gray_orig", "score_gray_adv", "drop_orig", "drop_adv",
                "improvement_pct", "best_step", "wall_s"):
        assert isinstance(rec[key], (int, float)), key
    json.dumps(records, allow_nan=False)


def test_manifest_scores_match_the_runtime_preprocessing(tiny, tmp_path, sample_photo_dir):
    """score_orig / score_gray_adv are what a consumer gets from the files via foclip.runtime.preprocess."""
    from foclip.models import ImageEncoder
    from foclip.runtime.preprocess import to_pixels
    from foclip.scoring import clipscore, to_gray

    loaded, bank = tiny
    out = tmp_path / "out"
    rec = process_batch(plan_jobs([sample_photo_dir / "coffee.png"], out, CFG), CFG, loaded, bank)[0]
    enc = ImageEncoder(loaded.model, loaded.preprocess)

    def score(path: Path, gray: bool) -> float:
        with Image.open(path) as im:
            px = to_pixels(im, loaded.preprocess)
        px = to_gray(px, channel_axis=0) if gray else px
        with torch.no_grad():
            emb = enc(torch.from_numpy(px)[None]).numpy()
        return float(clipscore(emb, bank.embeddings.numpy(), 100.0)[0])

    assert rec["score_orig"] == pytest.approx(score(sample_photo_dir / "coffee.png", False), rel=1e-5)
    assert rec["score_gray_adv"] == pytest.approx(score(out / rec["manipulated"], True), rel=1e-5)
    assert rec["score_adv"] != pytest.approx(rec["score_orig"], rel=1e-3)


def test_run_resumes_and_summarises(tiny, tmp_path, sample_photo_dir):
    out = tmp_path / "out"
    summary = run_generate([sample_photo_dir], out, CFG, resources=tiny)
    assert summary["images"] == 4 and summary["failures"] == 0 and summary["score_scale"] == 100.0
    lines = (out / "manifest.jsonl").read_text().splitlines()
    assert plan_jobs([sample_photo_dir], out, CFG) == []
    run_generate([sample_photo_dir], out, CFG, resources=tiny)
    assert (out / "manifest.jsonl").read_text().splitlines() == lines
    assert json.loads((out / "summary.json").read_text()) == write_summary(out)
    assert sorted(p.name for p in (out / "manipulated").iterdir()) == [
        "astronaut.png", "chelsea.png", "coffee.png", "rocket.png"]
    mean_orig = np.mean([r["score_orig"] for r in latest_records(out).values()])
    assert summary["mean_score_orig"] == pytest.approx(mean_orig)


def test_changed_input_is_redone(tiny, tmp_path, sample_photos):
    src = tmp_path / "in" / "x.png"
    src.parent.mkdir()
    Image.fromarray(sample_photos["coffee"]).save(src)
    out = tmp_path / "out"
    run_generate([src], out, CFG, resources=tiny)
    Image.fromarray(sample_photos["rocket"]).save(src)
    jobs = plan_jobs([src], out, CFG)
    assert [j.name for j in jobs] == ["x"]
