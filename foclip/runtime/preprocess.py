"""Eval preprocessing in numpy/PIL, equal in effect to open_clip's eval transform.

Pipeline (as torchvision does it on a PIL image): resize the shortest side to ``image_size``
with PIL bicubic (antialiased), centre-crop, convert to RGB, scale to [0, 1]. Mean/std
normalisation is inside the exported graph, so it is not applied here.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from foclip.manifest import PreprocessSpec

# PIL resampling filter of each eval-transform interpolation name.
PIL_RESAMPLE = {"bicubic": Image.BICUBIC, "bilinear": Image.BILINEAR, "nearest": Image.NEAREST}


def resized_hw(h: int, w: int, size: int) -> tuple[int, int]:
    """Output (h, w) of a shortest-side resize to ``size`` (torchvision's rounding)."""
    short, long = (h, w) if h <= w else (w, h)
    new_long = int(size * long / short)
    return (size, new_long) if h <= w else (new_long, size)


def center_crop_box(h: int, w: int, size: int) -> tuple[int, int]:
    """Top-left corner (top, left) of a centre crop (torchvision's rounding)."""
    return round((h - size) / 2.0), round((w - size) / 2.0)


def resize_crop_pil(img: Image.Image, spec: PreprocessSpec) -> Image.Image:
    """Shortest-side resize and centre crop of a PIL image, as open_clip's eval transform."""
    size = spec.image_size
    w, h = img.size
    nh, nw = resized_hw(h, w, size)
    if (nh, nw) != (h, w):
        img = img.resize((nw, nh), PIL_RESAMPLE[spec.interpolation])
    top, left = center_crop_box(nh, nw, size)
    if (nh, nw) != (size, size):
        img = img.crop((left, top, left + size, top + size))
    return img


def to_uint8(img: Image.Image, spec: PreprocessSpec) -> np.ndarray:
    """PIL image -> uint8 (S, S, 3) RGB after resize/crop (input of the fused detection graph)."""
    img = resize_crop_pil(img, spec)
    if img.mode != "RGB":
        img = img.convert("RGB")
    return np.asarray(img, dtype=np.uint8)


def to_pixels(img: Image.Image, spec: PreprocessSpec) -> np.ndarray:
    """PIL image (any mode open_clip accepts) -> float32 (3, S, S) RGB in [0, 1]."""
    return to_uint8(img, spec).astype(np.float32).transpose(2, 0, 1) / np.float32(255.0)
