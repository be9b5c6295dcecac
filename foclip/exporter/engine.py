"""TensorRT engines for any of a bundle's graphs (TensorRT 10 Python API, imported lazily).

An engine is built from one graph key (``image.fp32``, ``text.fp32``, ``detect.fp32``…), the
same keys the detector chooses from, so ``--backend trt`` always finds the engine of the graph
it runs. After the build the engine is loaded and run on the bundle's self-check reference set;
an engine that misses the graph's parity gate is not recorded.

One optimisation profile from a (min, opt, max) batch triple; the bundle keeps a timing cache
(``engines/timing.cache``) so that rebuilds are fast; an engine is cached under a key over
everything that invalidates it (ONNX sha256, TensorRT version, GPU compute capability, precision,
profile) and recorded in the manifest as an :class:`foclip.manifest.EngineSpec`; the manifest's
file hashes are rewritten atomically after the engine and cache files are in place.

Only TensorRT 10 calls are used: ``build_serialized_network``, ``create_optimization_profile`` /
``set_shape``, ``create_timing_cache`` / ``set_timing_cache``; none of the removed
``build_engine`` / ``set_binding_shape`` / ``execute_async_v2``.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

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

ENGINE_PRECISIONS = ("fp16", "bf16", "fp32")
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


def build_engine(bundle: str | os.PathLike[str], req: EngineRequest,
                 log: Callable[[str], None] | None = None) -> tuple[EngineSpec, bool]:
    """Build (or reuse) a TensorRT engine for one graph of a bundle, check it, record it.

    Args:
        bundle: bundle folder.
        req: source graph key, precision and batch profile.
        log: receives progress lines.

    Returns:
        ``(engine spec, built)``; ``built`` is False when a cached engine with the same key was reused.

    Raises:
        MissingExtraError: tensorrt is not installed (names ``pip install 'foclip[trt]'``).
        BundleError: the bundle fails its hash check or lacks the graph; the parse or build fails;
            the built engine misses the graph's parity gate on the reference set (SelfCheckError).
        BackendError: no GPU.
        InputError: bad encoder, precision or profile.
    """
    log = log or (lambda _: None)
    check_request(req)
    bundle = Path(bundle)
    manifest = read_manifest(bundle)
    problems = verify_files(bundle, manifest)
    if problems:
        rel, why = problems[0]
        raise BundleError(str(bundle / rel), why, "the files `foclip export` wrote (re-export the bundle)")
    trt = require("tensorrt", "trt")
    src = _source_onnx(manifest, req.graph)
    sm = gpu_compute_capability()
    key = engine_key(manifest.files[src], trt.__version__, sm, req.precision, req.profile)
    for spec in manifest.engines:
        if spec.key == key and (bundle / spec.file).is_file() and manifest.files.get(spec.file) == sha256_file(
                bundle / spec.file):
            log(f"engine cached: {spec.file}")
            return spec, False
    rel = engine_file(req, key)
    log(f"building {rel} (TensorRT {trt.__version__}, sm {sm}, {req.precision}, batch {req.profile})")
    plan, cache = _build(trt, bundle / src, manifest, req, bundle / TIMING_CACHE)
    atomic_write_bytes(bundle / rel, plan)
    atomic_write_bytes(bundle / TIMING_CACHE, cache)
    spec = EngineSpec(req.graph, req.precision, rel, manifest.files[src], trt.__version__, sm, req.profile, key)
    try:
        result = _self_check(bundle, manifest, spec)
    except BaseException:
        (bundle / rel).unlink(missing_ok=True)
        raise
    log(f"self-check of {rel}: min cosine {result.min_cosine:.6f} (gate {result.gate})")
    _record(bundle, spec)
    return spec, True


def _self_check(bundle: Path, manifest: Manifest, spec: EngineSpec):  # -> SelfCheckResult
    """Run the new engine on the bundle's reference set; raise when it misses the gate."""
    from foclip.runtime.backends import EngineFromBundle, TrtRunner
    from foclip.runtime.bundle import Bundle, bundle_hash
    from foclip.runtime.selfcheck import require_pass, self_check

    files = {**manifest.files, spec.file: sha256_file(bundle / spec.file)}
    trial = Bundle(bundle, manifest.with_changes(files=files, engines=(*manifest.engines, spec)), "")
    trial = Bundle(bundle, trial.manifest, bundle_hash(trial.manifest))
    graph = trial.graph(spec.graph)
    with TrtRunner(EngineFromBundle(trial, graph, spec.precision)) as runner:
        return require_pass(self_check(trial, graph, runner))


def _build(trt, onnx_path: Path, manifest: Manifest, req: EngineRequest, cache_path: Path) -> tuple[bytes, bytes]:
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)  # explicit batch is the only mode in TensorRT 10
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errs = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise BundleError(str(onnx_path), f"TensorRT cannot parse it ({errs[:300]})", "an ONNX file TensorRT supports")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, WORKSPACE_BYTES)
    if req.precision != "fp32":
        config.set_flag(getattr(trt.BuilderFlag, req.precision.upper()))
    profile = builder.create_optimization_profile()
    for name, (lo, opt, hi) in input_shapes(manifest, req.graph, req.profile):
        profile.set_shape(name, lo, opt, hi)
    config.add_optimization_profile(profile)
    old = cache_path.read_bytes() if cache_path.is_file() else b""
    timing = config.create_timing_cache(old)
    config.set_timing_cache(timing, ignore_mismatch=False)
    plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise BundleError(str(onnx_path), "TensorRT could not build an engine from it (see the log above)",
                          "a graph TensorRT supports at this precision")
    return bytes(plan), bytes(config.get_timing_cache().serialize())


def _record(bundle: Path, spec: EngineSpec) -> None:
    """Add ``spec`` to the manifest and re-hash the engine and timing cache, atomically."""
    manifest = read_manifest(bundle)
    files = dict(manifest.files)
    for rel in (spec.file, TIMING_CACHE):
        files[rel] = sha256_file(bundle / rel)
    engines = tuple(e for e in manifest.engines if e.key != spec.key) + (spec,)
    atomic_write_json(bundle / MANIFEST_NAME, manifest.with_changes(files=files, engines=engines).to_dict())
