"""The backend capability table and its readers (issue 26)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from foclip.errors import BundleError
from foclip.runtime import Calibration, Detector, capabilities
from foclip.runtime.backends import canonical_backend
from foclip.runtime.bundle import open_bundle


def test_every_alias_names_its_row():
    for row in capabilities.TABLE.values():
        for name in (row.name, *row.aliases, row.name.upper()):
            assert canonical_backend(name) == row.name
    assert capabilities.text_bank_backend("trt") == "ort-cpu"  # no text engine: prompts on ORT CPU
    assert capabilities.caps("ort-cuda").providers[0] == "CUDAExecutionProvider"


def test_graph_keys_each_backend_can_run(tiny_bundle):
    m = open_bundle(tiny_bundle).manifest
    assert capabilities.graph_candidates("ort-cpu", m, "image", "int8") == ["image.int8"]
    assert capabilities.graph_candidates("ort-cuda", m, "detect", "fp32") == ["detect.fp32"]
    assert capabilities.graph_candidates("trt", m, "image", "fp16") == []  # no engine built
    assert capabilities.verify_targets("ort-cpu", m) == [(k, g.precision) for k, g in m.graphs.items()]
    assert capabilities.verify_targets("trt", m) == []


def test_serve_config_reads_the_table():
    from foclip.serve.config import CPU_BATCH_WAIT_MS, GPU_BATCH_WAIT_MS, ServeConfig

    # an alias of the CPU backend gets the CPU batch wait (the old string test gave it the GPU's)
    assert ServeConfig(bundle="b", backend="cpu").resolved_batch_wait_ms == CPU_BATCH_WAIT_MS
    assert ServeConfig(bundle="b", backend="tensorrt").resolved_batch_wait_ms == GPU_BATCH_WAIT_MS


def _calibration(det: Detector, backend: str) -> Calibration:
    bank = det.text_bank
    return Calibration(tau_score=0.1, tau_drop=0.2, mode="fpr", target_fpr=0.05, bundle_hash=det.bundle.bundle_hash,
                       backend=backend, precision="fp32", score_scale=100.0,
                       text_bank={"name": bank.name, "sha256": bank.sha256, "count": len(bank.prompts)})


def test_choose_graph_runs_once_per_detector_with_a_calibration(tiny_bundle, monkeypatch):
    from foclip.runtime import detector

    calls = []
    choose = detector.choose_graph
    monkeypatch.setattr(detector, "choose_graph", lambda *a, **k: (calls.append(a), choose(*a, **k))[1])
    with Detector.from_bundle(tiny_bundle, threads=1) as plain:
        cal = _calibration(plain, "ort-cpu")
    calls.clear()
    with Detector.from_bundle(tiny_bundle, calibration=cal, threads=1) as det:
        assert det.calibrated and det.detect([np.full((32, 32, 3), 9, np.uint8)])[0].ok
    assert len(calls) == 1


def test_calibration_class_decides_refuse_or_warn(tiny_bundle, monkeypatch):
    with Detector.from_bundle(tiny_bundle, threads=1) as det:
        cal = _calibration(det, "trt")
    # same class (every backend is held to the same PyTorch reference): a warning, as before
    with pytest.warns(UserWarning, match="made on trt"):
        Detector.from_bundle(tiny_bundle, calibration=cal, threads=1).close()
    # a backend of another class: refused
    other = dataclasses.replace(capabilities.TABLE["trt"], calibration_class="unbounded")
    monkeypatch.setitem(capabilities.TABLE, "trt", other)
    with pytest.raises(BundleError, match="made on trt"):
        Detector.from_bundle(tiny_bundle, calibration=cal, threads=1)
