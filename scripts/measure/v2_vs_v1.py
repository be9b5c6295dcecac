"""Served images/s over the Open Inference Protocol (v2, binary tensors) against /v1/detect, ABAB.

    python scripts/measure/v2_vs_v1.py --bundle BUNDLE [--users 32] [--seconds 60] [--rounds 2]

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

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "loadtest"))
from run import Server, make_payloads, run_wrk  # scripts/loadtest/run.py: the load test's own helpers


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
               server_cores_busy=round(server_cpu / wall, 2), other_cores_busy=round(max(other, 0.0) / wall, 2),
               server_cpu_ms_per_image=round(server_cpu / max(1, res["status_counts"]["2xx"]) * 1e3, 1))
    return res


def protocol_code_us(files: list[Path], repeat: int = 300) -> dict[str, float]:
    """CPU microseconds per one-image request spent in each protocol's own code (parse + response), in this process.

    Everything else a request does (bounds, body read, batching, detection) is the same code for
    both routes; this is the only part that differs. The detector's result is a fixed dict here.
    """
    import asyncio
    import struct

    from foclip.serve.config import Limits
    from foclip.serve.v1 import check_media_type, parse_items, shape_response
    from foclip.serve.v2 import check_encoding, output_specs, parse_infer, shape_infer_response

    limits = Limits()
    result = [{"id": "x", "score_color": 23.1, "score_gray": 20.4, "drop": 0.117, "tampered": False,
               "error": None, "calibrated": False, "score_scale": 100.0}]
    meta = {"score_scale": 100.0, "model": "m", "precision": "fp32", "backend": "ort-cpu"}
    requests = []
    for f in files:
        data = f.read_bytes()
        blob = struct.pack("<I", len(data)) + data
        head = json.dumps({"inputs": [{"name": "IMAGE", "datatype": "BYTES", "shape": [1],
                                       "parameters": {"binary_data_size": len(blob)}}],
                           "parameters": {"binary_data_output": True}}).encode()
        requests.append((data, head + blob, {"inference-header-content-length": str(len(head))}))

    async def v1() -> None:
        for data, _, _ in requests:
            check_media_type("image/jpeg")
            await parse_items({"content-type": "image/jpeg"}, data, limits)
            shape_response(result, meta)

    async def v2() -> None:
        for _, body, headers in requests:
            specs = output_specs(("gray",))
            check_encoding(headers)
            req, _ = parse_infer(headers, body, limits, dict(specs))
            shape_infer_response(req, result, specs, ("gray",), meta)

    out = {}
    for name, fn in (("v1", v1), ("v2", v2)):
        t0 = time.process_time()  # CPU time: on a shared machine wall time would count the others' work
        for _ in range(repeat):
            asyncio.run(fn())
        out[name] = round((time.process_time() - t0) / (repeat * len(requests)) * 1e6, 1)
    return out


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
    code_us = protocol_code_us(files)
    print(f"protocol code per one-image request (parse + response, this process): {code_us} us", flush=True)
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
           "v2_over_v1": round(mean["v2"] / mean["v1"], 3), "protocol_code_us": code_us,
           "server_exit_code": exit_code}
    Path(args.out).write_text(json.dumps(res, indent=2) + "\n")
    print("\n| run | protocol | served img/s | p50 / p95 / p99 ms | 2xx / non-2xx | server CPU ms / image | "
          "load avg 1 min (start, end) | other cores busy |\n|---|---|---|---|---|---|---|---|")
    for i, r in enumerate(runs, 1):
        sc = r["status_counts"]
        print(f"| {i} | {r['protocol']} | {r['images_scored_per_s']} | {r['p50_ms']} / {r['p95_ms']} / {r['p99_ms']} "
              f"| {sc['2xx']} / {sc['4xx'] + sc['5xx']} | {r['server_cpu_ms_per_image']} | {r['load_avg_1m']} "
              f"| {r['other_cores_busy']} |")
    cpu = {p: sum(r["server_cpu_ms_per_image"] for r in runs if r["protocol"] == p) / args.rounds for p in ("v1", "v2")}
    res["mean_server_cpu_ms_per_image"] = cpu
    print(f"\nmean: v1 {mean['v1']:.2f}, v2 {mean['v2']:.2f} images/s; v2 / v1 = {res['v2_over_v1']}; server CPU "
          f"per image v1 {cpu['v1']:.1f} ms, v2 {cpu['v2']:.1f} ms; protocol code {code_us} us per request")
    return 0


if __name__ == "__main__":
    sys.exit(main())
