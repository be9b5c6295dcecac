"""Each --int8-method makes a graph that runs; static QDQ quantises MatMul/Gemm only and holds the gate."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from foclip.exporter import convert
from foclip.exporter.parity import cosine_rows


@pytest.fixture(scope="module")
def pixels(sample_photos):
    from PIL import Image

    from foclip.manifest import PreprocessSpec
    from foclip.runtime.preprocess import to_pixels

    spec = PreprocessSpec(image_size=64)
    return np.stack([to_pixels(Image.fromarray(a), spec) for a in sample_photos.values()]).astype(np.float32)


def _run(path, x):
    so = ort.SessionOptions()
    so.log_severity_level = 3
    s = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    return s.run(None, {s.get_inputs()[0].name: x})[0]


@pytest.mark.parametrize("method", sorted(convert.INT8_METHODS))
def test_int8_method_runs_and_stays_close_to_fp32(tiny_bundle, tmp_path, pixels, method):
    src = tiny_bundle / "image_encoder.fp32.onnx"
    dst = tmp_path / f"{method}.onnx"
    convert.to_int8(src, dst, method, calibration_pixels=pixels[:2])
    cos = cosine_rows(_run(src, pixels), _run(dst, pixels))
    print(f"{method}: min cosine vs fp32 ONNX {cos.min():.6f} on {len(pixels)} photos (2 used for calibration)")
    assert cos.min() >= 0.99  # the int8 gate; foclip-tiny measured >= 0.999 for every method
    if convert.INT8_METHODS[method].kind == "static":
        graph = onnx.load(str(dst)).graph
        weights = {t.name for t in graph.initializer}
        dq_of_weights = {o for n in graph.node if n.op_type == "DequantizeLinear" and n.input[0] in weights
                         for o in n.output}
        users = {n.op_type for n in graph.node if dq_of_weights & set(n.input)}
        assert users and users <= {"MatMul", "Gemm"}, users  # int8 weights only where asked (the Conv stays fp32)


def test_static_method_needs_calibration_photos(tiny_bundle, tmp_path):
    from foclip.errors import InputError

    with pytest.raises(InputError, match="has no calibration photos"):
        convert.to_int8(tiny_bundle / "image_encoder.fp32.onnx", tmp_path / "s.onnx", "static-qdq")
