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
from trt_double import SURFACES, FakeTensorRT


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


@pytest.fixture(params=SURFACES)
def fake_trt(request, monkeypatch):
    """A working stand-in TensorRT (tests/trt_double.py), installed for one test, once per real API
    surface (TensorRT 10.13 and 11.4)."""
    return FakeTensorRT(request.param).install(monkeypatch)
