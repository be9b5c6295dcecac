"""Issue 32's v2 JSON probe against `foclip serve`: what a 32 MB JSON request costs the service.

For each ``--topology`` this starts ``foclip serve BUNDLE`` on loopback (int8, one replica), then:

* ``junk``: ``--probes`` concurrent v2 inference requests that are valid except for a ~32 MB junk
  array (``[],`` x 11 M) beside the input; while they are in flight, ``/v1/detect`` requests run one
  after another. Prints each probe's status, time and body, the peak RSS (``VmHWM``, reset just
  before) and RSS after of each Ray worker of the service, and the ``/v1/detect`` latencies alone
  and during the probes.
* ``image``: one valid v2 JSON request near the body limit (a ~23 MB noise PNG in base64), then
  the same PNG as a raw ``/v1/detect`` body: the peak memory a legitimate request of the largest
  size costs each worker, in each protocol.

Figures depend on the machine and its load: print ``grep -o 'avx512_vnni\\|avx_vnni\\|amx_int8\\|avx2'
/proc/cpuinfo | sort -u`` and the load average next to them (this script prints the load average).

Usage: python scripts/measure/json_probe.py --bundle BUNDLE [--topology split fused] [--probes 1 4]
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import os
import signal
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import psutil
from edge_probe import ray_workers  # this folder (the script's own) is first on sys.path
from PIL import Image

INFER = "/v2/models/foclip/infer"


def reset_peak(procs: dict[str, psutil.Process]) -> None:
    """Reset each process's peak RSS (``VmHWM``; Linux: writing 5 to clear_refs)."""
    for p in procs.values():
        Path(f"/proc/{p.pid}/clear_refs").write_text("5")


def mib(procs: dict[str, psutil.Process], field: str) -> dict[str, float]:
    """``VmRSS`` or ``VmHWM`` (MiB) of each process, from /proc/PID/status."""
    out = {}
    for name, p in procs.items():
        for line in Path(f"/proc/{p.pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                out[name] = round(int(line.split()[1]) / 1024, 1)
    return out


def photo_jpeg() -> bytes:
    """A 320x240 gradient JPEG (what the concurrent /v1/detect requests send)."""
    y, x = np.mgrid[0:240, 0:320]
    arr = np.stack([x % 256, y % 256, (x + y) % 256], -1).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "JPEG", quality=90)
    return buf.getvalue()


def junk_body(image: bytes, repeats: int) -> bytes:
    """A valid v2 request for one image with a junk array of ``repeats`` ``[]`` beside its input."""
    head = json.dumps({"inputs": [{"name": "IMAGE", "datatype": "BYTES", "shape": [1],
                                   "data": [base64.b64encode(image).decode()]}]}).encode()
    return head[:-1] + b', "junk": [' + b"[]," * (repeats - 1) + b"[]]}"


def noise_png(target_bytes: int) -> bytes:
    """A noise PNG of about ``target_bytes`` (noise does not compress)."""
    side = int((target_bytes / 3) ** 0.5)
    arr = np.random.default_rng(0).integers(0, 255, (side, side, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "PNG", compress_level=1)
    return buf.getvalue()


def v2_json_body(image: bytes) -> bytes:
    """A valid v2 JSON request for one image (base64)."""
    return json.dumps({"inputs": [{"name": "IMAGE", "datatype": "BYTES", "shape": [1],
                                   "data": [base64.b64encode(image).decode()]}]}).encode()


class Service:
    """``foclip serve`` in a subprocess (its own local Ray), until :meth:`stop`."""

    def __init__(self, bundle: str, port: int, topology: str) -> None:
        cmd = [sys.executable, "-m", "foclip.cli.main", "serve", bundle, "--port", str(port), "--precision", "int8",
               "--topology", topology, "--replicas", "1", "--threads", "1"]
        self.url = f"http://127.0.0.1:{port}"
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.lines: list[str] = []
        threading.Thread(target=lambda: self.lines.extend(iter(self.proc.stdout.readline, "")), daemon=True).start()

    def wait_ready(self, ceiling_s: float = 900.0) -> None:
        deadline = time.monotonic() + ceiling_s
        while not any(line.startswith("serving on") for line in self.lines):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit("foclip serve did not start:\n" + "".join(self.lines[-30:]))
            time.sleep(0.5)

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(120)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def detect_once(client: httpx.Client, url: str, image: bytes) -> float:
    t0 = time.perf_counter()
    r = client.post(url + "/v1/detect", content=image, headers={"content-type": "image/jpeg"})
    r.raise_for_status()
    return time.perf_counter() - t0


def probe(url: str, procs: dict[str, psutil.Process], bodies: list[bytes], image: bytes,
          route: str = INFER, content_type: str = "application/json") -> dict:
    """Send ``bodies`` at once to ``route`` while /v1/detect runs; the figures of that moment."""
    with httpx.Client(timeout=120) as client:
        alone = [detect_once(client, url, image) for _ in range(10)]
    time.sleep(2.0)  # let the replicas' idle trims run: the baseline is a quiet service
    before = mib(procs, "VmRSS")
    reset_peak(procs)
    answers: list[tuple[int, float, str]] = []

    def send(body: bytes) -> None:
        with httpx.Client(timeout=120) as c:
            t0 = time.perf_counter()
            r = c.post(url + route, content=body, headers={"content-type": content_type})
            answers.append((r.status_code, round(time.perf_counter() - t0, 2), r.text[:120]))

    threads = [threading.Thread(target=send, args=(b,)) for b in bodies]
    for t in threads:
        t.start()
    during = []
    with httpx.Client(timeout=120) as client:
        time.sleep(0.05)  # the probes' bodies are on their way
        while any(t.is_alive() for t in threads) or not during:
            during.append(detect_once(client, url, image))
    for t in threads:
        t.join()
    peak = mib(procs, "VmHWM")
    time.sleep(5.0)
    return {"answers": answers, "rss_before_mib": before, "peak_rss_mib": peak,
            "rss_5s_after_mib": mib(procs, "VmRSS"),
            "peak_minus_before_mib": {k: round(peak[k] - before[k], 1) for k in peak if k in before},
            "v1_alone_p50_s": round(statistics.median(alone), 3),
            "v1_during_s": {"n": len(during), "p50": round(statistics.median(during), 3), "max": round(max(during), 3)}}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bundle", required=True)
    ap.add_argument("--topology", nargs="+", default=["split", "fused"])
    ap.add_argument("--probes", type=int, nargs="+", default=[1, 4], help="junk requests sent at once, per round")
    ap.add_argument("--repeats", type=int, default=11_000_000, help="[] in the junk array (11 M: 33 MB)")
    ap.add_argument("--port", type=int, default=18123)
    args = ap.parse_args()
    image = photo_jpeg()
    junk = junk_body(image, args.repeats)
    png = noise_png(int(30 * 2**20 * 3 / 4))  # its base64 fills the 32 MiB body limit but for a margin
    big = v2_json_body(png)
    print(f"junk body {len(junk) / 1e6:.1f} MB; large-image body {len(big) / 1e6:.1f} MB (PNG {len(png) / 1e6:.1f} MB); "
          f"cpus {os.cpu_count()}; load average {os.getloadavg()[0]:.1f}", flush=True)
    for topology in args.topology:
        svc = Service(args.bundle, args.port, topology)
        try:
            svc.wait_ready()
            procs = ray_workers(args.port)
            for n in args.probes:
                res = probe(svc.url, procs, [junk] * n, image)
                print(json.dumps({"topology": topology, "case": f"junk x{n}", **res,
                                  "load_avg_1m": round(os.getloadavg()[0], 1)}), flush=True)
            res = probe(svc.url, procs, [big], image)
            print(json.dumps({"topology": topology, "case": "large image, v2 JSON", **res,
                              "load_avg_1m": round(os.getloadavg()[0], 1)}), flush=True)
            res = probe(svc.url, procs, [png], image, "/v1/detect", "image/png")
            print(json.dumps({"topology": topology, "case": "same image, v1 raw body", **res,
                              "load_avg_1m": round(os.getloadavg()[0], 1)}), flush=True)
        finally:
            svc.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
