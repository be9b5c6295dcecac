"""Differentiable eval preprocessing in torch for images in [0, 1].

Same effect as open_clip's eval transform (resize shortest side with antialiased bicubic, centre
crop, normalise), written with tensor ops so that gradients reach the pixels. Normalisation lives
in :class:`foclip.models.wrappers.ImageEncoder`, so this module only resizes and crops.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from foclip.manifest import PreprocessSpec
from foclip.runtime.preprocess import center_crop_box, resized_hw  # one geometry for torch and numpy


def resize_crop(x: torch.Tensor, size: int, interpolation: str = "bicubic") -> torch.Tensor:
    """Resize shortest side to ``size`` and centre-crop, differentiably.

    Args:
        x: (B, 3, H, W) float images in [0, 1] (all the same size).
        size: output side.
        interpolation: ``bicubic`` or ``bilinear``.

    Returns:
        (B, 3, size, size) float tensor.
    """
    h, w = x.shape[-2:]
    nh, nw = resized_hw(h, w, size)
    if (nh, nw) != (h, w):
        x = F.interpolate(x, size=(nh, nw), mode=interpolation, align_corners=False, antialias=True)
    top, left = center_crop_box(nh, nw, size)
    return x[..., top:top + size, left:left + size]


class DifferentiablePreprocess(torch.nn.Module):
    """Resize + crop module driven by a :class:`PreprocessSpec`."""

    def __init__(self, spec: PreprocessSpec) -> None:
        super().__init__()
        self.spec = spec

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) in [0, 1] -> (B, 3, S, S) in about [0, 1]."""
        return resize_crop(x, self.spec.image_size, self.spec.interpolation)
