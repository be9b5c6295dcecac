"""Decoded RGB bytes per encoded byte, per format, on real and flat content (issue 24; docs/runtime.md).

Prints one row per image and one column per format/setting; the highest real-content figure per
format set ``foclip.runtime.decode.DecodeLimits.max_decode_ratio`` (with a margin).

Usage: python scripts/measure/decode_ratios.py
"""

from __future__ import annotations

import io

from PIL import Image, ImageDraw

from foclip.samples import sample_photos

FORMATS: dict[str, tuple[str, dict]] = {
    "PNG": ("PNG", {}), "WEBP-ll": ("WEBP", {"lossless": True}), "WEBP-q80": ("WEBP", {"quality": 80}),
    "TIFF-raw": ("TIFF", {}), "TIFF-lzw": ("TIFF", {"compression": "tiff_lzw"}),
    "TIFF-deflate": ("TIFF", {"compression": "tiff_adobe_deflate"}),
    "TIFF-packbits": ("TIFF", {"compression": "packbits"}), "BMP": ("BMP", {}), "GIF": ("GIF", {}),
    "JPEG-q90": ("JPEG", {"quality": 90}), "JPEG-q10": ("JPEG", {"quality": 10}),
}


def encoded_size(img: Image.Image, fmt: str, **kwargs) -> int:
    buf = io.BytesIO()
    img.save(buf, fmt, **kwargs)
    return len(buf.getvalue())


def images() -> list[tuple[str, Image.Image]]:
    out = [(name, im.convert("RGB")) for name, im in sample_photos()]
    clipart = Image.new("RGB", (1024, 1024), "white")
    draw = ImageDraw.Draw(clipart)
    for i in range(12):
        draw.ellipse((40 * i, 30 * i, 40 * i + 300, 30 * i + 200), fill=(20 * i, 200 - 10 * i, 90),
                     outline="black", width=3)
    screenshot = Image.new("RGB", (1280, 800), (240, 240, 240))
    draw = ImageDraw.Draw(screenshot)
    for y in range(0, 800, 18):
        draw.text((10, y), f"lorem ipsum dolor sit amet consectetur {y}", fill="black")
    return [*out, ("clipart", clipart), ("screenshot", screenshot), ("flat black", Image.new("RGB", (2000, 2000)))]


def main() -> None:
    print(f"{'image':24} {'size':>10} " + " ".join(f"{k:>13}" for k in FORMATS))
    for name, img in images():
        ratios = []
        for fmt, kwargs in FORMATS.values():
            src = img.convert("P") if fmt == "GIF" else img
            ratios.append(3 * img.width * img.height / encoded_size(src, fmt, **kwargs))
        print(f"{name[:24]:24} {img.width:>5}x{img.height:<4} " + " ".join(f"{r:13.1f}" for r in ratios))


if __name__ == "__main__":
    main()
