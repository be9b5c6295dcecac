"""`foclip generate --ray`: same records as one process, and a worker killed mid-batch loses nothing."""

from __future__ import annotations

import os
import signal
from collections import Counter

import numpy as np
import pytest
from PIL import Image
from waits import ceiling

pytest.importorskip("ray")

from foclip_train.config import AttackConfig, GenerateConfig
from foclip_train.generate import read_records, run_generate

# Fields that depend on the run, not on the images (timings).
VOLATILE = {"wall_s"}


@pytest.fixture(scope="module")
def inputs(tmp_path_factory, sample_photos):
    d = tmp_path_factory.mktemp("gen_inputs")
    for name, arr in sample_photos.items():
        Image.fromarray(np.ascontiguousarray(arr[::4, ::4])).save(d / f"{name}.png")
    Image.fromarray(np.ascontiguousarray(sample_photos["chelsea"][::6, ::6])).save(d / "chelsea_small.jpg")
    (d / "not_an_image.jpg").write_bytes(b"plain text, not a JPEG")
    return d


@pytest.fixture(scope="module")
def cfg():
    return GenerateConfig(model="foclip-tiny", pretrained="random", attack=AttackConfig(iters=6, check_every=3),
                          batch=2, seed=3, device="cpu")


@pytest.fixture(scope="module")
def ray_local():
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, _node_ip_address="127.0.0.1")
    yield ray
    ray.shutdown()


def _by_source(records):
    return {r["source"]: {k: v for k, v in r.items() if k not in VOLATILE} for r in records}


# ~10-14 s on a quiet 2-core machine (Ray start, 2 model loads, a restart): in the default suite.
def test_distributed_equals_single_process_even_when_a_worker_is_killed(tmp_path, inputs, cfg, ray_local):
    from foclip_train.distributed import generate_distributed

    single, dist = tmp_path / "single", tmp_path / "ray"
    run_generate([str(inputs)], single, cfg)

    killed: list[int] = []

    def kill_second_batch_worker(batch_index: int, pid: int) -> None:
        if batch_index == 1 and not killed:  # SIGKILL the worker that just received batch 1
            killed.append(pid)
            os.kill(pid, signal.SIGKILL)

    summary, stats = generate_distributed([str(inputs)], dist, cfg, workers=2, on_submit=kill_second_batch_worker)
    assert killed and stats.retried_batches >= 1 and stats.failed_batches == 0
    assert stats.workers == 2 and stats.batches == 3

    recs = read_records(dist)
    counts = Counter(r["source"] for r in recs)
    assert set(counts.values()) == {1}, "an image was written twice to the manifest"
    assert _by_source(recs) == _by_source(read_records(single)), "records differ from the one-process run"
    for r in recs:
        if not r["error"]:
            assert (dist / r["manipulated"]).read_bytes() == (single / r["manipulated"]).read_bytes()
            assert (dist / r["original"]).is_file()
    assert summary["failures"] == 1 and summary["images"] == 5
    assert not any(p.name.endswith(".tmp") for p in dist.rglob("*"))

    # A rerun resumes: only the failed input is tried again, nothing else is redone.
    before = len(recs)
    _, again = generate_distributed([str(inputs)], dist, cfg, workers=2)
    assert again.batches == 1
    assert len(read_records(dist)) == before + 1


def test_cli_ray_run_writes_every_image_once_and_refuses_empty_inputs(tmp_path, inputs):
    import json
    import subprocess
    import sys

    base = [sys.executable, "-m", "foclip.cli.main", "generate"]
    opts = ["--model", "foclip-tiny", "--pretrained", "random", "--iters", "4", "--check-every", "2", "--batch", "2", "--device", "cpu",
            "--ray", "--workers", "1"]
    proc = subprocess.run([*base, str(inputs), "--out", str(tmp_path / "out"), *opts], capture_output=True,
                          text=True, timeout=ceiling(600), check=False)
    assert proc.returncode == 1, proc.stderr[-2000:]  # the text file named .jpg fails, the rest succeed
    lines = [json.loads(x) for x in (tmp_path / "out" / "manifest.jsonl").read_text().splitlines()]
    assert Counter(r["source"] for r in lines) == Counter(str(p) for p in inputs.iterdir())
    assert [r["error"] is not None for r in lines].count(True) == 1
    assert all((tmp_path / "out" / r["manipulated"]).is_file() for r in lines if not r["error"])
    (tmp_path / "empty").mkdir()
    proc = subprocess.run([*base, str(tmp_path / "empty"), "--out", str(tmp_path / "out2"), *opts],
                          capture_output=True, text=True, timeout=ceiling(600), check=False)
    assert proc.returncode == 1 and "hold no image files" in proc.stderr
