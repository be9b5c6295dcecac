"""Load test of `foclip serve` on loopback with locust (headless), and a replica kill; prints a report.

    python scripts/loadtest/run.py --bundle BUNDLE [--precision fp32] [--requests 5000] [--users 32]
    python scripts/loadtest/run.py --export foclip-tiny      # exports a random-weights bundle first

Steps, all against 127.0.0.1 only:
1. payloads: real photos (scikit-image) as JPEG/PNG plus bad bodies (truncated JPEG, text named .jpg,
   a 20000x20000 PNG header = pixel bomb, a text/plain body);
2. offline baseline: `foclip detect BUNDLE <good images>` in a subprocess, its images/s, measured
   before and after the main run (mean reported; the machine may be shared);
3. main run: `foclip serve BUNDLE --replicas R` (default 1) in a subprocess, warm-up, RSS, then locust with
   --users concurrent closed-loop clients until --requests requests or --max-seconds, RSS again;
4. fault run: `foclip serve --replicas 2`, locust for --kill-seconds, one replica SIGKILLed a third
   of the way in; reports what clients saw around the kill and when Serve had 2 replicas again.
Writes the figures to --out (JSON) and prints them as markdown.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

HERE = Path(__file__).resolve().parent
HOST = "127.0.0.1"
BIN = Path(sys.executable).parent


def make_payloads(d: Path, copies: int) -> Path:
    """Good photos (several sizes) and bad bodies; also ``offline/`` with ``copies`` good files."""
    import numpy as np
    from PIL import Image
    from skimage import data

    good = d / "good"
    good.mkdir(parents=True)
    photos = {n: getattr(data, n)() for n in ("astronaut", "chelsea", "coffee", "rocket")}
    for i, (name, arr) in enumerate(photos.items()):
        for j, step in enumerate((1, 2)):
            img = Image.fromarray(np.ascontiguousarray(arr[::step, ::step]))
            ext = "png" if (i + j) % 3 == 0 else "jpg"
            img.save(good / f"{name}_{step}.{ext}", **({"quality": 90} if ext == "jpg" else {}))
    buf = io.BytesIO()
    Image.fromarray(photos["astronaut"]).save(buf, "JPEG", quality=90)
    (d / "truncated.jpg").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    (d / "text.jpg").write_bytes(b"this is a text file, not a JPEG\n")
    sys.path.insert(0, str(HERE.parents[1] / "tests" / "serve"))
    from conftest import png_header_only  # the same pixel bomb the tests use

    (d / "bomb.png").write_bytes(png_header_only(20000, 20000))
    offline = d / "offline"
    offline.mkdir()
    files = sorted(good.iterdir())
    for k in range(copies):
        src = files[k % len(files)]
        shutil.copy(src, offline / f"{k:05d}{src.suffix}")
    return d


def offline_rate(bundle: str, precision: str, folder: Path, batch: int) -> float:
    """images/s printed by `foclip detect` on ``folder``."""
    cmd = [str(BIN / "foclip"), "detect", bundle, str(folder), "--precision", precision, "--batch", str(batch)]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False, env={**os.environ, "COLUMNS": "200"})
    if done.returncode not in (0, 3):  # 3: some images flagged (random weights flag many), still a full run
        raise RuntimeError(f"foclip detect exited {done.returncode}:\n{done.stdout}\n{done.stderr}")
    out = done.stdout
    # the summary table ("images/s │ 25.5", over 50 images) or the summary line ("; 103.8 images/s")
    m = re.search(r"images/s\s*│\s*([\d.]+)", out) or re.search(r"([\d.]+) images/s", out)
    if not m:
        raise RuntimeError(f"no images/s in foclip detect output:\n{out}")
    return float(m.group(1))


class Server:
    """`foclip serve` in a subprocess (its own process group, stopped with SIGTERM)."""

    def __init__(self, bundle: str, port: int, precision: str, replicas: int, threads: int | None, max_batch: int,
                 extra: tuple[str, ...] = ()):
        cmd = [str(BIN / "foclip"), "serve", bundle, "--host", HOST, "--port", str(port), "--precision", precision,
               "--replicas", str(replicas), "--max-batch", str(max_batch), "--cpus-per-replica", "0.5", *extra]
        if threads:
            cmd += ["--threads", str(threads)]
        self.log = tempfile.NamedTemporaryFile("w+", suffix=".log", delete=False)  # noqa: SIM115 - lives with the server
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)
        self.url = f"http://{HOST}:{port}"

    def wait_ready(self, timeout: float = 300) -> None:
        import httpx

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"foclip serve exited: {Path(self.log.name).read_text()[-3000:]}")
            try:
                if httpx.get(self.url + "/healthz", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        raise RuntimeError("foclip serve did not become ready")

    def processes(self):
        import psutil

        root = psutil.Process(self.proc.pid)
        return [root, *root.children(recursive=True)]

    def replicas(self, deployment: str = ""):
        """Serve replica processes of foclip, or only those of ``deployment`` (e.g. ``FoclipDetector``)."""
        import psutil

        out = []
        for p in self.processes():
            try:
                cmd = " ".join(p.cmdline())
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                cmd = ""  # a process that just went away
            if f"ServeReplica:foclip:{deployment}" in cmd:
                out.append(p)
        return out

    def rss_mib(self) -> dict[str, float]:
        import psutil

        total = reps = 0
        rep_pids = {p.pid for p in self.replicas()}
        for p in self.processes():
            try:
                rss = p.memory_info().rss
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                rss = 0
            total += rss
            reps += rss if p.pid in rep_pids else 0
        return {"tree_mib": round(total / 2**20, 1), "replicas_mib": round(reps / 2**20, 1)}

    def replica_rss_mib(self) -> dict[str, float]:
        """RSS (MiB) of each Serve replica, keyed ``<deployment>:<pid>``."""
        import psutil

        out = {}
        for p in self.replicas():
            try:
                name = " ".join(p.cmdline()).split("ServeReplica:foclip:")[-1].split()[0]
                out[f"{name}:{p.pid}"] = round(p.memory_info().rss / 2**20, 1)
            except (psutil.Error, IndexError):
                pass
        return out

    def cpu_seconds(self) -> dict[str, float]:
        """CPU seconds (user + system) so far of each process of the server, grouped by role."""
        import psutil

        out: dict[str, float] = {}
        for p in self.processes():
            try:
                cmd = " ".join(p.cmdline())
                t = p.cpu_times()
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
            role = next((name for key, name in CPU_ROLES if key in cmd), "other Ray processes")
            out[role] = out.get(role, 0.0) + t.user + t.system
        return out

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(180)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            return -9


# Which process does what, by a piece of its command line (first match wins).
CPU_ROLES = (("ServeReplica:foclip:FoclipDetector", "detector replica(s)"),
             ("ServeReplica:foclip:FoclipIngress", "ingress (HTTP routes, multipart, limits; also the detector with --topology fused)"),
             ("ProxyActor", "Serve HTTP proxy"), ("ServeController", "Serve controller"),
             ("raylet", "raylet"), ("gcs_server", "GCS"), ("foclip serve", "driver (foclip serve)"))


def run_wrk(url: str, files: list[Path], users: int, seconds: int, work: Path, protocol: str = "v1") -> dict:
    """Closed-loop load with wrk: ``users`` connections POSTing raw image bodies for ``seconds``.

    ``protocol`` "v2" sends the same images as Open Inference Protocol binary-tensor requests.

    wrk is an event-loop C client: one thread drives every connection, so the load generator itself
    costs little CPU next to the service on the same cores (its CPU seconds are reported).
    """
    import psutil

    wrk = shutil.which("wrk")
    if wrk is None:
        raise SystemExit("wrk not found: apt-get install -y wrk (or use --generator locust)")
    listing = work / "wrk_payloads.txt"
    listing.write_text("".join(f"{p}\n" for p in files))
    cmd = [wrk, "-t1", f"-c{users}", f"-d{seconds}s", "--timeout", "60s", "-s", str(HERE / "wrk_post.lua"), url]
    proc = psutil.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                        env={**os.environ, "FOCLIP_WRK_PAYLOADS": str(listing), "FOCLIP_WRK_PROTOCOL": protocol})
    cpu = 0.0
    while proc.poll() is None:
        try:
            t = proc.cpu_times()
            cpu = t.user + t.system
        except psutil.NoSuchProcess:
            break
        time.sleep(0.5)
    out = proc.stdout.read()
    m = re.search(r"^WRKJSON (\{.*\})$", out, re.MULTILINE)
    if not m:
        raise RuntimeError(f"no WRKJSON line in wrk output:\n{out}")
    r = json.loads(m.group(1))
    wall = r["duration_us"] / 1e6
    return {"requests": r["requests"], "wall_s": round(wall, 1), "requests_per_s": round(r["requests"] / wall, 2),
            "images_scored_per_s": round(r["s2xx"] / wall, 2), "p50_ms": round(r["p50_us"] / 1e3, 1),
            "p95_ms": round(r["p95_us"] / 1e3, 1), "p99_ms": round(r["p99_us"] / 1e3, 1),
            "max_ms": round(r["max_us"] / 1e3, 1), "mean_ms": round(r["mean_us"] / 1e3, 1),
            "status_counts": {"2xx": r["s2xx"], "4xx": r["s4xx"], "5xx": r["s5xx"]},
            "5xx": r["s5xx"], "socket_errors": {k[4:]: r[k] for k in r if k.startswith("err_")},
            "load_generator_cpu_s": round(cpu, 2)}


def wrk_run(args, payloads: Path, work: Path) -> dict:
    """Main run with wrk on the good images only; CPU seconds by process role over the timed window."""
    srv = Server(args.bundle, args.port, args.precision, args.replicas, args.threads, args.max_batch,
                 tuple(args.serve_arg))
    files = sorted((payloads / "good").iterdir())
    try:
        srv.wait_ready()
        run_wrk(srv.url, files, args.users, max(5, args.warmup_seconds), work)  # warm-up, not reported
        rss_before, cpu0 = srv.rss_mib(), srv.cpu_seconds()
        timeline: list[tuple[float, float, float]] = []  # (s since start, replicas MiB, whole tree MiB)
        done = threading.Event()

        def sample() -> None:
            t0 = time.monotonic()
            while not done.wait(args.rss_every):
                r = srv.rss_mib()
                timeline.append((round(time.monotonic() - t0, 1), r["replicas_mib"], r["tree_mib"]))

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        try:
            res = run_wrk(srv.url, files, args.users, args.seconds, work)
        finally:
            done.set()
            sampler.join()
        cpu1 = srv.cpu_seconds()
        rss_after = srv.rss_mib()
        import httpx

        info = httpx.get(srv.url + "/v1/info", timeout=30).json()
        batching = info.get("batching", {}).get("batch_sizes")
        cpu = {k: round(cpu1[k] - cpu0.get(k, 0.0), 1) for k in cpu1}
        cpu["wrk (load generator)"] = res.pop("load_generator_cpu_s")
        res.update(rss_before=rss_before, rss_after=rss_after, cpu_seconds_by_role=cpu, batch_sizes=batching,
                   cpu_cores_busy=round(sum(cpu.values()) / res["wall_s"], 2), rss_timeline=timeline)
        if args.rss_plot and timeline:
            plot_rss(timeline, args.rss_plot, f"{args.users} closed-loop clients (wrk), {args.precision}, "
                                              f"{args.replicas} replica(s), {args.seconds} s")
    finally:
        res_exit = srv.stop()
    res["server_exit_code"] = res_exit
    return res


def idle_after(srv: Server, warm: dict[str, float], args) -> dict:
    """RSS every ``--rss-every`` s for ``--idle-seconds`` after the load, per replica and in all.

    Returns:
        ``rss_idle_timeline`` ((s idle, replicas MiB, tree MiB) ...), ``rss_idle_end`` and
        ``replicas_vs_warm`` (the replicas' RSS at the end over their warm baseline, 1.0 = back).
    """
    timeline, t0 = [], time.monotonic()
    while True:
        r = srv.rss_mib()
        timeline.append((round(time.monotonic() - t0, 1), r["replicas_mib"], r["tree_mib"]))
        if time.monotonic() - t0 >= args.idle_seconds:
            break
        time.sleep(args.rss_every)
    per_replica = srv.replica_rss_mib()
    if args.rss_plot:
        plot_rss(timeline, args.rss_plot, f"after {args.users} clients: {args.idle_seconds:g} s idle "
                                          f"(warm: replicas {warm['replicas_mib']:.0f} MiB)", xlabel="seconds idle",
                 warm=warm["replicas_mib"])
    return {"rss_idle_timeline": timeline, "rss_idle_end_per_replica": per_replica,
            "replicas_vs_warm": round(timeline[-1][1] / max(warm["replicas_mib"], 1e-9), 3)}


def plot_rss(timeline: list[tuple[float, float, float]], path: str, title: str,
             xlabel: str = "seconds under load", warm: float | None = None) -> None:
    """RSS of the detector replica(s) and of the whole server tree against time (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t, reps, tree = zip(*timeline, strict=True)
    fig, ax = plt.subplots(figsize=(7, 3.5))
    ax.plot(t, reps, label="foclip replicas (ingress + detector)")
    if warm is not None:
        ax.axhline(warm, color="gray", linestyle="--", label="replicas warm")
        ax.axhline(1.1 * warm, color="gray", linestyle=":", label="warm + 10 %")
    ax.plot(t, tree, label="all server processes")
    ax.set(xlabel=xlabel, ylabel="RSS (MiB)", title=title, ylim=(0, max(tree) * 1.1))
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def run_locust(url: str, payloads: Path, users: int, requests: int, seconds: int, out: Path) -> list:
    env = {**os.environ, "LOADTEST_PAYLOADS": str(payloads), "LOADTEST_REQUESTS": str(requests),
           "LOADTEST_OUT": str(out)}
    cmd = [str(BIN / "locust"), "-f", str(HERE / "locustfile.py"), "--headless", "-u", str(users), "-r", str(users),
           "-t", f"{seconds}s", "--host", url, "--only-summary", "--loglevel", "WARNING", "--stop-timeout", "30"]
    subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)  # exits 1 when any request failed
    return json.loads(out.read_text())


def summarize(log: list) -> dict:
    """Throughput, latency percentiles and status counts of a locust log."""
    if not log:
        return {"requests": 0}
    start = min(t for t, *_ in log)
    end = max(t + ms / 1000 for t, _k, _s, ms, _n in log)
    wall = end - start
    ms = sorted(x[3] for x in log)

    def pct(q: float) -> float:
        return round(ms[min(len(ms) - 1, int(q * len(ms)))], 1)

    scored = sum(n for _t, kind, status, _ms, n in log if status == 200)
    by_kind = Counter(f"{kind} -> {status}" for _t, kind, status, _ms, _n in log)
    statuses = Counter(str(s) for _t, _k, s, _ms, _n in log)
    res = {
        "requests": len(log), "wall_s": round(wall, 1), "requests_per_s": round(len(log) / wall, 1),
        "images_scored_per_s": round(scored / wall, 1), "p50_ms": pct(0.50), "p95_ms": pct(0.95), "p99_ms": pct(0.99),
        "mean_ms": round(statistics.fmean(ms), 1), "status_counts": dict(sorted(statuses.items())),
        "by_kind": dict(sorted(by_kind.items())),
        "5xx": sum(v for k, v in statuses.items() if k.startswith("5") or k == "0"),
    }
    return res


def main_run(args, payloads: Path, work: Path) -> dict:
    srv = Server(args.bundle, args.port, args.precision, args.replicas, args.threads, args.max_batch,
                 tuple(args.serve_arg))
    try:
        srv.wait_ready()

        # Warm up under the same load (batches of every size, allocator arenas at their working size)
        # so that RSS before/after compares steady states.
        run_locust(srv.url, payloads, args.users, args.warmup, args.max_seconds, work / "warmup.json")
        rss_before, warm_per_replica = srv.rss_mib(), srv.replica_rss_mib()
        log = run_locust(srv.url, payloads, args.users, args.requests, args.max_seconds, work / "main.json")
        rss_after = srv.rss_mib()
        res = summarize(log)
        res.update(rss_before=rss_before, rss_after=rss_after)
        if args.idle_seconds > 0:
            res.update(idle_after(srv, rss_before, args))
            end = res["rss_idle_end_per_replica"]
            res["rss_warm_per_replica"] = warm_per_replica
            res["per_replica_vs_warm"] = {k: round(end[k] / warm_per_replica[k], 3) for k in end if k in warm_per_replica}
    finally:
        res_exit = srv.stop()
    res["server_exit_code"] = res_exit
    return res


def fault_run(args, payloads: Path, work: Path) -> dict:
    srv = Server(args.bundle, args.port + 1, args.precision, 2, 1, args.max_batch, tuple(args.serve_arg))
    events: dict = {}
    try:
        srv.wait_ready()
        events["replicas_at_start"] = len(srv.replicas())

        def killer() -> None:
            time.sleep(args.kill_seconds / 3)
            reps = srv.replicas()
            # The process that detects: a FoclipDetector replica (split), else an HTTP replica (fused).
            detectors = srv.replicas("FoclipDetector")
            victim = (detectors or reps)[0]
            events["killed_role"] = "FoclipDetector" if detectors else "FoclipIngress"
            events["killed_pid"] = victim.pid
            t_kill = time.monotonic()
            events["kill_wall"] = time.time()
            os.kill(victim.pid, signal.SIGKILL)
            while time.monotonic() - t_kill < args.kill_seconds:
                pids = {p.pid for p in srv.replicas()}
                if len(pids) >= len(reps) and victim.pid not in pids:
                    events["replica_process_back_after_s"] = round(time.monotonic() - t_kill, 1)
                    break
                time.sleep(0.2)

        th = threading.Thread(target=killer, daemon=True)
        th.start()
        log = run_locust(srv.url, payloads, args.users, 0, args.kill_seconds, work / "fault.json")
        th.join()
        import httpx

        time.sleep(5)
        events["replicas_at_end"] = len(srv.replicas())
        body = next((payloads / "good").iterdir()).read_bytes()
        r = httpx.post(srv.url + "/v1/detect", content=body, headers={"content-type": "image/jpeg"}, timeout=60)
        events["request_after_recovery"] = r.status_code
        res = summarize(log)
        k = events.pop("kill_wall", None)
        if k is not None and log:
            res["kill_at_s"] = round(k - min(x[0] for x in log), 1)
            window = [x for x in log if k - 1 <= x[0] <= k + 15]
            res["around_kill_status_counts"] = dict(Counter(str(x[2]) for x in window))
            # when (relative to the kill) the requests that got a 5xx or no answer were sent
            bad = [x[0] - k for x in log if x[2] >= 500 or x[2] == 0]
            res["non_intended_sent_at_s"] = [round(min(bad), 2), round(max(bad), 2)] if bad else []
        res.update(events)
    finally:
        res_exit = srv.stop()
    res["server_exit_code"] = res_exit
    return res


def report(res: dict) -> str:
    m, f = res["main"], res.get("fault", {})
    lines = [(f"## foclip serve load test: {res['bundle_model']} ({res['precision']}, random weights), "
             f"{res['replicas']} replica(s), {res['users']} users"), "",
             "| measure | value |", "|---|---|"]
    for key in ("generator", "serve_args", "requests", "wall_s", "requests_per_s", "images_scored_per_s",
                "offline_images_per_s", "offline_before_after", "ratio_to_offline", "p50_ms", "p95_ms", "p99_ms",
                "status_counts", "by_kind", "5xx", "socket_errors", "batch_sizes", "rss_before", "rss_after",
                "rss_idle_timeline", "rss_warm_per_replica", "rss_idle_end_per_replica", "per_replica_vs_warm",
                "replicas_vs_warm", "cpu_cores_busy",
                "cpu_seconds_by_role", "server_exit_code"):
        lines.append(f"| {key} | {m.get(key)} |")
    if f:
        lines += ["", "### replica killed mid-load (2 replicas, 1 ORT thread each)", "", "| measure | value |", "|---|---|"]
        for key in ("requests", "wall_s", "requests_per_s", "kill_at_s", "status_counts", "around_kill_status_counts",
                    "non_intended_sent_at_s", "killed_role", "replica_process_back_after_s", "replicas_at_start",
                    "replicas_at_end",
                    "request_after_recovery", "server_exit_code"):
            lines.append(f"| {key} | {f.get(key)} |")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bundle", help="bundle folder (or use --export)")
    ap.add_argument("--export", metavar="MODEL", help="export MODEL with random weights into a temp bundle first")
    ap.add_argument("--precision", default="fp32")
    ap.add_argument("--requests", type=int, default=5000)
    ap.add_argument("--users", type=int, default=32)
    ap.add_argument("--max-seconds", type=int, default=300)
    ap.add_argument("--max-batch", type=int, default=64)
    ap.add_argument("--replicas", type=int, default=1, help="replicas of the main run")
    ap.add_argument("--threads", type=int, default=None, help="ORT threads per replica (default: cores / replicas)")
    ap.add_argument("--warmup", type=int, default=300, help="requests of the warm-up burst before RSS 'before'")
    ap.add_argument("--kill-seconds", type=int, default=45, help="length of the fault run (0 skips it)")
    ap.add_argument("--offline-images", type=int, default=512)
    ap.add_argument("--port", type=int, default=18080)
    ap.add_argument("--out", default="loadtest_report.json")
    ap.add_argument("--generator", choices=("locust", "wrk"), default="locust",
                    help="locust: the mixed good/bad traffic below; wrk: good images only, a low-CPU C client "
                         "(the throughput ratio and latency figures)")
    ap.add_argument("--seconds", type=int, default=60, help="wrk: length of the timed run")
    ap.add_argument("--warmup-seconds", type=int, default=15, help="wrk: length of the warm-up run")
    ap.add_argument("--rss-every", type=float, default=5.0, help="wrk: RSS sampling interval in seconds")
    ap.add_argument("--rss-plot", default=None, help="wrk: write the RSS-against-time plot here (PNG); locust with "
                    "--idle-seconds: the RSS of the idle period after the load")
    ap.add_argument("--idle-seconds", type=float, default=0.0,
                    help="locust: after the load, sample RSS for this long idle and report it against the warm "
                         "baseline (issue 24: back within 10 %% after 60 s)")
    ap.add_argument("--serve-arg", action="append", default=[],
                    help="extra `foclip serve` argument, e.g. --serve-arg=--batch-wait-ms=20 (repeatable)")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="foclip-load-"))
    if args.export:
        from foclip.exporter import ExportConfig, export_bundle

        args.bundle = str(work / "bundle")
        export_bundle(ExportConfig(model_name=args.export, pretrained="random", prompts=("artistic",),
                                   precisions=("fp32", "int8"), detect_graph=False), args.bundle)
    if not args.bundle:
        ap.error("--bundle or --export is required")
    from foclip.manifest import read_manifest

    payloads = make_payloads(work / "payloads", args.offline_images)
    res: dict = {"bundle": args.bundle, "bundle_model": read_manifest(args.bundle).model_name,
                 "precision": args.precision, "users": args.users, "replicas": args.replicas}
    # Offline before and after the served run: the machine is shared, so the mean of the two is the
    # fairest single figure and their spread shows the noise.
    before = offline_rate(args.bundle, args.precision, payloads / "offline", args.max_batch)
    res["main"] = (wrk_run if args.generator == "wrk" else main_run)(args, payloads, work)
    res["main"].update(generator=args.generator, serve_args=args.serve_arg)
    after = offline_rate(args.bundle, args.precision, payloads / "offline", args.max_batch)
    res["offline_images_per_s"] = offline = round((before + after) / 2, 1)
    res["main"].update(offline_images_per_s=offline, offline_before_after=[before, after],
                       ratio_to_offline=round(res["main"]["images_scored_per_s"] / offline, 2))
    if args.kill_seconds:
        res["fault"] = fault_run(args, payloads, work)
    Path(args.out).write_text(json.dumps(res, indent=2) + "\n")
    print(report(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
