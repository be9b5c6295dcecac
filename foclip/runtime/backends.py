"""Inference backends behind one small contract: ``ort-cpu``, ``ort-cuda`` and ``trt``.

:class:`Backend` owns what every backend needs the same way: validating the feeds against the
manifest's :class:`~foclip.manifest.GraphSpec` (names, dtypes, ranks, fixed dimensions) with a
message that says what was expected, and timing each call. A concrete backend implements only
``_run_impl``.

Asking for a backend is strict: the name is matched forgivingly (``cpu``, ``onnxruntime``,
``cuda``, ``tensorrt``...), but when the backend is not available the error lists the ones that
are; there is never a silent fallback to the CPU. ``onnxruntime`` is imported when an ORT backend
is created, ``tensorrt`` and CUDA bindings only when ``trt`` is.
"""

from __future__ import annotations

import importlib.util
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from foclip.errors import BackendError, BundleError, require
from foclip.manifest import EngineSpec, GraphSpec, Manifest

BACKENDS = ("ort-cpu", "ort-cuda", "trt")
_ALIASES = {
    "ort-cpu": "ort-cpu", "ort": "ort-cpu", "cpu": "ort-cpu", "onnxruntime": "ort-cpu",
    "onnxruntime-cpu": "ort-cpu", "cpuexecutionprovider": "ort-cpu",
    "ort-cuda": "ort-cuda", "cuda": "ort-cuda", "gpu": "ort-cuda", "onnxruntime-cuda": "ort-cuda",
    "onnxruntime-gpu": "ort-cuda", "cudaexecutionprovider": "ort-cuda",
    "trt": "trt", "tensorrt": "trt",
}
_DTYPES = {"float32": np.float32, "float16": np.float16, "int64": np.int64, "int32": np.int32,
           "uint8": np.uint8}


def canonical_backend(name: str) -> str:
    """Map a user's backend name to one of :data:`BACKENDS`.

    Args:
        name: e.g. ``ort-cpu``, ``CPU``, ``onnxruntime``, ``cuda``, ``TensorRT``.

    Returns:
        The canonical name.

    Raises:
        BackendError: for a name that matches no backend (lists the known ones).
    """
    key = name.strip().lower().replace("_", "-")
    if key not in _ALIASES:
        raise BackendError(f"backend {name!r}", "is not a known backend", f"one of: {', '.join(BACKENDS)}")
    return _ALIASES[key]


def available_backends() -> list[str]:
    """Backends usable in this process, without importing tensorrt.

    Returns:
        Canonical names, in the order of :data:`BACKENDS`.
    """
    found = []
    if importlib.util.find_spec("onnxruntime") is not None:
        import onnxruntime as ort

        providers = ort.get_available_providers()
        if "CPUExecutionProvider" in providers:
            found.append("ort-cpu")
        if "CUDAExecutionProvider" in providers:
            found.append("ort-cuda")
    if importlib.util.find_spec("tensorrt") is not None:
        found.append("trt")
    return found


class Backend:
    """One loaded graph. Subclasses implement :meth:`_run_impl` (and set :attr:`name`).

    Attributes:
        name: canonical backend name.
        graph: the manifest's description of the graph's inputs and outputs.
        seconds: total wall time spent in :meth:`run`.
        calls: number of :meth:`run` calls.
        rows: total batch rows (first dimension of the first input) run.
    """

    name = "base"

    def __init__(self, graph: GraphSpec) -> None:
        self.graph = graph
        self.seconds = 0.0
        self.calls = 0
        self.rows = 0

    def validate(self, feeds: dict[str, np.ndarray]) -> None:
        """Check feeds against the graph's inputs.

        Args:
            feeds: input name -> array.

        Raises:
            BackendError: wrong names, dtype, rank or a fixed dimension (a bug in the caller,
                reported in the contract's terms).
        """
        expected = {t.name: t for t in self.graph.inputs}
        if set(feeds) != set(expected):
            raise BackendError(f"{self.name} feeds", f"are named {sorted(feeds)}", f"inputs {sorted(expected)}")
        for name, arr in feeds.items():
            spec = expected[name]
            want = np.dtype(_DTYPES.get(spec.dtype, spec.dtype))
            if arr.dtype != want:
                raise BackendError(f"{self.name} input {name!r}", f"is {arr.dtype}", f"{want}")
            if arr.ndim != len(spec.shape):
                raise BackendError(f"{self.name} input {name!r}", f"has shape {arr.shape}",
                                   f"rank {len(spec.shape)}: {list(spec.shape)}")
            for got, dim in zip(arr.shape, spec.shape):
                if isinstance(dim, int) and dim > 0 and got != dim:
                    raise BackendError(f"{self.name} input {name!r}", f"has shape {arr.shape}",
                                       f"shape {list(spec.shape)}")

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Validate, run and time one call.

        Args:
            feeds: input name -> array, as the graph's inputs.

        Returns:
            output name -> array for every output of the graph.

        Raises:
            BackendError: invalid feeds.
        """
        self.validate(feeds)
        t0 = time.perf_counter()
        out = self._run_impl(feeds)
        self.seconds += time.perf_counter() - t0
        self.calls += 1
        self.rows += int(next(iter(feeds.values())).shape[0])
        return out

    def _run_impl(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def describe(self) -> dict[str, Any]:
        """What runs the graph (for :meth:`foclip.runtime.Detector.info`)."""
        return {"backend": self.name, "file": self.graph.file}

    def reset_timing(self) -> None:
        """Zero :attr:`seconds`, :attr:`calls` and :attr:`rows`."""
        self.seconds, self.calls, self.rows = 0.0, 0, 0


class OrtBackend(Backend):
    """ONNX Runtime on the CPU or CUDA execution provider.

    Session options: graph optimisation ``ORT_ENABLE_ALL``; ``intra_op_num_threads`` = the
    ``threads`` argument (0 = one per core, ONNX Runtime's default); ``spin_wait=False`` turns off
    the intra-op threads' busy waiting (``session.intra_op.allow_spinning = 0``).
    """

    def __init__(self, path: Path, graph: GraphSpec, name: str = "ort-cpu", threads: int = 0,
                 disabled_optimizers: list[str] | None = None, spin_wait: bool = True) -> None:
        super().__init__(graph)
        ort = require("onnxruntime", "cpu" if name == "ort-cpu" else "gpu")
        self.name = name
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.intra_op_num_threads = int(threads)
        opts.log_severity_level = 3
        if not spin_wait:
            # Idle ORT threads normally spin waiting for work; where the cores are shared (an HTTP
            # replica beside Serve's proxy) that spinning starves the request path.
            opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        if name == "ort-cuda":
            providers = ["CUDAExecutionProvider", "CPUExecutionProvider"]
        else:
            providers = ["CPUExecutionProvider"]
        try:
            kwargs = {"disabled_optimizers": disabled_optimizers} if disabled_optimizers else {}
            self.session = ort.InferenceSession(str(path), sess_options=opts, providers=providers, **kwargs)
        except Exception as exc:  # ORT raises its own classes (Fail, InvalidGraph, ...)
            raise BundleError(f"graph {str(path)!r}", f"cannot be loaded by ONNX Runtime ({exc})",
                              "an ONNX file written by `foclip export` for this onnxruntime version") from exc
        if providers[0] not in self.session.get_providers():
            raise BackendError(f"backend {name!r}", f"could not start {providers[0]} "
                               f"(ONNX Runtime gave {self.session.get_providers()})",
                               f"a working {providers[0]}; available backends: {', '.join(available_backends())}")
        self._outputs = [t.name for t in graph.outputs]

    def _run_impl(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return dict(zip(self._outputs, self.session.run(self._outputs, feeds)))

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "providers": self.session.get_providers()}


def _cudart() -> Any:
    try:
        from cuda.bindings import runtime as cudart  # cuda-python >= 12.6
    except ImportError:
        try:
            from cuda import cudart  # older cuda-python
        except ImportError as exc:
            from foclip.errors import MissingExtraError

            raise MissingExtraError("cuda-python", "trt") from exc
    return cudart


def _cuda_check(result: Any) -> Any:
    err, *rest = result if isinstance(result, tuple) else (result,)
    if int(err) != 0:
        raise BackendError("trt", f"CUDA call failed ({err})", "a working CUDA device")
    return rest[0] if len(rest) == 1 else rest


class TrtBackend(Backend):
    """A TensorRT 10 engine, run with the tensor-address API.

    Uses ``set_input_shape``, ``set_tensor_address`` and ``execute_async_v3`` on one CUDA
    stream; device buffers grow to the largest batch seen and are reused.
    """

    name = "trt"

    def __init__(self, engine_path: Path, graph: GraphSpec, engine: EngineSpec) -> None:
        super().__init__(graph)
        trt = require("tensorrt", "trt")
        self._trt = trt
        self._cudart = _cudart()
        if engine.tensorrt_version.split(".")[0] != trt.__version__.split(".")[0]:
            raise BundleError(f"engine {engine.file!r}", f"was built with TensorRT {engine.tensorrt_version}",
                              f"an engine built with this TensorRT ({trt.__version__}); run `foclip build-engine`")
        logger = trt.Logger(trt.Logger.WARNING)
        self._runtime = trt.Runtime(logger)
        self.engine = self._runtime.deserialize_cuda_engine(engine_path.read_bytes())
        if self.engine is None:
            raise BundleError(f"engine {engine.file!r}", "cannot be deserialized on this GPU/TensorRT",
                              "an engine built on this machine with `foclip build-engine`")
        self.context = self.engine.create_execution_context()
        self.profile = engine.profile
        self.stream = _cuda_check(self._cudart.cudaStreamCreate())
        self._buffers: dict[str, tuple[int, int]] = {}  # name -> (device pointer, bytes)

    def _device(self, name: str, nbytes: int) -> int:
        ptr, size = self._buffers.get(name, (0, 0))
        if size < nbytes:
            if ptr:
                _cuda_check(self._cudart.cudaFree(ptr))
            ptr = _cuda_check(self._cudart.cudaMalloc(nbytes))
            self._buffers[name] = (ptr, nbytes)
        return ptr

    def _run_impl(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        cu, trt = self._cudart, self._trt
        n = next(iter(feeds.values())).shape[0]
        if not self.profile[0] <= n <= self.profile[2]:
            raise BackendError("trt batch", f"is {n}", f"a batch within the engine profile {self.profile}")
        for name, arr in feeds.items():
            arr = np.ascontiguousarray(arr)
            self.context.set_input_shape(name, arr.shape)
            ptr = self._device(name, arr.nbytes)
            _cuda_check(cu.cudaMemcpyAsync(ptr, arr.ctypes.data, arr.nbytes,
                                           cu.cudaMemcpyKind.cudaMemcpyHostToDevice, self.stream))
            self.context.set_tensor_address(name, ptr)
        outs = {}
        for spec in self.graph.outputs:
            shape = tuple(self.context.get_tensor_shape(spec.name))
            host = np.empty(shape, dtype=trt.nptype(self.engine.get_tensor_dtype(spec.name)))
            self.context.set_tensor_address(spec.name, self._device(spec.name, host.nbytes))
            outs[spec.name] = host
        if not self.context.execute_async_v3(self.stream):
            raise BackendError("trt", "execute_async_v3 failed", "a valid engine and inputs")
        for name, host in outs.items():
            _cuda_check(cu.cudaMemcpyAsync(host.ctypes.data, self._buffers[name][0], host.nbytes,
                                           cu.cudaMemcpyKind.cudaMemcpyDeviceToHost, self.stream))
        _cuda_check(cu.cudaStreamSynchronize(self.stream))
        return {k: v.astype(np.float32, copy=False) for k, v in outs.items()}

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "tensorrt": self._trt.__version__, "profile": list(self.profile)}

    def __del__(self) -> None:  # pragma: no cover - needs a GPU
        for ptr, _ in getattr(self, "_buffers", {}).values():
            self._cudart.cudaFree(ptr)


def find_engine(manifest: Manifest, encoder: str, precision: str) -> EngineSpec:
    """The bundle's TensorRT engine for ``encoder`` at ``precision``.

    Raises:
        BundleError: when there is none (names the build command).
    """
    for e in manifest.engines:
        if e.encoder == encoder and e.precision == precision:
            return e
    have = ", ".join(f"{e.encoder}/{e.precision}" for e in manifest.engines) or "none"
    raise BundleError(f"TensorRT engine {encoder}/{precision}", f"is not in the bundle (it has: {have})",
                      f"`foclip build-engine BUNDLE --encoder {encoder} --precision {precision}` first")


def create_backend(name: str, bundle_dir: Path, graph: GraphSpec, manifest: Manifest,
                   encoder: str = "image", precision: str = "fp32", threads: int = 0,
                   spin_wait: bool = True) -> Backend:
    """Create one backend for one graph.

    Args:
        name: backend name (forgiving, see :func:`canonical_backend`).
        bundle_dir: the bundle folder.
        graph: the ONNX graph to run (for ``trt``: the graph whose engine is wanted; its IO spec
            is used for validation).
        manifest: the bundle's manifest (engines for ``trt``).
        encoder: ``image``, ``text`` or ``detect`` (which engine to look up for ``trt``).
        precision: the precision (engine lookup for ``trt``).
        threads: ORT intra-op threads (0 = one per core).
        spin_wait: let idle ORT threads busy-wait (fastest when the cores are ours alone).

    Returns:
        A ready backend.

    Raises:
        BackendError: unknown or unavailable backend (the message lists the available ones).
        BundleError: graph or engine missing or unloadable.
    """
    canon = canonical_backend(name)
    avail = available_backends()
    if canon not in avail:
        raise BackendError(f"backend {canon!r}", "is not available in this environment",
                           f"one of the available backends: {', '.join(avail) or 'none'} "
                           f"(ort-cuda needs `pip install 'foclip[gpu]'` and a CUDA GPU; "
                           f"trt needs `pip install 'foclip[trt]'`)")
    if canon == "trt":
        engine = find_engine(manifest, encoder, precision)
        return TrtBackend(bundle_dir / engine.file, graph, engine)
    # The exporter records ORT optimisers that break a precision on the CPU EP (e.g. fp16 + Nchwc).
    disabled = None
    if canon == "ort-cpu":
        disabled = manifest.extra.get("onnxruntime_cpu", {}).get("disabled_optimizers", {}).get(precision)
    return OrtBackend(bundle_dir / graph.file, graph, name=canon, threads=threads or os.cpu_count() or 0,
                      disabled_optimizers=disabled, spin_wait=spin_wait)
