"""scripts/gpu_check.py: its honest no-CUDA path here, its row mechanics on CPU; the real check
needs a GPU (`python scripts/gpu_check.py --out DIR`)."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "gpu_check.py"


def _module():
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    sys.modules["gpu_check"] = mod  # dataclasses look their module up while the class is made
    spec.loader.exec_module(mod)
    return mod


def _cuda() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except ImportError:
        return False


@pytest.mark.skipif(_cuda(), reason="this machine has CUDA: the no-CUDA path cannot be seen here")
@pytest.mark.parametrize(("args", "rows"), [((), 6), (("--slow",), 12)])
def test_without_cuda_every_row_is_skipped_with_its_reason_and_nothing_claims_success(tmp_path, args, rows):
    """Default: one small model (fits a 10-minute slot); --slow adds ViT-B-32."""
    proc = subprocess.run([sys.executable, str(SCRIPT), "--out", str(tmp_path / "g"), *args], capture_output=True,
                          text=True, timeout=300 * float(os.environ.get("FOCLIP_TEST_TIMEOUT_SCALE", "1")), check=False,
                          env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert proc.returncode == 2, proc.stderr[-2000:]  # 2: nothing verified
    report = json.loads((tmp_path / "g" / "gpu_check.json").read_text())
    assert report["verified"] is False and report["ok"] is False and report["tests"] == {}
    assert len(report["rows"]) == rows and {r["status"] for r in report["rows"]} == {"skipped"}
    if not args:
        assert report["batches"] == [1, 32] and {r["model"] for r in report["rows"]} == {"foclip-ref-vit"}
        return
    assert all("no CUDA GPU" in r["reason"] for r in report["rows"])
    assert {(r["model"], r["backend"], r["precision"]) for r in report["rows"]} >= {
        ("foclip-ref-vit", "trt", "fp16"), ("ViT-B-32", "trt", "fp32"), ("ViT-B-32", "torch-cuda", "fp16")}
    for backend in ("trt", "ort-cuda", "torch-cuda"):
        assert f"skipped {backend}: no CUDA GPU" in proc.stdout
    assert "nothing was verified" in proc.stderr


def test_skip_reasons_with_only_torch_cuda():
    gc = _module()
    why = gc.skip_reasons(cuda=True, has_trt=False, has_ort_cuda=False, has_torch=True)
    assert why["torch-cuda"] == "" and why["tests"] == ""
    assert "pip install 'foclip[trt]'" in why["trt"] and "pip install 'foclip[gpu]'" in why["ort-cuda"]
    assert all(gc.skip_reasons(cuda=True, has_trt=True, has_ort_cuda=True, has_torch=True)[k] == ""
               for k in ("trt", "ort-cuda", "torch-cuda"))


def test_torch_rows_run_and_the_others_say_why_not(tiny_bundle, tmp_path, monkeypatch):
    """The torch-only machine: torch rows measured (here on the CPU, foclip-tiny), trt and ort-cuda
    rows skipped with their reasons, all in one table and the JSON rows."""
    gc = _module()
    monkeypatch.setattr(gc, "SECONDS_PER_BATCH", 0.01)
    env = {"cuda": True, "device": "test", "skip": gc.skip_reasons(True, False, False, True)}
    shutil.copytree(tiny_bundle, tmp_path / "bundles" / "foclip-tiny")  # the script reuses a bundle it finds
    rows = gc.run_rows(env, ("foclip-tiny:random",), (1, 2), tmp_path, torch_device="cpu")
    by = {(r.backend, r.precision): r for r in rows}
    fp32 = by[("torch-cuda", "fp32")]
    assert fp32.status == "ran" and fp32.passed and fp32.gate == 0.99999 and fp32.min_cosine > 0.99999
    assert set(fp32.det_per_s) == {"1", "2"} and all(v > 0 for v in fp32.det_per_s.values())
    assert fp32.p50_ms["2"] <= fp32.p99_ms["2"]
    assert by[("trt", "fp16")].status == "skipped" and "tensorrt is not installed" in by[("trt", "fp16")].reason
    table = gc.render(env, {}, rows, (1, 2))
    assert "skipped trt: tensorrt is not installed" in table and "skipped ort-cuda: onnxruntime has no" in table


def test_a_crash_still_writes_the_json_and_exits_3(tmp_path, monkeypatch):
    gc = _module()

    def boom(*a, **k):
        raise RuntimeError("driver fell over")

    monkeypatch.setattr(gc, "probe", lambda: {"cuda": True, "device": "x", "skip": gc.skip_reasons(True, True, True, True)})
    monkeypatch.setattr(gc, "run_rows", boom)
    assert gc.main(["--out", str(tmp_path), "--skip-tests"]) == 3
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    assert report["crash"] == "RuntimeError: driver fell over" and report["ok"] is False


def test_a_step_past_its_timeout_ends_that_step_only():
    import time

    gc = _module()
    with pytest.raises(gc.StepTimeout, match="timed out after 0.2 s"):
        gc.with_timeout(0.2, time.sleep, 30)
    assert gc.with_timeout(5, lambda x: x + 1, 1) == 2
