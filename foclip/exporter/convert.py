"""Lower-precision copies of an exported fp32 graph, made with ONNX Runtime's own tools.

* fp16: ``onnxruntime.transformers.float16.convert_float_to_float16`` with ``keep_io_types=True``
  (inputs/outputs stay float32, so the runtime feeds the same arrays at every precision).
* int8: ``onnxruntime.quantization.quantize_dynamic`` (weights QInt8, activations quantised at run
  time), optionally on the output of ONNX Runtime's transformer optimizer.
"""

from __future__ import annotations

import contextlib
import logging
import tempfile
from collections.abc import Iterator
from pathlib import Path


def to_fp16(src: Path, dst: Path) -> None:
    """Convert an fp32 ONNX file to fp16 weights/compute with fp32 IO.

    Args:
        src: fp32 model.
        dst: output path.
    """
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16
    from onnxruntime.transformers.onnx_model import OnnxModel

    model = OnnxModel(convert_float_to_float16(onnx.load(str(src)), keep_io_types=True))
    model.topological_sort()  # the converter appends its IO Cast nodes last; onnx.checker wants order
    onnx.save(model.model, str(dst))
    onnx.checker.check_model(str(dst), full_check=True)


def optimize_transformer(src: Path, dst: Path, num_heads: int = 0, hidden_size: int = 0) -> None:
    """Run ONNX Runtime's transformer optimizer (``model_type='clip'``) on a graph.

    Args:
        src: fp32 model.
        dst: output path.
        num_heads: attention heads (0 lets the optimizer detect them).
        hidden_size: transformer width (0 lets the optimizer detect it).
    """
    from onnxruntime.transformers.optimizer import optimize_model

    opt = optimize_model(str(src), model_type="clip", num_heads=num_heads, hidden_size=hidden_size, opt_level=0)
    opt.save_model_to_file(str(dst))


@contextlib.contextmanager
def _without_preprocessing_advice() -> Iterator[None]:
    """Drop the quantiser's "Please consider to run pre-processing" root-logger warning for one call.

    It is logged with ``logging.warning()`` on the root logger, which installs a stderr handler
    (``basicConfig``) when none exists; a temporary last-resort handler keeps that from happening,
    and other warnings still reach stderr as they would have.
    """
    root = logging.getLogger()
    advice = lambda record: "run pre-processing before quantization" not in record.getMessage()  # noqa: E731
    added = [] if root.handlers else [logging.lastResort]
    for h in added:
        root.addHandler(h)
    root.addFilter(advice)
    try:
        yield
    finally:
        root.removeFilter(advice)
        for h in added:
            root.removeHandler(h)


def to_int8(src: Path, dst: Path, optimize: bool = False) -> None:
    """Dynamic int8 quantisation of an fp32 graph (MatMul/Gemm/Conv weights as QInt8).

    Args:
        src: fp32 model.
        dst: output path.
        optimize: run the transformer optimizer first (its output needs
            ``DefaultTensorType`` for the quantiser, see FIELD_NOTES).
    """
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with tempfile.TemporaryDirectory(dir=dst.parent, prefix=".quant-") as tmp:
        model_in = src
        extra: dict = {}
        if optimize:
            model_in = Path(tmp) / "optimized.onnx"
            optimize_transformer(src, model_in)
            extra["DefaultTensorType"] = onnx.TensorProto.FLOAT
        with _without_preprocessing_advice():
            quantize_dynamic(str(model_in), str(dst), weight_type=QuantType.QInt8, extra_options=extra)
    onnx.checker.check_model(str(dst), full_check=True)
