"""Test-wide settings: offline hub, small thread counts, real sample photos."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
# At most two threads per math library: CI has 2 cores, and on larger machines several test
# processes (Ray workers, subprocess CLIs) would otherwise each start one thread per core.
for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ.setdefault(_var, "2")

import numpy as np
import pytest


def _cuda_available() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except ImportError:
        return False


def pytest_collection_modifyitems(config, items):
    if _cuda_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def sample_photos() -> dict[str, np.ndarray]:
    """Real photos that ship with scikit-image (uint8 RGB arrays), loaded offline."""
    from skimage import data

    return {name: getattr(data, name)() for name in ("astronaut", "chelsea", "coffee", "rocket")}


@pytest.fixture(scope="session")
def sample_photo_dir(tmp_path_factory, sample_photos):
    """The sample photos written as JPEG/PNG files into a folder."""
    from PIL import Image

    d = tmp_path_factory.mktemp("photos")
    for i, (name, arr) in enumerate(sample_photos.items()):
        ext = "jpg" if i % 2 else "png"
        Image.fromarray(arr).save(d / f"{name}.{ext}", quality=95)
    return d


@pytest.fixture(scope="session")
def tiny_bundle(tmp_path_factory):
    """A foclip-tiny (random weights) bundle: fp32/fp16/int8 image encoders, fp32/fp16 text encoders,
    the `artistic` text bank, tokenizer, detect.fp32.onnx, parity.json. Exported once per session
    (~5 s); treat it as read-only (copy it before changing files)."""
    from foclip.exporter import ExportConfig, export_bundle

    out = tmp_path_factory.mktemp("bundles") / "tiny"
    export_bundle(ExportConfig(model_name="foclip-tiny", pretrained="random", prompts=("artistic",),
                               precisions=("fp32", "fp16", "int8"), opset=18, seed=0, detect_graph=True), out)
    return out


# Ops the TensorRT 10 ONNX parser marks unsupported that foclip graphs can contain (onnx-tensorrt
# docs/operators.md); the double's parser refuses them as the real one does.
_FAKE_UNSUPPORTED = {"DynamicQuantizeLinear", "MatMulInteger", "ConvInteger", "QLinearConv", "QLinearMatMul"}


def reduced_precision_onnx(onnx_bytes: bytes, precision: str) -> bytes:
    """An fp32 ONNX graph computing as an fp16/bf16 engine stores numbers: every float weight and
    every float node output rounded to ``precision`` (Cast to it and back; compute stays fp32, as
    TensorRT's fp32-accumulating kernels). Measured on foclip-tiny (random): detect.fp32 min
    cosine-equivalent 0.999985 at fp16 and 0.999896 at bf16, so the fp32 gate (0.99999) fails and
    the engine gates (0.999, 0.995) pass."""
    import ml_dtypes
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    to, fmt = {"fp16": (TensorProto.FLOAT16, np.float16), "bf16": (TensorProto.BFLOAT16, ml_dtypes.bfloat16)}[precision]
    model = onnx.load_from_string(onnx_bytes)
    for init in model.graph.initializer:
        arr = numpy_helper.to_array(init)
        if arr.dtype == np.float32:
            init.CopyFrom(numpy_helper.from_array(arr.astype(fmt).astype(np.float32), init.name))
    typed = onnx.shape_inference.infer_shapes(model).graph
    floats = {v.name for v in [*typed.value_info, *typed.output] if v.type.tensor_type.elem_type == TensorProto.FLOAT}
    nodes = []
    for node in model.graph.node:
        nodes.append(node)
        for i, out in enumerate(list(node.output)):
            if out in floats and node.op_type not in ("Shape", "Constant"):
                node.output[i] = f"{out}__full"
                nodes.append(helper.make_node("Cast", [f"{out}__full"], [f"{out}__low"], to=to))
                nodes.append(helper.make_node("Cast", [f"{out}__low"], [out], to=TensorProto.FLOAT))
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    return model.SerializeToString()


class FakeTensorRT:
    """A stand-in for the TensorRT 10 Python API and CUDA runtime bindings, for CPU tests.

    Only the calls foclip makes exist (none of the removed v2 API), and it fails where TensorRT
    fails (the point of a double: a runner that ignores a status must fail a test):

    * the parser refuses ops TensorRT's ONNX parser does not support (returns False + errors);
    * a plan records the version, compute capability and optimisation profile it was built with;
      ``deserialize_cuda_engine`` returns None for a plan of another version or GPU;
    * ``set_input_shape`` returns False outside the profile, ``set_tensor_address`` for an
      unknown tensor or a null/freed address, ``execute_async_v3`` when a shape or address is
      missing; ``create_execution_context`` returns None when ``fail_contexts`` is set;
    * work is asynchronous: copies and ``execute_async_v3`` are queued on the stream and run at
      ``cudaStreamSynchronize``, which reads device buffers *then* (results are visible only after
      it); a freed buffer is kept as a tombstone and any use of it is a CUDA error, not a crash;
    * FP16/BF16 engines compute in reduced precision (:func:`reduced_precision_onnx`).

    The "engine" computes with ONNX Runtime on the CPU; device memory is host memory (ctypes).
    ``calls`` records what foclip asked for.
    """

    __version__ = "10.99.0-fake"

    def __init__(self, corrupt_engines: bool = False):
        import ctypes
        import importlib.machinery
        import json
        import threading
        import types

        import onnxruntime as ort

        self.calls: list[tuple] = []
        self.corrupt_engines = corrupt_engines
        self.fail_builds = False
        self.fail_contexts = False
        self.compute_capability = "9.0"
        fake = self
        self.__spec__ = importlib.machinery.ModuleSpec("tensorrt", None)

        class Logger:
            WARNING = 2

            def __init__(self, level):
                pass

        class TensorIOMode:
            INPUT, OUTPUT = "in", "out"

        self.Logger, self.TensorIOMode = Logger, TensorIOMode
        self.MemoryPoolType = type("MemoryPoolType", (), {"WORKSPACE": "workspace"})
        self.BuilderFlag = type("BuilderFlag", (), {"FP16": "fp16-flag", "BF16": "bf16-flag", "TF32": "tf32-flag"})
        self.nptype = lambda dtype: dtype

        class Profile:
            def __init__(self):
                self.shapes = {}

            def set_shape(self, name, lo, opt, hi):
                fake.calls.append(("set_shape", name, tuple(lo), tuple(opt), tuple(hi)))
                self.shapes[name] = [list(lo), list(opt), list(hi)]

        class Cache:
            def __init__(self, data):
                self.data = bytes(data)

            def serialize(self):
                return self.data + b"+"

            def combine(self, other, ignore_mismatch):
                fake.calls.append(("combine",))
                self.data = self.data + other.data
                return True

        class Config:
            def __init__(self):
                self.flags, self.profile = {"tf32-flag"}, None  # TensorRT allows TF32 by default

            def set_memory_pool_limit(self, pool, size):
                fake.calls.append(("pool", pool, size))

            def set_flag(self, flag):
                fake.calls.append(("flag", flag))
                self.flags.add(flag)

            def clear_flag(self, flag):
                fake.calls.append(("clear_flag", flag))
                self.flags.discard(flag)

            def add_optimization_profile(self, profile):
                fake.calls.append(("profile",))
                self.profile = profile

            def create_timing_cache(self, data):
                fake.calls.append(("timing_in", bytes(data)))
                return None if bytes(data).startswith(b"GARBAGE") else Cache(data)

            def set_timing_cache(self, cache, ignore_mismatch):
                self.cache = cache

            def get_timing_cache(self):
                return self.cache

        class Network:
            onnx = b""

        class Parser:
            def __init__(self, network, logger):
                self.network, self.errors = network, []

            @property
            def num_errors(self):
                return len(self.errors)

            def get_error(self, i):
                return self.errors[i]

            def supports_operator(self, op):
                return op not in _FAKE_UNSUPPORTED

            def parse_from_file(self, path):
                import onnx

                fake.calls.append(("parse", path.rsplit("/", 1)[-1]))
                with open(path, "rb") as f:
                    data = f.read()
                ops = {n.op_type for n in onnx.load_from_string(data).graph.node}
                self.errors = [f"No importer registered for op: {op}" for op in sorted(ops & _FAKE_UNSUPPORTED)]
                self.network.onnx = data
                return not self.errors

        class Builder:
            def __init__(self, logger):
                pass

            def create_network(self, flags):
                return Network()

            def create_builder_config(self):
                return Config()

            def create_optimization_profile(self):
                return Profile()

            def build_serialized_network(self, network, config):
                fake.calls.append(("build",))
                if fake.fail_builds:
                    return None
                onnx_bytes = network.onnx
                precision = "fp16" if "fp16-flag" in config.flags else "bf16" if "bf16-flag" in config.flags else "fp32"
                if precision != "fp32":
                    onnx_bytes = reduced_precision_onnx(onnx_bytes, precision)
                header = {"version": fake.__version__, "sm": fake.compute_capability, "precision": precision,
                          "corrupt": fake.corrupt_engines, "profile": config.profile.shapes,
                          "tf32": "tf32-flag" in config.flags}
                return b"FAKEPLAN" + json.dumps(header).encode() + b"\n" + onnx_bytes

        streams: dict[int, list] = {}
        buffers: dict[int, object] = {}
        tombstones: dict[int, object] = {}
        lock = threading.Lock()

        def live(ptr, n):
            b = buffers.get(ptr)
            return b is not None and ctypes.sizeof(b) >= n

        class Context:
            def __init__(self, engine):
                self.engine, self.shapes, self.addresses = engine, {}, {}

            def set_input_shape(self, name, shape):
                if name not in self.engine.profile:
                    return False
                lo, _, hi = self.engine.profile[name]
                shape = tuple(int(d) for d in shape)
                if len(shape) != len(lo) or any(not a <= d <= b for d, a, b in zip(shape, lo, hi)):
                    return False
                self.shapes[name] = shape
                return True

            def set_tensor_address(self, name, ptr):
                if not any(n == name for n, _, _ in self.engine.io) or not ptr or ptr not in buffers:
                    return False
                self.addresses[name] = ptr
                return True

            def get_tensor_shape(self, name):
                symbols = {}
                for i in self.engine.session.get_inputs():
                    if i.name not in self.shapes:
                        return [-1 for _ in next(t for n, _, t in self.engine.io if n == name).shape]
                    for dim, got in zip(i.shape, self.shapes[i.name]):
                        if isinstance(dim, str):
                            symbols[dim] = got
                out = next(o for o in self.engine.session.get_outputs() if o.name == name)
                return [symbols[d] if isinstance(d, str) else d for d in out.shape]

            def execute_async_v3(self, stream):
                names = [n for n, _, _ in self.engine.io]
                inputs = [i.name for i in self.engine.session.get_inputs()]
                if any(n not in self.shapes for n in inputs) or any(n not in self.addresses for n in names):
                    return False
                shapes, addresses = dict(self.shapes), dict(self.addresses)  # captured at enqueue
                engine = self.engine

                def work():
                    feeds = {}
                    for i in engine.session.get_inputs():
                        dtype = engine.get_tensor_dtype(i.name)
                        shape = shapes[i.name]
                        n = int(np.prod(shape)) * np.dtype(dtype).itemsize
                        if not live(addresses[i.name], n):
                            return 700  # cudaErrorIllegalAddress
                        buf = (ctypes.c_char * n).from_address(addresses[i.name])
                        feeds[i.name] = np.frombuffer(buf, dtype=dtype).reshape(shape).copy()
                    outs = engine.session.run(None, feeds)
                    for o, arr in zip(engine.session.get_outputs(), outs):
                        arr = np.ascontiguousarray(arr, dtype=engine.get_tensor_dtype(o.name))
                        if engine.corrupt:
                            arr = arr[::-1].copy()
                        if not live(addresses[o.name], arr.nbytes):
                            return 700
                        ctypes.memmove(addresses[o.name], arr.ctypes.data, arr.nbytes)
                    return 0

                streams[stream].append(work)
                return True

        types_ = {"tensor(float)": np.float32, "tensor(uint8)": np.uint8, "tensor(int64)": np.int64}

        class Engine:
            def __init__(self, header, onnx_bytes):
                self.corrupt = header["corrupt"]
                self.profile = {k: [tuple(s) for s in v] for k, v in header["profile"].items()}
                so = ort.SessionOptions()
                so.intra_op_num_threads = 1
                self.session = ort.InferenceSession(onnx_bytes, so, providers=["CPUExecutionProvider"])
                self.io = [(t.name, TensorIOMode.INPUT, t) for t in self.session.get_inputs()] + [
                    (t.name, TensorIOMode.OUTPUT, t) for t in self.session.get_outputs()]
                self.num_io_tensors = len(self.io)

            def get_tensor_name(self, i):
                return self.io[i][0]

            def get_tensor_mode(self, name):
                return next(m for n, m, _ in self.io if n == name)

            def get_tensor_shape(self, name):
                t = next(t for n, _, t in self.io if n == name)
                return [d if isinstance(d, int) else -1 for d in t.shape]

            def get_tensor_dtype(self, name):
                return types_[next(t for n, _, t in self.io if n == name).type]

            def get_tensor_profile_shape(self, name, index):
                if index != 0 or name not in self.profile:
                    raise RuntimeError(f"no profile {index} for {name}")
                return [list(s) for s in self.profile[name]]

            def create_execution_context(self):
                return None if fake.fail_contexts else Context(self)

        class Runtime:
            def __init__(self, logger):
                pass

            def deserialize_cuda_engine(self, plan):
                fake.calls.append(("deserialize",))
                plan = bytes(plan)
                if not plan.startswith(b"FAKEPLAN"):
                    return None
                head, _, onnx_bytes = plan[len(b"FAKEPLAN"):].partition(b"\n")
                header = json.loads(head)
                if header["version"] != fake.__version__ or header["sm"] != fake.compute_capability:
                    return None  # TensorRT logs "serialized with a different version / device" and returns None
                return Engine(header, onnx_bytes)

        self.Builder, self.OnnxParser, self.Runtime = Builder, Parser, Runtime

        # CUDA runtime bindings: device memory is host memory; streams are queues run at synchronize.
        def malloc(n):
            b = ctypes.create_string_buffer(max(int(n), 1))
            buffers[ctypes.addressof(b)] = b
            return 0, ctypes.addressof(b)

        def free(ptr):
            b = buffers.pop(ptr, None)
            if b is None:
                return (1,)  # cudaErrorInvalidValue
            tombstones[ptr] = b  # keep the memory: a stale use is an error code, never a segfault
            return (0,)

        def memcpy(dst, src, n, kind, stream):
            if stream not in streams:
                return (400,)  # cudaErrorInvalidResourceHandle
            if kind == 1:  # host -> device: the pageable source is staged now, written at sync
                data = ctypes.string_at(src, n)

                def work():
                    if not live(dst, n):
                        return 700
                    ctypes.memmove(dst, data, n)
                    return 0
            else:  # device -> host: read at sync

                def work():
                    if not live(src, n):
                        return 700
                    ctypes.memmove(dst, src, n)
                    return 0
            streams[stream].append(work)
            return (0,)

        def stream_create():
            with lock:
                sid = len(streams) + 1 + len(tombstones) * 0
                while sid in streams:
                    sid += 1
                streams[sid] = []
            return 0, sid

        def synchronize(stream):
            if stream not in streams:
                return (400,)
            err = 0
            while streams[stream]:
                err = streams[stream].pop(0)() or err
            return (err,)

        def destroy(stream):
            return (0,) if streams.pop(stream, None) is not None else (400,)

        def attribute(attr, device):
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
        cudart.cudaDeviceAttr = type("cudaDeviceAttr", (), {"cudaDevAttrComputeCapabilityMajor": "major",
                                                            "cudaDevAttrComputeCapabilityMinor": "minor"})
        cudart.cudaMemcpyKind = type("cudaMemcpyKind", (), {"cudaMemcpyHostToDevice": 1,
                                                            "cudaMemcpyDeviceToHost": 2})
        self.cudart = cudart
        self.buffers = buffers
        self.streams = streams

    def install(self, monkeypatch) -> FakeTensorRT:
        """Put the fake into sys.modules (tensorrt, cuda.bindings.runtime) and fake a GPU."""
        import importlib.machinery
        import sys
        import types

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
        return self


@pytest.fixture
def fake_trt(monkeypatch):
    """A working stand-in TensorRT (see :class:`FakeTensorRT`), installed for one test."""
    return FakeTensorRT().install(monkeypatch)
