"""Turn one input item (path, bytes, PIL image or uint8 array) into the encoder's uint8 pixels.

Every failure is an :class:`ItemError` with a stable ``code`` (the same codes appear in the
JSONL of ``foclip detect`` and in the HTTP service), so one bad image never fails its batch.

Decoding follows what a user of open_clip does (``Image.open`` + its eval transform), plus EXIF
orientation: open the file, apply the EXIF orientation, take the first frame of an animation,
then :func:`foclip.runtime.preprocess.to_uint8`, in open_clip's order (resize and crop in the
file's own mode, then ``convert("RGB")``). RGBA, LA, palette,
CMYK, 16-bit and grayscale images are therefore converted as open_clip's PIL path converts them.

Size limits are checked on the header, before any pixel is decoded: more than ``max_pixels``
pixels is ``too_many_pixels`` (decompression bombs), an aspect ratio above ``max_aspect`` is
``extreme_aspect`` (a 1x5000 strip would otherwise be resized to 224x1,120,000), a shortest side
below ``min_side`` is ``too_small``.
"""

from __future__ import annotations

import io
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from foclip.manifest import PreprocessSpec
from foclip.runtime.preprocess import to_uint8

# Error codes, stable across releases (documented in docs/runtime.md).
ERROR_CODES: dict[str, str] = {
    "not_found": "the path does not exist",
    "is_directory": "the path is a folder, not an image file",
    "unreadable": "the file exists but cannot be read (permissions or I/O error)",
    "empty_file": "the file or byte string is empty",
    "not_an_image": "the data is not in an image format PIL can identify",
    "truncated": "the image data ends early (truncated or partly written file)",
    "decode_failed": "the image header was read but its pixels could not be decoded",
    "too_many_pixels": "the image has more pixels than max_pixels (decompression-bomb guard)",
    "extreme_aspect": "the image's aspect ratio is above max_aspect",
    "too_small": "the image's shortest side is below min_side",
    "bad_array": "an array item is not uint8 (H, W, 3), (H, W, 4) or (H, W)",
    "unsupported_item": "the item is not a path, bytes, a PIL image or a uint8 array",
}


class ItemError(Exception):
    """One item could not be turned into pixels; carries a stable ``code`` and a one-line message."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True)
class DecodeLimits:
    """Header checks applied before decoding.

    Attributes:
        max_pixels: refuse images with more pixels than this (width x height).
        max_aspect: refuse images whose long side / short side exceeds this.
        min_side: refuse images whose short side is below this many pixels.
    """

    max_pixels: int = 64_000_000
    max_aspect: float = 20.0
    min_side: int = 8


def configure_pil(limits: DecodeLimits) -> None:
    """Set PIL's own decompression-bomb limit to ``limits.max_pixels``.

    PIL offers only a process-wide limit (``Image.MAX_IMAGE_PIXELS``): above it ``Image.open``
    warns, above twice it raises. foclip checks the header itself (see :func:`open_image`), so
    PIL's limit is a second guard; it is only ever lowered, never raised, by this call.

    Args:
        limits: the limits in use.

    Returns:
        None.
    """
    current = Image.MAX_IMAGE_PIXELS
    if current is None or current > limits.max_pixels:
        Image.MAX_IMAGE_PIXELS = limits.max_pixels


def _check_header(img: Image.Image, subject: str, limits: DecodeLimits) -> None:
    w, h = img.size
    if w * h > limits.max_pixels:
        raise ItemError("too_many_pixels", f"{subject} | has {w}x{h} = {w * h:,} pixels. "
                        f"Expected at most {limits.max_pixels:,} pixels (max_pixels)")
    short, long = min(w, h), max(w, h)
    if short > 0 and long / short > limits.max_aspect:
        raise ItemError("extreme_aspect", f"{subject} | is {w}x{h}, aspect ratio {long / short:.0f}:1. "
                        f"Expected at most {limits.max_aspect:g}:1 (max_aspect)")
    if short < limits.min_side:
        raise ItemError("too_small", f"{subject} | is {w}x{h} pixels. "
                        f"Expected a shortest side of at least {limits.min_side} pixels (min_side)")


def _open_bytes(data: bytes | io.BufferedIOBase, subject: str, limits: DecodeLimits) -> Image.Image:
    try:
        img = Image.open(data)
    except Image.DecompressionBombError as exc:
        raise ItemError("too_many_pixels", f"{subject} | was refused by PIL's decompression-bomb guard "
                        f"({exc}). Expected at most {limits.max_pixels:,} pixels (max_pixels)") from exc
    except UnidentifiedImageError as exc:
        raise ItemError("not_an_image", f"{subject} | is not an image PIL can identify. "
                        "Expected a JPEG, PNG, WebP, GIF, BMP or TIFF file") from exc
    _check_header(img, subject, limits)
    try:
        if getattr(img, "n_frames", 1) > 1:
            img.seek(0)  # animations: the first frame, as PIL's default
        img.load()
        img = ImageOps.exif_transpose(img)
    except Image.DecompressionBombError as exc:
        raise ItemError("too_many_pixels", f"{subject} | was refused by PIL's decompression-bomb guard "
                        f"({exc}). Expected at most {limits.max_pixels:,} pixels") from exc
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        text = str(exc)
        if "truncated" in text or isinstance(exc, EOFError) or "broken data stream" in text:
            raise ItemError("truncated", f"{subject} | image data ends early ({text}). "
                            "Expected a complete image file") from exc
        raise ItemError("decode_failed", f"{subject} | pixels cannot be decoded "
                        f"({exc.__class__.__name__}: {text}). Expected a valid image file") from exc
    return img


def _open_path(path: Path, limits: DecodeLimits) -> Image.Image:
    subject = f"{str(path)!r}"
    try:
        st = os.stat(path)
    except FileNotFoundError as exc:
        raise ItemError("not_found", f"{subject} | does not exist. Expected an image file") from exc
    except OSError as exc:
        raise ItemError("unreadable", f"{subject} | cannot be read ({exc.strerror}). "
                        "Expected a readable image file") from exc
    if stat.S_ISDIR(st.st_mode):  # the stat above already says so; no second stat per item
        raise ItemError("is_directory", f"{subject} | is a folder. Expected an image file "
                        "(the CLI expands folders; the API takes files)")
    if st.st_size == 0:
        raise ItemError("empty_file", f"{subject} | is empty (0 bytes). Expected an image file")
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as exc:
        raise ItemError("unreadable", f"{subject} | cannot be read ({exc.strerror}). "
                        "Expected a readable image file") from exc
    return _open_bytes(io.BytesIO(data), subject, limits)


def _from_array(arr: np.ndarray, subject: str, limits: DecodeLimits) -> Image.Image:
    if arr.dtype != np.uint8 or not (arr.ndim == 2 or (arr.ndim == 3 and arr.shape[2] in (3, 4))):
        raise ItemError("bad_array", f"{subject} | is {arr.dtype} {tuple(arr.shape)}. "
                        "Expected a uint8 array of shape (H, W, 3), (H, W, 4) or (H, W)")
    img = Image.fromarray(np.ascontiguousarray(arr))
    _check_header(img, subject, limits)
    return img


def load_image(item: Any, subject: str, limits: DecodeLimits) -> Image.Image:
    """Open one item as a PIL image with EXIF orientation applied, checking header limits.

    Args:
        item: a path (``str`` / ``os.PathLike``), ``bytes``/``bytearray``/``memoryview``, a PIL image
            or a uint8 numpy array (H, W, 3 RGB; H, W, 4 RGBA; or H, W gray).
        subject: how the item is named in messages (usually its id).
        limits: header limits.

    Returns:
        The PIL image in its own mode (conversion to RGB happens after resizing, as open_clip).

    Raises:
        ItemError: with one of the codes of :data:`ERROR_CODES`.
    """
    if isinstance(item, (str, os.PathLike)):
        return _open_path(Path(item), limits)
    if isinstance(item, (bytes, bytearray, memoryview)):
        if len(item) == 0:
            raise ItemError("empty_file", f"{subject} | is an empty byte string. Expected image file bytes")
        return _open_bytes(io.BytesIO(bytes(item)), subject, limits)
    if isinstance(item, Image.Image):
        _check_header(item, subject, limits)
        return item
    if isinstance(item, np.ndarray):
        return _from_array(item, subject, limits)
    raise ItemError("unsupported_item", f"{subject} | is a {type(item).__name__}. "
                    "Expected a path, bytes, a PIL image or a uint8 numpy array")


def decode_item(item: Any, subject: str, spec: PreprocessSpec, limits: DecodeLimits) -> np.ndarray:
    """Decode, resize and centre-crop one item into uint8 RGB pixels at the model's image size.

    ``np.float32(pixels) / 255`` transposed to CHW equals
    :func:`foclip.runtime.preprocess.to_pixels` bit for bit, i.e. open_clip's eval transform
    before normalisation.

    Args:
        item: see :func:`load_image`.
        subject: how the item is named in messages.
        spec: the bundle's preprocessing.
        limits: header limits.

    Returns:
        uint8 array (S, S, 3), RGB.

    Raises:
        ItemError: with one of the codes of :data:`ERROR_CODES`.
    """
    img = load_image(item, subject, limits)
    try:
        return to_uint8(img, spec)
    except (OSError, ValueError) as exc:
        text = str(exc)
        code = "truncated" if "truncated" in text else "decode_failed"
        raise ItemError(code, f"{subject} | cannot be resized or converted "
                        f"({exc.__class__.__name__}: {text}). Expected a valid image") from exc

