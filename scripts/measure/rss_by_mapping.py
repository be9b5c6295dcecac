"""Where a replica's memory stays after a load: RSS per memory mapping, warm against idle.

    python scripts/measure/rss_by_mapping.py --bundle BUNDLE [--topology split] [--precision int8]

Starts `foclip serve BUNDLE --replicas 2 --threads 1` (scripts/loadtest/run.py's Server), warms it up
with --warmup locust requests, reads /proc/PID/smaps of every replica and of Serve's proxy, runs
--seconds of the mixed locust load, waits --idle-seconds, reads smaps again, then calls glibc's
``malloc_trim(0)`` in each process through gdb (when gdb is installed) and reads them a third time:
what a trim could still return. Prints, per process, the RSS ratio to warm and the mappings that grew
most (anonymous mappings by address: glibc's thread arenas are the 64 MiB-aligned ones; Ray's
object store is ``shm:/dev/shm/plasma*``). Linux only; gdb attaching needs ptrace rights (root, or
``kernel.yama.ptrace_scope=0``).
"""

from __future__ import annotations

import argparse
import contextlib
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "loadtest"))
import run as loadtest  # scripts/loadtest/run.py: its Server and locust driver

MAPPING = re.compile(r"^([0-9a-f]+)-([0-9a-f]+) ")


def smaps(pid: int) -> dict[str, int]:
    """RSS in KiB per mapping name (files by base name, anonymous mappings by address range)."""
    out: dict[str, int] = defaultdict(int)
    name = "?"
    with open(f"/proc/{pid}/smaps") as f:
        for line in f:
            m = MAPPING.match(line)
            if m:
                fields = line.split()
                path = fields[5] if len(fields) > 5 else ""
                if not path:
                    size = (int(m.group(2), 16) - int(m.group(1), 16)) >> 20
                    name = f"[anon {fields[0]} {size} MiB]"
                elif path.startswith("/dev/shm"):
                    name = "shm:" + path
                elif path.startswith("/"):
                    name = "file:" + path.rsplit("/", 1)[-1]
                else:
                    name = path
            elif line.startswith("Rss:"):
                out[name] += int(line.split()[1])
    return dict(out)


def processes(srv: loadtest.Server) -> list:
    """The server's replicas and Serve's HTTP proxy."""
    import psutil

    out = []
    for p in srv.processes():
        with contextlib.suppress(psutil.Error):  # a process that just went away
            cmd = " ".join(p.cmdline())
            if "ServeReplica:foclip" in cmd or "ProxyActor" in cmd:
                out.append(p)
    return out


def label(p) -> str:
    cmd = " ".join(p.cmdline())
    role = "proxy" if "ProxyActor" in cmd else cmd.split("ServeReplica:foclip:")[-1].split()[0].split(".")[0]
    return f"{role}:{p.pid}"


def snapshot(srv: loadtest.Server) -> dict[str, dict[str, int]]:
    return {label(p): smaps(p.pid) for p in processes(srv)}


def gdb_trim(srv: loadtest.Server) -> bool:
    gdb = shutil.which("gdb")
    if gdb is None:
        return False
    for p in processes(srv):
        subprocess.run([gdb, "-p", str(p.pid), "-batch", "-ex", "call (int)malloc_trim(0)"],
                       capture_output=True, timeout=300, check=False)
    return True


def report(warm: dict, idle: dict, trimmed: dict | None, top: int) -> str:
    lines = []
    for key, w in warm.items():
        e = idle.get(key)
        if e is None:
            continue
        tw, te = sum(w.values()), sum(e.values())
        trim = f"; after malloc_trim {sum(trimmed[key].values()) / 1024:.1f} MiB" if trimmed and key in trimmed else ""
        lines.append(f"{key}: warm {tw / 1024:.1f} MiB, idle {te / 1024:.1f} MiB ({te / tw:.3f}x){trim}")
        rows = sorted(((e.get(n, 0) - w.get(n, 0), n) for n in set(w) | set(e)), reverse=True)
        lines += [f"    {d / 1024:+7.1f} MiB  {n}" for d, n in rows[:top] if d > 0]
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bundle", required=True)
    ap.add_argument("--precision", default="int8")
    ap.add_argument("--topology", choices=("split", "fused"), default="split")
    ap.add_argument("--users", type=int, default=64)
    ap.add_argument("--warmup", type=int, default=300, help="locust requests before the warm reading")
    ap.add_argument("--seconds", type=int, default=60, help="length of the load")
    ap.add_argument("--idle-seconds", type=float, default=60.0)
    ap.add_argument("--top", type=int, default=8, help="mappings listed per process")
    ap.add_argument("--port", type=int, default=18090)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="foclip-rss-"))
    payloads = loadtest.make_payloads(work / "payloads", 4)
    srv = loadtest.Server(args.bundle, args.port, args.precision, 2, 1, 64, ("--topology", args.topology))
    try:
        srv.wait_ready()
        loadtest.run_locust(srv.url, payloads, args.users, args.warmup, 300, work / "warmup.json")
        warm = snapshot(srv)
        loadtest.run_locust(srv.url, payloads, args.users, 10**9, args.seconds, work / "load.json")
        time.sleep(args.idle_seconds)
        idle = snapshot(srv)
        trimmed = snapshot(srv) if gdb_trim(srv) else None
    finally:
        srv.stop()
    print(report(warm, idle, trimmed, args.top))
    return 0


if __name__ == "__main__":
    sys.exit(main())
