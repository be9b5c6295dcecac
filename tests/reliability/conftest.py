"""Inputs that broke foclip in the hardening review (issue 14), rebuilt here from scratch."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image


def jpeg_bomb(width: int = 9000, height: int = 7000, size: int = 693) -> bytes:
    """A Huffman JPEG whose frame header claims ``width`` x ``height`` pixels, cut to ``size`` bytes and
    closed with an EOI marker (libjpeg would fill the missing blocks with gray and report nothing)."""
    rng = np.random.default_rng(0)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(buf, "JPEG", quality=90)
    data = bytearray(buf.getvalue())
    sof = data.find(b"\xff\xc0")
    data[sof + 5:sof + 7] = height.to_bytes(2, "big")
    data[sof + 7:sof + 9] = width.to_bytes(2, "big")
    return bytes(data[: size - 2]) + b"\xff\xd9"


@pytest.fixture(scope="session")
def bomb() -> bytes:
    """The 693-byte JPEG that declares 9000x7000 pixels."""
    return jpeg_bomb()


@pytest.fixture(scope="session")
def photo_jpeg(sample_photos) -> bytes:
    """A real photo (skimage astronaut, 512x512) as JPEG bytes."""
    buf = io.BytesIO()
    Image.fromarray(sample_photos["astronaut"]).save(buf, "JPEG", quality=90)
    return buf.getvalue()


def _serve_fixtures():
    # The service tests' uploads and `foclip serve` runner, shared rather than copied.
    import importlib.util
    from pathlib import Path

    spec = importlib.util.spec_from_file_location("_foclip_serve_conftest",
                                                  Path(__file__).parent.parent / "serve" / "conftest.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


_serve = _serve_fixtures()
uploads = _serve.uploads
serve_subprocess = _serve.serve_subprocess
serve_in_flight = _serve.serve_in_flight
