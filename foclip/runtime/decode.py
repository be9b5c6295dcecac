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

Work is bounded by the bytes received, not by what a header claims:

* a file larger than ``max_file_bytes`` is ``file_too_large`` (checked on ``stat``; files are
  streamed to PIL, never read whole into memory);
* JPEG, PNG and GIF headers are checked against the fewest bytes a *complete* image of the
  declared size can take in that format (:func:`min_encoded_bytes`: a Huffman-coded JPEG spends
  at least one bit per 8x8 luma block, deflate expands at most 1032:1, an LZW code of at least 3 bits
  stands for at most 4096 pixels). A file below that floor cannot hold its pixels: it is
  ``truncated`` before anything is decoded (a 693-byte JPEG that claims 9000x7000 pixels would
  otherwise be decoded into 190 MB of gray);
* any image above ``ratio_free_pixels`` (8 Mpx) that would decode to more RGB bytes per byte sent than
  real images of its format reach (``max_decode_ratio``, measured per format by
  scripts/measure/decode_ratios.py: 512, WebP 4x) is ``pixel_budget`` before decoding (an 8000x8000 black
  lossless WebP is a few bytes; lossless WebP, TIFF and BMP have no useful "complete file" floor);
* at most ``max_inflight_pixels`` are decoded at once in the process (:data:`DECODE_GATE`), so
  concurrent large images queue instead of stacking their buffers;
* large JPEGs are decoded with libjpeg's DCT scaling (``Image.draft``) down to no less than
  ``draft_factor`` times the model's image size on the shortest side, so memory and IDCT time
  follow the model's input, not the header. Images whose shortest side is below
  ``2 * draft_factor * image_size`` are untouched (pixel-equal to open_clip's path).
"""

from __future__ import annotations

import contextlib
import functools
import io
import os
import stat
import struct
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from foclip.manifest import PreprocessSpec
from foclip.runtime.preprocess import PIL_RESAMPLE, resized_hw, to_uint8

# Error codes, stable across releases (documented in docs/runtime.md).
ERROR_CODES: dict[str, str] = {
    "not_found": "the path does not exist",
    "is_directory": "the path is a folder, not an image file",
    "unreadable": "the file exists but cannot be read (permissions or I/O error)",
    "empty_file": "the file or byte string is empty",
    "not_an_image": "the data is not in an image format PIL can identify",
    "truncated": "the image data ends early (truncated or partly written file), or is too short for "
                 "the size its header declares",
    "decode_failed": "the image header was read but its pixels could not be decoded",
    "too_many_pixels": "the image has more pixels than max_pixels (decompression-bomb guard)",
    "pixel_budget": "the image would decode to more bytes per byte sent than its format's plausible "
                    "ratio (max_decode_ratio; a few bytes declaring megapixels), or past a request's "
                    "pixel budget (HTTP service)",
    "extreme_aspect": "the image's aspect ratio is above max_aspect",
    "too_small": "the image's shortest side is below min_side",
    "file_too_large": "the file is larger than max_file_bytes",
    "bad_array": "an array item is not uint8 (H, W, 3), (H, W, 4) or (H, W)",
    "unsupported_item": "the item is not a path, bytes, a PIL image or a uint8 array",
}


class ItemError(Exception):
    """One item could not be turned into pixels.

    Attributes:
        code: a stable error code (:data:`ERROR_CODES`).
        subject: what failed (the item's id, quoted).
        problem: what is wrong with it.
        expected: what would have worked.
        message: the one-line ``<subject> | <problem>. Expected <expected>.``
    """

    def __init__(self, code: str, subject: str, problem: str, expected: str | None = None) -> None:
        self.code, self.subject, self.problem, self.expected = code, subject, problem, expected
        self.message = f"{subject} | {problem}." + (f" Expected {expected}." if expected else "")
        super().__init__(self.message)


@dataclass(frozen=True)
class DecodeLimits:
    """Header checks applied before decoding.

    Attributes:
        max_pixels: refuse images with more pixels than this (width x height).
        max_aspect: refuse images whose long side / short side exceeds this.
        min_side: refuse images whose short side is below this many pixels.
        max_file_bytes: refuse files larger than this many bytes (``file_too_large``).
        draft_factor: JPEGs are DCT-scaled while their shortest side stays at least this many times
            the model's image size; 0 turns DCT scaling off (every JPEG fully decoded).
        max_decode_ratio: most decoded RGB bytes (3 x width x height, after DCT scaling) per byte of
            the file, for every format but WebP; 4x this for WebP (:data:`DECODE_RATIO_WEBP_FACTOR`).
            Past it the image is ``pixel_budget``. 0 turns the check off.
        ratio_free_pixels: images of at most this many pixels are never refused by the ratio (a
            flat-colour image is a legitimate file; only large declared sizes cost memory).
        max_inflight_pixels: most pixels this process decodes at once, over all threads; further
            decodes wait (:class:`DecodeGate`) so that concurrent large images queue instead of
            stacking their buffers. 0 for no bound.
    """

    max_pixels: int = 64_000_000
    max_aspect: float = 20.0
    min_side: int = 8
    max_file_bytes: int = 256 * 1024 * 1024
    draft_factor: int = 4
    max_decode_ratio: int = 512
    ratio_free_pixels: int = 8_000_000
    max_inflight_pixels: int = 96_000_000


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
        raise ItemError("too_many_pixels", subject, f"has {w}x{h} = {w * h:,} pixels",
                        f"at most {limits.max_pixels:,} pixels (max_pixels)")
    short, long = min(w, h), max(w, h)
    if short > 0 and long / short > limits.max_aspect:
        raise ItemError("extreme_aspect", subject, f"is {w}x{h}, aspect ratio {long / short:.0f}:1",
                        f"at most {limits.max_aspect:g}:1 (max_aspect)")
    if short < limits.min_side:
        raise ItemError("too_small", subject, f"is {w}x{h} pixels",
                        f"a shortest side of at least {limits.min_side} pixels (min_side)")


_DEFLATE_MAX_RATIO = 1032  # deflate's best case: a 258-byte match in a 2-bit code (RFC 1951)
_PNG_CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}
_GIF_PIXELS_PER_BYTE = 4096 * 8 // 3  # an LZW code has >= 3 bits and stands for <= 4096 pixels


_MAX_JPEG_SEGMENTS = 4096  # a 30 MB ICC profile takes ~470 APP2 segments; junk ends the walk far sooner


def _jpeg_scan(head: bytes | io.IOBase) -> tuple[bool | None, int]:
    """Walk a JPEG's segments up to its first scan, by their lengths (no segment is read whole).

    Args:
        head: the file's first bytes, or a seekable stream of the whole file (its position is kept).

    Returns:
        (True for Huffman coding, False for arithmetic, None when no frame header is found;
        the offset of the first scan's data, 0 when not found).
    """
    if isinstance(head, (bytes, bytearray, memoryview)):
        def read_at(at: int, n: int) -> bytes:
            return bytes(head[at:at + n])
    else:
        stream, where = head, head.tell()

        def read_at(at: int, n: int) -> bytes:
            stream.seek(at)
            return stream.read(n)
    try:
        i, huffman = 2, None
        for _ in range(_MAX_JPEG_SEGMENTS):
            seg = read_at(i, 4)
            if len(seg) < 4 or seg[0] != 0xFF:
                return huffman, 0
            marker = seg[1]
            if marker == 0xFF:  # fill byte
                i += 1
                continue
            length = int.from_bytes(seg[2:4], "big")
            if length < 2:
                return huffman, 0
            if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
                huffman = marker < 0xC8  # SOF0-3, 5-7: Huffman; SOF9-11, 13-15: arithmetic
            elif marker == 0xDA:
                return huffman, i + 2 + length
            i += 2 + length
        return huffman, 0
    finally:
        if not isinstance(head, (bytes, bytearray, memoryview)):
            stream.seek(where)


def min_encoded_bytes(fmt: str | None, size: tuple[int, int], head: bytes,
                      jpeg_scan: tuple[bool | None, int] | None = None) -> int:
    """The fewest bytes a complete image of ``size`` can take in format ``fmt`` (0 when unknown).

    For JPEG the bound is the offset of the first scan (what comes before it, such as comments or
    EXIF, carries no pixels but is in the file) plus the fewest bytes the scan can take.

    Args:
        fmt: PIL's format name (``JPEG``, ``PNG``, ``GIF``, ...).
        size: the declared (width, height).
        head: the first bytes of the file (enough for the JPEG segments before the scan).
        jpeg_scan: :func:`_jpeg_scan` of the whole file when already known (metadata such as a
            large ICC profile may put the scan beyond ``head``).

    Returns:
        A lower bound on the encoded size in bytes; 0 for formats without a useful bound
        (arithmetic-coded JPEG, WebP, BMP, TIFF, ...).
    """
    w, h = size
    if fmt == "JPEG":
        huffman, scan_at = jpeg_scan or _jpeg_scan(head)
        return scan_at + -(-w // 8) * -(-h // 8) // 8 if huffman else 0  # >= 1 bit per 8x8 luma block
    if fmt == "PNG" and len(head) >= 26 and head[12:16] == b"IHDR":
        depth, ctype = head[24], head[25]
        row = 1 + -(-w * _PNG_CHANNELS.get(ctype, 1) * depth // 8)  # filter byte + packed samples
        return h * row // _DEFLATE_MAX_RATIO
    if fmt == "GIF":
        return w * h // _GIF_PIXELS_PER_BYTE
    return 0


def _check_floor(img: Image.Image, subject: str, head: bytes, n_bytes: int,
                 jpeg_scan: tuple[bool | None, int] | None = None) -> None:
    need = min_encoded_bytes(img.format, img.size, head, jpeg_scan)
    if n_bytes < need:
        w, h = img.size
        raise ItemError("truncated", subject, f"declares {w}x{h} pixels but holds only {n_bytes:,} bytes; "
                        f"a complete {img.format} of that size takes at least {need:,} bytes",
                        "a complete image file")


# The most decoded bytes per byte sent that real content reaches, measured on the 11 sample photos,
# a flat-shaded clip-art drawing and a text screenshot (scripts/measure/decode_ratios.py, docs/runtime.md):
# lossless WebP 771 (the screenshot), PNG 203, deflate TIFF 224, lossy WebP 140, JPEG q10 154, GIF 44,
# BMP 1 (RLE at most 383 by construction). A flat colour goes far beyond (PNG 1024, GIF 2552, lossless
# WebP 57,143; an 8000x8000 black lossless WebP is a few bytes), hence DecodeLimits.ratio_free_pixels.
DECODE_RATIO_WEBP_FACTOR = 4


def decode_ratio_limit(fmt: str | None, limits: DecodeLimits) -> int:
    """The most decoded RGB bytes per encoded byte accepted for ``fmt`` (0: no bound)."""
    return limits.max_decode_ratio * (DECODE_RATIO_WEBP_FACTOR if fmt == "WEBP" else 1)


def _check_ratio(img: Image.Image, subject: str, n_bytes: int, limits: DecodeLimits) -> None:
    # img.size is the size it will be decoded at: a DCT-scaled JPEG costs only its drafted pixels.
    w, h = img.size
    ratio = decode_ratio_limit(img.format, limits)
    if ratio <= 0 or w * h <= limits.ratio_free_pixels:
        return
    decoded = 3 * w * h
    if decoded > ratio * n_bytes:
        raise ItemError("pixel_budget", subject, f"declares {w}x{h} pixels ({decoded:,} bytes decoded) in "
                        f"{n_bytes:,} bytes, more than the {ratio:,} decoded bytes per byte that real "
                        f"{img.format} images reach (max_decode_ratio)",
                        "an image whose size matches its content, or a smaller image")


class DecodeGate:
    """A process-wide bound on the pixels being decoded at once (a semaphore counted in pixels).

    Every decode holds its pixels (after DCT scaling) from just before PIL allocates them until the
    image has been resized; when the bound is reached, further decodes wait. An image larger than
    the bound runs alone.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self.in_use = 0
        self.peak = 0

    @contextlib.contextmanager
    def hold(self, pixels: int, capacity: int) -> Iterator[None]:
        """Hold ``pixels`` of ``capacity`` (0: no bound) for the body of the ``with``."""
        if capacity <= 0:
            yield
            return
        n = min(pixels, capacity)
        with self._cond:
            while self.in_use and self.in_use + n > capacity:
                self._cond.wait()
            self.in_use += n
            self.peak = max(self.peak, self.in_use)
        try:
            yield
        finally:
            with self._cond:
                self.in_use -= n
                self._cond.notify_all()


DECODE_GATE = DecodeGate()


def _draft(img: Image.Image, image_size: int, limits: DecodeLimits) -> None:
    # libjpeg scales by 1/2, 1/4 or 1/8 while decoding; PIL picks the smallest scale whose result is
    # still at least the requested size, so asking for draft_factor x the model size on the short side
    # keeps the later bicubic resize well oversampled.
    if img.format != "JPEG" or limits.draft_factor <= 0 or image_size <= 0:
        return
    w, h = img.size
    short = min(w, h)
    target = limits.draft_factor * image_size
    if short < 2 * target:
        return
    img.draft(img.mode, (max(1, w * target // short), max(1, h * target // short)))


def _resize_drafted(img: Image.Image, full: tuple[int, int], spec: PreprocessSpec) -> Image.Image:
    """Resize a DCT-scaled JPEG to the size the eval transform gives the full image.

    libjpeg scales by 1/k and rounds the size up, so the drafted image holds the full frame plus
    up to one partial pixel on the right and bottom. Resizing from the drafted size moved the
    centre crop by up to a pixel of the model input (measured: up to 128 of 255 levels at edges for
    a 64 px model); resizing the exact full-frame box to the full image's target keeps open_clip's
    geometry. Done before EXIF rotation: the shortest-side target does not depend on orientation.
    """
    w, h = full
    k = max(1, round(w / img.size[0]))
    nh, nw = resized_hw(h, w, spec.image_size)
    return img.resize((nw, nh), PIL_RESAMPLE[spec.interpolation], box=(0, 0, w / k, h / k))


_HEAD_BYTES = 65536  # enough for the segments before a JPEG's scan in all but EXIF-heavy files
HEADER_CAP_BYTES = 8 * 1024 * 1024  # PIL may read this far to identify a file; junk beyond is refused
# The formats the documentation promises (PIL's JPEG opener also returns MPO, the phones' JPEGs).
# Trying PIL's every other plugin on junk costs time and, for some, memory in proportion to the file.
FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF")


@functools.cache
def readable_formats() -> tuple[str, ...]:
    """The :data:`FORMATS` this Pillow can open (its plugins registered once, not per image)."""
    Image.init()
    return tuple(f for f in FORMATS if f in Image.OPEN)


class _CappedReader(io.RawIOBase):
    """A file view that ends reads at ``cap`` bytes while PIL identifies the file.

    PIL's JPEG plugin scans junk for a marker one byte at a time (about 8 MB/s here); without a cap
    a 256 MB file of zeros named .jpg costs half a minute before it is called not an image.
    """

    def __init__(self, raw: Any, cap: int | None) -> None:
        super().__init__()
        self.raw, self.cap = raw, cap

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = 0) -> int:
        return self.raw.seek(offset, whence)

    def tell(self) -> int:
        return self.raw.tell()

    def readinto(self, buffer: Any) -> int:
        n = len(buffer)
        if self.cap is not None:
            n = max(0, min(n, self.cap - self.raw.tell()))
        data = self.raw.read(n)
        buffer[:len(data)] = data
        return len(data)


def _open_bytes(data: io.BufferedIOBase, subject: str, limits: DecodeLimits, n_bytes: int,
                spec: PreprocessSpec | None, stack: contextlib.ExitStack) -> Image.Image:
    head = data.read(_HEAD_BYTES)
    data.seek(0)
    jpeg_scan = _jpeg_scan(data) if head[:2] == b"\xff\xd8" else None
    # PIL reads every segment before a JPEG's scan while identifying it: a large ICC profile or XMP
    # packet is metadata, not junk, so the cap extends to the scan found by walking segment lengths.
    cap = max(HEADER_CAP_BYTES, jpeg_scan[1] + _HEAD_BYTES) if jpeg_scan else HEADER_CAP_BYTES
    capped = _CappedReader(data, cap)
    stream = io.BufferedReader(capped, 65536)
    try:
        img = Image.open(stream, formats=readable_formats())
        capped.cap = None  # identified: decoding may read the rest
    except Image.DecompressionBombError as exc:
        raise ItemError("too_many_pixels", subject, f"was refused by PIL's decompression-bomb guard "
                        f"({exc})", f"at most {limits.max_pixels:,} pixels (max_pixels)") from exc
    except UnidentifiedImageError as exc:
        raise ItemError("not_an_image", subject, "is not an image PIL can identify",
                        "a JPEG, PNG, WebP, GIF, BMP or TIFF file") from exc
    except (OSError, SyntaxError, EOFError, struct.error) as exc:
        # The header itself ends early: a JPEG cut inside its SOF segment raises "Truncated File Read".
        text = str(exc)
        if "runcated" in text or isinstance(exc, (EOFError, struct.error)):
            raise ItemError("truncated", subject, f"image header ends early ({text})",
                            "a complete image file") from exc
        raise ItemError("decode_failed", subject, f"image header cannot be read "
                        f"({exc.__class__.__name__}: {text})", "a valid image file") from exc
    _check_header(img, subject, limits)
    _check_floor(img, subject, head, n_bytes, jpeg_scan)
    full = img.size
    if spec is not None:
        _draft(img, spec.image_size, limits)
    _check_ratio(img, subject, n_bytes, limits)
    stack.enter_context(DECODE_GATE.hold(img.size[0] * img.size[1], limits.max_inflight_pixels))
    try:
        if getattr(img, "n_frames", 1) > 1:
            img.seek(0)  # animations: the first frame, as PIL's default
        img.load()
        if spec is not None and img.size != full:  # DCT-scaled by _draft
            img = _resize_drafted(img, full, spec)
        img = ImageOps.exif_transpose(img)
    except Image.DecompressionBombError as exc:
        raise ItemError("too_many_pixels", subject, f"was refused by PIL's decompression-bomb guard "
                        f"({exc})", f"at most {limits.max_pixels:,} pixels") from exc
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        text = str(exc)
        if "truncated" in text or isinstance(exc, EOFError) or "broken data stream" in text:
            raise ItemError("truncated", subject, f"image data ends early ({text})",
                            "a complete image file") from exc
        raise ItemError("decode_failed", subject, f"pixels cannot be decoded "
                        f"({exc.__class__.__name__}: {text})", "a valid image file") from exc
    return img


def _open_path(path: Path, limits: DecodeLimits, spec: PreprocessSpec | None,
               stack: contextlib.ExitStack) -> Image.Image:
    subject = f"{str(path)!r}"
    try:
        st = os.stat(path)
    except FileNotFoundError as exc:
        raise ItemError("not_found", subject, "does not exist", "an image file") from exc
    except OSError as exc:
        raise ItemError("unreadable", subject, f"cannot be read ({exc.strerror})",
                        "a readable image file") from exc
    if stat.S_ISDIR(st.st_mode):  # the stat above already says so; no second stat per item
        raise ItemError("is_directory", subject, "is a folder", "an image file "
                        "(the CLI expands folders; the API takes files)")
    if not stat.S_ISREG(st.st_mode):  # a FIFO or device would block or never end
        raise ItemError("unreadable", subject, "is not a regular file", "an image file")
    if st.st_size == 0:
        raise ItemError("empty_file", subject, "is empty (0 bytes)", "an image file")
    if st.st_size > limits.max_file_bytes:
        raise ItemError("file_too_large", subject, f"is {st.st_size:,} bytes",
                        f"at most {limits.max_file_bytes:,} bytes (max_file_bytes)")
    try:
        # Streamed: PIL reads what it decodes; the file is never held whole in memory.
        with open(path, "rb", buffering=65536) as f:
            return _open_bytes(f, subject, limits, st.st_size, spec, stack)
    except OSError as exc:  # I/O errors while PIL reads (decode errors are ItemErrors already)
        raise ItemError("unreadable", subject, f"cannot be read ({exc.strerror or exc})",
                        "a readable image file") from exc


def _from_array(arr: np.ndarray, subject: str, limits: DecodeLimits) -> Image.Image:
    if arr.dtype != np.uint8 or not (arr.ndim == 2 or (arr.ndim == 3 and arr.shape[2] in (3, 4))):
        raise ItemError("bad_array", subject, f"is {arr.dtype} {tuple(arr.shape)}",
                        "a uint8 array of shape (H, W, 3), (H, W, 4) or (H, W)")
    img = Image.fromarray(np.ascontiguousarray(arr))
    _check_header(img, subject, limits)
    return img


def load_image(item: Any, subject: str, limits: DecodeLimits, spec: PreprocessSpec | None = None) -> Image.Image:
    """Open one item as a PIL image with EXIF orientation applied, checking header limits.

    Args:
        item: a path (``str`` / ``os.PathLike``), ``bytes``/``bytearray``/``memoryview``, a PIL image
            or a uint8 numpy array (H, W, 3 RGB; H, W, 4 RGBA; or H, W gray).
        subject: how the item is named in messages (usually its id).
        limits: header limits.
        spec: the model's preprocessing; given, large JPEGs are DCT-scaled towards its image size
            (``limits.draft_factor``) and come back already resized to the size its eval
            transform resizes them to; None decodes at full size.

    Returns:
        The PIL image in its own mode (conversion to RGB happens after resizing, as open_clip).

    Raises:
        ItemError: with one of the codes of :data:`ERROR_CODES`.

    The pixels are counted by :data:`DECODE_GATE` while PIL decodes them; the returned image is
    then the caller's memory (:func:`decode_item` holds them until they are resized).
    """
    with contextlib.ExitStack() as stack:
        return _load_image(item, subject, limits, spec, stack)


def _load_image(item: Any, subject: str, limits: DecodeLimits, spec: PreprocessSpec | None,
                stack: contextlib.ExitStack) -> Image.Image:
    """:func:`load_image`, its decode held in :data:`DECODE_GATE` until ``stack`` closes."""
    if isinstance(item, (str, os.PathLike)):
        return _open_path(Path(item), limits, spec, stack)
    if isinstance(item, (bytes, bytearray, memoryview)):
        if len(item) == 0:
            raise ItemError("empty_file", subject, "is an empty byte string", "image file bytes")
        return _open_bytes(io.BytesIO(item), subject, limits, len(item), spec, stack)
    if isinstance(item, Image.Image):
        _check_header(item, subject, limits)
        return item
    if isinstance(item, np.ndarray):
        return _from_array(item, subject, limits)
    raise ItemError("unsupported_item", subject, f"is a {type(item).__name__}",
                    "a path, bytes, a PIL image or a uint8 numpy array")


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
    with contextlib.ExitStack() as stack:  # the gate holds the decoded pixels until they are resized
        img = _load_image(item, subject, limits, spec, stack)
        return _to_uint8(img, subject, spec)


def _to_uint8(img: Image.Image, subject: str, spec: PreprocessSpec) -> np.ndarray:
    try:
        return to_uint8(img, spec)
    except (OSError, ValueError) as exc:
        text = str(exc)
        code = "truncated" if "truncated" in text else "decode_failed"
        raise ItemError(code, subject, f"cannot be resized or converted "
                        f"({exc.__class__.__name__}: {text})", "a valid image") from exc

