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


class FakeTensorRT:
    """A stand-in for the TensorRT 10 Python API and CUDA runtime bindings, for CPU tests.

    Only the calls foclip makes exist (none of the removed v2 API). The "engine" a build
    serialises is the source ONNX file's bytes; deserialising it opens an ONNX Runtime session,
    and device memory is host memory (ctypes buffers), so a whole build -> load -> run round trip
    computes real numbers. ``calls`` records what foclip asked for.
    """

    __version__ = "10.99.0-fake"

    def __init__(self, corrupt_engines: bool = False):
        import ctypes
        import importlib.machinery
        import types

        import onnxruntime as ort

        self.calls: list[tuple] = []
        self.corrupt_engines = corrupt_engines
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
        self.BuilderFlag = type("BuilderFlag", (), {"FP16": "fp16-flag", "BF16": "bf16-flag"})
        self.nptype = lambda dtype: dtype

        class Profile:
            def set_shape(self, name, lo, opt, hi):
                fake.calls.append(("set_shape", name, tuple(lo), tuple(opt), tuple(hi)))

        class Cache:
            def __init__(self, data):
                self.data = bytes(data)

            def serialize(self):
                return self.data + b"+"

        class Config:
            def set_memory_pool_limit(self, pool, size):
                fake.calls.append(("pool", pool, size))

            def set_flag(self, flag):
                fake.calls.append(("flag", flag))

            def add_optimization_profile(self, profile):
                fake.calls.append(("profile",))

            def create_timing_cache(self, data):
                fake.calls.append(("timing_in", bytes(data)))
                return Cache(data)

            def set_timing_cache(self, cache, ignore_mismatch):
                self.cache = cache

            def get_timing_cache(self):
                return self.cache

        class Network:
            onnx = b""

        class Parser:
            num_errors = 0

            def __init__(self, network, logger):
                self.network = network

            def parse_from_file(self, path):
                fake.calls.append(("parse", path.rsplit("/", 1)[-1]))
                with open(path, "rb") as f:
                    self.network.onnx = f.read()
                return True

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
                if fake.corrupt_engines:  # an engine that computes something else: flip the graph
                    return b"FAKEPLAN-CORRUPT" + network.onnx
                return b"FAKEPLAN" + network.onnx

        class Context:
            def __init__(self, engine):
                self.engine, self.shapes, self.addresses = engine, {}, {}

            def set_input_shape(self, name, shape):
                self.shapes[name] = tuple(shape)

            def set_tensor_address(self, name, ptr):
                self.addresses[name] = ptr

            def get_tensor_shape(self, name):
                symbols = {}
                for i in self.engine.session.get_inputs():
                    for dim, got in zip(i.shape, self.shapes[i.name]):
                        if isinstance(dim, str):
                            symbols[dim] = got
                out = next(o for o in self.engine.session.get_outputs() if o.name == name)
                return [symbols[d] if isinstance(d, str) else d for d in out.shape]

            def execute_async_v3(self, stream):
                feeds = {}
                for i in self.engine.session.get_inputs():
                    dtype = self.engine.get_tensor_dtype(i.name)
                    shape = self.shapes[i.name]
                    n = int(np.prod(shape)) * np.dtype(dtype).itemsize
                    buf = (ctypes.c_char * n).from_address(self.addresses[i.name])
                    feeds[i.name] = np.frombuffer(buf, dtype=dtype).reshape(shape).copy()
                outs = self.engine.session.run(None, feeds)
                for o, arr in zip(self.engine.session.get_outputs(), outs):
                    arr = np.ascontiguousarray(arr, dtype=self.engine.get_tensor_dtype(o.name))
                    if self.engine.corrupt:
                        arr = arr[::-1].copy()
                    ctypes.memmove(self.addresses[o.name], arr.ctypes.data, arr.nbytes)
                return True

        types_ = {"tensor(float)": np.float32, "tensor(uint8)": np.uint8, "tensor(int64)": np.int64}

        class Engine:
            def __init__(self, plan):
                self.corrupt = plan.startswith(b"FAKEPLAN-CORRUPT")
                onnx_bytes = plan[len(b"FAKEPLAN-CORRUPT") if self.corrupt else len(b"FAKEPLAN"):]
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

            def create_execution_context(self):
                return Context(self)

        class Runtime:
            def __init__(self, logger):
                pass

            def deserialize_cuda_engine(self, plan):
                fake.calls.append(("deserialize",))
                return Engine(bytes(plan)) if plan.startswith(b"FAKEPLAN") else None

        self.Builder, self.OnnxParser, self.Runtime = Builder, Parser, Runtime

        # CUDA runtime bindings: device memory is host memory.
        buffers: dict[int, object] = {}

        def malloc(n):
            b = ctypes.create_string_buffer(max(int(n), 1))
            buffers[ctypes.addressof(b)] = b
            return 0, ctypes.addressof(b)

        def memcpy(dst, src, n, kind, stream):
            ctypes.memmove(dst, src, n)
            return (0,)

        cudart = types.ModuleType("cuda.bindings.runtime")
        cudart.cudaMalloc = malloc
        cudart.cudaFree = lambda ptr: (buffers.pop(ptr, None), 0)[1:]
        cudart.cudaMemcpyAsync = memcpy
        cudart.cudaStreamCreate = lambda: (0, 1)
        cudart.cudaStreamDestroy = lambda s: (0,)
        cudart.cudaStreamSynchronize = lambda s: (0,)
        cudart.cudaMemcpyKind = type("cudaMemcpyKind", (), {"cudaMemcpyHostToDevice": 1,
                                                            "cudaMemcpyDeviceToHost": 2})
        self.cudart = cudart
        self.buffers = buffers

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
        monkeypatch.setattr(engine, "gpu_compute_capability", lambda: "9.0")
        return self


@pytest.fixture
def fake_trt(monkeypatch):
    """A working stand-in TensorRT (see :class:`FakeTensorRT`), installed for one test."""
    return FakeTensorRT().install(monkeypatch)
