"""TensorRT engines for any of a bundle's graphs (TensorRT 10.12+ and 11.x Python API, imported lazily).

**Precision lives in the graph.** An engine is built from a *strongly typed* network
(``NetworkDefinitionCreationFlag.STRONGLY_TYPED``: TensorRT 10's recommended mode since 10.12, the
only mode of TensorRT 11, where the flag is accepted and ignored) parsed from the bundle graph of
the engine's own precision: ``image.fp16`` / ``text.fp16`` / ``detect.fp16`` for an fp16 engine, the
fp32 graphs for an fp32 one. No precision ``BuilderFlag`` is set on any version (TensorRT 11 has
none; on TensorRT 10 a strongly typed network refuses them); ``BuilderFlag.TF32`` is cleared where
the API has it, so float32 tensors compute in fp32. int8 engines are not offered: TensorRT's int8
needs explicit Q/DQ graphs, and foclip's int8 graphs are ONNX Runtime's dynamic quantisation. So
one graph means one thing on every backend: ONNX Runtime runs the same ``image.fp16`` file, and
its gate (:data:`foclip.manifest.ENGINE_GATES`) holds the engine. The manifest entry
(:class:`foclip.manifest.EngineSpec`) names the graph key and the sha256 of the file it was built from.

**Graph rules** (:func:`graph_problems`, checked before TensorRT is imported, so no GPU is needed to
say no); what TensorRT's ONNX parser and network API require of a graph, and foclip relies on:

1. every op is one the parser imports (:data:`TRT_UNSUPPORTED_OPS`: onnx-tensorrt ``docs/operators.md``
   marks these "N"; ops outside the default ONNX domain are refused too), and, once TensorRT is
   loaded, ``OnnxParser.supports_operator`` agrees;
2. every UINT8 network input feeds Cast layers and nothing else (TensorRT accepts uint8 only as
   the input of a cast to a float type: the fused detect graph casts its pixels before permuting);
3. every dynamic axis is named in the manifest (``batch``, ``prompts``), so one optimisation profile
   (:func:`input_shapes`) bounds it: TensorRT refuses to build a network with an unbounded input;
4. the graph's own types are final (strong typing): an fp16 graph keeps float32 IO through Casts
   (``keep_io_types``), and the engine's IO dtypes are read back from the engine, never assumed;
5. the opset is one the parser reads (TensorRT 10.0's parser: opsets 9 to 20, per onnx-tensorrt's
   ``docs/operators.md``; foclip exports opset 18 unless told otherwise);
6. not checked here, only on a GPU: the text graph's EOT pooling is an ArgMax over int64 token ids
   (TensorRT 10 has INT64 tensors; onnx-tensorrt's older tables list ArgMax for FP32/FP16 only), so
   whether ``text.*`` engines build is for the gpu test ``test_every_graph_builds_on_real_tensorrt``
   (run by ``scripts/gpu_check.py``) to settle.

A build is a transaction (Polygraphy's pattern): the plan is written to a temporary folder under
``engines/``, loaded from there and run on the bundle's self-check reference set against the
engine precision's gate; only an engine that passes is renamed into place and recorded, under an
``fcntl`` lock on ``engines/.lock``. A failed or killed build leaves the manifest and every file it
lists exactly as they were; the temporary folder a killed build leaves behind is removed by the next
``build_engine`` call (:func:`sweep_builds`: a folder whose owner lock nobody holds).

One optimisation profile from a (min, opt, max) batch triple; the timing cache
(``engines/timing.cache``) is a *cache*, not an artifact: it is not in the manifest's hashed file
list, a damaged one is ignored, and it is merged with the build's own under the same lock. An
engine is cached under a key over everything that invalidates it (ONNX sha256, TensorRT version,
GPU compute capability, precision, profile).

Calls used, all present in both API surfaces the tests check (``tests/trt_api``): ``Builder``,
``create_network``, ``OnnxParser.parse_from_file`` / ``supports_operator``,
``create_builder_config``, ``set_memory_pool_limit``, ``create_optimization_profile`` / ``set_shape``,
``create_timing_cache`` / ``set_timing_cache``, ``build_serialized_network``. Every status
TensorRT returns (False, None) is checked; every exception its bindings raise becomes one line
(:func:`foclip.runtime.trt_env.trt_call`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from foclip.errors import BackendError, BundleError, InputError
from foclip.manifest import (
    MANIFEST_NAME,
    EngineSpec,
    Manifest,
    atomic_write_bytes,
    atomic_write_json,
    read_manifest,
    sha256_file,
    verify_files,
)
from foclip.runtime.capabilities import caps
from foclip.runtime.trt_env import check_cuda, load_tensorrt, trt_call

ENGINE_PRECISIONS = caps("trt").precisions  # the backend table says what a TensorRT precision is
PROMPTS_PROFILE_MAX = 4096  # most prompts a detect engine's text_bank input takes
TIMING_CACHE = "engines/timing.cache"
DEFAULT_PROFILE = (1, 16, 64)
WORKSPACE_BYTES = 4 << 30


@dataclass(frozen=True)
class EngineRequest:
    """What to build: source graph key, engine precision (the graph's own) and batch profile."""

    graph: str = "image.fp16"
    precision: str = "fp16"
    profile: tuple[int, int, int] = DEFAULT_PROFILE


def parse_profile(text: str) -> tuple[int, int, int]:
    """Parse ``MIN,OPT,MAX`` batch sizes.

    Args:
        text: e.g. ``"1,16,64"``.

    Returns:
        The triple.

    Raises:
        InputError: not three positive integers with ``min <= opt <= max``.
    """
    parts = [p.strip() for p in str(text).split(",")]
    expected = "three batch sizes MIN,OPT,MAX with 1 <= MIN <= OPT <= MAX, e.g. 1,16,64"
    try:
        values = tuple(int(p) for p in parts)
    except ValueError:
        raise InputError(f"--batch {text!r}", "is not a list of integers", expected) from None
    if len(values) != 3 or not 1 <= values[0] <= values[1] <= values[2]:
        raise InputError(f"--batch {text!r}", "is not a valid profile", expected)
    return values  # type: ignore[return-value]


def check_request(req: EngineRequest) -> EngineRequest:
    """Validate the graph key's form and the precision: an engine's precision is its graph's.

    Raises:
        InputError: a graph key not of the form ``<image|text|detect>.<fp32|fp16|int8>``; an int8
            engine (not offered: TensorRT int8 needs explicit Q/DQ graphs); a precision other than
            the graph's (strongly typed networks take it from the graph, never from a flag).
    """
    from foclip.manifest import PRECISIONS, ROLES

    role, _, prec = req.graph.partition(".")
    if role not in ROLES or prec not in PRECISIONS:
        raise InputError(f"--graph {req.graph!r}", "is not a graph key",
                         "<role>.<precision> with role image, text or detect, e.g. image.fp16 or detect.fp32")
    if req.precision == "int8" or prec == "int8":
        raise InputError(f"--graph {role}.int8" if prec == "int8" else "--precision int8",
                         "is not a TensorRT engine foclip builds (TensorRT int8 needs an explicit Q/DQ graph; "
                         "foclip's int8 graphs are ONNX Runtime dynamic quantisation, which TensorRT cannot parse)",
                         f"an fp16 engine: `--graph {role}.fp16`")
    if req.precision not in ENGINE_PRECISIONS:
        raise InputError(f"--precision {req.precision!r}", "is not a TensorRT engine precision foclip builds",
                         f"{'|'.join(ENGINE_PRECISIONS)} (the precision of the bundle graph it is built from)")
    if prec != req.precision:
        raise InputError(f"--graph {req.graph} --precision {req.precision}",
                         "asks for an engine of another precision than its graph (TensorRT builds strongly typed "
                         "networks: the precision comes from the graph)",
                         f"`--graph {role}.{req.precision}` (exported with `foclip export --precision "
                         f"{req.precision}`), or leave --precision out")
    return req


def graph_for(role: str, precision: str) -> str:
    """The graph key an engine of ``precision`` is built from (``image``, ``fp16`` -> ``image.fp16``)."""
    return f"{role}.{precision}"


def engine_key(onnx_sha256: str, tensorrt_version: str, compute_capability: str, precision: str,
               profile: tuple[int, int, int]) -> str:
    """The cache key of an engine: sha256 over everything that invalidates it.

    Args:
        onnx_sha256: sha256 of the source ONNX file.
        tensorrt_version: ``tensorrt.__version__``.
        compute_capability: e.g. ``"9.0"``.
        precision: engine precision.
        profile: (min, opt, max) batch sizes.

    Returns:
        Hex sha256.
    """
    payload = json.dumps({"onnx_sha256": onnx_sha256, "tensorrt": tensorrt_version, "sm": compute_capability,
                          "precision": precision, "profile": list(profile)}, sort_keys=True)
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


def engine_file(req: EngineRequest, key: str) -> str:
    """Relative engine path inside the bundle."""
    lo, opt, hi = req.profile
    return f"engines/{req.graph}.{req.precision}.b{lo}-{opt}-{hi}.{key[:16]}.engine"


def input_shapes(manifest: Manifest, graph_key: str, profile: tuple[int, int, int]
                 ) -> list[tuple[str, list[tuple[int, ...]]]]:
    """Each input's (min, opt, max) shapes: the batch axis from the profile, a detect graph's
    prompt axis from 1 to :data:`PROMPTS_PROFILE_MAX` (opt: the largest bundled bank).

    Returns:
        ``[(input name, [min shape, opt shape, max shape]), ...]``.
    """
    graph = manifest.graphs[graph_key]
    bank = max((b.count for b in manifest.text_banks.values()), default=64)
    out = []
    for t in graph.inputs:
        shapes = []
        for i in range(3):
            dims = []
            for d in t.shape:
                if d == "batch":
                    dims.append(profile[i])
                elif d == "prompts":
                    dims.append((1, min(bank, PROMPTS_PROFILE_MAX), PROMPTS_PROFILE_MAX)[i])
                else:
                    dims.append(int(d))
            shapes.append(tuple(dims))
        out.append((t.name, shapes))
    return out


def gpu_compute_capability() -> str:
    """Compute capability of GPU 0 as ``"major.minor"``.

    Raises:
        BackendError: when no CUDA GPU can be found.
    """
    try:  # cuda-python comes with the trt extra: the same answer the runtime checks a plan against
        from foclip.runtime.trt_env import device_compute_capability

        return device_compute_capability()
    except Exception:  # noqa: BLE001, S110 - no cuda-python or no device: try torch, then nvidia-smi
        pass
    try:  # torch is usually present where engines are built (the export extra)
        import torch

        if torch.cuda.is_available():
            major, minor = torch.cuda.get_device_capability(0)
            return f"{major}.{minor}"
    except ImportError:
        pass
    smi = shutil.which("nvidia-smi")
    if smi:
        try:
            out = subprocess.run([smi, "--query-gpu=compute_cap", "--format=csv,noheader"], capture_output=True,
                                 text=True, timeout=30, check=True).stdout.split()
            if out:
                return out[0]
        except (subprocess.SubprocessError, OSError):
            pass
    raise BackendError("TensorRT", "found no CUDA GPU", "a machine with an NVIDIA GPU and driver")


def _source_onnx(manifest: Manifest, graph_key: str) -> str:
    if graph_key not in manifest.graphs:
        raise BundleError(f"graph {graph_key!r}", "is not in this bundle",
                          f"one of: {', '.join(manifest.graphs)}")
    return manifest.graphs[graph_key].file


# Operators the TensorRT 10 ONNX parser marks "N" (onnx-tensorrt docs/operators.md, TensorRT 10.x)
# that an exported CLIP graph can contain: ONNX Runtime's dynamic int8 ops and the QLinear family.
# TensorRT's own int8 comes from explicit QuantizeLinear/DequantizeLinear (Q/DQ) graphs instead.
TRT_UNSUPPORTED_OPS = frozenset({
    "DynamicQuantizeLinear", "MatMulInteger", "ConvInteger", "QLinearConv", "QLinearMatMul",
    "Bernoulli", "BitShift", "Col2Im", "Compress", "ConcatFromSequence", "DFT", "Det", "ImageDecoder",
    "MaxRoiPool", "MaxUnpool", "MelWeightMatrix", "Multinomial", "NegativeLogLikelihoodLoss", "Optional",
    "OptionalGetElement", "OptionalHasElement", "RegexFullMatch", "SequenceAt", "SequenceConstruct",
    "SequenceEmpty", "SequenceErase", "SequenceInsert", "SequenceLength", "SequenceMap",
    "SoftmaxCrossEntropyLoss", "SplitToSequence", "StringConcat", "StringNormalizer", "StringSplit",
    "TfIdfVectorizer", "Unique", "AffineGrid", "CenterCropPad", "BitwiseAnd", "BitwiseNot", "BitwiseOr",
    "BitwiseXor",
})
LOCK_FILE = "engines/.lock"


def engine_gate(precision: str) -> float:
    """The least cosine against PyTorch an engine of ``precision`` must reach (build and load)."""
    from foclip.manifest import ENGINE_GATES

    return ENGINE_GATES[precision]


def unsupported_ops(onnx_path: Path, parser: Any = None) -> list[str]:
    """ONNX ops of a graph that the TensorRT ONNX parser does not support (graph rule 1).

    Args:
        onnx_path: the graph.
        parser: a ``tensorrt.OnnxParser``; when given, its own ``supports_operator`` is asked too.

    Returns:
        Sorted op names (``domain::op`` for ops outside the default ONNX domain); empty when
        everything is supported or when ``onnx`` is not installed (the parser then reports).
    """
    try:
        import onnx
    except ImportError:  # the parse itself still fails with TensorRT's own message
        return []
    model = onnx.load(str(onnx_path), load_external_data=False)
    bad = set()
    for node in model.graph.node:
        if node.domain not in ("", "ai.onnx"):
            bad.add(f"{node.domain}::{node.op_type}")
        elif node.op_type in TRT_UNSUPPORTED_OPS or (parser is not None and not parser.supports_operator(node.op_type)):
            bad.add(node.op_type)
    return sorted(bad)


def uint8_problems(onnx_path: Path) -> list[str]:
    """Graph rule 2: each UINT8 graph input that feeds anything but Cast nodes, with what it feeds.

    Returns:
        ``["pixels_u8 -> Transpose", ...]``; empty when the rule holds (or ``onnx`` is missing).
    """
    try:
        import onnx
    except ImportError:
        return []
    graph = onnx.load(str(onnx_path), load_external_data=False).graph
    u8 = {i.name for i in graph.input if i.type.tensor_type.elem_type == onnx.TensorProto.UINT8}
    return sorted({f"{name} -> {n.op_type}" for n in graph.node for name in n.input
                   if name in u8 and n.op_type != "Cast"} | {f"{name} -> graph output" for name in u8
                                                              if name in {o.name for o in graph.output}})


def graph_problems(onnx_path: Path, req: EngineRequest, parser: Any = None) -> None:
    """Refuse a graph that breaks one of TensorRT's rules (module docstring), in one line.

    Raises:
        InputError: unsupported ops, or a uint8 input that does not feed a Cast directly.
    """
    role = req.graph.split(".")[0]
    bad = unsupported_ops(onnx_path, parser)
    if bad:
        raise InputError(f"--graph {req.graph}", f"has ops the TensorRT ONNX parser does not support "
                         f"({', '.join(bad)})", f"a float graph: `--graph {role}.fp16` or `--graph {role}.fp32`")
    u8 = uint8_problems(onnx_path)
    if u8:
        raise InputError(f"--graph {req.graph}", f"feeds a uint8 input to something other than a Cast ({', '.join(u8)}); "
                         "TensorRT requires every uint8 network input to feed a Cast layer directly",
                         "a graph exported by this foclip (re-export the bundle with `foclip export`)")


@contextmanager
def bundle_lock(bundle: Path) -> Iterator[None]:
    """Hold an exclusive ``fcntl`` lock on ``engines/.lock`` (blocks until free).

    Every read-modify-write of the manifest and every timing-cache merge by ``build_engine`` runs
    under it, so two builds into one bundle cannot lose each other's engine.
    """
    import fcntl

    path = bundle / LOCK_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+b") as f:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)


BUILD_PREFIX = ".build-"
OWNER_FILE = ".owner"
SWEEP_AFTER_S = 60.0  # a younger folder may be one whose owner has not locked it yet


def sweep_builds(engines: Path, now: float | None = None) -> list[Path]:
    """Remove the temporary folders of builds that died (killed, out of memory): nobody holds their owner lock.

    A live build holds an ``fcntl`` lock on its folder's ``.owner`` file for as long as it runs; the
    kernel drops it when the process dies, however it dies. Folders younger than
    :data:`SWEEP_AFTER_S` are left alone (their owner may be between creating and locking).

    Args:
        engines: the bundle's ``engines/`` folder.
        now: the time to age folders against (``time.time()``).

    Returns:
        The folders removed.
    """
    import fcntl
    import time

    now = time.time() if now is None else now
    removed = []
    for folder in sorted(engines.glob(BUILD_PREFIX + "*")):
        try:
            if not folder.is_dir() or now - folder.stat().st_mtime < SWEEP_AFTER_S:
                continue
            owner = folder / OWNER_FILE  # none: a build of an older foclip, or one killed before locking
            if owner.is_file():
                with open(owner, "rb") as f:
                    try:
                        fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                    except BlockingIOError:
                        continue  # a build is running in it
            shutil.rmtree(folder)
            removed.append(folder)
        except OSError:
            continue  # gone meanwhile, or not ours to remove: leave it
    return removed


@contextmanager
def build_folder(engines: Path) -> Iterator[Path]:
    """A temporary folder for one build under ``engines/``, owner-locked while it lives, removed after."""
    import fcntl

    engines.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=BUILD_PREFIX, dir=engines))
    try:
        with open(tmp / OWNER_FILE, "wb") as owner:
            fcntl.flock(owner.fileno(), fcntl.LOCK_EX)
            yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def build_engine(bundle: str | os.PathLike[str], req: EngineRequest,
                 log: Callable[[str], None] | None = None) -> tuple[EngineSpec, bool]:
    """Build (or reuse) a TensorRT engine for one graph of a bundle, check it, record it.

    A transaction: the plan goes to a temporary folder, is self-checked from there, and only then
    renamed into place and recorded under :func:`bundle_lock`. When anything fails (or the
    process dies) the manifest and the files it lists are unchanged.

    Args:
        bundle: bundle folder.
        req: source graph key, precision and batch profile.
        log: receives progress lines.

    Returns:
        ``(engine spec, built)``; ``built`` is False when a cached engine with the same key was reused.

    Raises:
        MissingExtraError: tensorrt is not installed (names ``pip install 'foclip[trt]'``).
        BundleError: the bundle fails its hash check or lacks the graph; the parse or build fails;
            the built engine misses its precision's gate on the reference set (SelfCheckError).
        BackendError: no GPU.
        InputError: bad graph, precision or profile; a graph that breaks TensorRT's rules.
    """
    log = log or (lambda _: None)
    check_request(req)
    bundle = Path(bundle)
    manifest = read_manifest(bundle)
    problems = verify_files(bundle, manifest)
    if problems:
        rel, why = problems[0]
        raise BundleError(str(bundle / rel), why, "the files `foclip export` wrote (re-export the bundle)")
    src = _source_onnx(manifest, req.graph)
    graph_problems(bundle / src, req)  # before TensorRT is even imported: no GPU needed to say no
    trt = load_tensorrt()  # installed, and a version whose API the tests check (10.12 <= v < 12)
    if (bundle / "engines").is_dir():
        sweep_builds(bundle / "engines")  # what killed builds left (cached or not, this call cleans up)
    sm = gpu_compute_capability()
    check_cuda(trt.__version__)  # driver vs the CUDA TensorRT and the bindings are built for
    key = engine_key(manifest.files[src], trt.__version__, sm, req.precision, req.profile)
    for spec in manifest.engines:
        if spec.key == key and (bundle / spec.file).is_file() and manifest.files.get(spec.file) == sha256_file(
                bundle / spec.file):
            log(f"engine cached: {spec.file}")
            return spec, False
    rel = engine_file(req, key)
    gate = engine_gate(req.precision)
    log(f"building {rel} (TensorRT {trt.__version__}, sm {sm}, {req.precision}, batch {req.profile}, gate {gate})")
    with build_folder(bundle / "engines") as tmp:
        plan, config, cache = _build(bundle / src, manifest, req, bundle / TIMING_CACHE, log)
        trial_rel = Path(tmp).relative_to(bundle).as_posix() + "/" + Path(rel).name
        atomic_write_bytes(bundle / trial_rel, plan)
        spec = EngineSpec(req.graph, req.precision, rel, manifest.files[src], trt.__version__, sm, req.profile, key,
                          gate)
        result = _self_check(bundle, manifest, dataclasses.replace(spec, file=trial_rel))
        log(f"self-check of {rel}: min cosine {result.min_cosine:.6f} (gate {result.gate})")
        with bundle_lock(bundle):
            _commit(bundle, bundle / trial_rel, spec)
            _save_timing_cache(bundle / TIMING_CACHE, config, cache, log)
    return spec, True


def _self_check(bundle: Path, manifest: Manifest, spec: EngineSpec):  # -> SelfCheckResult
    """Run the new engine (``spec.file``: its temporary path) on the reference set; raise below its gate."""
    from foclip.runtime.backends import EngineFromBundle, TrtRunner
    from foclip.runtime.bundle import Bundle, bundle_hash
    from foclip.runtime.selfcheck import require_pass, self_check

    files = {**manifest.files, spec.file: sha256_file(bundle / spec.file)}
    trial = Bundle(bundle, manifest.with_changes(files=files, engines=(spec,)), "")
    trial = Bundle(bundle, trial.manifest, bundle_hash(trial.manifest))
    graph = trial.graph(spec.graph)
    with TrtRunner(EngineFromBundle(trial, graph, spec.precision)) as runner:
        return require_pass(self_check(trial, graph, runner))


def _build(onnx_path: Path, manifest: Manifest, req: EngineRequest, cache_path: Path,
           log: Callable[[str], None]) -> tuple[bytes, Any, Any]:
    """Parse ``onnx_path`` into a strongly typed network and build a serialized plan from it."""
    import tensorrt as trt  # loaded and version-checked by build_engine (load_tensorrt)

    fix = f"a machine where TensorRT {trt.__version__} runs (`nvidia-smi` works; `{_rebuild(req)}`)"
    with trt_call("Builder(Logger(WARNING))", fix):
        logger = trt.Logger(trt.Logger.WARNING)
        builder = trt.Builder(logger)
    with trt_call("create_network(STRONGLY_TYPED)", fix):
        # strongly typed: each tensor's type is the graph's (accepted and ignored on TensorRT 11)
        network = builder.create_network(1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED))
        parser = trt.OnnxParser(network, logger)
    graph_problems(onnx_path, req, parser)  # the installed parser's own word, too
    with trt_call(f"OnnxParser.parse_from_file({onnx_path.name!r})", fix):
        parsed = parser.parse_from_file(str(onnx_path))
        errs = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors)) if not parsed else ""
    if not parsed:
        raise BundleError(str(onnx_path), f"TensorRT {trt.__version__} cannot parse it ({errs[:300]})",
                          "an ONNX graph exported by this foclip (re-export the bundle with `foclip export`)")
    with trt_call("create_builder_config", fix):
        config = builder.create_builder_config()
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, WORKSPACE_BYTES)
        if hasattr(trt.BuilderFlag, "TF32"):
            # TensorRT allows TF32 (10-bit mantissa) matmuls on float32 tensors by default on Ampere
            # and later; the graph says float32, and the engine is held to that precision's gate.
            config.clear_flag(trt.BuilderFlag.TF32)
        profile = builder.create_optimization_profile()
        for name, (lo, opt, hi) in input_shapes(manifest, req.graph, req.profile):
            profile.set_shape(name, lo, opt, hi)  # type: ignore[arg-type]  # TensorRT turns tuples into Dims
        if config.add_optimization_profile(profile) < 0:
            raise BundleError(f"optimisation profile {req.profile}", "was refused by TensorRT",
                              "a profile with 1 <= MIN <= OPT <= MAX (`--batch MIN,OPT,MAX`)")
        timing = _load_timing_cache(config, cache_path, log)
        if not config.set_timing_cache(timing, True):
            log("TensorRT did not take the timing cache; building without it")
    with trt_call("build_serialized_network", fix):
        plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise BundleError(str(onnx_path), f"TensorRT {trt.__version__} could not build an engine from it "
                          "(see TensorRT's log above)", f"a graph TensorRT supports at {req.precision}")
    return bytes(plan), config, config.get_timing_cache()


def _rebuild(req: EngineRequest) -> str:
    lo, opt, hi = req.profile
    return f"foclip build-engine BUNDLE --graph {req.graph} --batch {lo},{opt},{hi}"


def _load_timing_cache(config: Any, path: Path, log: Callable[[str], None]) -> Any:
    """The bundle's timing cache, or an empty one when it is missing or unreadable (it is only a cache)."""
    data = b""
    try:
        data = path.read_bytes() if path.is_file() else b""
    except OSError as exc:
        log(f"timing cache {path} unreadable ({exc}); starting an empty one")
    cache = config.create_timing_cache(data) if data else None
    if cache is None:
        if data:
            log(f"timing cache {path} was not accepted by this TensorRT; starting an empty one")
        cache = config.create_timing_cache(b"")
    return cache


def _save_timing_cache(path: Path, config: Any, cache: Any, log: Callable[[str], None]) -> None:
    """Merge this build's timing cache into the bundle's (call under :func:`bundle_lock`)."""
    try:
        current = _load_timing_cache(config, path, log)
        if not current.combine(cache, True):  # False: TensorRT refused to merge (another GPU or version)
            current = cache
        atomic_write_bytes(path, bytes(current.serialize()))
    except Exception as exc:  # noqa: BLE001 - a cache that cannot be saved costs build time, nothing else
        log(f"timing cache not saved ({exc.__class__.__name__}: {exc})")


def _commit(bundle: Path, trial: Path, spec: EngineSpec) -> None:
    """Rename the checked engine into place, then record it (call under :func:`bundle_lock`).

    The manifest is re-read under the lock (another build may have recorded an engine meanwhile);
    if the source graph changed since the build started, the engine is refused.
    """
    manifest = read_manifest(bundle)
    src = _source_onnx(manifest, spec.graph)
    if manifest.files.get(src) != spec.onnx_sha256:
        raise BundleError(str(bundle / src), "changed while the engine was being built",
                          "an unchanged bundle (run `foclip build-engine` again)")
    os.replace(trial, bundle / spec.file)
    _record(bundle, spec)


def _record(bundle: Path, spec: EngineSpec) -> None:
    """Add ``spec`` to the manifest with its file's sha256, atomically (call under :func:`bundle_lock`).

    The timing cache is dropped from ``files`` (bundles built before it was a cache listed it).
    """
    manifest = read_manifest(bundle)
    files = {k: v for k, v in manifest.files.items() if k != TIMING_CACHE}
    files[spec.file] = sha256_file(bundle / spec.file)
    engines = tuple(e for e in manifest.engines if e.key != spec.key) + (spec,)
    atomic_write_json(bundle / MANIFEST_NAME, manifest.with_changes(files=files, engines=engines).to_dict())
