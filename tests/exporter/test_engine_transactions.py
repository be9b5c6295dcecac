"""TensorRT builds on CPU with the double (tests/trt_double.py, once per API surface): per-precision gates,
transactional builds (a failed or killed second build leaves the bundle as it was), op refusal."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from foclip.cli.main import main
from foclip.errors import BundleError, InputError
from foclip.exporter.engine import TIMING_CACHE, EngineRequest, build_engine
from foclip.manifest import MANIFEST_NAME, read_manifest, verify_files
from foclip.runtime.bundle import open_bundle
from foclip.runtime.selfcheck import SelfCheckError


def _copy(tiny_bundle, tmp_path) -> Path:
    b = tmp_path / "b"
    shutil.copytree(tiny_bundle, b)
    return b


def _snapshot(b: Path) -> dict[str, bytes]:
    """Every file the manifest lists, and the manifest itself."""
    m = read_manifest(b)
    return {rel: (b / rel).read_bytes() for rel in [*m.files, MANIFEST_NAME]}


@pytest.mark.parametrize(("graph", "precision", "gate"), [("detect.fp16", "fp16", 0.999)])
def test_reduced_precision_engines_are_held_to_their_own_gate(tiny_bundle, tmp_path, fake_trt, graph, precision,
                                                              gate, capsys):
    """Defect 1: an fp16 engine (built from the fp16 graph, computing in fp16) misses the fp32 gate;
    it is built, recorded and verified against its own precision's gate. (foclip-tiny's detect.fp16
    reaches ~0.99997 here; its image.fp16 and text.fp16 reach 0.9999999, above the fp32 gate.)"""
    b = _copy(tiny_bundle, tmp_path)
    spec, built = build_engine(b, EngineRequest(graph, precision, (1, 4, 8)))
    assert built and spec.gate_min_cosine == gate
    raw = json.loads((b / MANIFEST_NAME).read_text())
    assert raw["engines"][0]["gate_min_cosine"] == gate  # recorded in the manifest entry
    from foclip.runtime import backends
    from foclip.runtime.selfcheck import self_check

    bundle = open_bundle(b)
    with backends.TrtRunner(backends.EngineFromBundle(bundle, bundle.graph(graph), precision)) as runner:
        r = self_check(bundle, bundle.graph(graph), runner)
    assert r.passed and r.gate == gate and r.min_cosine < 0.99999  # the fp32 gate would refuse it
    capsys.readouterr()
    assert main(["inspect", str(b)]) == 0
    assert f"gate min cosine {gate}" in " ".join(capsys.readouterr().out.split())


def test_a_failing_second_build_leaves_the_bundle_as_it_was(tiny_bundle, tmp_path, fake_trt, capsys):
    """Defect 2: after one good build, a build that misses its gate changes no listed file, the
    manifest or the timing cache; open_bundle and `foclip inspect --verify` still pass."""
    b = _copy(tiny_bundle, tmp_path)
    first, _ = build_engine(b, EngineRequest("image.fp32", "fp32", (1, 4, 8)))
    before, cache = _snapshot(b), (b / TIMING_CACHE).read_bytes()
    fake_trt.corrupt_engines = True
    with pytest.raises(SelfCheckError, match="below its gate"):
        build_engine(b, EngineRequest("image.fp16", "fp16", (1, 4, 8)))
    fake_trt.corrupt_engines, fake_trt.fail_builds = False, True
    with pytest.raises(BundleError, match="could not build"):
        build_engine(b, EngineRequest("text.fp16", "fp16", (1, 4, 8)))
    capsys.readouterr()
    assert main(["build-engine", str(b), "--graph", "text.fp32", "--batch", "1,4,8"]) == 1
    assert "could not build" in capsys.readouterr().err
    open_bundle(b)
    assert main(["inspect", str(b), "--verify"]) == 0
    assert main(["inspect", str(b), "--verify", "--backend", "trt"]) == 0
    assert "0.99999" in capsys.readouterr().out  # the fp32 engine's gate, printed by --verify
    assert _snapshot(b) == before and (b / TIMING_CACHE).read_bytes() == cache
    assert not list((b / "engines").glob("*.fp16.*")) and not list((b / "engines").glob(".build-*"))
    assert TIMING_CACHE not in read_manifest(b).files  # a cache, not a hashed artifact
    fake_trt.fail_builds = False  # and the next build works and keeps the first engine
    second, built = build_engine(b, EngineRequest("image.fp16", "fp16", (1, 4, 8)))
    assert built and set(read_manifest(b).engines) == {first, second} and verify_files(b, read_manifest(b)) == []


_KILLER = """
import os, signal, sys
sys.path.insert(0, {tests!r})
import pytest
from trt_double import FakeTensorRT
from foclip.exporter import engine
from foclip.exporter.engine import EngineRequest, build_engine
mp = pytest.MonkeyPatch()
FakeTensorRT({surface!r}).install(mp)
step = {step!r}
real = getattr(engine, step)
def die(*a, **k):
    if step == "_record":  # the engine is already renamed into place: die before the manifest names it
        os.kill(os.getpid(), signal.SIGKILL)
    real(*a, **k)
    os.kill(os.getpid(), signal.SIGKILL)
mp.setattr(engine, step, die)
build_engine({bundle!r}, EngineRequest("image.fp16", "fp16", (1, 4, 8)))
"""


@pytest.mark.parametrize("step", ["_self_check", "_record", "_commit"])
def test_a_killed_build_leaves_the_bundle_as_it_was(tiny_bundle, tmp_path, fake_trt, step, capsys):
    """Defect 2: SIGKILL after the self-check, between the rename and the manifest write, and after
    the manifest write but before the cache is saved: the bundle verifies every time."""
    b = _copy(tiny_bundle, tmp_path)
    build_engine(b, EngineRequest("image.fp32", "fp32", (1, 4, 8)))
    before = _snapshot(b)
    code = _KILLER.format(tests=str(Path(__file__).parents[1]), step=step, bundle=str(b), surface=fake_trt.surface)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parents[2]), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                          timeout=300 * float(os.environ.get("FOCLIP_TEST_TIMEOUT_SCALE", "1")), check=False)
    assert proc.returncode == -9, proc.stderr[-2000:]
    m = read_manifest(b)
    open_bundle(b)
    assert verify_files(b, m) == []
    if step == "_commit":  # killed after the record: the new engine is complete and listed
        assert len(m.engines) == 2
    else:
        assert _snapshot(b) == before
    open_bundle(b)
    capsys.readouterr()
    assert main(["inspect", str(b), "--verify"]) == 0
    leftovers = list((b / "engines").glob(".build-*"))
    assert len(leftovers) == 1  # the dead build's folder; the next build removes it (once old enough)
    os.utime(leftovers[0], (0, 0))
    assert build_engine(b, EngineRequest("image.fp16", "fp16", (1, 4, 8)))[0] in read_manifest(b).engines
    assert list((b / "engines").glob(".build-*")) == []


def test_the_sweep_spares_running_and_just_started_builds(tmp_path):
    import fcntl

    from foclip.exporter.engine import OWNER_FILE, sweep_builds

    engines = tmp_path / "engines"
    dead, running, young = (engines / f".build-{n}" for n in ("dead", "running", "young"))
    for d in (dead, running, young):
        d.mkdir(parents=True)
        (d / OWNER_FILE).write_bytes(b"")
        (d / "plan.engine").write_bytes(b"x" * 10)
    for d in (dead, running):
        os.utime(d, (0, 0))
    with open(running / OWNER_FILE, "rb") as held:
        fcntl.flock(held.fileno(), fcntl.LOCK_EX)  # what a live build holds (a second open conflicts, same process or not)
        assert sweep_builds(engines) == [dead]
    assert not dead.exists() and running.is_dir() and young.is_dir()


def test_an_old_bundle_listing_the_timing_cache_is_migrated(tiny_bundle, tmp_path, fake_trt):
    """Bundles built before the cache was a cache listed it with a hash; the next build drops it."""
    from foclip.manifest import atomic_write_json, sha256_file

    b = _copy(tiny_bundle, tmp_path)
    (b / "engines").mkdir()
    (b / TIMING_CACHE).write_bytes(b"GARBAGE")  # also one this TensorRT refuses: ignored, not fatal
    raw = json.loads((b / MANIFEST_NAME).read_text())
    raw["files"][TIMING_CACHE] = sha256_file(b / TIMING_CACHE)
    atomic_write_json(b / MANIFEST_NAME, raw)
    build_engine(b, EngineRequest("image.fp32", "fp32", (1, 4, 8)))
    assert TIMING_CACHE not in read_manifest(b).files and verify_files(b, read_manifest(b)) == []


def test_fp32_engines_switch_off_tf32(tiny_bundle, tmp_path, fake_trt):
    b = _copy(tiny_bundle, tmp_path)
    build_engine(b, EngineRequest("image.fp32", "fp32", (1, 4, 8)))
    assert ("clear_flag", "TF32") in fake_trt.calls and not any(c[0] == "flag" for c in fake_trt.calls)


def test_an_int8_graph_is_refused_before_building(tiny_bundle, tmp_path, fake_trt, capsys):
    """Defect 4 (ops): int8 engines are not offered (TensorRT int8 needs explicit Q/DQ; foclip's int8
    graph is ORT's DynamicQuantizeLinear/MatMulInteger, which the parser cannot read): one line
    saying what to build instead, before TensorRT parses or builds anything."""
    from foclip.exporter.engine import unsupported_ops

    b = _copy(tiny_bundle, tmp_path)
    with pytest.raises(InputError, match=r"--graph image.int8 .*explicit Q/DQ.*--graph image.fp16"):
        build_engine(b, EngineRequest("image.int8", "int8", (1, 4, 8)))
    assert not any(c[0] in ("parse", "build") for c in fake_trt.calls)
    assert {"DynamicQuantizeLinear", "MatMulInteger"} <= set(unsupported_ops(b / "image_encoder.int8.onnx"))
    capsys.readouterr()
    assert main(["build-engine", str(b), "--graph", "image.int8"]) == 1
    err = capsys.readouterr().err
    assert "Q/DQ" in err and err.strip().count("\n") == 0 and "Traceback" not in err
