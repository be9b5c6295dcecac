"""scripts/gpu_generate_check.py: CPU smoke run here; the real ViT-L-14-336 run where a GPU is."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from waits import ceiling

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "gpu_generate_check.py"


def _run(*args: str, timeout: int) -> dict:
    proc = subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True,
                          timeout=ceiling(timeout), check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_smoke_runs_every_precision():
    out = _run("--smoke", timeout=180)
    assert [r["precision"] for r in out["rows"]] == ["fp32", "fp32+tf32", "bf16 autocast"]
    assert all(r["mean_best_score"] >= r["mean_start_score"] for r in out["rows"])


@pytest.mark.gpu
@pytest.mark.slow
def test_vit_l_14_336_on_gpu_prints_seconds_per_image():
    out = _run(timeout=1200)
    assert out["model"] == "ViT-L-14-336" and len(out["rows"]) == 3
    for row in out["rows"]:
        print(row["precision"], row["s_per_image_at_1000_iters"], "s/image at 1000 iters")
