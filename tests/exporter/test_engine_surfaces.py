"""TensorRT as users install it: strongly typed engines on the TensorRT 10.13 and 11.4 API surfaces
(tests/trt_api, derived from the real packages), the uint8 rule, dtypes, -1 dims, versions, CUDA."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from trt_double import SURFACES, FakeTensorRT, surface_names

from foclip.cli.main import main
from foclip.errors import BackendError, FoclipError
from foclip.exporter.engine import EngineRequest, build_engine
from foclip.runtime import Detector, backends
from foclip.runtime.bundle import open_bundle

ROOT = Path(__file__).resolve().parents[2]


def _copy(tiny_bundle, tmp_path) -> Path:
    b = tmp_path / "b"
    shutil.copytree(tiny_bundle, b)
    return b


def _photos(n: int) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [rng.integers(0, 255, (70 + i, 90, 3), dtype=np.uint8) for i in range(n)]


def test_an_fp16_engine_builds_from_the_fp16_graph_on_every_surface(tiny_bundle, tmp_path, fake_trt, monkeypatch):
    """Fails on 9b2574a: it set BuilderFlag.FP16 (gone in 11.x; refused on a strongly typed 10.x
    network). Now: a strongly typed network from image.fp16, no precision flag, TF32 cleared, the
    graph recorded, and the engine loads, self-checks and detects."""
    monkeypatch.setattr(backends, "available_backends", lambda: ["ort-cpu", "trt"])
    b = _copy(tiny_bundle, tmp_path)
    spec, built = build_engine(b, EngineRequest("image.fp16", "fp16", (1, 4, 8)))
    assert built and spec.graph == "image.fp16" and spec.precision == "fp16"
    assert not any(c[0] == "flag" for c in fake_trt.calls) and ("clear_flag", "TF32") in fake_trt.calls
    assert all(f & (1 << 1) for f in fake_trt.network_flags)  # STRONGLY_TYPED on every network
    with Detector.from_bundle(b, backend="trt", precision="fp16", graph="encoder", batch_size=4) as det:
        assert det.self_check.passed and det.self_check.graph == "image.fp16"
        assert all(r.ok for r in det.detect(_photos(3)))


def test_the_detect_engines_build_under_the_uint8_rule(tiny_bundle, tmp_path, fake_trt, monkeypatch):
    """Fails on 9b2574a: the fused graph permuted its uint8 pixels before casting them, which
    TensorRT's parser (and the double) refuse. Now pixels_u8 feeds a Cast directly, in detect.fp32
    and detect.fp16, and both engines build, self-check and detect."""
    monkeypatch.setattr(backends, "available_backends", lambda: ["ort-cpu", "trt"])
    b = _copy(tiny_bundle, tmp_path)
    for precision in ("fp32", "fp16"):
        build_engine(b, EngineRequest(f"detect.{precision}", precision, (1, 4, 8)))
        from foclip.exporter.engine import uint8_problems

        assert uint8_problems(b / f"detect.{precision}.onnx") == []
        with Detector.from_bundle(b, backend="trt", precision=precision, graph="fused", batch_size=4) as det:
            assert det.fused and det.self_check.passed
            assert all(r.ok for r in det.detect(_photos(2)))
        bundle = open_bundle(b)
        with backends.TrtRunner(backends.EngineFromBundle(bundle, bundle.graph(f"detect.{precision}"), precision)) as r:
            meta = r.input_metadata()  # dtypes from the engine (the graph's), through trt.nptype
            assert meta["pixels_u8"][0] == np.uint8 and meta["text_bank"][0] == np.float32


def test_a_uint8_input_into_a_transpose_is_refused_by_rule_and_parser(tmp_path, monkeypatch):
    import onnx
    from onnx import TensorProto, helper

    from foclip.exporter.engine import uint8_problems

    x = helper.make_tensor_value_info("pixels_u8", TensorProto.UINT8, ["batch", 4, 4, 3])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 3, 4, 4])
    nodes = [helper.make_node("Transpose", ["pixels_u8"], ["t"], perm=[0, 3, 1, 2]),
             helper.make_node("Cast", ["t"], ["y"], to=TensorProto.FLOAT)]
    path = tmp_path / "old_detect.onnx"
    onnx.save(helper.make_model(helper.make_graph(nodes, "g", [x], [y])), str(path))
    assert uint8_problems(path) == ["pixels_u8 -> Transpose"]
    for surface in SURFACES:
        trt = FakeTensorRT(surface)
        parser = trt.OnnxParser(trt.Builder(trt.Logger(trt.Logger.WARNING)).create_network(1 << 1), None)
        assert parser.parse_from_file(str(path)) is False and "Cast" in str(parser.get_error(0))


@pytest.mark.parametrize("surface", SURFACES)
def test_the_double_offers_only_names_of_its_surface(surface):
    """A double that offers a name the real TensorRT lacks would let foclip use it: every class and
    member the double has must be in the surface derived from the real package."""
    extra = FakeTensorRT(surface).offered_names() - surface_names(surface)
    assert extra == set(), f"the {surface} double offers names TensorRT {surface} lacks: {sorted(extra)}"


def test_surfaces_differ_where_tensorrt_11_removed_weak_typing():
    """The derived surfaces say what NVIDIA's migration guide says: 11.x has no precision flags."""
    s10, s11 = surface_names("10.13"), surface_names("11.4")
    for gone in ("BuilderFlag.FP16", "BuilderFlag.BF16", "BuilderFlag.INT8", "BuilderFlag.OBEY_PRECISION_CONSTRAINTS",
                 "Builder.platform_has_fast_fp16"):
        assert gone in s10 and gone not in s11, gone
    for kept in ("NetworkDefinitionCreationFlag.STRONGLY_TYPED", "BuilderFlag.TF32", "Builder.build_serialized_network",
                 "IExecutionContext.execute_async_v3", "ICudaEngine.get_tensor_profile_shape", "nptype"):
        assert kept in s10 and kept in s11, kept
    assert not hasattr(FakeTensorRT("11.4").BuilderFlag, "FP16") and hasattr(FakeTensorRT("10.13").BuilderFlag, "FP16")


@pytest.mark.parametrize("surface", SURFACES)
def test_every_name_foclip_uses_is_in_the_surface(tiny_bundle, tmp_path, monkeypatch, surface):
    """Fails on 9b2574a (a name missing from one surface: BuilderFlag.FP16 on 11.4). Build, load
    and run fp32 and fp16 engines, encoder and fused, and check every TensorRT name foclip looked
    up against the surface derived from the real package."""
    fake = FakeTensorRT(surface).install(monkeypatch)
    monkeypatch.setattr(backends, "available_backends", lambda: ["ort-cpu", "trt"])
    b = _copy(tiny_bundle, tmp_path)
    for graph in ("image.fp32", "image.fp16", "detect.fp16"):
        build_engine(b, EngineRequest(graph, graph.split(".")[1], (1, 4, 8)))
    for precision, mode in (("fp32", "encoder"), ("fp16", "encoder"), ("fp16", "fused")):
        with Detector.from_bundle(b, backend="trt", precision=precision, graph=mode, batch_size=4) as det:
            det.detect(_photos(2))
    missing = fake.used - surface_names(surface)
    assert fake.used and missing == set(), f"foclip uses names TensorRT {surface} lacks: {sorted(missing)}"


def test_trt_nptype_semantics_in_the_double():
    for surface in SURFACES:
        trt = FakeTensorRT(surface)
        assert trt.nptype(trt.DataType.BOOL) is np.bool_ and trt.nptype(trt.DataType.INT32) is np.int32
        assert trt.nptype(trt.DataType.HALF) is np.float16 and trt.nptype(trt.DataType.UINT8) is np.uint8
        with pytest.raises(TypeError):
            trt.nptype(trt.DataType.BF16)
    from foclip.runtime.trt_env import np_dtype

    with pytest.raises(BackendError, match=r"trt tensor 'embedding' \| has TensorRT type .*BF16.*numpy cannot hold"):
        np_dtype(FakeTensorRT(), FakeTensorRT().DataType.BF16, "embedding")


def test_unresolved_minus_one_output_dims_are_one_line(tiny_bundle, tmp_path, fake_trt, monkeypatch):
    monkeypatch.setattr(backends, "available_backends", lambda: ["ort-cpu", "trt"])
    b = _copy(tiny_bundle, tmp_path)
    build_engine(b, EngineRequest("image.fp32", "fp32", (1, 4, 8)))
    bundle = open_bundle(b)
    with backends.TrtRunner(backends.EngineFromBundle(bundle, bundle.graph("image.fp32"), "fp32")) as r:
        assert r.input_metadata()["pixels"][1][0] is None  # -1 from the engine: a dynamic axis
        fake_trt.unresolved_outputs = True
        with pytest.raises(BackendError, match=r"trt output 'embedding' \| has unresolved shape \(-1, -1\) after set_input_shape"):
            r.run({"pixels": np.zeros((2, 3, 64, 64), np.float32)})


@pytest.mark.parametrize(("driver", "builds", "why"), [
    (12020, {"tensorrt": ("tensorrt-cu12", 12), "bindings": ("cuda-bindings 13.0.0", 13)},
     (r"cuda-bindings 13.0.0 \| is built for CUDA 13, TensorRT .* for CUDA 12\. Expected `pip install "
      r"'cuda-bindings>=12.6,<13'`")),
    (12020, {"tensorrt": ("tensorrt-cu13", 13), "bindings": ("cuda-bindings 13.0.0", 13)},
     (r"CUDA driver 12.2 \| is older than CUDA 13, which cuda-bindings 13.0.0 needs\. Expected a driver for CUDA 13 "
      r"or newer, or packages for CUDA 12: `pip install 'tensorrt-cu12>=10.12,<12' 'cuda-bindings>=12.6,<13'`")),
    (0, {}, r"cudaDriverGetVersion \| reports no NVIDIA driver"),
])
def test_a_driver_cuda_mismatch_is_one_line_at_load(tiny_bundle, tmp_path, fake_trt, monkeypatch, capsys, driver,
                                                     builds, why):
    """Fails on 9b2574a (no check: the load went on and failed later without saying why). The
    driver's CUDA version is compared with TensorRT's and the bindings' CUDA builds at load."""
    monkeypatch.setattr(backends, "available_backends", lambda: ["ort-cpu", "trt"])
    b = _copy(tiny_bundle, tmp_path)
    build_engine(b, EngineRequest("image.fp32", "fp32", (1, 4, 8)))
    fake_trt.driver_version, fake_trt.cuda_builds = driver, builds
    with pytest.raises(BackendError, match=why) as err:
        Detector.from_bundle(b, backend="trt", precision="fp32", graph="encoder", batch_size=4)
    assert "\n" not in str(err.value)
    capsys.readouterr()
    from PIL import Image

    (tmp_path / "photos").mkdir()
    Image.fromarray(_photos(1)[0]).save(tmp_path / "photos" / "p.png")
    for argv in (["detect", str(b), str(tmp_path / "photos"), "--backend", "trt", "--precision", "fp32"],
                 ["inspect", str(b), "--verify", "--backend", "trt"]):
        assert main(argv) == 1
        out = capsys.readouterr()
        assert "Traceback" not in out.err + out.out and "cuda" in (out.err + out.out).lower(), argv
        assert out.err.strip().count("\n") == 0, argv


@pytest.mark.parametrize("version", ["10.8.0.43", "12.0.0.1"])
def test_a_tensorrt_outside_the_tested_range_is_one_line(tiny_bundle, tmp_path, fake_trt, capsys, version):
    b = _copy(tiny_bundle, tmp_path)
    fake_trt.__version__ = version
    with pytest.raises(BackendError, match=rf"TensorRT {version} \| is outside .*10.12 <= TensorRT < 12.*"
                                           r"pip install 'foclip\[trt\]'"):
        build_engine(b, EngineRequest("image.fp16", "fp16", (1, 4, 8)))
    capsys.readouterr()
    assert main(["build-engine", str(b)]) == 1
    err = capsys.readouterr().err
    assert "outside" in err and err.strip().count("\n") == 0 and "Traceback" not in err


def test_a_tensorrt_exception_is_one_line_naming_the_call(tiny_bundle, tmp_path, fake_trt, monkeypatch, capsys):
    """TensorRT's bindings raise (CUDA initialisation failure in Builder()); build-engine says so in one line."""
    def no_cuda(self, logger):
        raise RuntimeError("CUDA initialization failure with error: 35")

    monkeypatch.setattr(fake_trt.Builder, "__init__", no_cuda)
    b = _copy(tiny_bundle, tmp_path)
    capsys.readouterr()
    assert main(["build-engine", str(b), "--precision", "fp16"]) == 1
    err = " ".join(capsys.readouterr().err.split())
    assert "TensorRT Builder(Logger(WARNING)) | failed (RuntimeError: CUDA initialization failure" in err
    assert "Traceback" not in err


def test_tensorrt_stubs_alone_are_not_tensorrt(monkeypatch):
    """tensorrt-stubs installs tensorrt/__init__.pyi only: Python sees a namespace package."""
    import importlib.machinery
    import importlib.util

    from foclip.errors import MissingExtraError
    from foclip.runtime import trt_env

    monkeypatch.delitem(sys.modules, "tensorrt", raising=False)
    spec = importlib.machinery.ModuleSpec("tensorrt", None, is_package=True)
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: spec if name == "tensorrt" else None)
    assert trt_env.tensorrt_available() is False
    with pytest.raises(MissingExtraError, match=r"pip install 'foclip\[trt\]'"):
        trt_env.load_tensorrt()


@pytest.mark.parametrize("surface", SURFACES)
def test_foclip_tensorrt_code_type_checks_against_the_surface(surface):
    """mypy checks foclip's TensorRT/CUDA modules against the trimmed real stubs of each surface
    (tests/trt_api/<surface>/tensorrt/__init__.pyi): a name or signature the surface lacks fails."""
    files = ["foclip/exporter/engine.py", "foclip/runtime/backends.py", "foclip/runtime/trt_env.py"]
    env = {"MYPYPATH": str(ROOT / "tests" / "trt_api" / surface), "PATH": "/usr/bin:/bin"}
    proc = subprocess.run([sys.executable, "-m", "mypy", "--config-file", str(ROOT / "pyproject.toml"),
                           "--no-incremental", "--cache-dir", "/dev/null", *files], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]


def test_every_tensorrt_failure_is_a_foclip_error():
    """The errors trt_env raises are FoclipErrors (one line in every CLI command)."""
    from foclip.runtime.trt_env import trt_call

    with pytest.raises(FoclipError, match=r"TensorRT x \| failed \(ValueError: bad\)\. Expected y\."), trt_call("x", "y"):
        raise ValueError("bad")


def _model_bundle(tmp_path_factory, model: str, pretrained: str) -> Path:
    from foclip.exporter import ExportConfig, export_bundle

    out = tmp_path_factory.mktemp("models") / model
    export_bundle(ExportConfig(model_name=model, pretrained=pretrained, prompts=("artistic",), precisions=("fp32", "fp16"),
                               opset=18, seed=0, detect_graph=True), out)
    return out


@pytest.fixture(scope="module")
def ref_vit_bundle(tmp_path_factory):
    return _model_bundle(tmp_path_factory, "foclip-ref-vit", "reference")


@pytest.fixture(scope="module")
def vitb32_bundle(tmp_path_factory):
    return _model_bundle(tmp_path_factory, "ViT-B-32", "random")


def _engines_through_the_double(bundle: Path, tmp_path: Path, monkeypatch) -> None:
    """fp32 and fp16 engines of the image encoder and of the fused detect graph: built (each
    self-checked against its gate on the way), loaded, self-checked again and run by detect()."""
    monkeypatch.setattr(backends, "available_backends", lambda: ["ort-cpu", "trt"])
    b = _copy(bundle, tmp_path)
    photos = _photos(3)
    for precision in ("fp32", "fp16"):
        for role, mode in (("image", "encoder"), ("detect", "fused")):
            spec, built = build_engine(b, EngineRequest(f"{role}.{precision}", precision, (1, 8, 16)))
            assert built and spec.graph == f"{role}.{precision}"
            with Detector.from_bundle(b, backend="trt", precision=precision, graph=mode, batch_size=8) as det:
                assert det.self_check.passed and det.self_check.graph == spec.graph
                assert all(r.ok for r in det.detect(photos))


def test_foclip_ref_vit_engines_through_the_double(ref_vit_bundle, tmp_path, fake_trt, monkeypatch):
    _engines_through_the_double(ref_vit_bundle, tmp_path, monkeypatch)


@pytest.mark.slow
def test_vit_b_32_engines_through_the_double(vitb32_bundle, tmp_path, fake_trt, monkeypatch):
    _engines_through_the_double(vitb32_bundle, tmp_path, monkeypatch)
