"""Served images/s over the Open Inference Protocol (v2, binary tensors) against /v1/detect, ABAB.

    python scripts/loadtest/v2_vs_v1.py --bundle BUNDLE [--users 32] [--seconds 60] [--rounds 2]

One `foclip serve` (so both protocols share the same warm replicas), a warm-up with each protocol,
then --rounds rounds of wrk on /v1/detect (raw image bodies) followed by wrk on
/v2/models/foclip/infer (the same images, one per request, binary-tensor extension). Interleaving
the two cancels most of the drift of a shared machine; each run states the machine's load: the
1-minute load average and the cores busy outside the server and wrk. Prints a markdown table and
writes --out (JSON).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run import Server, make_payloads, run_wrk  # noqa: E402 - the load test's own helpers


def busy_seconds() -> float:
    """CPU seconds the whole machine spent busy since boot (all cores)."""
    import psutil

    t = psutil.cpu_times()
    return t.user + t.nice + t.system + t.irq + t.softirq + getattr(t, "steal", 0.0)


def one_run(srv: Server, files: list[Path], users: int, seconds: int, work: Path, protocol: str) -> dict:
    """A timed wrk run, with the machine's load beside it."""
    load0, busy0, cpu0, t0 = os.getloadavg()[0], busy_seconds(), sum(srv.cpu_seconds().values()), time.monotonic()
    res = run_wrk(srv.url, files, users, seconds, work, protocol=protocol)
    wall = time.monotonic() - t0
    server_cpu = sum(srv.cpu_seconds().values()) - cpu0
    other = busy_seconds() - busy0 - server_cpu - res["load_generator_cpu_s"]
    res.update(protocol=protocol, load_avg_1m=[round(load0, 2), round(os.getloadavg()[0], 2)],
               server_cores_busy=round(server_cpu / wall, 2), other_cores_busy=round(max(other, 0.0) / wall, 2))
    return res


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bundle", required=True)
    ap.add_argument("--precision", default="fp32")
    ap.add_argument("--users", type=int, default=32)
    ap.add_argument("--seconds", type=int, default=60)
    ap.add_argument("--warmup-seconds", type=int, default=15)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--replicas", type=int, default=1)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--max-batch", type=int, default=32)
    ap.add_argument("--port", type=int, default=18090)
    ap.add_argument("--serve-arg", action="append", default=[])
    ap.add_argument("--out", default="v2_vs_v1.json")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="foclip-v2v1-"))
    files = sorted((make_payloads(work / "payloads", 0) / "good").iterdir())
    srv = Server(args.bundle, args.port, args.precision, args.replicas, args.threads, args.max_batch,
                 tuple(args.serve_arg))
    runs = []
    try:
        srv.wait_ready()
        for protocol in ("v1", "v2"):
            run_wrk(srv.url, files, args.users, args.warmup_seconds, work, protocol=protocol)  # not reported
        for _ in range(args.rounds):
            for protocol in ("v1", "v2"):
                runs.append(one_run(srv, files, args.users, args.seconds, work, protocol))
                print(json.dumps({k: runs[-1][k] for k in ("protocol", "images_scored_per_s", "p50_ms",
                                                           "status_counts", "load_avg_1m", "other_cores_busy")}),
                      flush=True)
    finally:
        exit_code = srv.stop()
    mean = {p: sum(r["images_scored_per_s"] for r in runs if r["protocol"] == p) / args.rounds for p in ("v1", "v2")}
    res = {"bundle": args.bundle, "precision": args.precision, "users": args.users, "seconds": args.seconds,
           "serve_args": args.serve_arg, "runs": runs, "mean_images_per_s": mean,
           "v2_over_v1": round(mean["v2"] / mean["v1"], 3), "server_exit_code": exit_code}
    Path(args.out).write_text(json.dumps(res, indent=2) + "\n")
    print("\n| run | protocol | served img/s | p50 / p95 / p99 ms | 2xx / non-2xx | load avg 1 min (start, end) | "
          "other cores busy |\n|---|---|---|---|---|---|---|")
    for i, r in enumerate(runs, 1):
        sc = r["status_counts"]
        print(f"| {i} | {r['protocol']} | {r['images_scored_per_s']} | {r['p50_ms']} / {r['p95_ms']} / {r['p99_ms']} "
              f"| {sc['2xx']} / {sc['4xx'] + sc['5xx']} | {r['load_avg_1m']} | {r['other_cores_busy']} |")
    print(f"\nmean: v1 {mean['v1']:.2f}, v2 {mean['v2']:.2f} images/s; v2 / v1 = {res['v2_over_v1']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
