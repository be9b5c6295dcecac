"""`foclip detect --ray` end to end on a local Ray with 2 actors (CLI subprocesses, small shards)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from waits import ceiling, wait_until

pytest.importorskip("pyarrow")
pytest.importorskip("ray.data")

import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[2]


def _foclip(*argv: str, cwd: Path, **kw) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}  # this checkout's foclip, in the CLI and in Ray's workers
    return subprocess.run([sys.executable, "-m", "foclip.cli.main", *argv], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=ceiling(300), check=False, **kw)


def _rows(out: Path) -> list[dict]:
    return [r for f in sorted(out.glob("*.parquet")) for r in pq.read_table(f).to_pylist()]


def test_ray_scan_matches_detect_marks_bad_shards_resumes_and_refuses_changes(tiny_bundle, dataset, tmp_path):
    """One Ray run over a folder, a tar, a parquet file and a truncated tar: the scores are `foclip detect`'s,
    bad items and shards are error rows, a rerun skips every shard, other settings are refused."""
    ref = _foclip("detect", str(tiny_bundle), str(dataset["photos"]), "--format", "jsonl", "--batch", "3",
                  cwd=tmp_path)
    assert ref.returncode in (0, 3), ref.stderr
    reference = {Path(d["id"]).stem: d for d in map(json.loads, ref.stdout.splitlines())}
    out = tmp_path / "out"
    args = ["detect", str(tiny_bundle), str(dataset["photos"]), str(dataset["shards"]), str(dataset["cut"]),
            "--ray", "--actors", "2", "--batch", "3", "--id-column", "key", "--out", str(out), "--format", "jsonl"]
    run = _foclip(*args, cwd=tmp_path)
    assert run.returncode in (4, 5), run.stdout + run.stderr  # unreadable inputs, maybe flagged ones
    rows = _rows(out)
    by_shard: dict[str, list[dict]] = {}
    for r in rows:
        by_shard.setdefault(r["shard"], []).append(r)
    assert set(by_shard) >= {"web-000", "table-000", "cut"} and any(s.startswith("files-") for s in by_shard)
    for shard, got in by_shard.items():
        assert (out / f"{shard}.jsonl").read_text().count("\n") == len(got)
        scored = {Path(r["id"]).stem.removeprefix("p-"): r for r in got if r["error"] is None}
        if shard != "cut":
            assert set(scored) == set(reference), shard
        for stem, r in scored.items():
            for key in ("score_color", "score_gray", "drop"):
                assert r[key] == pytest.approx(reference[stem][key], abs=1e-5), (shard, stem, key)
            assert r["tampered"] == reference[stem]["tampered"]
    errors = {(r["id"], r["error"]["code"]) for r in rows if r["error"]}
    assert errors == {("s/corrupt", "not_an_image"), ("null-0", "empty_file"), (str(dataset["cut"]), "shard_unreadable")}
    meta = json.loads((out / "_meta.json").read_text())
    assert meta["complete"] and meta["images"] == len(rows) and meta["errors"] == 3
    assert f"{len(rows)} image(s) in {len(by_shard)} shard(s)" in run.stderr.replace("\n", " ")  # --format jsonl: summary on stderr

    mtimes = {f: f.stat().st_mtime_ns for f in out.glob("*.parquet")}
    again = _foclip(*args, cwd=tmp_path)
    assert again.returncode == run.returncode
    assert f"resumed: {len(by_shard)} of {len(by_shard)} shard(s)" in again.stderr
    assert {f: f.stat().st_mtime_ns for f in out.glob("*.parquet")} == mtimes  # nothing scored or written again

    changed = _foclip(*[a if a != "3" else "4" for a in args], "--precision", "int8", cwd=tmp_path)
    assert changed.returncode == 1
    assert "holds results made with other settings: precision fp32 (this run: int8)" in changed.stderr
    assert "--fresh" in changed.stderr and "Traceback" not in changed.stderr


@pytest.mark.slow
def test_a_killed_scan_resumes_and_gives_each_image_exactly_once(tiny_bundle, sample_photo_dir, tmp_path):
    """SIGKILL to the whole run (driver, Ray and actors) once some shards are written; the rerun scores
    only the rest: every image appears exactly once, no partial file is left."""
    images = tmp_path / "images"
    images.mkdir()
    photos = sorted(sample_photo_dir.iterdir())
    for i in range(240):
        src = photos[i % len(photos)]
        (images / f"{i:04d}{src.suffix}").write_bytes(src.read_bytes())
    out = tmp_path / "out"
    args = ["detect", str(tiny_bundle), str(images), "--ray", "--actors", "2", "--shard-size", "2",
            "--out", str(out)]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-m", "foclip.cli.main", *args], cwd=tmp_path, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        wait_until(lambda: len(list(out.glob("*.parquet"))) >= 3 or proc.poll() is not None,
                   "a few shards written", ceiling(240), interval=0.05)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the run's whole process group: driver, Ray, actors
        proc.wait()
    first = len(list(out.glob("*.parquet")))
    assert 3 <= first < 120, f"{first} of 120 shards before the kill: the run was not killed mid-way"
    rerun = _foclip(*args, cwd=tmp_path)
    assert rerun.returncode in (0, 3), rerun.stderr
    assert f"resumed: {first} of 120 shard(s)" in rerun.stderr or f"resumed: {first + 1} of 120" in rerun.stderr
    ids = [r["id"] for r in _rows(out)]
    assert sorted(ids) == sorted(str(p) for p in images.iterdir())  # each image exactly once
    assert not list(out.glob(".*.partial"))
