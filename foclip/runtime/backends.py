"""Loaders and runners for the bundle's graphs: ``ort-cpu``, ``ort-cuda`` and ``trt``.

Building is separate from running (the Polygraphy pattern):

* a **loader** is a small callable that, when called, opens one graph of a verified bundle:
  :class:`SessionFromBundle` (an ONNX Runtime session on a named provider) and
  :class:`EngineFromBundle` (a TensorRT engine built from the graph by ``foclip build-engine``);
* a **runner** takes a loader, opens it in :meth:`Runner.activate`, releases it in
  :meth:`Runner.deactivate` (also as a context manager; no ``__del__`` cleanup), validates every
  feed against the session's or engine's **own** IO metadata, times each call, and implements one
  small ``_run_impl``.

Asking for a backend is strict: the name is matched forgivingly (``cpu``, ``onnxruntime``,
``cuda``, ``tensorrt``...), but when the backend is not available the error lists the ones that
are; there is never a silent fallback to the CPU. ``onnxruntime`` is imported when an ORT loader
is called, ``tensorrt`` and CUDA bindings only when a TensorRT one is.
"""

from __future__ import annotations

import importlib.util
import os
import threading
import time
from typing import Any

import numpy as np

from foclip.errors import BackendError, BundleError, InternalError, require
from foclip.manifest import EngineSpec, GraphSpec, Manifest
from foclip.runtime.bundle import Bundle
from foclip.runtime.capabilities import ALIASES, BACKENDS, caps
from foclip.runtime.trt_env import (
    check_cuda,
    cuda_check,
    cudart,
    device_compute_capability,
    load_tensorrt,
    np_dtype,
    tensorrt_available,
    trt_call,
)

_ORT_TYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(int64)": np.int64,
              "tensor(int32)": np.int32, "tensor(uint8)": np.uint8}


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
    if key not in ALIASES:
        from foclip.errors import did_you_mean

        raise BackendError(f"backend {name!r}", "is not a known backend" + did_you_mean(key, list(ALIASES)),
                           f"one of: {', '.join(BACKENDS)}")
    return ALIASES[key]


def available_backends() -> list[str]:
    """Backends usable in this process, without importing tensorrt.

    Returns:
        Canonical names, in the order of :data:`BACKENDS`.
    """
    found: list[str] = []
    if importlib.util.find_spec("onnxruntime") is not None:
        import onnxruntime as ort

        providers = ort.get_available_providers()
        # An ONNX Runtime backend is available when its first provider is (capabilities.TABLE).
        found.extend(name for name in BACKENDS if caps(name).providers and caps(name).providers[0] in providers)
    if tensorrt_available():  # a real TensorRT, not tensorrt-stubs' namespace folder
        found.append("trt")
    return found


def require_backend(name: str) -> str:
    """The canonical name of an available backend.

    Raises:
        BackendError: unknown, or not available here (lists what is, and the extra to install).
    """
    canon = canonical_backend(name)
    avail = available_backends()
    if canon not in avail:
        raise BackendError(f"backend {canon!r}", "is not available in this environment",
                           f"one of the available backends: {', '.join(avail) or 'none'} "
                           f"(ort-cuda needs `pip install 'foclip[gpu]'` and a CUDA GPU; "
                           f"trt needs `pip install 'foclip[trt]'`)")
    return canon


# --------------------------------------------------------------------------- loaders
class SessionFromBundle:
    """Loader: an ONNX Runtime session for one graph of a verified bundle.

    Session options: graph optimisation ``ORT_ENABLE_ALL`` less the graph's
    ``disabled_optimizers`` (CPU only); ``intra_op_num_threads`` = ``threads`` (0 = one per
    core); ``spin_wait=False`` stops idle intra-op threads from busy-waiting, which matters where
    the cores are shared (an HTTP replica beside Serve's proxy); ``mem_arena=False`` turns ONNX
    Runtime's CPU memory arena off, so that a batch's buffers are freed after it (a long-running
    service's RSS then comes back after a large batch; measured in docs/serve.md).
    """

    def __init__(self, bundle: Bundle, graph: GraphSpec, provider: str = "ort-cpu", threads: int = 0,
                 spin_wait: bool = True, mem_arena: bool = True) -> None:
        self.bundle, self.graph, self.provider = bundle, graph, provider
        self.threads, self.spin_wait, self.mem_arena = int(threads), spin_wait, mem_arena

    def __call__(self) -> Any:
        ort = require("onnxruntime", "cpu" if self.provider == "ort-cpu" else "gpu")
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.intra_op_num_threads = self.threads or os.cpu_count() or 0
        opts.log_severity_level = 3
        opts.enable_cpu_mem_arena = self.mem_arena
        if not self.spin_wait:
            opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        providers = list(caps(self.provider).providers)
        path = self.bundle.file(self.graph.file)
        disabled = list(self.graph.disabled_optimizers) if self.provider == "ort-cpu" else []
        try:
            kwargs = {"disabled_optimizers": disabled} if disabled else {}
            session = ort.InferenceSession(str(path), sess_options=opts, providers=providers, **kwargs)
        except Exception as exc:  # ORT raises its own classes (Fail, InvalidGraph, ...)
            raise BundleError(f"graph {str(path)!r}", f"cannot be loaded by ONNX Runtime ({exc})",
                              "an ONNX file written by `foclip export` for this onnxruntime version") from exc
        if providers[0] not in session.get_providers():
            raise BackendError(f"backend {self.provider!r}", f"could not start {providers[0]} "
                               f"(ONNX Runtime gave {session.get_providers()})",
                               f"a working {providers[0]}; available backends: {', '.join(available_backends())}")
        return session


def find_engine(manifest: Manifest, graph_key: str, precision: str) -> EngineSpec:
    """The bundle's TensorRT engine built from ``graph_key`` at ``precision``.

    Raises:
        BundleError: when there is none (names the build command).
    """
    for e in manifest.engines:
        if e.graph == graph_key and e.precision == precision:
            return e
    have = ", ".join(f"{e.graph}@{e.precision}" for e in manifest.engines) or "none"
    raise BundleError(f"TensorRT engine {graph_key}@{precision}", f"is not in the bundle (it has: {have})",
                      f"`foclip build-engine BUNDLE --graph {graph_key} --precision {precision}` first")


def rebuild_command(bundle: Bundle, spec: EngineSpec) -> str:
    """The ``foclip build-engine`` command that rebuilds ``spec`` on this machine."""
    lo, opt, hi = spec.profile
    return (f"`foclip build-engine {bundle.path} --graph {spec.graph} --precision {spec.precision} "
            f"--batch {lo},{opt},{hi}`")


class EngineFromBundle:
    """Loader: a deserialised TensorRT engine built from one graph.

    A plan is tied to the exact TensorRT version and the GPU's compute capability it was built
    with; both are checked before deserialising, each with one line naming the rebuild command.
    """

    def __init__(self, bundle: Bundle, graph: GraphSpec, precision: str) -> None:
        self.bundle, self.graph, self.precision = bundle, graph, precision
        self.spec = find_engine(bundle.manifest, graph.key, precision)

    def __call__(self) -> tuple[Any, Any]:
        """Check versions and GPU, then deserialise the plan.

        Returns:
            ``(runtime, engine)``.

        Raises:
            MissingExtraError: tensorrt or cuda-python missing.
            BackendError: a TensorRT outside the supported range; a driver too old for the CUDA
                build of TensorRT or of the bindings; a TensorRT call that raises.
            BundleError: a plan of another TensorRT version or GPU, or one TensorRT cannot read.
        """
        load_tensorrt()  # installed, and a version whose API the tests check
        import tensorrt as trt

        spec = self.spec
        subject = f"engine {spec.file!r}"
        rebuild = f"an engine built here: {rebuild_command(self.bundle, spec)}"
        if spec.tensorrt_version != trt.__version__:
            raise BundleError(subject, f"was built with TensorRT {spec.tensorrt_version}, this is TensorRT "
                              f"{trt.__version__} (plans are tied to the exact version)", rebuild)
        self.cuda = check_cuda(trt.__version__)
        sm = device_compute_capability()
        if spec.compute_capability != sm:
            raise BundleError(subject, f"was built for a GPU of compute capability {spec.compute_capability}, "
                              f"this GPU is {sm}", rebuild)
        with trt_call(f"Runtime.deserialize_cuda_engine({spec.file!r})", rebuild):
            runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
            engine = runtime.deserialize_cuda_engine(self.bundle.file(spec.file).read_bytes())
        if engine is None:
            raise BundleError(subject, f"cannot be deserialized by TensorRT {trt.__version__} on this GPU (sm {sm})",
                              rebuild)
        return runtime, engine


# --------------------------------------------------------------------------- runners
def _msg(subject: str, problem: str, expected: str) -> str:
    return f"{subject} | {problem}. Expected {expected}."


class Runner:
    """One graph, opened by a loader. Subclasses implement the ``_impl`` methods.

    Attributes:
        name: canonical backend name.
        graph: the manifest's description of the graph.
        seconds: total wall time spent in :meth:`run`.
        calls: number of :meth:`run` calls.
        rows: total batch rows (first dimension of the first input) run.
    """

    name = "base"

    def __init__(self, graph: GraphSpec) -> None:
        self.graph = graph
        self.is_active = False
        self.reset_timing()

    # -- lifecycle
    def activate(self) -> Runner:
        """Open the loader (idempotent). Returns self."""
        if not self.is_active:
            self._activate_impl()
            self.is_active = True
        return self

    def deactivate(self) -> None:
        """Release the session or engine (idempotent)."""
        if self.is_active:
            self._deactivate_impl()
            self.is_active = False

    def __enter__(self) -> Runner:  # noqa: PYI034 - py310 target, no typing.Self
        return self.activate()

    def __exit__(self, *exc: object) -> None:
        self.deactivate()

    # -- running
    def input_metadata(self) -> dict[str, tuple[np.dtype, tuple[int | str | None, ...]]]:
        """The opened graph's own inputs: name -> (dtype, shape with symbolic/None dims)."""
        return self._input_metadata_impl()

    def validate(self, feeds: dict[str, np.ndarray]) -> None:
        """Check feeds against the opened graph's own IO metadata.

        Raises:
            InternalError: wrong names, dtype, rank or a fixed dimension (a bug in the caller,
                reported in the contract's terms).
        """
        expected = self.input_metadata()
        if set(feeds) != set(expected):
            raise InternalError(_msg(f"{self.name} feeds", f"are named {sorted(feeds)}", f"inputs {sorted(expected)}"))
        for name, arr in feeds.items():
            dtype, shape = expected[name]
            if arr.dtype != dtype:
                raise InternalError(_msg(f"{self.name} input {name!r}", f"is {arr.dtype}", f"{dtype}"))
            if arr.ndim != len(shape):
                raise InternalError(_msg(f"{self.name} input {name!r}", f"has shape {arr.shape}", f"rank {len(shape)}: "
                                   f"{list(shape)}"))
            for got, dim in zip(arr.shape, shape):
                if isinstance(dim, int) and dim > 0 and got != dim:
                    raise InternalError(_msg(f"{self.name} input {name!r}", f"has shape {arr.shape}", f"shape {list(shape)}"))

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Validate, run and time one call.

        Args:
            feeds: input name -> array, as the graph's inputs.

        Returns:
            output name -> array for every output of the graph.

        Raises:
            InternalError: the runner is not active, or the feeds are invalid.
        """
        if not self.is_active:
            raise InternalError(_msg(f"{self.name} runner for {self.graph.key}", "is not active",
                               "activate() (or a `with` block) before run()"))
        self.validate(feeds)
        t0 = time.perf_counter()
        out = self._run_impl(feeds)
        self.seconds += time.perf_counter() - t0
        self.calls += 1
        self.rows += int(next(iter(feeds.values())).shape[0])
        return out

    @property
    def gate_min_cosine(self) -> float:
        """The least cosine against PyTorch this runner's graph (or engine) must reach."""
        return self.graph.gate_min_cosine

    def describe(self) -> dict[str, Any]:
        """What runs the graph (for :meth:`foclip.runtime.Detector.info`)."""
        return {"backend": self.name, "graph": self.graph.key, "file": self.graph.file}

    def reset_timing(self) -> None:
        """Zero :attr:`seconds`, :attr:`calls` and :attr:`rows`."""
        self.seconds, self.calls, self.rows = 0.0, 0, 0

    def _activate_impl(self) -> None:
        raise NotImplementedError

    def _deactivate_impl(self) -> None:
        raise NotImplementedError

    def _input_metadata_impl(self) -> dict[str, tuple[np.dtype, tuple[int | str | None, ...]]]:
        raise NotImplementedError

    def _run_impl(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        raise NotImplementedError


class OrtRunner(Runner):
    """ONNX Runtime, on the provider its :class:`SessionFromBundle` names."""

    def __init__(self, loader: SessionFromBundle) -> None:
        super().__init__(loader.graph)
        self.loader = loader
        self.name = loader.provider
        self.session: Any = None

    def _activate_impl(self) -> None:
        self.session = self.loader()
        self._outputs = [o.name for o in self.session.get_outputs()]
        self._inputs: dict[str, tuple[np.dtype, tuple[int | str | None, ...]]] = {
            i.name: (np.dtype(_ORT_TYPES.get(i.type, np.float32)),
                                 tuple(d if isinstance(d, int) else None for d in i.shape))
                        for i in self.session.get_inputs()}

    def _deactivate_impl(self) -> None:
        self.session = None

    def _input_metadata_impl(self) -> dict[str, tuple[np.dtype, tuple[int | str | None, ...]]]:
        return self._inputs

    def _run_impl(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return dict(zip(self._outputs, self.session.run(self._outputs, feeds)))

    def describe(self) -> dict[str, Any]:
        providers = self.session.get_providers() if self.session is not None else []
        return {**super().describe(), "providers": providers}


class TrtRunner(Runner):
    """A TensorRT 10 engine, run with the tensor-address API.

    Uses ``set_input_shape``, ``set_tensor_address`` and ``execute_async_v3`` on one CUDA stream;
    device buffers grow to the largest batch seen and are reused; :meth:`deactivate` frees them.
    Every status TensorRT returns (None from ``create_execution_context``, False from
    ``set_input_shape`` / ``set_tensor_address`` / ``execute_async_v3``) is checked and raised as
    a :class:`BackendError` naming the call, the tensor and the shape; every input dimension is
    checked against the engine's own optimisation profile (``get_tensor_profile_shape``) first.
    One context, stream and buffer set serve one call at a time: :meth:`run` holds a lock, so
    concurrent ``Detector.detect`` calls are safe (they queue on the GPU anyway).
    """

    name = "trt"

    def __init__(self, loader: EngineFromBundle) -> None:
        super().__init__(loader.graph)
        self.loader = loader
        self.profile = loader.spec.profile
        self._buffers: dict[str, tuple[int, int]] = {}
        self._lock = threading.Lock()

    @property
    def gate_min_cosine(self) -> float:
        """The engine's own gate (its precision's, as recorded when it was built)."""
        return self.loader.spec.gate_min_cosine

    def _activate_impl(self) -> None:
        self._runtime, self.engine = self.loader()
        import tensorrt as trt  # loaded and checked by the loader

        self._trt = trt
        self._cu = cudart()
        self._run_call = f"IExecutionContext run of {self.loader.spec.file!r}"  # named once, not per call
        fix = f"free GPU memory, or an engine built here: {rebuild_command(self.loader.bundle, self.loader.spec)}"
        with trt_call("create_execution_context", fix):
            self.context = self.engine.create_execution_context()
        if self.context is None:
            raise BackendError(f"trt create_execution_context for {self.loader.spec.file!r}", "returned None "
                               "(out of GPU memory, or an engine this GPU cannot run)",
                               "free GPU memory, or an engine built on this GPU with `foclip build-engine`")
        self.stream = cuda_check(self._cu.cudaStreamCreate(), "cudaStreamCreate")
        self._inputs: dict[str, tuple[np.dtype, tuple[int | str | None, ...]]] = {}
        self._outputs: list[str] = []
        self._profiles: dict[str, tuple[tuple[int | None, ...], tuple[int | None, ...]]] = {}
        self._out_dtypes: dict[str, np.dtype] = {}
        with trt_call(f"ICudaEngine IO of {self.loader.spec.file!r}", fix):
            self._read_io(trt)
        self._check_against_graph()

    def _read_io(self, trt: Any) -> None:
        """Inputs (dtype, shape with None for -1, profile bounds) and outputs, from the engine itself.

        Dtypes come from the engine (strong typing: the graph's types), through ``trt.nptype``.
        """
        engine = self.engine
        for i in range(engine.num_io_tensors):
            name = engine.get_tensor_name(i)
            dtype = np_dtype(trt, engine.get_tensor_dtype(name), name)
            if engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT:
                shape = tuple(int(d) if d >= 0 else None for d in engine.get_tensor_shape(name))
                self._inputs[name] = (dtype, shape)
                if None in shape:  # a dynamic input: the engine's own profile bounds every axis
                    lo, _, hi = engine.get_tensor_profile_shape(name, 0)
                    self._profiles[name] = (tuple(int(d) for d in lo), tuple(int(d) for d in hi))
                else:
                    self._profiles[name] = (shape, shape)
            else:
                self._outputs.append(name)
                self._out_dtypes[name] = dtype

    def _check_against_graph(self) -> None:
        """Refuse an engine whose tensors are not the bundle graph's (names, fixed dimensions).

        A plan built from another export (another embedding width, other tensor names) would
        otherwise run and give arrays no text bank of this bundle fits.
        """
        graph = getattr(self.loader, "graph", None)
        if graph is None:
            return
        for spec in (*graph.inputs, *graph.outputs):
            try:
                got = tuple(int(d) for d in self.engine.get_tensor_shape(spec.name))
            except Exception:  # noqa: BLE001 - TensorRT raises or returns garbage for an unknown name
                got = None
            fixed = [(i, d) for i, d in enumerate(spec.shape) if isinstance(d, int) and d > 0]
            if got is None or len(got) != len(spec.shape) or any(got[i] >= 0 and got[i] != d for i, d in fixed):
                raise BundleError(f"engine {self.loader.spec.file!r}", f"tensor {spec.name!r} has shape {got}, the "
                                  f"bundle's graph {graph.key} declares {tuple(spec.shape)}",
                                  f"an engine built from this bundle: `foclip build-engine --graph {graph.key}`")

    def _deactivate_impl(self) -> None:
        for ptr, _ in self._buffers.values():
            self._cu.cudaFree(ptr)
        self._buffers.clear()
        self._cu.cudaStreamDestroy(self.stream)
        self.context = self.engine = self._runtime = None

    def _input_metadata_impl(self) -> dict[str, tuple[np.dtype, tuple[int | str | None, ...]]]:
        return self._inputs

    def _device(self, name: str, nbytes: int) -> int:
        ptr, size = self._buffers.get(name, (0, 0))
        if size < nbytes:
            if ptr:
                # the stream may still read the old buffer: let it finish before freeing it
                cuda_check(self._cu.cudaStreamSynchronize(self.stream), "cudaStreamSynchronize")
                cuda_check(self._cu.cudaFree(ptr), f"cudaFree({name!r})")
            ptr = cuda_check(self._cu.cudaMalloc(nbytes), f"cudaMalloc({name!r}, {nbytes} bytes)")
            self._buffers[name] = (ptr, nbytes)
        return ptr

    def check_profile(self, feeds: dict[str, np.ndarray]) -> None:
        """Every dimension of every input within the engine's optimisation profile.

        Raises:
            BackendError: naming the tensor, its shape and the profile's min and max shapes.
        """
        for name, arr in feeds.items():
            lo, hi = self._profiles[name]
            if len(lo) != arr.ndim or any(not a <= d <= b for d, a, b in zip(arr.shape, lo, hi)):
                raise BackendError(f"trt input {name!r}", f"has shape {tuple(arr.shape)}, outside the engine's "
                                   f"optimisation profile (min {lo}, max {hi})",
                                   f"shapes within it (a batch or prompt count up to {hi[0]}), or an engine "
                                   "built with a larger profile (`foclip build-engine --batch MIN,OPT,MAX`)")

    def _run_impl(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        self.check_profile(feeds)
        with self._lock, trt_call(self._run_call, "inputs within the engine's profile on a working GPU"):
            return self._run_locked(feeds)

    def _run_locked(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        cu, ctx = self._cu, self.context
        h2d, d2h = cu.cudaMemcpyKind.cudaMemcpyHostToDevice, cu.cudaMemcpyKind.cudaMemcpyDeviceToHost
        staged = []  # keep every host array alive until the stream has read it
        for name, arr in feeds.items():
            arr = np.ascontiguousarray(arr)
            staged.append(arr)
            if not ctx.set_input_shape(name, arr.shape):
                raise BackendError(f"trt set_input_shape({name!r}, {tuple(arr.shape)})", "returned False",
                                   "a shape within the engine's optimisation profile")
            ptr = self._device(name, arr.nbytes)
            cuda_check(cu.cudaMemcpyAsync(ptr, arr.ctypes.data, arr.nbytes, h2d, self.stream),
                        f"cudaMemcpyAsync(host->device, {name!r})")
            if not ctx.set_tensor_address(name, ptr):
                raise BackendError(f"trt set_tensor_address({name!r})", "returned False",
                                   "a valid device address for the tensor")
        outs = {}
        for name in self._outputs:
            shape = tuple(int(d) for d in ctx.get_tensor_shape(name))
            if any(d < 0 for d in shape):
                raise BackendError(f"trt output {name!r}", f"has unresolved shape {shape} after set_input_shape",
                                   "every input shape set (a bug: report it)")
            host = np.empty(shape, dtype=self._out_dtypes[name])
            if not ctx.set_tensor_address(name, self._device(name, host.nbytes)):
                raise BackendError(f"trt set_tensor_address({name!r})", "returned False",
                                   "a valid device address for the tensor")
            outs[name] = host
        if not ctx.execute_async_v3(self.stream):
            shapes = ", ".join(f"{k} {tuple(v.shape)}" for k, v in feeds.items())
            raise BackendError(f"trt execute_async_v3 ({shapes})", "returned False",
                               "an engine and inputs TensorRT accepts (see TensorRT's log above)")
        for name, host in outs.items():
            cuda_check(cu.cudaMemcpyAsync(host.ctypes.data, self._buffers[name][0], host.nbytes, d2h, self.stream),
                        f"cudaMemcpyAsync(device->host, {name!r})")
        # results exist only once the stream has run: nothing is read before this returns
        cuda_check(cu.cudaStreamSynchronize(self.stream), "cudaStreamSynchronize")
        del staged
        return {k: v.astype(np.float32, copy=False) for k, v in outs.items()}

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "engine": self.loader.spec.file, "engine_precision": self.loader.precision,
                "tensorrt": self._trt.__version__ if self.is_active else None, "profile": list(self.profile),
                "gate_min_cosine": self.gate_min_cosine}


def create_runner(backend: str, bundle: Bundle, graph_key: str, engine_precision: str | None = None,
                  threads: int = 0, spin_wait: bool = True, mem_arena: bool = True) -> Runner:
    """An active runner for one graph of a bundle.

    Args:
        backend: backend name (forgiving, see :func:`canonical_backend`).
        bundle: the verified bundle.
        graph_key: ``<role>.<precision>``, e.g. ``image.int8``.
        engine_precision: for ``trt``: the engine's precision (default: the graph's).
        threads: ORT intra-op threads (0 = one per core).
        spin_wait: let idle ORT threads busy-wait (fastest when the cores are ours alone).
        mem_arena: keep ONNX Runtime's CPU memory arena (False: buffers freed after each run).

    Returns:
        An activated runner (deactivate it, or use it in a ``with`` block).

    Raises:
        BackendError: unknown or unavailable backend (the message lists the available ones).
        BundleError: graph or engine missing or unloadable.
    """
    canon = require_backend(backend)
    graph = bundle.graph(graph_key)
    if canon == "trt":
        return TrtRunner(EngineFromBundle(bundle, graph, engine_precision or graph.precision)).activate()
    return OrtRunner(SessionFromBundle(bundle, graph, canon, threads, spin_wait, mem_arena)).activate()
