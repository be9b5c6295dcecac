"""Request bodies for the service tests: real photos and each kind of bad upload, made here."""

from __future__ import annotations

import contextlib
import io
import os
import struct
import subprocess
import sys
import threading
import time
import zlib
from collections.abc import Iterator

import numpy as np
import pytest
from PIL import Image


def png_header_only(w: int, h: int) -> bytes:
    """A small PNG whose header claims ``w`` x ``h`` pixels (a decompression bomb's header)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 10)) + chunk(b"IEND", b"")


def encode(arr: np.ndarray, fmt: str) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, fmt, **({"quality": 90} if fmt == "JPEG" else {}))
    return buf.getvalue()


@pytest.fixture(scope="session")
def uploads(sample_photos) -> dict[str, bytes]:
    """Good images (downscaled skimage photos) and one body per bad-input kind."""
    small = {k: np.ascontiguousarray(v[::4, ::4]) for k, v in sample_photos.items()}
    jpeg = encode(small["astronaut"], "JPEG")
    return {
        "astronaut.jpg": jpeg,
        "chelsea.png": encode(small["chelsea"], "PNG"),
        "coffee.jpg": encode(small["coffee"], "JPEG"),
        "rocket.png": encode(small["rocket"], "PNG"),
        "truncated.jpg": jpeg[: len(jpeg) // 2],
        "empty.jpg": b"",
        "text.jpg": b"this is a text file, not a JPEG\n",
        "bomb.png": png_header_only(20000, 20000),
    }


@pytest.fixture(scope="session")
def bad_codes() -> dict[str, str]:
    """Bad upload name -> the error code the Detector gives it (the runtime's ERROR_CODES)."""
    return {"truncated.jpg": "truncated", "empty.jpg": "empty_file", "text.jpg": "not_an_image",
            "bomb.png": "too_many_pixels"}


@pytest.fixture(scope="session")
def good_names() -> tuple[str, ...]:
    """Names of the good uploads."""
    return ("astronaut.jpg", "chelsea.png", "coffee.jpg", "rocket.png")


# Ray's own start-up deadlines, fixed in Ray (30 s for the raylet to register, 60 s for Serve's HTTP
# proxy; no setting lengthens them): a machine loaded ~10x past its cores misses them and `foclip
# serve` exits. Within the test's ceiling such a start is tried again; any other exit fails at once.
RAY_GAVE_UP = ("timed out during startup", "class_name: ProxyActor", "Deadline Exceeded")


@contextlib.contextmanager
def _serve_subprocess(bundle, *flags: str, start_s: float = 600.0) -> Iterator[tuple[subprocess.Popen, str]]:
    """Run `foclip serve BUNDLE --port <free> FLAGS...` in a subprocess (its own local Ray) until healthy.

    Args:
        bundle: the bundle folder.
        flags: more `foclip serve` options.
        start_s: ceiling for the service to answer ``/healthz`` (x ``FOCLIP_TEST_TIMEOUT_SCALE``); a
            quiet 2-core machine needs ~15 s, one shared with other jobs several minutes.

    Yields:
        ``(process, base url)``; on exit the process gets SIGTERM (a clean stop also ends its Ray),
        then SIGKILL if it is still running after the stop ceiling.
    """
    import httpx
    from waits import terminate, wait_until

    from foclip.serve.service import free_port

    started: dict = {}

    def launch() -> None:
        started["port"] = port = free_port()
        started["url"] = f"http://127.0.0.1:{port}"
        cmd = [sys.executable, "-m", "foclip.cli.main", "serve", str(bundle), "--port", str(port), *flags]
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                env=os.environ.copy())
        # A thread reads the output as it comes: the driver's "serving on" line is the readiness signal,
        # and a pipe nobody reads would block the server once it fills.
        lines: list[str] = []
        threading.Thread(target=lambda: lines.extend(iter(proc.stdout.readline, "")), daemon=True).start()
        proc.foclip_output = lines
        started["proc"] = proc

    def healthy() -> bool:
        proc = started["proc"]
        if proc.poll() is not None:
            proc.wait()
            time.sleep(0.5)  # let the reader thread take the last lines
            out = "".join(proc.foclip_output)
            if any(marker in out for marker in RAY_GAVE_UP):
                print(f"Ray gave up starting (its own fixed deadline); starting foclip serve again:\n{out[-600:]}")
                launch()
                return False
            pytest.fail(f"foclip serve exited with {proc.returncode}:\n{out}")
        # The replicas answer /healthz before the driver has finished starting (it prints "serving on"
        # then): a SIGTERM in between is a stop during startup, which drains nothing.
        if not any(line.startswith("serving on") for line in proc.foclip_output):
            return False
        try:
            return httpx.get(f"{started['url']}/healthz", timeout=10).status_code == 200
        except httpx.HTTPError:
            return False

    launch()
    try:
        wait_until(healthy, "foclip serve to answer /healthz", start_s, interval=0.3)
        yield started["proc"], started["url"]
    finally:
        proc = started["proc"]
        if proc.poll() is None:
            terminate(proc)


def in_flight(url: str) -> int:
    """Requests the (single) ingress replica is working on now, from ``GET /v1/info``."""
    import httpx

    try:
        return int(httpx.get(f"{url}/v1/info", timeout=10).json()["service"]["in_flight"])
    except httpx.HTTPError:  # busy: ask again
        return 0


@pytest.fixture(scope="session")
def serve_subprocess():
    """The :func:`_serve_subprocess` context manager (a fixture, since conftest is not importable)."""
    return _serve_subprocess


@pytest.fixture(scope="session")
def serve_in_flight():
    """:func:`in_flight`: a readiness signal that a request reached the service (before a SIGTERM)."""
    return in_flight
