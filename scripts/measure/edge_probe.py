"""Issue 24's edge probes against a running `foclip serve` (loopback only; bounded in count and time).

* ``header``: ``--rounds`` rounds of 4 concurrent requests with a 32 MB header; prints each status
  and the proxy's RSS before and after (found by its command line, ``ray::ProxyActor``).
* ``stall``: a normal request's latency alone (from 127.0.0.3), then while ``--stalls`` uploads
  (split over the source addresses 127.0.0.1 and 127.0.0.2, under the per-address in-flight bound)
  send part of their body and stop, re-opened as they close, for ``--seconds``; prints the latencies
  and what the stalled uploads were answered.
* ``bombs``: the 8000x8000 lossless WebP and 308 KB deflate TIFF posted ``--rounds`` x 4 at once;
  prints the status, the error codes and the RSS of every Ray worker before and after.

Usage: python scripts/measure/edge_probe.py URL {header,stall,bombs} [--image FILE]
"""

from __future__ import annotations

import argparse
import io
import socket
import statistics
import threading
import time
from urllib.parse import urlparse

import httpx
import psutil


def ray_workers(port: int) -> dict[str, psutil.Process]:
    """The proxy listening on ``port`` and its sibling Ray workers (ingress, detector replicas) under
    the same raylet, as ``"<tag>:<pid>"``; other services on the machine are not included."""
    proxy = next((c.pid for c in psutil.net_connections("tcp")
                  if c.status == psutil.CONN_LISTEN and c.laddr.port == port and c.pid), None)
    if proxy is None:
        return {}
    out = {}
    for p in psutil.Process(proxy).parent().children():
        try:
            title = " ".join(p.cmdline())
        except psutil.Error:
            continue
        tag = next((t for t in ("ProxyActor", "FoclipIngress", "FoclipDetector") if t in title), None)
        if tag:
            out[f"{tag}:{p.pid}"] = p
    return out


def ray_rss_mb(port: int) -> dict[str, float]:
    """RSS (MB) of :func:`ray_workers`."""
    out = {}
    for name, p in ray_workers(port).items():
        try:
            out[name] = p.memory_info().rss / 2**20
        except psutil.Error:
            pass
    return out


def raw(host: str, port: int, data: bytes, source: str = "127.0.0.1", timeout: float = 60.0) -> bytes:
    s = socket.create_connection((host, port), timeout=timeout, source_address=(source, 0))
    try:
        try:
            s.sendall(data)
        except OSError:
            pass
        out = b""
        try:
            while chunk := s.recv(65536):
                out += chunk
        except OSError:
            pass
        return out
    finally:
        s.close()


def probe_header(url: str, rounds: int) -> None:
    u = urlparse(url)
    big = b"GET /v1/info HTTP/1.1\r\nhost: x\r\nconnection: close\r\nx-pad: " + b"a" * (32 * 1024 * 1024) + b"\r\n\r\n"
    print("before", {k: round(v) for k, v in ray_rss_mb(u.port).items()})
    for r in range(rounds):
        results: list[bytes] = []

        def send(out: list[bytes] = results) -> None:
            out.append(raw(u.hostname, u.port, big))

        threads = [threading.Thread(target=send) for _ in range(4)]
        [t.start() for t in threads]
        [t.join() for t in threads]
        print(f"round {r}: statuses", [res.split(b"\r\n", 1)[0].decode() for res in results])
        print("after", {k: round(v) for k, v in ray_rss_mb(u.port).items()})


def normal(url: str, image: bytes) -> float:
    """One normal request's latency, from 127.0.0.3 (a client other than the stalling ones)."""
    t0 = time.perf_counter()
    with httpx.Client(transport=httpx.HTTPTransport(local_address="127.0.0.3"), timeout=120) as c:
        r = c.post(f"{url}/v1/detect", content=image, headers={"content-type": "image/jpeg"})
    assert r.status_code == 200, r.text
    return time.perf_counter() - t0


def probe_stall(url: str, image: bytes, stalls: int, seconds: float) -> None:
    u = urlparse(url)
    alone = [normal(url, image) for _ in range(5)]
    print(f"alone: median {statistics.median(alone):.3f} s, max {max(alone):.3f} s")
    stop = threading.Event()
    statuses: list[str] = []

    def staller(i: int) -> None:
        source = "127.0.0.1" if i % 2 == 0 else "127.0.0.2"
        while not stop.is_set():
            head = (f"POST /v1/detect HTTP/1.1\r\nhost: x\r\ncontent-type: image/jpeg\r\n"
                    f"content-length: {len(image)}\r\n\r\n").encode()
            try:
                s = socket.create_connection((u.hostname, u.port), timeout=seconds + 30, source_address=(source, 0))
                s.sendall(head + image[:100])
                first = s.recv(200)  # blocks until the server answers (408/429) or closes
                statuses.append(first.split(b"\r\n", 1)[0].decode() or "closed")
                s.close()
            except OSError as exc:
                statuses.append(type(exc).__name__)
            stop.wait(0.05)

    threads = [threading.Thread(target=staller, args=(i,), daemon=True) for i in range(stalls)]
    [t.start() for t in threads]
    time.sleep(2.0)
    lat = []
    t_end = time.monotonic() + seconds
    while time.monotonic() < t_end:
        lat.append(normal(url, image))
        time.sleep(0.5)
    stop.set()
    print(f"with {stalls} stalled uploads: {len(lat)} requests, median {statistics.median(lat):.3f} s, "
          f"max {max(lat):.3f} s; delay over alone (max) {max(lat) - statistics.median(alone):.3f} s")
    counts: dict[str, int] = {}
    for s in statuses:
        counts[s] = counts.get(s, 0) + 1
    print("staller answers:", counts)


def probe_bombs(url: str, rounds: int) -> None:
    from PIL import Image

    u = urlparse(url)
    bombs = {}
    for name, fmt, kw in (("w.webp", "WEBP", {"lossless": True}), ("t.tiff", "TIFF", {"compression": "tiff_adobe_deflate"})):
        b = io.BytesIO()
        Image.new("RGB", (8000, 8000)).save(b, fmt, **kw)
        bombs[name] = b.getvalue()
    print("sizes", {k: len(v) for k, v in bombs.items()})
    before = ray_rss_mb(u.port)
    print("before", {k: round(v) for k, v in before.items()})
    for r in range(rounds):
        files = [("files", (name, data, "application/octet-stream")) for name, data in bombs.items() for _ in range(2)]
        results = []

        def post(files: list = files, results: list = results) -> None:
            resp = httpx.post(f"{url}/v1/detect", files=files, timeout=120)
            results.append((resp.status_code, sorted({x["error"]["code"] for x in resp.json().get("results", [])
                                                      if x.get("error")})))

        threads = [threading.Thread(target=post) for _ in range(4)]
        [t.start() for t in threads]
        [t.join() for t in threads]
        print(f"round {r}:", results)
    after = ray_rss_mb(u.port)
    print("after", {k: round(v) for k, v in after.items()})
    print("delta", {k: round(after[k] - before[k]) for k in after if k in before})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("url")
    ap.add_argument("probe", choices=("header", "stall", "bombs"))
    ap.add_argument("--image", default=None, help="JPEG for normal requests (default: a sample photo)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--stalls", type=int, default=64)
    ap.add_argument("--seconds", type=float, default=20.0)
    a = ap.parse_args()
    if a.probe == "header":
        return probe_header(a.url, a.rounds)
    if a.probe == "bombs":
        return probe_bombs(a.url, a.rounds)
    if a.image:
        with open(a.image, "rb") as f:
            image = f.read()
    else:
        from PIL import Image

        from foclip.samples import sample_arrays

        buf = io.BytesIO()
        Image.fromarray(next(iter(sample_arrays(1).values()))).save(buf, "JPEG", quality=90)
        image = buf.getvalue()
    probe_stall(a.url, image, a.stalls, a.seconds)


if __name__ == "__main__":
    main()
