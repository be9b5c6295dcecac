"""The argparse scripts that left the library packages (scripts/) still run from a checkout."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TIMEOUT = 600 * float(os.environ.get("FOCLIP_TEST_TIMEOUT_SCALE", "1"))


def _run(script: str, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1",
           "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    out = subprocess.run([sys.executable, str(ROOT / "scripts" / "measure" / script), *args], capture_output=True, text=True,
                         env=env, cwd=ROOT, timeout=TIMEOUT, check=False)
    assert out.returncode == 0, out.stderr[-3000:]
    return out


def test_alpha_beta_sweep_prints_a_row_per_setting():
    out = _run("alpha_beta_sweep.py", "--model", "foclip-tiny", "--iters", "2", "--alphas", "0", "1",
               "--betas", "10", "--resize", "64")
    rows = [x for x in out.stdout.splitlines() if x.startswith("| ") and x[2].isdigit()]
    assert [r.split("|")[1:3] for r in rows] == [[" 0 ", " 10 "], [" 1 ", " 10 "]]


def test_compare_exporters_help():
    assert "--model" in _run("compare_exporters.py", "--help").stdout


@pytest.mark.slow
def test_compare_exporters_on_the_tiny_model():
    res = json.loads(_run("compare_exporters.py", "--model", "foclip-tiny").stdout)
    assert res["torchscript.image"]["ok"] and res["torchscript.image"]["min_cos_b16"] > 0.9999
