"""Backend contract: forgiving names, strict availability, validation in the base class."""

from __future__ import annotations

import numpy as np
import pytest

from foclip.errors import BackendError
from foclip.runtime import Detector, available_backends, open_bundle
from foclip.runtime.backends import canonical_backend, create_backend


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


def test_base_class_validates_and_times(tiny_bundle):
    b = open_bundle(tiny_bundle)
    graph = b.image_graph("fp32")
    backend = create_backend("ort-cpu", b.path, graph, b.manifest, threads=1)
    s = b.manifest.preprocess.image_size
    with pytest.raises(BackendError, match="float32"):
        backend.run({"pixels": np.zeros((1, 3, s, s), np.float64)})
    with pytest.raises(BackendError, match="shape"):
        backend.run({"pixels": np.zeros((1, 3, s + 1, s), np.float32)})
    with pytest.raises(BackendError, match="named"):
        backend.run({"image": np.zeros((1, 3, s, s), np.float32)})
    out = backend.run({"pixels": np.zeros((3, 3, s, s), np.float32)})
    assert out["embedding"].shape == (3, b.manifest.embed_dim)
    assert backend.calls == 1 and backend.rows == 3 and backend.seconds > 0


@pytest.mark.gpu
def test_trt_backend_runs_engine(tiny_bundle):  # pragma: no cover - needs TensorRT and a GPU
    """Needs an engine built by `foclip build-engine` (TensorRT 10) on this GPU."""
    pytest.importorskip("tensorrt")
    b = open_bundle(tiny_bundle)
    if not b.manifest.engines:
        pytest.skip("bundle has no TensorRT engine (run foclip build-engine)")
    engine = b.manifest.engines[0]
    det = Detector.from_bundle(tiny_bundle, backend="trt", precision=engine.precision)
    ref = Detector.from_bundle(tiny_bundle)
    x = [np.random.default_rng(0).integers(0, 255, (80, 90, 3), dtype=np.uint8) for _ in range(3)]
    got, want = det.detect(x), ref.detect(x)
    for g, w in zip(got, want):
        assert abs(g.score_color - w.score_color) < 1e-2 * max(1.0, abs(w.score_color))


def test_spin_wait_reaches_the_ort_session(tiny_bundle):
    key = "session.intra_op.allow_spinning"
    off = Detector.from_bundle(tiny_bundle, spin_wait=False).backend.session.get_session_options()
    assert off.get_session_config_entry(key) == "0"
    on = Detector.from_bundle(tiny_bundle).backend.session.get_session_options()
    with pytest.raises(RuntimeError, match="does not have configuration"):  # ORT's default: spinning on
        on.get_session_config_entry(key)
