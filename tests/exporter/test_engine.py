"""TensorRT engine logic: key, profile, request checks on CPU; the build itself is a gpu test."""

from __future__ import annotations

import pytest

from foclip.errors import BundleError, InputError, MissingExtraError
from foclip.exporter.engine import (
    EngineRequest,
    build_engine,
    check_request,
    engine_file,
    engine_key,
    input_shapes,
    parse_profile,
)
from foclip.manifest import read_manifest
from foclip.runtime.trt_env import tensorrt_available

BASE = ("a" * 64, "10.9.0", "9.0", "fp16", (1, 16, 64))


def test_parse_profile():
    assert parse_profile("1,16,64") == (1, 16, 64)
    assert parse_profile(" 4 , 4 ,4") == (4, 4, 4)
    for bad in ("1,16", "0,1,2", "8,4,16", "1,2,x", "", "1,2,3,4", "-1,2,3"):
        with pytest.raises(InputError, match="--batch"):
            parse_profile(bad)


def test_engine_key_changes_with_every_component():
    k = engine_key(*BASE)
    assert len(k) == 64 and engine_key(*BASE) == k
    for i, other in enumerate(("b" * 64, "10.10.0", "8.9", "bf16", (1, 16, 128))):
        args = list(BASE)
        args[i] = other
        assert engine_key(*args) != k, f"component {i} does not change the key"


def test_engine_file_and_shapes(tiny_bundle):
    req = EngineRequest("text.fp32", "fp16", (1, 8, 32))
    assert engine_file(req, "f" * 64) == "engines/text.fp32.fp16.b1-8-32.ffffffffffffffff.engine"
    m = read_manifest(tiny_bundle)
    assert input_shapes(m, "image.fp32", (1, 8, 32)) == [("pixels", [(1, 3, 64, 64), (8, 3, 64, 64), (32, 3, 64, 64)])]
    assert input_shapes(m, "text.fp32", (2, 2, 2)) == [("tokens", [(2, 77)] * 3)]
    bank = m.text_banks["artistic"].count
    assert input_shapes(m, "detect.fp32", (1, 2, 4)) == [
        ("pixels_u8", [(1, 64, 64, 3), (2, 64, 64, 3), (4, 64, 64, 3)]),
        ("text_bank", [(1, 32), (bank, 32), (4096, 32)])]


def test_check_request():
    """An engine's precision is its graph's (strong typing); int8 and bf16 engines are refused in one line."""
    check_request(EngineRequest("image.fp16", "fp16", (1, 1, 1)))
    check_request(EngineRequest("detect.fp32", "fp32", (1, 1, 1)))
    for bad in ("audio.fp32", "image", "image.int4"):
        with pytest.raises(InputError, match="--graph"):
            check_request(EngineRequest(bad, "fp16", (1, 1, 1)))
    with pytest.raises(InputError, match="--precision"):
        check_request(EngineRequest("image.fp32", "int4", (1, 1, 1)))
    with pytest.raises(InputError, match=r"--precision 'bf16' \| is not a TensorRT engine precision"):
        check_request(EngineRequest("image.fp32", "bf16", (1, 1, 1)))
    with pytest.raises(InputError, match=r"--graph image.fp32 --precision fp16 \| asks for an engine of another "
                                         r"precision.*`--graph image.fp16`"):
        check_request(EngineRequest("image.fp32", "fp16", (1, 1, 1)))
    with pytest.raises(InputError, match=r"--graph image.int8 \|.*explicit Q/DQ.*`--graph image.fp16`"):
        check_request(EngineRequest("image.int8", "int8", (1, 1, 1)))


@pytest.mark.skipif(tensorrt_available(), reason="tensorrt is installed")
def test_without_tensorrt_one_line_names_the_extra(tiny_bundle):
    with pytest.raises(MissingExtraError) as info:
        build_engine(tiny_bundle, EngineRequest())
    assert "pip install 'foclip[trt]'" in str(info.value) and "\n" not in str(info.value)


@pytest.mark.gpu
def test_build_engine_records_and_reuses(tiny_bundle, tmp_path):
    import shutil

    pytest.importorskip("tensorrt")
    from foclip.manifest import verify_files

    b = tmp_path / "b"
    shutil.copytree(tiny_bundle, b)
    req = EngineRequest("image.fp16", "fp16", (1, 4, 16))
    spec, built = build_engine(b, req)
    assert built and (b / spec.file).is_file() and (b / "engines/timing.cache").is_file()
    m = read_manifest(b)
    assert spec in m.engines and verify_files(b, m) == []
    spec2, built2 = build_engine(b, req)
    assert not built2 and spec2 == spec


def test_build_flow_with_a_fake_tensorrt(tiny_bundle, tmp_path, fake_trt):
    """Manifest recording, timing cache, hash update and cache reuse, on CPU with a stand-in module."""
    import shutil

    from foclip.manifest import verify_files

    fake = fake_trt
    b = tmp_path / "b"
    shutil.copytree(tiny_bundle, b)
    req = EngineRequest("text.fp16", "fp16", (1, 4, 16))
    spec, built = build_engine(b, req)
    assert built and (b / spec.file).read_bytes().startswith(b"FAKEPLAN")
    assert ("deserialize",) in fake.calls  # the new engine was loaded and self-checked
    assert ("set_shape", "tokens", (1, 77), (4, 77), (16, 77)) in fake.calls
    assert not any(c[0] == "flag" for c in fake.calls) and ("parse", "text_encoder.fp16.onnx") in fake.calls
    m = read_manifest(b)
    assert m.engines == (spec,) and verify_files(b, m) == [] and spec.graph == "text.fp16"
    assert spec.key == engine_key(m.files["text_encoder.fp16.onnx"], fake.__version__, "9.0", "fp16", (1, 4, 16))
    assert (b / "engines/timing.cache").read_bytes() == b"+"
    # same key: reused, nothing built
    fake.calls.clear()
    assert build_engine(b, req) == (spec, False) and ("build",) not in fake.calls
    # another precision: built, the timing cache is fed back in and grows, both engines recorded
    spec2, built2 = build_engine(b, EngineRequest("text.fp32", "fp32", (1, 4, 16)))
    assert built2 and ("timing_in", b"+") in fake.calls and not any(c[0] == "flag" for c in fake.calls)
    m = read_manifest(b)
    assert set(m.engines) == {spec, spec2} and verify_files(b, m) == []
    # a tampered bundle is refused before anything is built
    with open(b / "text_encoder.fp32.onnx", "ab") as f:
        f.write(b"\0")
    with pytest.raises(BundleError, match="text_encoder.fp32.onnx"):
        build_engine(b, EngineRequest("text.fp32", "fp32", (1, 4, 8)))


@pytest.mark.gpu
@pytest.mark.parametrize("graph", ["text.fp32", "text.fp16", "detect.fp32", "detect.fp16"])
def test_every_graph_builds_on_real_tensorrt(tiny_bundle, tmp_path, graph):
    """Real TensorRT builds and self-checks the text graphs (EOT ArgMax over int64 token ids, graph
    rule 6 in foclip/exporter/engine.py) and the fused detect graphs (uint8 -> Cast)."""
    import shutil

    pytest.importorskip("tensorrt")
    b = tmp_path / "b"
    shutil.copytree(tiny_bundle, b)
    spec, built = build_engine(b, EngineRequest(graph, graph.split(".")[1], (1, 4, 8)))
    assert built and spec.graph == graph
