"""Issue 24, point 1: decoding is bounded by the bytes sent for every format, and concurrent large
decodes queue (one process-wide gate counted in pixels)."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
from PIL import Image

from foclip.manifest import PreprocessSpec
from foclip.runtime import decode
from foclip.runtime.decode import DecodeLimits, ItemError, decode_item

SPEC = PreprocessSpec()


def encoded(img: Image.Image, fmt: str, **kwargs) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kwargs)
    return buf.getvalue()


def webp_bomb() -> bytes:
    """The issue's lossless WebP: 8000x8000 black in a few bytes (38 to 2,502 by libwebp version)."""
    return encoded(Image.new("RGB", (8000, 8000)), "WEBP", lossless=True)


def tiff_strip() -> bytes:
    """The issue's 308 KB TIFF: 8000x8000 black, deflate (308,140 bytes here)."""
    return encoded(Image.new("RGB", (8000, 8000)), "TIFF", compression="tiff_adobe_deflate")


def code_of(item, limits: DecodeLimits | None = None) -> str:
    try:
        decode_item(item, "item", SPEC, limits or DecodeLimits())
    except ItemError as exc:
        return exc.code
    return "ok"


@pytest.mark.parametrize("make", [webp_bomb, tiff_strip], ids=["webp-lossless", "tiff-deflate"])
def test_few_bytes_declaring_64_megapixels_are_refused_before_decoding(make):
    data = make()
    with pytest.raises(ItemError) as info:
        decode_item(data, "bomb", SPEC, DecodeLimits())
    assert info.value.code == "pixel_budget"
    assert "8000x8000" in info.value.message and "max_decode_ratio" in info.value.message
    assert code_of(data, DecodeLimits(max_decode_ratio=0)) == "ok"  # the check, not another one, refused it


def test_bombs_cost_the_process_almost_nothing(tmp_path):
    # Peak RSS of a fresh interpreter decoding both bombs (written here, so that building them does
    # not raise the child's peak), against the same interpreter before it decodes anything.
    paths = []
    for name, make in (("w.webp", webp_bomb), ("t.tiff", tiff_strip)):
        paths.append(str(tmp_path / name))
        (tmp_path / name).write_bytes(make())
    script = (
        "import re, sys\n"
        "from foclip.manifest import PreprocessSpec\n"
        "from foclip.runtime.decode import DecodeLimits, ItemError, decode_item\n"
        "blobs = [open(p, 'rb').read() for p in sys.argv[1:]]\n"
        "def peak(): return int(re.search(r'VmHWM:\\s+(\\d+)', open('/proc/self/status').read()).group(1)) // 1024\n"
        "before = peak()\n"
        "for b in blobs * 4:\n"
        "    try: decode_item(b, 'x', PreprocessSpec(), DecodeLimits())\n"
        "    except ItemError as e: print(e.code)\n"
        "print(before, peak())\n"
    )
    out = subprocess.run([sys.executable, "-c", script, *paths], capture_output=True, text=True, check=True,
                         env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}).stdout.split()
    codes, before, after = out[:-2], int(out[-2]), int(out[-1])
    print(f"8 bombs (WebP + TIFF, 8000x8000): codes {sorted(set(codes))}, peak RSS {before} -> {after} MB")
    assert codes == ["pixel_budget"] * 8
    assert after - before < 50  # a full decode of one costs > 400 MB


def test_real_content_and_small_flat_images_pass(sample_photos):
    photo = Image.fromarray(sample_photos["astronaut"])
    clipart = Image.new("RGB", (1024, 1024), "white")
    from PIL import ImageDraw

    draw = ImageDraw.Draw(clipart)
    for i in range(12):
        draw.ellipse((40 * i, 30 * i, 40 * i + 300, 30 * i + 200), fill=(20 * i, 200 - 10 * i, 90), outline="black")
    flat = Image.new("RGB", (3000, 2000), (127, 127, 127))  # 6 Mpx: under ratio_free_pixels
    for img in (photo, clipart, flat):
        for fmt, kw in (("PNG", {}), ("WEBP", {"lossless": True}), ("WEBP", {"quality": 80}),
                        ("TIFF", {"compression": "tiff_adobe_deflate"}), ("BMP", {}), ("GIF", {}),
                        ("JPEG", {"quality": 10})):
            assert code_of(encoded(img, fmt, **kw)) == "ok", (img.size, fmt, kw)


def test_large_jpeg_is_judged_at_its_dct_scaled_size():
    # A flat 7000x7000 JPEG (~190:1) would be refused at full size with a low ratio; DCT-scaled to the
    # model's input (1/8) it costs 64x fewer pixels and passes.
    data = encoded(Image.new("RGB", (7000, 7000), (90, 90, 90)), "JPEG", quality=10)
    limits = DecodeLimits(max_decode_ratio=64)
    assert code_of(data, limits) == "ok"
    assert code_of(data, DecodeLimits(max_decode_ratio=64, draft_factor=0)) == "pixel_budget"


def test_jpeg_with_a_30_mb_icc_profile_is_not_truncated(photo_jpeg):
    img = Image.open(io.BytesIO(photo_jpeg))
    icc = bytes(np.random.default_rng(0).integers(0, 255, 30 * 1024 * 1024, dtype=np.uint8))
    data = encoded(img, "JPEG", quality=90, icc_profile=icc)
    assert len(data) > 30 * 1024 * 1024
    assert code_of(data) == "ok"


def test_concurrent_large_decodes_queue_behind_the_gate():
    gate = decode.DecodeGate()
    capacity, inside, worst = 100, [0], [0]
    lock = threading.Lock()

    def work(n: int) -> None:
        with gate.hold(n, capacity):
            with lock:
                inside[0] += n
                worst[0] = max(worst[0], inside[0])
            time.sleep(0.05)
            with lock:
                inside[0] -= n

    threads = [threading.Thread(target=work, args=(n,)) for n in (60, 60, 60, 30, 10, 500)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert worst[0] <= 500 and gate.in_use == 0
    assert gate.peak <= capacity  # 500 alone is clamped to the capacity and runs alone


def test_decoder_threads_share_the_process_gate(sample_photos):
    decode.DECODE_GATE.peak = 0
    data = encoded(Image.fromarray(sample_photos["astronaut"]).resize((3000, 3000)), "PNG")
    limits = DecodeLimits(max_inflight_pixels=10_000_000)  # one 9 Mpx image at a time
    threads = [threading.Thread(target=decode_item, args=(data, "x", SPEC, limits)) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert decode.DECODE_GATE.peak == 9_000_000 and decode.DECODE_GATE.in_use == 0
