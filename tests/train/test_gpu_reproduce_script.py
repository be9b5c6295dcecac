"""scripts/gpu_reproduce.py: CPU smoke run here; the full 1000-step protocol where a GPU is."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from waits import ceiling

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "gpu_reproduce.py"


def _run(*args: str, timeout: int) -> tuple[str, dict]:
    proc = subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True,
                          timeout=ceiling(timeout), check=False, env={**__import__("os").environ, "HF_HUB_OFFLINE": "1"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout, json.loads(proc.stdout.strip().splitlines()[-1])


def test_smoke_writes_the_report(tmp_path):
    out, line = _run("--smoke", "--out", str(tmp_path / "r"), "--max-images", "4", timeout=300)
    assert "## Table 1" in out and "## Table 3" in out
    assert line["iters"] == 3 and set(line["improvement_of_means_pct"]) == {"masterpieces", "imagenet-25"}
    assert (tmp_path / "r" / "REPORT.md").is_file() and (tmp_path / "r" / "figures" / "roc.png").is_file()


@pytest.mark.gpu
@pytest.mark.slow
def test_full_protocol_on_gpu(tmp_path):
    out, line = _run("--out", str(tmp_path / "r"), timeout=3600)
    print(out)
    assert line["iters"] == 1000 and line["held_out_accuracy_all_sets"] is not None
