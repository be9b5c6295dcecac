"""TrtRunner against a double that fails like TensorRT (tests/trt_double.py, once per API surface): every
status checked, profiles enforced on every dynamic axis, version and GPU checked at load, and
concurrent detect() safe on every backend."""

from __future__ import annotations

import shutil
import threading

import numpy as np
import pytest

from foclip.errors import BackendError, BundleError
from foclip.exporter.engine import EngineRequest, build_engine
from foclip.runtime import Detector, backends
from foclip.runtime.bundle import open_bundle


@pytest.fixture
def engine_bundle(tiny_bundle, tmp_path, fake_trt, monkeypatch):
    """A copy of the tiny bundle with fp32 engines of image.fp32 (batch 1..8) and detect.fp32."""
    monkeypatch.setattr(backends, "available_backends", lambda: ["ort-cpu", "trt"])
    b = tmp_path / "b"
    shutil.copytree(tiny_bundle, b)
    build_engine(b, EngineRequest("image.fp32", "fp32", (1, 4, 8)))
    build_engine(b, EngineRequest("detect.fp32", "fp32", (1, 4, 8)))
    return b


def _runner(b, key="image.fp32", precision="fp32"):
    bundle = open_bundle(b)
    return backends.TrtRunner(backends.EngineFromBundle(bundle, bundle.graph(key), precision))


def test_every_dynamic_axis_is_checked_against_the_engines_profile(engine_bundle):
    """Defect 3: a batch above the profile and a text bank above the detect engine's prompt cap
    (4096) are refused naming the tensor, the shape and the profile; nothing reaches TensorRT."""
    pixels = r"trt input 'pixels' \| has shape \(9, 3, 64, 64\), outside the engine's optimisation profile " \
             r"\(min \(1, 3, 64, 64\), max \(8,"
    with _runner(engine_bundle) as r, pytest.raises(BackendError, match=pixels):
        r.run({"pixels": np.zeros((9, 3, 64, 64), np.float32)})
    bank = r"'text_bank' \| has shape \(4097, 32\).*max \(4096, 32\)"
    with _runner(engine_bundle, "detect.fp32") as r, pytest.raises(BackendError, match=bank):
        r.run({"pixels_u8": np.zeros((2, 64, 64, 3), np.uint8), "text_bank": np.zeros((4097, 32), np.float32)})


def test_a_detector_the_engine_profile_cannot_serve_is_refused_at_load(engine_bundle, monkeypatch):
    """The largest call a detector will make is checked against the engine's profile at load, not
    at the first batch: colour + gray rows of batch_size images, or the fused graph's text bank."""
    with pytest.raises(BackendError, match=r"'pixels' \| has shape \(10, 3, 64, 64\).*max \(8, 3, 64, 64\)"):
        Detector.from_bundle(engine_bundle, backend="trt", precision="fp32", graph="encoder", batch_size=5)
    from foclip.runtime import detector
    from foclip.runtime.bundle import TextBank

    prompts = tuple(f"a photo number {i}" for i in range(4097))
    emb = np.random.default_rng(0).normal(size=(4097, 32)).astype(np.float32)
    with monkeypatch.context() as mp:  # 4097 custom prompts, without embedding them on 2 cores
        mp.setattr(detector, "resolve_text_bank", lambda *a: TextBank("custom", prompts, emb, "0" * 64))
        with pytest.raises(BackendError, match=r"'text_bank' \| has shape \(4097, 32\)"):
            Detector.from_bundle(engine_bundle, backend="trt", precision="fp32", graph="fused", batch_size=2,
                                 prompts=list(prompts))
    with Detector.from_bundle(engine_bundle, backend="trt", precision="fp32", graph="fused", batch_size=8) as det:
        assert det.fused and det.detect(_photos(3, 0))[0].ok


def test_false_and_none_from_tensorrt_become_one_line_errors(engine_bundle, fake_trt):
    """Defect 3: set_input_shape / set_tensor_address / execute_async_v3 returning False, and
    create_execution_context returning None, each raise a BackendError naming the call."""
    with _runner(engine_bundle) as r:
        x = {"pixels": np.zeros((2, 3, 64, 64), np.float32)}
        assert r.run(x)["embedding"].shape[0] == 2
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(r, "check_profile", lambda feeds: None)  # as the old runner: no own check
            with pytest.raises(BackendError, match=r"set_input_shape\('pixels', \(9, 3, 64, 64\)\) \| returned False"):
                r.run({"pixels": np.zeros((9, 3, 64, 64), np.float32)})
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(type(r.context), "set_tensor_address", lambda self, name, ptr: False)
            with pytest.raises(BackendError, match=r"set_tensor_address\('pixels'\) \| returned False"):
                r.run(x)
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(type(r.context), "execute_async_v3", lambda self, stream: False)
            with pytest.raises(BackendError, match=r"execute_async_v3 \(pixels \(2, 3, 64, 64\)\) \| returned False"):
                r.run(x)
    fake_trt.fail_contexts = True
    with pytest.raises(BackendError, match="create_execution_context .* returned None"):
        _runner(engine_bundle).activate()


@pytest.mark.parametrize(("field", "value", "why"), [
    ("version", "10.98.0", r"built with TensorRT 10.98.0, this is TensorRT 1\d\.\d+\.0\.\d+"),
    ("sm", "8.6", r"compute capability 8.6, this GPU is 9.0"),
])
def test_a_plan_from_another_tensorrt_or_gpu_is_refused_with_the_rebuild_command(engine_bundle, fake_trt, field,
                                                                                  value, why):
    """Defect 3: the full TensorRT version and the compute capability are checked at load."""
    spec = open_bundle(engine_bundle).manifest.engines[0]
    old = fake_trt.__version__ if field == "version" else fake_trt.compute_capability
    if field == "version":
        fake_trt.__version__ = value  # the plan's TensorRT, then this one
    else:
        fake_trt.compute_capability = value
    try:
        b2 = engine_bundle.parent / "b2"
        shutil.copytree(engine_bundle, b2)
        build_engine(b2, EngineRequest("image.fp16", "fp16", (1, 4, 8)))
    finally:
        if field == "version":
            fake_trt.__version__ = old
        else:
            fake_trt.compute_capability = old
    with pytest.raises(BundleError) as info:
        _runner(b2, "image.fp16", "fp16").activate()
    msg = str(info.value)
    assert __import__("re").search(why, msg) and "\n" not in msg
    assert f"foclip build-engine {b2} --graph image.fp16 --precision fp16 --batch 1,4,8" in msg
    assert spec.precision == "fp32"


def _photos(n: int, seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 255, (70 + i, 90, 3), dtype=np.uint8) for i in range(n)]


def _concurrent_equals_sequential(det: Detector) -> None:
    work = [_photos(1 + (k % 4), k) for k in range(8)]
    want = [[(r.score_color, r.score_gray) for r in det.detect(w)] for w in work]
    got: dict[int, list] = {}
    errors: list[BaseException] = []
    start = threading.Barrier(4)

    def worker(ids: list[int]) -> None:
        try:
            start.wait()
            for _ in range(3):
                for k in ids:
                    got.setdefault(k, []).append([(r.score_color, r.score_gray) for r in det.detect(work[k])])
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=([k for k in range(8) if k % 4 == t],)) for t in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors[0]
    for k, runs in got.items():
        for run in runs:
            np.testing.assert_allclose(np.array(run), np.array(want[k]), rtol=0, atol=1e-9)


def test_concurrent_detect_on_the_trt_double(engine_bundle):
    """Defect 4: four threads share one TensorRT detector (one context, one stream, grow-only
    buffers; work runs at synchronize): every result equals the sequential one."""
    with Detector.from_bundle(engine_bundle, backend="trt", precision="fp32", batch_size=4, graph="encoder") as det:
        _concurrent_equals_sequential(det)


@pytest.mark.parametrize("graph", ["encoder", "fused"])
def test_concurrent_detect_on_ort_cpu(tiny_bundle, graph):
    with Detector.from_bundle(tiny_bundle, batch_size=8, threads=1, graph=graph) as det:
        _concurrent_equals_sequential(det)


def test_an_engine_whose_output_shape_differs_is_refused_at_load(engine_bundle, fake_trt, monkeypatch):
    """An engine whose output is not the bundle graph's (a plan from another export: another
    embedding width) is refused at load with one line, not run into a numpy broadcast error."""
    with _runner(engine_bundle) as r:
        classes = (type(r.engine), type(r.context))  # both report tensor shapes, as TensorRT's do

    for cls in classes:
        def wider(self, name, _real=cls.get_tensor_shape):
            shape = list(_real(self, name))
            return [*shape[:-1], shape[-1] + 8] if name == "embedding" else shape

        monkeypatch.setattr(cls, "get_tensor_shape", wider)
    with pytest.raises(BundleError, match=r"tensor 'embedding' has shape \(-1, 40\), the bundle's graph image.fp32 "
                                          r"declares \('batch', 32\)\. Expected .*foclip build-engine --graph image.fp32") as err:
        Detector.from_bundle(engine_bundle, backend="trt", precision="fp32", graph="encoder", batch_size=4)
    assert "\n" not in str(err.value)
