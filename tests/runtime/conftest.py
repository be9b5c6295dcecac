"""Fixtures of the runtime tests: a bad-input corpus made here, and a ready detector."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image


def _png_header_only(w: int, h: int) -> bytes:
    """A PNG that claims w x h pixels but holds almost no data (a decompression bomb's header)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 10))
            + chunk(b"IEND", b""))


# file name -> expected error code (None: must decode and score)
CORPUS = {
    "truncated.jpg": "truncated",
    "empty.jpg": "empty_file",
    "text.jpg": "not_an_image",
    "one_pixel.png": "too_small",
    "strip_1x5000.png": "extreme_aspect",
    "bomb_20000.png": "too_many_pixels",
    "big_10000.png": "too_many_pixels",
    "folder": "is_directory",
    "missing.jpg": "not_found",
    "cmyk.jpg": None,
    "gray16.png": None,
    "rgba.png": None,
    "palette.png": None,
    "animated.gif": None,
    "gray8.png": None,
    "rotated_exif.jpg": None,
}


def pytest_generate_tests(metafunc):
    """``corpus_name`` / ``good_corpus_name`` parametrise a test over the corpus files."""
    if "corpus_name" in metafunc.fixturenames:
        metafunc.parametrize("corpus_name", sorted(CORPUS))
    if "good_corpus_name" in metafunc.fixturenames:
        metafunc.parametrize("good_corpus_name", sorted(n for n, c in CORPUS.items() if c is None))


@pytest.fixture(scope="session")
def corpus_codes() -> dict[str, str | None]:
    """File name -> expected error code (None: decodes and scores)."""
    return dict(CORPUS)


@pytest.fixture(scope="session")
def bad_corpus(tmp_path_factory, sample_photos) -> Path:
    """Every kind of awkward input of issue 5, written to a folder."""
    d = tmp_path_factory.mktemp("corpus")
    ast = sample_photos["astronaut"]
    buf = io.BytesIO()
    Image.fromarray(ast).save(buf, "JPEG", quality=90)
    jpeg = buf.getvalue()
    (d / "truncated.jpg").write_bytes(jpeg[: len(jpeg) // 2])
    (d / "empty.jpg").write_bytes(b"")
    (d / "text.jpg").write_text("this is a text file, not a JPEG\n")
    Image.fromarray(np.full((1, 1, 3), 200, np.uint8)).save(d / "one_pixel.png")
    Image.fromarray(np.full((5000, 1, 3), 90, np.uint8)).save(d / "strip_1x5000.png")
    (d / "bomb_20000.png").write_bytes(_png_header_only(20000, 20000))  # refused by PIL's own guard
    (d / "big_10000.png").write_bytes(_png_header_only(10000, 10000))  # refused by foclip's header check
    (d / "folder").mkdir()
    chelsea = sample_photos["chelsea"]
    Image.fromarray(chelsea).convert("CMYK").save(d / "cmyk.jpg", quality=95)
    gray16 = (sample_photos["coffee"].mean(axis=2) * 257).astype(np.uint16)
    Image.fromarray(gray16).save(d / "gray16.png")
    rgba = np.dstack([ast, np.linspace(0, 255, ast.shape[1], dtype=np.uint8)[None, :].repeat(ast.shape[0], 0)])
    Image.fromarray(rgba, "RGBA").save(d / "rgba.png")
    Image.fromarray(sample_photos["rocket"]).convert("P", palette=Image.ADAPTIVE).save(d / "palette.png")
    frames = [Image.fromarray(chelsea), Image.fromarray(chelsea[::-1].copy())]
    frames[0].save(d / "animated.gif", save_all=True, append_images=frames[1:], duration=100)
    Image.fromarray(sample_photos["coffee"]).convert("L").save(d / "gray8.png")
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 CW to display
    Image.fromarray(sample_photos["rocket"]).save(d / "rotated_exif.jpg", exif=exif, quality=95)
    return d
