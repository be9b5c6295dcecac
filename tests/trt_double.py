"""A TensorRT + CUDA-runtime double that speaks one real TensorRT API surface, for CPU tests.

The surfaces are derived from the real packages (``tests/trt_api/derive.py``): ``10.13`` from
``tensorrt-stubs`` 10.13, ``11.4`` from the compiled module of ``tensorrt-cu12-bindings`` 11.4 and
NVIDIA's removed-API list. ``FakeTensorRT(surface)`` offers only names of that surface
(``test_the_double_offers_only_names_of_its_surface`` checks every class and member) and records
every name foclip looks up (``used``), so a test fails when foclip needs a name the surface lacks.

It fails where TensorRT fails (a runner that ignores a status must fail a test):

* **strong typing**: tensor types come from the graph (the engine runs the ONNX graph itself in
  ONNX Runtime on the CPU: an fp16 graph computes in fp16); on 10.x a network must be created with
  ``STRONGLY_TYPED`` (stricter than TensorRT 10, which still builds weakly typed networks, deprecated
  since 10.12) and a precision flag on it fails the build (None), as in TensorRT; 11.x has no
  precision flag and every network is strongly typed;
* **the uint8 rule**: the parser refuses a UINT8 graph input that feeds anything but a Cast;
* the parser refuses ops TensorRT's ONNX parser does not support (False + errors);
* **dtypes** are ``DataType`` members, and ``nptype`` maps them as TensorRT's own ``__init__.py``
  does (BOOL -> bool_, INT32 -> int32, HALF -> float16; BF16 raises TypeError);
* a plan records the version, compute capability and optimisation profile it was built with;
  ``deserialize_cuda_engine`` returns None for a plan of another version or GPU;
* ``get_tensor_shape`` reports -1 for dynamic dimensions (engine) and for outputs whose inputs are
  unset (context; always, with ``unresolved_outputs``);
* ``set_input_shape`` returns False outside the profile, ``set_tensor_address`` for an unknown
  tensor or a null/freed address, ``execute_async_v3`` when a shape or address is missing;
  ``create_execution_context`` returns None when ``fail_contexts`` is set; a damaged timing cache
  gives None;
* work is asynchronous: copies and ``execute_async_v3`` are queued on the stream and run at
  ``cudaStreamSynchronize``; a freed buffer is kept as a tombstone and any use of it is a CUDA
  error, not a crash;
* ``cudaDriverGetVersion`` reports ``driver_version``; ``cuda_builds`` stands for the installed
  ``tensorrt-cuNN`` / ``cuda-bindings`` wheels.
"""

from __future__ import annotations

import ctypes
import importlib.machinery
import json
import threading
import types
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np

SURFACES = ("10.13", "11.4")
VERSIONS = {"10.13": "10.13.0.35", "11.4": "11.4.0.106"}
API_DIR = Path(__file__).resolve().parent / "trt_api"
# Ops the TensorRT ONNX parser marks unsupported that foclip graphs can contain (onnx-tensorrt docs/operators.md)
FAKE_UNSUPPORTED = {"DynamicQuantizeLinear", "MatMulInteger", "ConvInteger", "QLinearConv", "QLinearMatMul"}
_ORT_TO_TRT = {"tensor(float)": "FLOAT", "tensor(float16)": "HALF", "tensor(int8)": "INT8", "tensor(int32)": "INT32",
               "tensor(bool)": "BOOL", "tensor(uint8)": "UINT8", "tensor(bfloat16)": "BF16", "tensor(int64)": "INT64"}
_NP = {"FLOAT": np.float32, "HALF": np.float16, "INT8": np.int8, "INT32": np.int32, "INT64": np.int64,
       "BOOL": np.bool_, "UINT8": np.uint8}
# Test controls and bookkeeping on the module object: not TensorRT names, never recorded as used
CONTROLS = frozenset({"calls", "used", "surface", "corrupt_engines", "fail_builds", "fail_contexts",
                      "compute_capability", "driver_version", "cuda_builds", "unresolved_outputs", "cudart", "buffers",
                      "streams", "install", "api_names", "log", "network_flags"})


@cache
def surface_names(surface: str) -> frozenset[str]:
    """The qualified names (``Class.member``) of one derived surface (``tests/trt_api/surface-*.txt``)."""
    return frozenset((API_DIR / f"surface-{surface}.txt").read_text().split())


class FakeTensorRT:
    """``import tensorrt`` for tests: one real API surface (``10.13`` or ``11.4``), computed with ONNX Runtime."""

    def __init__(self, surface: str = "11.4", corrupt_engines: bool = False) -> None:
        import onnxruntime as ort

        fake = self
        self.surface = surface
        self.__version__ = VERSIONS[surface]
        self.__spec__ = importlib.machinery.ModuleSpec("tensorrt", None, origin="<foclip TensorRT double>")
        self.calls: list[tuple] = []
        self.used: set[str] = set()
        self.log: list[str] = []
        self.corrupt_engines = corrupt_engines
        self.fail_builds = self.fail_contexts = self.unresolved_outputs = False
        self.compute_capability = "9.0"
        self.driver_version = 12080  # cudaDriverGetVersion: CUDA 12.8
        self.cuda_builds = {"tensorrt": ("tensorrt-cu12", 12), "bindings": ("cuda-bindings 12.9.0", 12)}
        self.network_flags: list[int] = []
        v10 = surface.startswith("10.")

        class Meta(type):
            """Records class-level lookups (``trt.BuilderFlag.TF32``) as used names."""

            def __getattribute__(cls, name: str) -> Any:
                value = type.__getattribute__(cls, name)
                if not name.startswith("_"):
                    fake.used.add(f"{type.__getattribute__(cls, '_trt')}.{name}")
                return value

        class Api(metaclass=Meta):
            """Base of every class that stands for a TensorRT class (``_trt``: its TensorRT name)."""

            _trt = ""

            def __getattribute__(self, name: str) -> Any:
                value = object.__getattribute__(self, name)
                if not name.startswith("_"):
                    fake.used.add(f"{type(self)._trt}.{name}")
                return value

        def enum(trt_name: str, members: dict[str, int]) -> type:
            class Enum(Api):
                _trt = trt_name

                def __init__(self, name: str, value: int) -> None:
                    self._name, self._value = name, value

                @property
                def name(self) -> str:
                    return self._name

                @property
                def value(self) -> int:
                    return self._value

                def __int__(self) -> int:
                    return self._value

                def __index__(self) -> int:
                    return self._value

                def __eq__(self, other: object) -> bool:
                    return type(other) is type(self) and other._value == self._value  # type: ignore[attr-defined]

                def __hash__(self) -> int:
                    return hash((trt_name, self._value))

                def __repr__(self) -> str:
                    return f"<{trt_name}.{self._name}: {self._value}>"

                __str__ = __repr__

            Enum.__name__ = Enum.__qualname__ = trt_name
            for name, value in members.items():
                setattr(Enum, name, Enum(name, value))
            return Enum

        DataType = enum("DataType", {"FLOAT": 0, "HALF": 1, "INT8": 2, "INT32": 3, "BOOL": 4, "UINT8": 5, "BF16": 7,
                                     "INT64": 8})
        TensorIOMode = enum("TensorIOMode", {"NONE": 0, "INPUT": 1, "OUTPUT": 2})
        MemoryPoolType = enum("MemoryPoolType", {"WORKSPACE": 0})
        # BuilderFlag: TF32 on both; the precision flags only where the surface has them (10.x)
        BuilderFlag = enum("BuilderFlag", {"FP16": 0, "BF16": 17, "TF32": 4} if v10 else {"TF32": 4})
        NetworkDefinitionCreationFlag = enum("NetworkDefinitionCreationFlag",
                                             {"EXPLICIT_BATCH": 0, "STRONGLY_TYPED": 1} if v10 else {"STRONGLY_TYPED": 1})
        precision_flags = {getattr(BuilderFlag, n) for n in ("FP16", "BF16") if n in vars(BuilderFlag)}
        Severity = enum("Logger.Severity", {"INTERNAL_ERROR": 0, "ERROR": 1, "WARNING": 2, "INFO": 3, "VERBOSE": 4})

        class Logger(Api):
            _trt = "Logger"
            INTERNAL_ERROR, ERROR, WARNING = Severity.INTERNAL_ERROR, Severity.ERROR, Severity.WARNING
            INFO, VERBOSE = Severity.INFO, Severity.VERBOSE

            def __init__(self, min_severity: Any = None) -> None:
                self._min = min_severity

            def log(self, severity: Any, msg: str) -> None:
                fake.log.append(f"{severity}: {msg}")

        Logger.Severity = Severity  # type: ignore[attr-defined]

        def nptype(trt_type: Any) -> type:
            if type(trt_type) is DataType and trt_type.name in _NP:
                return _NP[trt_type.name]
            raise TypeError("Could not resolve TensorRT datatype to an equivalent numpy datatype.")

        class Dims(tuple):  # TensorRT's Dims behaves like a tuple
            pass

        class IHostMemory(Api):
            _trt = "IHostMemory"

            def __init__(self, data: bytes) -> None:
                self._data = bytes(data)

            @property
            def nbytes(self) -> int:
                return len(self._data)

            def __bytes__(self) -> bytes:
                return self._data

        class IOptimizationProfile(Api):
            _trt = "IOptimizationProfile"

            def __init__(self) -> None:
                self._shapes: dict[str, list[list[int]]] = {}

            def set_shape(self, input: str, min: Any, opt: Any, max: Any) -> None:
                fake.calls.append(("set_shape", input, tuple(min), tuple(opt), tuple(max)))
                self._shapes[input] = [list(min), list(opt), list(max)]

        class ITimingCache(Api):
            _trt = "ITimingCache"

            def __init__(self, data: bytes) -> None:
                self._data = bytes(data)

            def serialize(self) -> IHostMemory:
                return IHostMemory(self._data + b"+")

            def combine(self, input_cache: ITimingCache, ignore_mismatch: bool) -> bool:
                fake.calls.append(("combine",))
                self._data = self._data + input_cache._data
                return True

        class IBuilderConfig(Api):
            _trt = "IBuilderConfig"

            def __init__(self) -> None:
                self._flags = {BuilderFlag.TF32}  # TensorRT allows TF32 by default
                self._profiles: list[IOptimizationProfile] = []
                self._cache: ITimingCache | None = None

            def set_memory_pool_limit(self, pool: Any, pool_size: int) -> None:
                fake.calls.append(("pool", pool.name, pool_size))

            def set_flag(self, flag: Any) -> None:
                fake.calls.append(("flag", flag.name))
                self._flags.add(flag)

            def clear_flag(self, flag: Any) -> None:
                fake.calls.append(("clear_flag", flag.name))
                self._flags.discard(flag)

            def get_flag(self, flag: Any) -> bool:
                return flag in self._flags

            def add_optimization_profile(self, profile: IOptimizationProfile) -> int:
                fake.calls.append(("profile",))
                self._profiles.append(profile)
                return len(self._profiles) - 1

            def create_timing_cache(self, serialized_timing_cache: bytes) -> ITimingCache | None:
                data = bytes(serialized_timing_cache)
                fake.calls.append(("timing_in", data))
                return None if data.startswith(b"GARBAGE") else ITimingCache(data)

            def set_timing_cache(self, cache: ITimingCache, ignore_mismatch: bool) -> bool:
                self._cache = cache
                return True

            def get_timing_cache(self) -> ITimingCache | None:
                return self._cache

        class INetworkDefinition(Api):
            _trt = "INetworkDefinition"

            def __init__(self, strongly_typed: bool) -> None:
                self._onnx, self._strongly_typed = b"", strongly_typed

        class ParserError(Api):
            _trt = "ParserError"

            def __init__(self, text: str) -> None:
                self._text = text

            def desc(self) -> str:
                return self._text

            def __str__(self) -> str:
                return self._text

        class OnnxParser(Api):
            _trt = "OnnxParser"

            def __init__(self, network: INetworkDefinition, logger: Logger) -> None:
                self._network, self._errors = network, []

            @property
            def num_errors(self) -> int:
                return len(self._errors)

            def get_error(self, index: int) -> ParserError:
                return self._errors[index]

            def supports_operator(self, op_name: str) -> bool:
                return op_name not in FAKE_UNSUPPORTED

            def parse_from_file(self, model: str) -> bool:
                import onnx

                fake.calls.append(("parse", model.rsplit("/", 1)[-1]))
                data = Path(model).read_bytes()
                graph = onnx.load_from_string(data).graph
                errors = [f"No importer registered for op: {op}"
                          for op in sorted({n.op_type for n in graph.node} & FAKE_UNSUPPORTED)]
                u8 = {i.name for i in graph.input if i.type.tensor_type.elem_type == onnx.TensorProto.UINT8}
                errors += [f"{n.name or n.op_type}: UINT8 input {name!r} must be consumed by a Cast layer, not "
                           f"{n.op_type}" for n in graph.node for name in n.input if name in u8 and n.op_type != "Cast"]
                self._errors = [ParserError(e) for e in errors]
                self._network._onnx = data
                return not errors

        class Builder(Api):
            _trt = "Builder"

            def __init__(self, logger: Logger) -> None:
                self._logger = logger

            def create_network(self, flags: int = 0) -> INetworkDefinition:
                fake.network_flags.append(int(flags))
                strong = not v10 or bool(int(flags) & (1 << int(NetworkDefinitionCreationFlag.STRONGLY_TYPED)))
                return INetworkDefinition(strong)

            def create_builder_config(self) -> IBuilderConfig:
                return IBuilderConfig()

            def create_optimization_profile(self) -> IOptimizationProfile:
                return IOptimizationProfile()

            def build_serialized_network(self, network: INetworkDefinition, config: IBuilderConfig) -> Any:
                fake.calls.append(("build",))
                if fake.fail_builds:
                    return None
                if not network._strongly_typed:
                    fake.log.append("ERROR: the double builds strongly typed networks only (weak typing is "
                                    "deprecated since TensorRT 10.12 and removed in 11)")
                    return None
                if config._flags & precision_flags:
                    fake.log.append("ERROR: precision builder flags are not allowed on a strongly typed network")
                    return None
                if len(config._profiles) != 1:
                    return None
                header = {"version": fake.__version__, "sm": fake.compute_capability, "corrupt": fake.corrupt_engines,
                          "profile": config._profiles[0]._shapes, "tf32": BuilderFlag.TF32 in config._flags}
                return IHostMemory(b"FAKEPLAN" + json.dumps(header).encode() + b"\n" + network._onnx)

        streams: dict[int, list] = {}
        buffers: dict[int, Any] = {}
        tombstones: dict[int, Any] = {}
        lock = threading.Lock()

        def live(ptr: int, n: int) -> bool:
            b = buffers.get(ptr)
            return b is not None and ctypes.sizeof(b) >= n

        class IExecutionContext(Api):
            _trt = "IExecutionContext"

            def __init__(self, engine: ICudaEngine) -> None:
                self._engine, self._shapes, self._addresses = engine, {}, {}

            def set_input_shape(self, name: str, shape: Any) -> bool:
                if name not in self._engine._profile:
                    return False
                lo, _, hi = self._engine._profile[name]
                shape = tuple(int(d) for d in shape)
                if len(shape) != len(lo) or any(not a <= d <= b for d, a, b in zip(shape, lo, hi)):
                    return False
                self._shapes[name] = shape
                return True

            def set_tensor_address(self, name: str, memory: int) -> bool:
                if name not in self._engine._io or not memory or memory not in buffers:
                    return False
                self._addresses[name] = memory
                return True

            def get_tensor_shape(self, name: str) -> Dims:
                engine = self._engine
                rank = len(engine._io[name][1].shape)
                if fake.unresolved_outputs or any(i.name not in self._shapes for i in engine._session.get_inputs()):
                    return Dims([-1] * rank)
                symbols = {}
                for i in engine._session.get_inputs():
                    for dim, got in zip(i.shape, self._shapes[i.name]):
                        if isinstance(dim, str):
                            symbols[dim] = got
                out = engine._io[name][1]
                return Dims(symbols.get(d, -1) if isinstance(d, str) else d for d in out.shape)

            def execute_async_v3(self, stream_handle: int) -> bool:
                engine = self._engine
                inputs = [i.name for i in engine._session.get_inputs()]
                if any(n not in self._shapes for n in inputs) or any(n not in self._addresses for n in engine._io):
                    return False
                shapes, addresses = dict(self._shapes), dict(self._addresses)  # captured at enqueue

                def work() -> int:
                    feeds = {}
                    for name in inputs:
                        dtype = np.dtype(nptype(engine._dtype(name)))
                        n = int(np.prod(shapes[name])) * dtype.itemsize
                        if not live(addresses[name], n):
                            return 700  # cudaErrorIllegalAddress
                        buf = (ctypes.c_char * n).from_address(addresses[name])
                        feeds[name] = np.frombuffer(buf, dtype=dtype).reshape(shapes[name]).copy()
                    outs = engine._session.run(None, feeds)
                    for o, arr in zip(engine._session.get_outputs(), outs):
                        arr = np.ascontiguousarray(arr, dtype=nptype(engine._dtype(o.name)))
                        if engine._corrupt:
                            arr = arr[::-1].copy()
                        if not live(addresses[o.name], arr.nbytes):
                            return 700
                        ctypes.memmove(addresses[o.name], arr.ctypes.data, arr.nbytes)
                    return 0

                streams[stream_handle].append(work)
                return True

        class ICudaEngine(Api):
            _trt = "ICudaEngine"

            def __init__(self, header: dict[str, Any], onnx_bytes: bytes) -> None:
                self._corrupt = header["corrupt"]
                self._profile = {k: [tuple(s) for s in v] for k, v in header["profile"].items()}
                so = ort.SessionOptions()
                so.intra_op_num_threads = 1
                so.log_severity_level = 3
                # ONNX Runtime's NchwcTransformer crashes on the fp16 converter's graphs (foclip.exporter.parity)
                self._session = ort.InferenceSession(onnx_bytes, so, providers=["CPUExecutionProvider"],
                                                     disabled_optimizers=["NchwcTransformer"])
                self._io = {t.name: (TensorIOMode.INPUT, t) for t in self._session.get_inputs()}
                self._io.update({t.name: (TensorIOMode.OUTPUT, t) for t in self._session.get_outputs()})
                self._names = list(self._io)

            def _dtype(self, name: str) -> Any:
                return getattr(DataType, _ORT_TO_TRT[self._io[name][1].type])

            @property
            def num_io_tensors(self) -> int:
                return len(self._names)

            def get_tensor_name(self, index: int) -> str:
                return self._names[index]

            def get_tensor_mode(self, name: str) -> Any:
                return self._io[name][0] if name in self._io else TensorIOMode.NONE

            def get_tensor_shape(self, name: str) -> Dims:
                return Dims(d if isinstance(d, int) else -1 for d in self._io[name][1].shape)

            def get_tensor_dtype(self, name: str) -> Any:
                return self._dtype(name)

            def get_tensor_profile_shape(self, name: str, profile_index: int) -> list[Dims]:
                if profile_index != 0 or name not in self._profile:
                    raise RuntimeError(f"no profile {profile_index} for {name}")
                return [Dims(s) for s in self._profile[name]]

            def create_execution_context(self) -> IExecutionContext | None:
                return None if fake.fail_contexts else IExecutionContext(self)

        class Runtime(Api):
            _trt = "Runtime"

            def __init__(self, logger: Logger) -> None:
                self._logger = logger

            def deserialize_cuda_engine(self, serialized_engine: bytes) -> ICudaEngine | None:
                fake.calls.append(("deserialize",))
                plan = bytes(serialized_engine)
                if not plan.startswith(b"FAKEPLAN"):
                    return None
                head, _, onnx_bytes = plan[len(b"FAKEPLAN"):].partition(b"\n")
                header = json.loads(head)
                if header["version"] != fake.__version__ or header["sm"] != fake.compute_capability:
                    return None  # TensorRT logs "serialized with a different version / device" and returns None
                return ICudaEngine(header, onnx_bytes)

        self.Logger, self.Builder, self.BuilderFlag, self.OnnxParser, self.Runtime = (
            Logger, Builder, BuilderFlag, OnnxParser, Runtime)
        self.NetworkDefinitionCreationFlag, self.MemoryPoolType = NetworkDefinitionCreationFlag, MemoryPoolType
        self.TensorIOMode, self.DataType, self.nptype = TensorIOMode, DataType, nptype
        # every class a caller can reach, by its TensorRT name (the surface test walks them)
        self.api_names = {c._trt: c for c in (Logger, Severity, Builder, BuilderFlag, NetworkDefinitionCreationFlag,
                                               INetworkDefinition, OnnxParser, ParserError, IBuilderConfig,
                                               MemoryPoolType, IOptimizationProfile, ITimingCache, IHostMemory, Runtime,
                                               ICudaEngine, IExecutionContext, TensorIOMode, DataType)}

        # CUDA runtime bindings: device memory is host memory; streams are queues run at synchronize.
        def malloc(n: int) -> tuple[int, int]:
            b = ctypes.create_string_buffer(max(int(n), 1))
            buffers[ctypes.addressof(b)] = b
            return 0, ctypes.addressof(b)

        def free(ptr: int) -> tuple[int]:
            b = buffers.pop(ptr, None)
            if b is None:
                return (1,)  # cudaErrorInvalidValue
            tombstones[ptr] = b  # keep the memory: a stale use is an error code, never a segfault
            return (0,)

        def memcpy(dst: int, src: int, n: int, kind: int, stream: int) -> tuple[int]:
            if stream not in streams:
                return (400,)  # cudaErrorInvalidResourceHandle
            if kind == 1:  # host -> device: the pageable source is staged now, written at sync
                data = ctypes.string_at(src, n)

                def work() -> int:
                    if not live(dst, n):
                        return 700
                    ctypes.memmove(dst, data, n)
                    return 0
            else:  # device -> host: read at sync

                def work() -> int:
                    if not live(src, n):
                        return 700
                    ctypes.memmove(dst, src, n)
                    return 0
            streams[stream].append(work)
            return (0,)

        def stream_create() -> tuple[int, int]:
            with lock:
                sid = len(streams) + 1
                while sid in streams:
                    sid += 1
                streams[sid] = []
            return 0, sid

        def synchronize(stream: int) -> tuple[int]:
            if stream not in streams:
                return (400,)
            err = 0
            while streams[stream]:
                err = streams[stream].pop(0)() or err
            return (err,)

        def destroy(stream: int) -> tuple[int]:
            return (0,) if streams.pop(stream, None) is not None else (400,)

        def attribute(attr: str, device: int) -> tuple[int, int]:
            major, minor = fake.compute_capability.split(".")
            return 0, int(major if attr == "major" else minor)

        cudart = types.ModuleType("cuda.bindings.runtime")
        cudart.cudaMalloc = malloc
        cudart.cudaFree = free
        cudart.cudaMemcpyAsync = memcpy
        cudart.cudaStreamCreate = stream_create
        cudart.cudaStreamDestroy = destroy
        cudart.cudaStreamSynchronize = synchronize
        cudart.cudaDeviceGetAttribute = attribute
        cudart.cudaDriverGetVersion = lambda: (0, fake.driver_version)
        cudart.cudaDeviceAttr = type("cudaDeviceAttr", (), {"cudaDevAttrComputeCapabilityMajor": "major",
                                                            "cudaDevAttrComputeCapabilityMinor": "minor"})
        cudart.cudaMemcpyKind = type("cudaMemcpyKind", (), {"cudaMemcpyHostToDevice": 1,
                                                            "cudaMemcpyDeviceToHost": 2})
        self.cudart = cudart
        self.buffers = buffers
        self.streams = streams

    def __getattribute__(self, name: str) -> Any:
        value = object.__getattribute__(self, name)
        if not name.startswith("_") and name not in CONTROLS:
            object.__getattribute__(self, "used").add(name)
        return value

    def offered_names(self) -> set[str]:
        """Every TensorRT name the double offers: module level, and each class's public members."""
        names = {n for n in vars(self) if not n.startswith("_") and n not in CONTROLS}
        for trt_name, cls in self.api_names.items():
            names.add(trt_name)
            for klass in type.__getattribute__(cls, "__mro__"):
                if klass in (object,) or klass.__name__ == "Api":
                    continue
                names |= {f"{trt_name}.{n}" for n in vars(klass) if not n.startswith("_")}
        return names

    def install(self, monkeypatch: Any) -> FakeTensorRT:
        """Put the fake into sys.modules (tensorrt, cuda.bindings.runtime), fake a GPU and its CUDA builds."""
        import sys

        from foclip.exporter import engine

        cuda = types.ModuleType("cuda")
        cuda.__spec__ = importlib.machinery.ModuleSpec("cuda", None)
        bindings = types.ModuleType("cuda.bindings")
        bindings.runtime = self.cudart
        cuda.bindings = bindings
        monkeypatch.setitem(sys.modules, "tensorrt", self)
        monkeypatch.setitem(sys.modules, "cuda", cuda)
        monkeypatch.setitem(sys.modules, "cuda.bindings", bindings)
        monkeypatch.setitem(sys.modules, "cuda.bindings.runtime", self.cudart)
        monkeypatch.setattr(engine, "gpu_compute_capability", lambda: self.compute_capability)
        try:  # foclip before the CUDA check (9b2574a) has no trt_env: the double still installs
            from foclip.runtime import trt_env

            monkeypatch.setattr(trt_env, "installed_cuda_builds", lambda: dict(self.cuda_builds))
        except ImportError:
            pass
        return self
