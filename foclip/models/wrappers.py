"""Encoder wrappers with the bundle's IO contract (see :mod:`foclip.manifest`)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from foclip.manifest import PreprocessSpec


class ImageEncoder(torch.nn.Module):
    """[0, 1] RGB NCHW at the model's image size -> L2-normalised embeddings.

    Normalisation by mean/std happens inside, so attacks and exports see plain pixels.
    """

    def __init__(self, model: torch.nn.Module, spec: PreprocessSpec) -> None:
        super().__init__()
        self.model = model
        self.register_buffer("mean", torch.tensor(spec.mean, dtype=torch.float32).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(spec.std, dtype=torch.float32).view(1, 3, 1, 1))

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        x = (pixels - self.mean.to(pixels.dtype)) / self.std.to(pixels.dtype)
        return F.normalize(self.model.encode_image(x), dim=-1)


class TextEncoder(torch.nn.Module):
    """int64 token ids (N, context) -> L2-normalised embeddings."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.model.encode_text(tokens), dim=-1)
