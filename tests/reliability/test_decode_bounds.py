"""Decompression bombs, oversized frames and the header-cut JPEG: decoding does work in proportion to the bytes it was given."""

from __future__ import annotations

import io
import os
import struct
import subprocess
import sys
import zlib

import numpy as np
import pytest
from PIL import Image

from foclip.manifest import PreprocessSpec
from foclip.runtime.decode import DecodeLimits, ItemError, decode_item, min_encoded_bytes

SPEC = PreprocessSpec()


def code_of(item, limits: DecodeLimits | None = None) -> str:
    try:
        decode_item(item, "item", SPEC, limits or DecodeLimits())
    except ItemError as exc:
        return exc.code
    return "ok"


def test_tiny_jpeg_declaring_63_megapixels_is_truncated_before_decoding(bomb):
    assert len(bomb) == 693
    with pytest.raises(ItemError) as info:
        decode_item(bomb, "bomb", SPEC, DecodeLimits())
    assert info.value.code == "truncated"
    assert "9000x7000" in info.value.message and "693" in info.value.message


def test_decode_floor_never_refuses_complete_images(sample_photos):
    # The most compressible inputs there are: one flat colour, at full size, in each bounded format.
    flat = np.full((2000, 3000, 3), 127, np.uint8)
    for fmt, kwargs in (("JPEG", {"quality": 10}), ("JPEG", {"quality": 10, "progressive": True}),
                        ("PNG", {"optimize": True}), ("GIF", {})):
        buf = io.BytesIO()
        Image.fromarray(flat).save(buf, fmt, **kwargs)
        data = buf.getvalue()
        assert code_of(data) == "ok", (fmt, kwargs, len(data))
        assert min_encoded_bytes(fmt, (3000, 2000), data[:65536]) <= len(data)
    buf = io.BytesIO()
    Image.fromarray(sample_photos["coffee"]).save(buf, "JPEG")
    assert code_of(buf.getvalue()) == "ok"


def test_png_declaring_more_than_deflate_can_carry_is_truncated():
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", 7000, 7000, 8, 2, 0, 0, 0)  # 49 Mpx, under max_pixels
    png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 4000)) + chunk(b"IEND", b"")
    assert code_of(png) == "truncated"


def test_large_jpeg_is_dct_scaled_and_close_to_a_full_decode(sample_photos):
    big = Image.fromarray(sample_photos["astronaut"]).resize((4096, 4096), Image.BICUBIC)
    buf = io.BytesIO()
    big.save(buf, "JPEG", quality=92)
    full = decode_item(buf.getvalue(), "x", SPEC, DecodeLimits(draft_factor=0)).astype(int)
    scaled = decode_item(buf.getvalue(), "x", SPEC, DecodeLimits()).astype(int)
    diff = np.abs(full - scaled)
    print(f"4096 px JPEG, DCT-scaled vs full decode: mean |d| {diff.mean():.3f}, max {diff.max()} (of 255)")
    assert diff.mean() < 0.5 and diff.max() <= 8  # measured 0.135 / 2


def test_minor_jpeg_cut_inside_its_header_is_truncated(photo_jpeg):
    sof = photo_jpeg.find(b"\xff\xc0")
    for cut in (sof + 4, sof + 8):
        assert code_of(photo_jpeg[:cut]) == "truncated", cut


def test_file_over_the_size_cap_is_refused_without_reading(tmp_path):
    path = tmp_path / "huge.jpg"
    with open(path, "wb") as f:
        f.truncate(300 * 1024 * 1024)  # sparse: no disk used
    with pytest.raises(ItemError) as info:
        decode_item(str(path), "huge", SPEC, DecodeLimits())
    assert info.value.code == "file_too_large" and "max_file_bytes" in info.value.message
    assert code_of(str(path), DecodeLimits(max_file_bytes=1024**3)) == "not_an_image"


def test_a_fifo_is_refused_instead_of_blocking(tmp_path):
    fifo = tmp_path / "pipe.jpg"
    os.mkfifo(fifo)
    assert code_of(str(fifo)) == "unreadable"


def test_files_are_streamed_not_read_whole(tmp_path):
    # A 1 GiB sparse file that starts like a JPEG: the decoder must not hold it in memory.
    path = tmp_path / "sparse.jpg"
    with open(path, "wb") as f:
        f.write(b"\xff\xd8\xff\xe0")
        f.truncate(1024**3)
    script = (
        "import re\n"
        "from foclip.manifest import PreprocessSpec\n"
        "from foclip.runtime.decode import DecodeLimits, ItemError, decode_item\n"
        "try:\n"
        f"    decode_item({str(path)!r}, 'x', PreprocessSpec(), DecodeLimits(max_file_bytes=2 * 1024**3))\n"
        "except ItemError as e:\n"
        "    print(e.code)\n"
        # VmHWM, not ru_maxrss: the latter keeps the forking parent's (pytest's) peak across exec.
        "print(int(re.search(r'VmHWM:\\s+(\\d+)', open('/proc/self/status').read()).group(1)) // 1024)\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True,
                         env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}).stdout.split()
    code, peak_mb = out[0], int(out[1])
    print(f"1 GiB sparse .jpg: {code}, peak RSS {peak_mb} MB")
    assert code in ("not_an_image", "truncated", "decode_failed")
    assert peak_mb < 300  # measured ~40 MB; reading the whole file would be > 1024 MB


@pytest.mark.parametrize("orientation", [1, 3, 6, 8])
def test_dct_scaled_jpeg_keeps_the_full_images_geometry(sample_photos, orientation):
    # A short side that is no multiple of 8, a 64 px model (1/8 scaling) and EXIF rotations: the
    # resize must follow the full image's size, not libjpeg's rounded-up drafted size. Computing it
    # from the drafted size shifted the crop (max difference 71-97 of 255 on this photo).
    spec = PreprocessSpec(image_size=64)
    big = Image.fromarray(sample_photos["rocket"]).resize((1531, 1021), Image.BICUBIC)
    exif = Image.Exif()
    exif[0x0112] = orientation
    buf = io.BytesIO()
    big.save(buf, "JPEG", quality=92, exif=exif.tobytes())
    full = decode_item(buf.getvalue(), "x", spec, DecodeLimits(draft_factor=0)).astype(int)
    for factor in (1, 2, 4):
        scaled = decode_item(buf.getvalue(), "x", spec, DecodeLimits(draft_factor=factor)).astype(int)
        diff = np.abs(full - scaled)
        print(f"orientation {orientation}, draft_factor {factor}: mean |d| {diff.mean():.3f}, max {diff.max()}")
        assert diff.mean() < 1.0 and diff.max() <= 16, (factor, diff.mean(), diff.max())
