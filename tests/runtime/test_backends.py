"""Loader/runner contract: forgiving names, strict availability, validation against the opened
graph's own IO, lifecycle, graph choice, and --backend trt end to end with a stand-in TensorRT."""

from __future__ import annotations

import numpy as np
import pytest

from foclip.errors import BackendError, BundleError, FoclipError, InternalError
from foclip.runtime import Detector, available_backends, choose_graph, open_bundle
from foclip.runtime.backends import OrtRunner, SessionFromBundle, canonical_backend, create_runner


@pytest.mark.parametrize("name,canon", [("CPU", "ort-cpu"), ("onnxruntime", "ort-cpu"), ("ort_cpu", "ort-cpu"),
                                        ("CUDA", "ort-cuda"), ("TensorRT", "trt")])
def test_forgiving_names(name, canon):
    assert canonical_backend(name) == canon


def test_unknown_backend_lists_known(tiny_bundle):
    with pytest.raises(BackendError, match="ort-cpu, ort-cuda, trt"):
        Detector.from_bundle(tiny_bundle, backend="openvino")


@pytest.mark.parametrize("name", ["ort-cuda", "trt"])
def test_unavailable_backend_lists_available_no_fallback(tiny_bundle, name):
    if name in available_backends():
        pytest.skip(f"{name} is available here")
    with pytest.raises(BackendError) as info:
        Detector.from_bundle(tiny_bundle, backend=name)
    assert "ort-cpu" in str(info.value) and "not available" in str(info.value)


def test_runner_validates_against_the_session_and_times(tiny_bundle):
    b = open_bundle(tiny_bundle)
    s = b.manifest.preprocess.image_size
    with create_runner("ort-cpu", b, "image.fp32", threads=1) as runner:
        assert runner.input_metadata()["pixels"][1] == (None, 3, s, s)  # from the session, batch symbolic
        with pytest.raises(InternalError, match="float32"):
            runner.run({"pixels": np.zeros((1, 3, s, s), np.float64)})
        with pytest.raises(InternalError, match="shape"):
            runner.run({"pixels": np.zeros((1, 3, s + 1, s), np.float32)})
        with pytest.raises(InternalError, match="named"):
            runner.run({"image": np.zeros((1, 3, s, s), np.float32)})
        out = runner.run({"pixels": np.zeros((3, 3, s, s), np.float32)})
        assert out["embedding"].shape == (3, b.manifest.embed_dim)
        assert runner.calls == 1 and runner.rows == 3 and runner.seconds > 0
    assert not runner.is_active and runner.session is None
    with pytest.raises(InternalError, match="not active") as info:
        runner.run({"pixels": np.zeros((1, 3, s, s), np.float32)})
    assert not isinstance(info.value, FoclipError)  # a caller bug keeps its traceback in the CLI


def test_loader_opens_lazily_and_runner_reactivates(tiny_bundle):
    b = open_bundle(tiny_bundle)
    runner = OrtRunner(SessionFromBundle(b, b.graph("text.fp32"), threads=1))
    assert runner.session is None and not runner.is_active  # nothing opened before activate()
    runner.activate()
    first = runner.session
    runner.activate()  # idempotent
    assert runner.session is first
    runner.deactivate()
    runner.activate()
    assert runner.session is not None and runner.session is not first
    runner.deactivate()


def test_graph_choice_never_picks_a_graph_without_an_artifact(tiny_bundle, monkeypatch):
    """With ort-cuda and trt faked as available, auto picks fused only where the artifact exists."""
    import dataclasses

    from foclip.manifest import EngineSpec
    from foclip.runtime import backends

    b = open_bundle(tiny_bundle)
    monkeypatch.setattr(backends, "available_backends", lambda: ["ort-cpu", "ort-cuda", "trt"])
    assert choose_graph(b, "ort-cpu", "fp32") == ("image.fp32", False)
    assert choose_graph(b, "ort-cuda", "fp32") == ("detect.fp32", True)
    assert choose_graph(b, "ort-cuda", "fp32", cascade=True) == ("image.fp32", False)
    assert choose_graph(b, "ort-cuda", "int8") == ("image.int8", False)  # no detect.int8 graph
    with pytest.raises(BundleError, match="build-engine .* --graph image.fp16 --precision fp16"):
        choose_graph(b, "trt", "fp16")  # no engines: the error names the command that makes one
    eng = EngineSpec("image.fp32", "fp16", "engines/x.engine", "0" * 64, "10.0", "9.0", (1, 4, 8), "k")
    with_image = dataclasses.replace(b, manifest=b.manifest.with_changes(engines=(eng,)))
    assert choose_graph(with_image, "trt", "fp16") == ("image.fp32", False)  # detect.fp32 exists, no engine
    with pytest.raises(BundleError, match="--graph detect.fp16 --precision fp16"):
        choose_graph(with_image, "trt", "fp16", mode="fused")
    fused = dataclasses.replace(eng, graph="detect.fp32")
    both = dataclasses.replace(b, manifest=b.manifest.with_changes(engines=(eng, fused)))
    assert choose_graph(both, "trt", "fp16") == ("detect.fp32", True)
    no_detect = dataclasses.replace(b, manifest=b.manifest.with_changes(
        graphs={k: g for k, g in b.manifest.graphs.items() if k != "detect.fp32"}))
    with pytest.raises(BundleError, match="--detect-graph"):
        choose_graph(no_detect, "ort-cuda", "fp32", mode="fused")


def test_trt_on_a_default_bundle_with_a_stand_in_tensorrt(tiny_bundle, tmp_path, fake_trt, monkeypatch):
    """`foclip build-engine` for the graph the detector picks, then --backend trt detects: same scores."""
    import shutil

    from foclip.exporter.engine import EngineRequest, build_engine
    from foclip.runtime import backends

    monkeypatch.setattr(backends, "available_backends", lambda: ["ort-cpu", "trt"])
    b = tmp_path / "b"
    shutil.copytree(tiny_bundle, b)
    (b / "detect.fp32.onnx").unlink()  # a default (0.2) export has no fused graph
    import json

    from foclip.manifest import MANIFEST_NAME, atomic_write_json

    raw = json.loads((b / MANIFEST_NAME).read_text())
    del raw["graphs"]["detect.fp32"], raw["files"]["detect.fp32.onnx"]
    atomic_write_json(b / MANIFEST_NAME, raw)
    with pytest.raises(BundleError, match="build-engine"):
        Detector.from_bundle(b, backend="trt", precision="fp16")
    spec, built = build_engine(b, EngineRequest("image.fp16", "fp16", (1, 4, 16)))
    assert built and spec.graph == "image.fp16"
    photos = [np.random.default_rng(i).integers(0, 255, (80, 90, 3), dtype=np.uint8) for i in range(5)]
    with Detector.from_bundle(b, backend="trt", precision="fp16", batch_size=4) as det, \
            Detector.from_bundle(b, threads=1) as ref:
        assert det.graph_key == "image.fp16" and det.self_check.passed and det.self_check.backend == "trt"
        got, want = det.detect(photos), ref.detect(photos)
        assert det.info()["backend_detail"]["engine"] == spec.file
    # an fp16 engine computes in fp16 (the double rounds as TensorRT stores): scores agree within
    # what its gate allows (score_scale * (1 - 0.999) = 0.1), not to fp32 round-off
    assert det.self_check.gate == 0.999 and det.self_check.min_cosine < 0.99999999
    for g, w in zip(got, want):
        assert g.ok and abs(g.score_color - w.score_color) < 0.1 and abs(g.score_gray - w.score_gray) < 0.1
        assert 0 < abs(g.score_color - w.score_color) or 0 < abs(g.score_gray - w.score_gray)
    assert not fake_trt.buffers  # deactivate freed the device buffers


def test_a_wrong_engine_is_refused_when_built(tiny_bundle, tmp_path, fake_trt):
    import shutil

    from foclip.exporter.engine import EngineRequest, build_engine
    from foclip.manifest import read_manifest
    from foclip.runtime.selfcheck import SelfCheckError

    fake_trt.corrupt_engines = True  # the engine returns the batch's rows in reverse order
    b = tmp_path / "b"
    shutil.copytree(tiny_bundle, b)
    with pytest.raises(SelfCheckError, match="graph image.fp16 on trt .* below its gate"):
        build_engine(b, EngineRequest("image.fp16", "fp16", (1, 8, 16)))
    assert read_manifest(b).engines == () and not list((b / "engines").glob("*.engine"))


def _trt_engine_round_trip(tiny_bundle, tmp_path) -> None:
    """Build fp32 and fp16 engines (of image.fp32, image.fp16) in a copy, detect with each, compare with ort-cpu."""
    import shutil

    from foclip.exporter.engine import EngineRequest, build_engine

    b = tmp_path / "engines-bundle"
    shutil.copytree(tiny_bundle, b)
    x = [np.random.default_rng(i).integers(0, 255, (80, 90, 3), dtype=np.uint8) for i in range(3)]
    with Detector.from_bundle(b, threads=1) as ref:
        want = ref.detect(x)
    for precision, gate in (("fp32", 0.99999), ("fp16", 0.999)):
        spec, built = build_engine(b, EngineRequest(f"image.{precision}", precision, (1, 4, 8)))
        assert built and spec.gate_min_cosine == gate
        with Detector.from_bundle(b, backend="trt", precision=precision, graph="encoder", batch_size=4) as det:
            assert det.self_check.passed and det.self_check.gate == gate
            got = det.detect(x)
        for g, w in zip(got, want):  # a score moves by at most score_scale * (1 - gate)
            assert g.ok and abs(g.score_color - w.score_color) <= 100 * (1 - gate)


def test_trt_engine_round_trip_with_the_double(tiny_bundle, tmp_path, fake_trt, monkeypatch):
    """The body of the gpu test below, on CPU with the double."""
    from foclip.runtime import backends

    monkeypatch.setattr(backends, "available_backends", lambda: ["ort-cpu", "trt"])
    _trt_engine_round_trip(tiny_bundle, tmp_path)


@pytest.mark.gpu
def test_trt_backend_runs_engine(tiny_bundle, tmp_path):  # pragma: no cover - needs TensorRT and a GPU
    """Real TensorRT (10.12 to 11.x) on this GPU: builds its own engines in a temporary copy of the bundle."""
    pytest.importorskip("tensorrt")
    _trt_engine_round_trip(tiny_bundle, tmp_path)


def test_spin_wait_reaches_the_ort_session(tiny_bundle):
    key = "session.intra_op.allow_spinning"
    off = Detector.from_bundle(tiny_bundle, spin_wait=False).backend.session.get_session_options()
    assert off.get_session_config_entry(key) == "0"
    on = Detector.from_bundle(tiny_bundle).backend.session.get_session_options()
    with pytest.raises(RuntimeError, match="does not have configuration"):  # ORT's default: spinning on
        on.get_session_config_entry(key)
