"""The fused detection graph ``detect.fp32.onnx``: uint8 pixels and a text bank in, per-image
``score_color`` and ``score_gray`` out, so that a GPU host only decodes and resizes.

Inside: ``/255``; a luma gray copy (0.299, 0.587, 0.114 of the [0, 1] RGB, float, replicated to 3
channels); both stacked into one 2N batch; the image encoder (mean/std normalisation inside);
cosine with each L2-normalised prompt embedding, clamped at 0 per pair, mean over prompts, times
the score scale. Same definitions as :mod:`foclip.scoring`.

TensorRT rules this graph is shaped by (a strongly typed network built by ``foclip build-engine``):

* every UINT8 network input must feed a Cast layer directly (TensorRT's ONNX parser refuses a
  uint8 tensor into any other layer, a Transpose included), so ``pixels_u8`` is cast to float
  *before* the NHWC -> NCHW permute; a cast and a permute commute exactly, so the scores are the
  same numbers as with the permute first;
* precision comes from the graph: ``detect.fp16`` is this graph through the fp16 converter
  (``foclip.exporter.convert.to_fp16``), whose first Cast then goes to float16; its inputs
  (uint8 pixels, float32 text bank) and outputs (float32 scores) keep their types;
* every dynamic axis (``batch``, ``prompts``) is named, so one optimisation profile can bound it
  (:func:`foclip.exporter.engine.input_shapes`).
"""

from __future__ import annotations

from pathlib import Path

import torch

from foclip.scoring import LUMA


class DetectGraph(torch.nn.Module):
    """uint8 (N, S, S, 3) + float32 (P, D) -> score_color (N,), score_gray (N,)."""

    def __init__(self, image_encoder: torch.nn.Module, scale: float) -> None:
        super().__init__()
        self.image_encoder = image_encoder
        self.scale = float(scale)
        self.register_buffer("luma", torch.tensor(LUMA, dtype=torch.float32).view(1, 3, 1, 1))

    def forward(self, pixels_u8: torch.Tensor, text_bank: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = pixels_u8.to(torch.float32).permute(0, 3, 1, 2) / 255.0  # Cast first: TensorRT's uint8 rule
        gray = (x * self.luma).sum(dim=1, keepdim=True).expand(-1, 3, -1, -1)
        emb = self.image_encoder(torch.cat([x, gray], dim=0))
        scores = self.scale * torch.clamp(emb @ text_bank.t(), min=0.0).mean(dim=1)
        pair = scores.reshape(2, -1)  # colour row, gray row; avoids slicing by a traced batch size
        return pair[0], pair[1]


def export_detect_graph(image_encoder: torch.nn.Module, image_size: int, embed_dim: int, scale: float,
                        path: Path, opset: int) -> None:
    """Export :class:`DetectGraph` with dynamic batch and prompt axes, then ``onnx.checker``.

    Args:
        image_encoder: the fp32 :class:`foclip.models.ImageEncoder`.
        image_size: side S of the input.
        embed_dim: D of the text bank.
        scale: score scale w.
        path: output file.
        opset: ONNX opset.
    """
    from foclip.exporter.onnx_export import export_module

    module = DetectGraph(image_encoder, scale).eval()
    g = torch.Generator().manual_seed(0)
    pixels = torch.randint(0, 256, (2, image_size, image_size, 3), dtype=torch.uint8, generator=g)
    bank = torch.nn.functional.normalize(torch.randn(3, embed_dim, generator=g), dim=-1)
    export_module(module, (pixels, bank), path, ["pixels_u8", "text_bank"], ["score_color", "score_gray"],
                  {"pixels_u8": {0: "batch"}, "text_bank": {0: "prompts"},
                   "score_color": {0: "batch"}, "score_gray": {0: "batch"}}, opset)
