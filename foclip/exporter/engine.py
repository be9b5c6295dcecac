"""TensorRT engines for any of a bundle's graphs (TensorRT 10 Python API, imported lazily).

An engine is built from one graph key (``image.fp32``, ``text.fp32``, ``detect.fp32``…), the
same keys the detector chooses from, so ``--backend trt`` always finds the engine of the graph
it runs. Before anything is built the graph's ONNX ops are checked against the TensorRT ONNX
parser's list of unsupported operators (:data:`TRT_UNSUPPORTED_OPS`), so ``--graph image.int8``
(ONNX Runtime's DynamicQuantizeLinear/MatMulInteger) is refused with what to build instead.

A build is a transaction (Polygraphy's pattern): the plan is written to a temporary folder under
``engines/``, loaded from there and run on the bundle's self-check reference set against the
*engine precision's* gate (:data:`foclip.manifest.ENGINE_GATES`: fp32 0.99999, fp16 0.999, bf16
0.995); only an engine that passes is renamed into place and recorded, under an ``fcntl`` lock on
``engines/.lock``, with the gate it passed. A failed or killed build leaves the manifest and every
file it lists exactly as they were; the temporary folder a killed build leaves behind is removed by
the next ``build_engine`` call (:func:`sweep_builds`: a folder whose owner lock nobody holds).

One optimisation profile from a (min, opt, max) batch triple; the timing cache
(``engines/timing.cache``) is a *cache*, not an artifact: it is not in the manifest's hashed file
list, a damaged one is ignored, and it is merged with the build's own under the same lock. An
engine is cached under a key over everything that invalidates it (ONNX sha256, TensorRT version,
GPU compute capability, precision, profile) and recorded as an :class:`foclip.manifest.EngineSpec`.

Only TensorRT 10 calls are used: ``build_serialized_network``, ``create_optimization_profile`` /
``set_shape``, ``create_timing_cache`` / ``set_timing_cache``; none of the removed
``build_engine`` / ``set_binding_shape`` / ``execute_async_v2``.
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

from foclip.errors import BackendError, BundleError, InputError, require
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

ENGINE_PRECISIONS = caps("trt").precisions  # the backend table says what a TensorRT precision is
PROMPTS_PROFILE_MAX = 4096  # most prompts a detect engine's text_bank input takes
TIMING_CACHE = "engines/timing.cache"
DEFAULT_PROFILE = (1, 16, 64)
WORKSPACE_BYTES = 4 << 30


@dataclass(frozen=True)
class EngineRequest:
    """What to build: source graph key, engine precision and batch profile."""

    graph: str = "image.fp32"
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
    """Validate the graph key's form and the precision name.

    Raises:
        InputError: a graph key not of the form ``<image|text|detect>.<fp32|fp16|int8>``, or an
            unknown precision.
    """
    from foclip.manifest import PRECISIONS, ROLES

    role, _, prec = req.graph.partition(".")
    if role not in ROLES or prec not in PRECISIONS:
        raise InputError(f"--graph {req.graph!r}", "is not a graph key",
                         "<role>.<precision> with role image, text or detect, e.g. image.fp32 or detect.fp32")
    if req.precision not in ENGINE_PRECISIONS:
        raise InputError(f"--precision {req.precision!r}", "is not a TensorRT precision", "|".join(ENGINE_PRECISIONS))
    return req


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
        from foclip.runtime.backends import device_compute_capability

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
    """ONNX ops of a graph that the TensorRT ONNX parser does not support.

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
        elif node.op_type in TRT_UNSUPPORTED_OPS or (
                parser is not None and hasattr(parser, "supports_operator") and not parser.supports_operator(node.op_type)):
            bad.add(node.op_type)
    return sorted(bad)


def _refuse_unsupported(onnx_path: Path, req: EngineRequest, parser: Any = None) -> None:
    bad = unsupported_ops(onnx_path, parser)
    if bad:
        role = req.graph.split(".")[0]
        raise InputError(f"--graph {req.graph}", f"has ops the TensorRT ONNX parser does not support "
                         f"({', '.join(bad)})", f"a float graph: `--graph {role}.fp32 --precision fp16` "
                         "(TensorRT int8 needs an explicit Q/DQ graph, which foclip does not export)")


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
        InputError: bad encoder, precision or profile; a graph with ops TensorRT cannot parse.
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
    _refuse_unsupported(bundle / src, req)  # before TensorRT is even imported: no GPU needed to say no
    trt = require("tensorrt", "trt")
    if (bundle / "engines").is_dir():
        sweep_builds(bundle / "engines")  # what killed builds left (cached or not, this call cleans up)
    sm = gpu_compute_capability()
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
        plan, config, cache = _build(trt, bundle / src, manifest, req, bundle / TIMING_CACHE, log)
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


def _build(trt: Any, onnx_path: Path, manifest: Manifest, req: EngineRequest, cache_path: Path,
           log: Callable[[str], None]) -> tuple[bytes, Any, Any]:
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)  # explicit batch is the only mode in TensorRT 10
    parser = trt.OnnxParser(network, logger)
    _refuse_unsupported(onnx_path, req, parser)  # the installed parser's own word, too
    if not parser.parse_from_file(str(onnx_path)):
        errs = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise BundleError(str(onnx_path), f"TensorRT cannot parse it ({errs[:300]})", "an ONNX file TensorRT supports")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, WORKSPACE_BYTES)
    if req.precision != "fp32":
        config.set_flag(getattr(trt.BuilderFlag, req.precision.upper()))
    elif hasattr(trt.BuilderFlag, "TF32"):
        # TensorRT allows TF32 (10-bit mantissa) matmuls by default on Ampere and later; an fp32
        # engine is held to the fp32 gate, so it must compute in fp32.
        config.clear_flag(trt.BuilderFlag.TF32)
    profile = builder.create_optimization_profile()
    for name, (lo, opt, hi) in input_shapes(manifest, req.graph, req.profile):
        profile.set_shape(name, lo, opt, hi)
    config.add_optimization_profile(profile)
    timing = _load_timing_cache(config, cache_path, log)
    config.set_timing_cache(timing, ignore_mismatch=True)
    plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise BundleError(str(onnx_path), "TensorRT could not build an engine from it (see the log above)",
                          "a graph TensorRT supports at this precision")
    return bytes(plan), config, config.get_timing_cache()


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
        current.combine(cache, True)
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
