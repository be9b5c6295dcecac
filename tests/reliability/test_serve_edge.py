"""Issue 24 replayed against `foclip serve` subprocesses (slow: Ray), in both topologies: the 32 MB
header, stalled uploads beside a normal request, the WebP/TIFF bombs, one server per port.

Functional checks only; the figures (latency with 64 stalls, RSS) come from
scripts/measure/edge_probe.py and scripts/loadtest/run.py --idle-seconds (docs/serve.md)."""

from __future__ import annotations

import io
import os
import socket
import subprocess
import sys
import time
from urllib.parse import urlparse

import httpx
import pytest
from PIL import Image

pytest.importorskip("ray.serve")
pytestmark = pytest.mark.slow

SCALE = float(os.environ.get("FOCLIP_TEST_TIMEOUT_SCALE", "1"))


def bombs() -> list[tuple[str, bytes]]:
    out = []
    for name, fmt, kw in (("w.webp", "WEBP", {"lossless": True}), ("t.tiff", "TIFF", {"compression": "tiff_adobe_deflate"})):
        buf = io.BytesIO()
        Image.new("RGB", (8000, 8000)).save(buf, fmt, **kw)
        out.append((name, buf.getvalue()))
    return out


def head_status(sock: socket.socket) -> int:
    data = b""
    while b"\r\n" not in data:
        chunk = sock.recv(4096)
        if not chunk:
            break
        data += chunk
    return int(data.split(b" ", 2)[1]) if data else 0


@pytest.mark.parametrize("topology", ["split", "fused"])
def test_edge_bounds_and_bombs_in_a_running_service(tiny_bundle, serve_subprocess, uploads, topology):
    with serve_subprocess(tiny_bundle, "--topology", topology, "--body-timeout-s", "60",
                          start_s=300) as (_proc, url):
        u = urlparse(url)
        # A 32 MB header: 431 before the key, the body or a replica.
        with socket.create_connection((u.hostname, u.port), timeout=120 * SCALE) as s:
            try:
                s.sendall(b"GET /v1/info HTTP/1.1\r\nhost: x\r\nx-pad: " + b"a" * (32 * 1024 * 1024) + b"\r\n\r\n")
            except OSError:
                pass  # closed by the server once the bound passed
            assert head_status(s) == 431
        # 24 stalled uploads from two addresses: a normal request from a third is served while every
        # one of them is still open (each would hold a replica slot for 60 s without the edge gate).
        stalled = []
        for i in range(24):
            s = socket.create_connection((u.hostname, u.port), timeout=120 * SCALE,
                                         source_address=("127.0.0.1" if i % 2 else "127.0.0.2", 0))
            s.sendall(b"POST /v1/detect HTTP/1.1\r\nhost: x\r\ncontent-type: image/jpeg\r\n"
                      b"content-length: 100000\r\n\r\n" + b"x" * 100)
            stalled.append(s)
        try:
            time.sleep(1.0)
            with httpx.Client(transport=httpx.HTTPTransport(local_address="127.0.0.3"), timeout=120 * SCALE) as c:
                r = c.post(f"{url}/v1/detect", content=uploads["astronaut.jpg"], headers={"content-type": "image/jpeg"})
            assert r.status_code == 200 and r.json()["results"][0]["error"] is None
            for s in stalled:  # none was answered yet: the normal request did not wait for their 408
                s.setblocking(False)
                with pytest.raises(BlockingIOError):
                    s.recv(1)
        finally:
            for s in stalled:
                s.close()
        # The WebP and TIFF bombs: refused before decoding, a documented 4xx.
        r = httpx.post(f"{url}/v1/detect", files=[("f", (n, d, "application/octet-stream")) for n, d in bombs()],
                       timeout=120 * SCALE)
        assert r.status_code == 422
        assert {x["error"]["code"] for x in r.json()["results"]} == {"pixel_budget"}
        # One server per port: a second service on the same port exits 1 with one line.
        proc = subprocess.run([sys.executable, "-m", "foclip.cli.main", "serve", str(tiny_bundle), "--port",
                               str(u.port)], capture_output=True, text=True, check=False, timeout=300 * SCALE,
                              env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
        err = proc.stderr[proc.stderr.find("error:"):].strip()
        assert proc.returncode == 1 and len(err.splitlines()) == 1 and "already in use" in err
        assert httpx.get(f"{url}/healthz", timeout=30).status_code == 200
