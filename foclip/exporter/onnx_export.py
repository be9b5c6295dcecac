"""torch -> ONNX for the two encoders (TorchScript exporter, ``dynamo=False``), then ``onnx.checker``.

Why the TorchScript exporter and not ``dynamo=True``: see docs/export.md (measured side by side).
The batch axis is dynamic; the text encoder's EOT pooling (``argmax`` over token ids, then a
gather on ``arange(batch)``) is traced with the batch size as a graph value, and the parity step
checks batch sizes 1, 3 and 16 after export.
"""

from __future__ import annotations

# Lazy imports: onnx is imported only where an exported graph is checked (the export extra).
import io
import warnings
from contextlib import redirect_stdout
from pathlib import Path

import torch
from torch.onnx import _constants

from foclip.errors import InputError

MIN_OPSET = 17  # LayerNormalization is a native op from 17 on (TensorRT issue 2781)
EXPORT_BATCH = 2  # neither 1 nor a size the parity step checks, so nothing batch-1 gets frozen


def supported_opsets() -> tuple[int, int]:
    """The opsets foclip's exporter can produce with the installed torch.

    Returns:
        (lowest, highest) inclusive.
    """

    high = getattr(_constants, "ONNX_TORCHSCRIPT_EXPORTER_MAX_OPSET", None) or _constants.ONNX_MAX_OPSET
    return MIN_OPSET, int(high)


def check_opset(opset: int) -> int:
    """Validate an opset against what the installed exporter can produce.

    Args:
        opset: requested ONNX opset.

    Returns:
        The opset.

    Raises:
        InputError: when out of range.
    """
    low, high = supported_opsets()
    if not isinstance(opset, int) or not low <= opset <= high:
        raise InputError(f"opset {opset!r}", f"cannot be produced by torch {torch.__version__}'s ONNX exporter "
                         f"for foclip", f"an opset from {low} to {high}")
    return opset


def export_module(module: torch.nn.Module, args: tuple[torch.Tensor, ...], path: Path,
                  input_names: list[str], output_names: list[str], dynamic_axes: dict[str, dict[int, str]],
                  opset: int) -> None:
    """``torch.onnx.export(dynamo=False)`` of ``module`` on ``args``, then ``onnx.checker`` (full check).

    Args:
        module: eval-mode module.
        args: example inputs (batch size :data:`EXPORT_BATCH`).
        path: output file.
        input_names: graph input names.
        output_names: graph output names.
        dynamic_axes: per name, axis -> symbolic name.
        opset: ONNX opset.

    Raises:
        onnx.checker.ValidationError: when the exported graph is invalid (a bug, not a user error).
    """
    import onnx

    # nn.MultiheadAttention's inference fast path (frozen weights, eval mode) traces to
    # aten::_native_multi_head_attention, which has no ONNX symbolic: trace the plain path.
    fastpath = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        with warnings.catch_warnings(), redirect_stdout(io.StringIO()), torch.no_grad():
            warnings.simplefilter("ignore")  # TracerWarnings on shape arithmetic: batch sizes are checked later
            torch.onnx.export(
                module, args, str(path), dynamo=False, opset_version=opset,
                input_names=input_names, output_names=output_names, dynamic_axes=dynamic_axes,
                do_constant_folding=True,
            )
    finally:
        torch.backends.mha.set_fastpath_enabled(fastpath)
    onnx.checker.check_model(str(path), full_check=True)


def _export(module: torch.nn.Module, example: torch.Tensor, path: Path, in_name: str, opset: int) -> None:
    export_module(module, (example,), path, [in_name], ["embedding"],
                  {in_name: {0: "batch"}, "embedding": {0: "batch"}}, opset)


def export_image_encoder(encoder: torch.nn.Module, image_size: int, path: Path, opset: int) -> None:
    """Export an :class:`foclip.models.ImageEncoder` (pixels in [0,1] NCHW -> normalised embedding).

    Args:
        encoder: the wrapper, in eval mode.
        image_size: side of the square input.
        path: output ``.onnx`` file.
        opset: ONNX opset (checked with :func:`check_opset` first).

    Raises:
        onnx.checker.ValidationError: when the exported graph is invalid (a bug, not a user error).
    """
    example = torch.rand(EXPORT_BATCH, 3, image_size, image_size, generator=torch.Generator().manual_seed(0))
    _export(encoder, example, path, "pixels", opset)


def export_text_encoder(encoder: torch.nn.Module, context_length: int, path: Path, opset: int) -> None:
    """Export a :class:`foclip.models.TextEncoder` (int64 tokens -> normalised embedding).

    Args:
        encoder: the wrapper, in eval mode.
        context_length: the token axis length.
        path: output ``.onnx`` file.
        opset: ONNX opset.

    Raises:
        onnx.checker.ValidationError: when the exported graph is invalid.
    """
    example = torch.zeros(EXPORT_BATCH, context_length, dtype=torch.long)
    example[:, 0] = 49406
    example[0, 1:4] = torch.tensor([320, 1125, 49407])  # EOT at different positions per row
    example[1, 1:3] = torch.tensor([2368, 49407])
    _export(encoder, example, path, "tokens", opset)
