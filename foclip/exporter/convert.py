"""Lower-precision copies of an exported fp32 graph, made with ONNX Runtime's own tools.

* fp16: ``onnxruntime.transformers.float16.convert_float_to_float16`` with ``keep_io_types=True``
  (inputs/outputs stay float32, so the runtime feeds the same arrays at every precision).
* int8: ``onnxruntime.quantization`` in one of the :data:`INT8_METHODS` below.

Why the default int8 method is ``dynamic-u8s7``: on x86 CPUs without VNNI, ONNX Runtime's u8 x s8
GEMM adds pairs of products into saturating int16 lanes; with 8-bit signed weights those sums
overflow and the embeddings drift (min cosine 0.98 on a 2-core AVX2 EPYC, FIELD_NOTES). With 7-bit
weights (``reduce_range=True``, ONNX Runtime's documented setting for non-VNNI CPUs) a pair is at
most 255 * 63 * 2 = 32,130 < 32,767, so the same graph gives the same numbers on every x86 CPU.
``dynamic-s8`` (full 8-bit weights) is faster or more exact only where VNNI exists and is never
the default; the manifest records which CPUs each method is meant for.
"""

from __future__ import annotations

# Lazy imports: onnx and onnxruntime's quantiser are imported inside the conversions that use them (the export extra).
import contextlib
import logging
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from foclip.errors import InputError, did_you_mean


@dataclass(frozen=True)
class Int8Method:
    """One way of making the int8 image encoder.

    Attributes:
        name: the ``--int8-method`` value.
        kind: ``dynamic`` (activation scales computed per call) or ``static`` (QDQ, scales
            calibrated on sample photos at export).
        weight_type: ``QInt8`` or ``QUInt8``.
        reduce_range: 7-bit weights (safe without VNNI).
        per_channel: one weight scale per output channel.
        cpus: the CPUs the method is meant for (written into the manifest).
    """

    name: str
    kind: str
    weight_type: str
    reduce_range: bool
    per_channel: bool
    cpus: str

    def to_dict(self) -> dict[str, object]:
        """JSON-ready form for the manifest."""
        return {"method": self.name, "kind": self.kind, "weight_type": self.weight_type,
                "reduce_range": self.reduce_range, "per_channel": self.per_channel, "cpus": self.cpus}


INT8_METHODS: dict[str, Int8Method] = {m.name: m for m in (
    Int8Method("dynamic-u8s7", "dynamic", "QInt8", True, True, "any x86-64 or ARM64 CPU (7-bit weights cannot "
               "saturate int16 accumulators on AVX2 without VNNI)"),
    Int8Method("dynamic-s8", "dynamic", "QInt8", False, False, "CPUs with VNNI (avx512_vnni or avx_vnni) only: "
               "on AVX2 without VNNI its int16 accumulators saturate and accuracy drops"),
    Int8Method("dynamic-u8u8", "dynamic", "QUInt8", False, False, "any x86-64 CPU (unsigned weights, slower GEMM)"),
    Int8Method("static-qdq", "static", "QInt8", True, True, "any x86-64 CPU; activation scales calibrated on the "
               "export's sample photos (MinMax), MatMul/Gemm only"),
)}
DEFAULT_INT8_METHOD = "dynamic-u8s7"


def int8_method(name: str) -> Int8Method:
    """Look up an int8 method by name.

    Raises:
        InputError: an unknown name (lists the known ones).
    """
    if name not in INT8_METHODS:
        raise InputError(f"int8 method {name!r}", "is not known" + did_you_mean(name, INT8_METHODS),
                         f"one of {', '.join(INT8_METHODS)}")
    return INT8_METHODS[name]


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


class _PixelReader:
    """ONNX Runtime calibration reader over a few float32 pixel batches."""

    def __init__(self, name: str, batches: Iterable[np.ndarray]) -> None:
        self._it = iter([{name: b} for b in batches])

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._it, None)


# Root-logger advice the quantiser prints on every export; neither changes what it writes.
_QUANTISER_ADVICE = ("pre-processing before quantization", "is not constant. Please exclude this node")


@contextlib.contextmanager
def _without_preprocessing_advice() -> Iterator[None]:
    """Drop the quantiser's "Please consider to run pre-processing" root-logger warning for one call.

    It is logged with ``logging.warning()`` on the root logger, which installs a stderr handler
    (``basicConfig``) when none exists; a temporary last-resort handler keeps that from happening,
    and other warnings still reach stderr as they would have.
    """
    root = logging.getLogger()
    advice = lambda record: not any(m in record.getMessage() for m in _QUANTISER_ADVICE)
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


def to_int8(src: Path, dst: Path, method: str = DEFAULT_INT8_METHOD, optimize: bool = False,
            calibration_pixels: np.ndarray | None = None) -> Int8Method:
    """int8 quantisation of an fp32 image-encoder graph (MatMul/Gemm/Conv weights).

    Args:
        src: fp32 model.
        dst: output path.
        method: a key of :data:`INT8_METHODS`.
        optimize: run the transformer optimizer first (its output needs ``DefaultTensorType`` for
            the quantiser, see FIELD_NOTES).
        calibration_pixels: float32 (N, 3, S, S) inputs for ``static-qdq`` (ignored otherwise).

    Returns:
        The method used.

    Raises:
        InputError: unknown method, or ``static-qdq`` without calibration pixels.
    """
    import onnx
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_dynamic, quantize_static

    m = int8_method(method)
    if m.kind == "static" and (calibration_pixels is None or len(calibration_pixels) == 0):
        raise InputError("int8 method 'static-qdq'", "has no calibration photos", "sample photos at export")
    wtype = QuantType.QInt8 if m.weight_type == "QInt8" else QuantType.QUInt8
    with tempfile.TemporaryDirectory(dir=dst.parent, prefix=".quant-") as tmp, _without_preprocessing_advice():
        model_in = src
        extra: dict = {}
        if optimize:
            model_in = Path(tmp) / "optimized.onnx"
            optimize_transformer(src, model_in)
            extra["DefaultTensorType"] = onnx.TensorProto.FLOAT
        if m.kind == "dynamic":
            quantize_dynamic(str(model_in), str(dst), weight_type=wtype, per_channel=m.per_channel,
                             reduce_range=m.reduce_range, extra_options=extra)
        else:
            name = onnx.load(str(model_in), load_external_data=False).graph.input[0].name
            batches = [calibration_pixels[i:i + 8].astype(np.float32) for i in range(0, len(calibration_pixels), 8)]
            # MatMul/Gemm only: with every op quantised (Add, Softmax, LayerNorm inputs...) the static
            # graph of ViT-B-32 fell to min cosine 0.976 on held-out photos; MatMul/Gemm alone gave
            # 0.9996 (scripts/measure/int8_candidates.py, docs/runtime.md).
            quantize_static(str(model_in), str(dst), _PixelReader(name, batches), quant_format=QuantFormat.QDQ,
                            op_types_to_quantize=["MatMul", "Gemm"], per_channel=m.per_channel,
                            reduce_range=m.reduce_range, weight_type=wtype, activation_type=QuantType.QUInt8,
                            extra_options=extra)
    onnx.checker.check_model(str(dst), full_check=True)
    return m
