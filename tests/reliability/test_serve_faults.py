"""Bomb bursts, stalled uploads, drains, a killed replica and SIGTERM during startup, against `foclip serve` subprocesses (slow: Ray).

Each test prints what it measured; the figures in docs/serve.md come from these runs.
"""

from __future__ import annotations

import concurrent.futures as cf
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
from waits import ceiling, wait_until

pytest.importorskip("ray.serve")
pytestmark = pytest.mark.slow

JPEG = {"content-type": "image/jpeg"}


def process_tree(root: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                ppid = int(Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry))
    seen, todo = set(), [root]
    while todo:
        pid = todo.pop()
        if pid not in seen:
            seen.add(pid)
            todo += children.get(pid, [])
    return seen


def replica_pids(root: int, name: str) -> list[int]:
    out = []
    for pid in process_tree(root):
        try:
            if name in Path(f"/proc/{pid}/cmdline").read_text(errors="replace"):
                out.append(pid)
        except OSError:
            pass
    return out


def rss_mb(pid: int) -> float:
    return int(re.search(r"VmRSS:\s+(\d+)", Path(f"/proc/{pid}/status").read_text()).group(1)) / 1024


def test_every_listener_is_loopback_and_a_draining_service_answers_503(tiny_bundle, uploads, serve_subprocess, serve_in_flight):
    if shutil.which("ss") is None:
        pytest.skip("needs ss (iproute2)")
    flags = ("--batch-wait-ms", f"{ceiling(6) * 1000:.0f}", "--max-batch", "8", "--threads", "1")
    with serve_subprocess(tiny_bundle, *flags) as (proc, url):
        tree = process_tree(proc.pid)
        listeners = [ln for ln in subprocess.run(["ss", "-ltnpH"], capture_output=True, text=True, check=True).stdout.splitlines()
                     if any(f"pid={p}," in ln for p in tree)]
        print("\n".join(listeners))
        assert len(listeners) >= 5
        for ln in listeners:
            local = ln.split()[3]
            assert local.startswith(("127.0.0.1:", "[::ffff:127.0.0.1]:", "[::1]:")), ln

        got: dict = {}

        def slow_call() -> None:
            got["in_flight"] = httpx.post(f"{url}/v1/detect", content=uploads["astronaut.jpg"], headers=JPEG,
                                          timeout=ceiling(180))

        t = threading.Thread(target=slow_call)
        t.start()
        wait_until(lambda: serve_in_flight(url) or "in_flight" in got, "the request to be in flight", 120, interval=0.05)
        assert "in_flight" not in got, "the request finished before SIGTERM: make --batch-wait-ms longer"
        proc.send_signal(signal.SIGTERM)
        statuses: list = []

        def probe() -> None:
            try:
                r = httpx.post(f"{url}/v1/detect", content=uploads["astronaut.jpg"], headers=JPEG, timeout=ceiling(60))
                statuses.append((r.status_code, r.headers.get("retry-after")))
            except httpx.HTTPError as exc:
                statuses.append((exc.__class__.__name__, None))

        probes = []
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and proc.poll() is None:  # a new request every 0.15 s
            probes.append(threading.Thread(target=probe))
            probes[-1].start()
            time.sleep(0.15)
        for p in probes:
            p.join(ceiling(120))
        t.join(ceiling(240))
        print(f"during drain: {sorted(set(statuses), key=str)} ({len(statuses)} requests)")
        assert got["in_flight"].status_code == 200
        codes = [s for s, _ in statuses if isinstance(s, int)]
        # 200: accepted in the ~0.2 s before the replicas saw the drain; never 404 (clients treat it as permanent)
        assert 503 in codes and set(codes) <= {200, 503}
        assert all(ra == "1" for s, ra in statuses if s == 503)
        assert proc.wait(ceiling(300)) == 0


def padded_bomb(bomb: bytes) -> bytes:
    """The bomb with padding after its end that lifts it over the byte floor (decoded, DCT-scaled).

    Padding before the scan (a comment segment) no longer counts: the floor starts at the scan,
    wherever the segment walk finds it (issue 24)."""
    return bomb + b"\0" * 130_000


def stall(port: int, n: int) -> list[socket.socket]:
    """``n`` clients that send headers and 1 KB of a 100 KB body, then stop."""
    socks = []
    for _ in range(n):
        s = socket.create_connection(("127.0.0.1", port))
        s.sendall(b"POST /v1/detect HTTP/1.1\r\nHost: x\r\nContent-Type: image/jpeg\r\n"
                  b"Content-Length: 100000\r\n\r\n" + b"\xff" * 1024)
        socks.append(s)
    return socks


def test_two_replicas_survive_bombs_stalled_uploads_and_a_killed_replica(tiny_bundle, uploads, bomb, serve_subprocess):
    flags = ("--replicas", "2", "--threads", "1", "--max-ongoing", "8", "--max-per-client", "0",
             "--body-timeout-s", "3", "--cpus-per-replica", "0.5", "--timeout-s", str(ceiling(120)))
    with serve_subprocess(tiny_bundle, *flags) as (proc, url):
        port = int(url.rsplit(":", 1)[1])
        good = uploads["astronaut.jpg"]
        with httpx.Client(base_url=url, timeout=ceiling(180)) as http:
            assert http.post("/v1/detect", content=good, headers=JPEG).status_code == 200
            detectors = replica_pids(proc.pid, "FoclipDetector")
            assert len(detectors) == 2, detectors

            # bombs: two requests of 64 bombs each (the review's burst), then padded bombs that get decoded.
            before = {p: rss_mb(p) for p in detectors}
            burst = [("f", (f"b{i}.jpg", bomb, "image/jpeg")) for i in range(64)]
            padded = [("f", (f"p{i}.jpg", padded_bomb(bomb), "image/jpeg")) for i in range(8)]
            with cf.ThreadPoolExecutor(4) as pool:
                answers = list(pool.map(lambda files: http.post("/v1/detect", files=files),
                                        [burst, burst, padded, padded]))
                lone = http.post("/v1/detect", content=good, headers=JPEG)
            time.sleep(2)
            after = {p: rss_mb(p) for p in detectors}
            codes = [sorted({(r["error"] or {}).get("code", "ok") for r in a.json()["results"]}) for a in answers]
            print(f"bomb burst: statuses {[a.status_code for a in answers]}, codes {codes}, lone request {lone.status_code}")
            print(f"bombs: detector RSS before {before} MB, after {after} MB")
            assert codes[0] == ["pixel_budget", "truncated"] and set(codes[2]) <= {"ok", "pixel_budget"}
            assert lone.status_code == 200
            assert all(after[p] - before[p] < 150 for p in detectors)  # measured: within a few tens of MB

            # stalled uploads are cut off with 408 and the service keeps answering.
            socks = stall(port, 12)
            t0 = time.monotonic()
            r = http.post("/v1/detect", content=good, headers=JPEG)
            waited = time.monotonic() - t0
            heads = []
            for s in socks:
                s.settimeout(ceiling(60))
                try:
                    heads.append(s.recv(64).split(b"\r\n", 1)[0].decode())
                except OSError as exc:
                    heads.append(exc.__class__.__name__)
                s.close()
            print(f"12 stalled uploads -> {sorted(set(heads))}; a normal request got {r.status_code} after {waited:.1f} s")
            assert r.status_code == 200
            assert all(h.startswith("HTTP/1.1 408") for h in heads), heads

            # kill one detector replica under load; every request must still succeed.
            results: list = []
            stop = threading.Event()

            def load() -> None:
                with httpx.Client(base_url=url, timeout=ceiling(180)) as c:
                    while not stop.is_set():
                        try:
                            results.append(c.post("/v1/detect", content=good, headers=JPEG).status_code)
                        except httpx.HTTPError as exc:
                            results.append(exc.__class__.__name__)

            threads = [threading.Thread(target=load) for _ in range(6)]
            for t in threads:
                t.start()
            # Counted, not timed: enough requests before the kill and after it, however slow the machine.
            wait_until(lambda: len(results) >= 10, "10 requests before the kill", 120)
            victim = replica_pids(proc.pid, "FoclipDetector")[0]
            os.kill(victim, signal.SIGKILL)
            at_kill = len(results)
            wait_until(lambda: len(results) >= at_kill + 20, "20 requests after the kill", 180)
            stop.set()
            for t in threads:
                t.join(ceiling(240))
            failures = [x for x in results if x != 200]
            print(f"killed replica {victim}; {len(results)} requests, failures {failures}")
            assert len(results) > 20 and failures == []


def test_minor_sigterm_during_startup_exits_cleanly(tiny_bundle):
    from foclip.serve.service import free_port

    cmd = [sys.executable, "-m", "foclip.cli.main", "serve", str(tiny_bundle), "--port", str(free_port()),
           "--threads", "1"]
    outcomes = []
    for delay in (3.0, 8.0):  # inside the driver's check / Ray's start, and inside serve.run
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        time.sleep(delay)
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=ceiling(300))
        outcomes.append((delay, proc.returncode, out.strip().splitlines()[-1:]))
        assert proc.returncode == 0, out
        assert "SIGTERM received" not in out and "Traceback" not in out, out
    print(f"SIGTERM during startup: {outcomes}")
