"""`foclip generate --ray`: the same test set, its batches spread over Ray actors.

Design (why it gives the single-process result, and loses or doubles nothing):

* The driver plans exactly as one process does (:func:`foclip_train.generate.plan_jobs`, then
  :func:`~foclip_train.generate.batches` of ``cfg.batch``), so every batch has the same images in the
  same order, and each worker loads the same seeded model: a batch's images and scores are those of
  the one-process run.
* Each worker is a Ray actor that loads the model once (one GPU each where the cluster has GPUs,
  CPUs otherwise) and runs :func:`~foclip_train.generate.process_batch` into a private scratch
  folder, then returns the records and the bytes of the files it wrote.
* The driver is the only writer of the output folder: it writes each returned file atomically, then
  appends the batch's records to ``manifest.jsonl`` (images before records, as in one process). A
  worker that dies mid-batch has written nothing there; the driver sends that batch again (the actor
  is restarted by Ray), so its images are redone, none lost and none written twice. Killing the driver
  loses at most the batches in flight; a rerun resumes like the one-process run.

Manifest lines are appended in completion order, which may differ from the one-process order; the
records themselves are the same (``wall_s`` aside). The output folder need only be visible to the
driver: files travel through Ray's object store.
"""

from __future__ import annotations

# Lazy imports: torch is imported only inside the worker that runs the model (the driver does not need it).
import dataclasses
import os
import shutil
import tempfile
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from foclip.errors import FoclipError, require
from foclip.manifest import atomic_write_bytes
from foclip_train.generate import (
    GenerateConfig,
    Job,
    append_records,
    batches,
    load_resources,
    plan_jobs,
    process_batch,
    write_summary,
)

MAX_ATTEMPTS = 3  # sends of one batch before its images are recorded as failed


@dataclass
class DistributedStats:
    """What happened during a distributed run.

    Attributes:
        workers: actors started.
        batches: batches planned.
        retried_batches: batches sent again after their worker died.
        failed_batches: batches given up after ``MAX_ATTEMPTS`` worker deaths (recorded as errors).
        wall_s: seconds from planning to summary.
    """

    workers: int = 0
    batches: int = 0
    retried_batches: int = 0
    failed_batches: int = 0
    wall_s: float = 0.0
    worker_pids: list[int] = field(default_factory=list)


class GenerateWorker:
    """A Ray actor body: one model and text bank, many batches.

    Args:
        cfg: the run's config (the model is loaded here, once, on this worker's device).
        threads: torch intra-op threads (None keeps Ray's per-actor setting).
    """

    def __init__(self, cfg: GenerateConfig, threads: int | None = None) -> None:
        import torch

        if threads:
            torch.set_num_threads(threads)
        self.cfg = cfg
        self.loaded, self.bank = load_resources(cfg)

    def pid(self) -> int:
        """This worker's process id (tests kill it)."""
        return os.getpid()

    def run(self, jobs: list[Job]) -> tuple[list[dict[str, Any]], dict[str, bytes]]:
        """Process one batch into a scratch folder.

        Args:
            jobs: the batch, with the driver's output folder in ``out_dir``.

        Returns:
            (records, {path relative to the output folder: file bytes}).
        """

        scratch = tempfile.mkdtemp(prefix="foclip-gen-")
        try:
            local = [dataclasses.replace(j, out_dir=scratch) for j in jobs]
            records = process_batch(local, self.cfg, self.loaded, self.bank)
            files: dict[str, bytes] = {}
            for r in records:
                if r.get("error"):
                    continue
                for rel in (r["manipulated"], r["original"]):
                    files[rel] = (Path(scratch) / rel).read_bytes()
            return records, files
        finally:
            shutil.rmtree(scratch, ignore_errors=True)


def _failed_records(jobs: Sequence[Job], cfg: GenerateConfig, message: str) -> list[dict[str, Any]]:
    """Error records for a batch given up (so that the run reports it and a rerun retries it)."""
    return [{"source": j.source, "name": j.name, "sha256_input": j.sha256_input, "seed": cfg.seed,
             "score_scale": cfg.attack.score_scale, "error": message} for j in jobs]


def generate_distributed(
    inputs: Sequence[str | os.PathLike[str]],
    out_dir: str | os.PathLike[str],
    cfg: GenerateConfig,
    workers: int | None = None,
    gpus_per_worker: float | None = None,
    cpus_per_worker: float | None = None,
    threads: int | None = None,
    on_batch: Callable[[list[dict[str, Any]]], None] | None = None,
    on_submit: Callable[[int, int], None] | None = None,
    jobs: Sequence[Job] | None = None,
) -> tuple[dict[str, Any], DistributedStats]:
    """Run generation over Ray actors in the Ray instance this process is connected to.

    Args:
        inputs: image files and folders.
        out_dir: the output folder (created; written only by this process).
        cfg: the run's config, exactly as a one-process run would use it.
        workers: actors to start; None = one per GPU when the cluster has GPUs, else one per 2 CPUs.
        gpus_per_worker: GPUs per actor; None = 1 when the cluster has GPUs, else 0.
        cpus_per_worker: CPUs reserved per actor; None = 1.
        threads: torch threads per actor (None: Ray's default for the actor's CPUs).
        on_batch: called with each batch's records after they are appended.
        on_submit: called with (batch index, worker pid) when a batch is sent (tests kill that pid).
        jobs: the jobs already planned by :func:`plan_jobs` for these inputs (planned here when None).

    Returns:
        (summary dict as written to ``summary.json``, run statistics).

    Raises:
        FoclipError: when every worker died for good.
    """
    ray = require("ray", "serve")
    t0 = time.perf_counter()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    jobs = plan_jobs(inputs, out, cfg) if jobs is None else list(jobs)
    todo = batches(jobs, cfg.batch)
    stats = DistributedStats(batches=len(todo))
    if not todo:
        stats.wall_s = time.perf_counter() - t0
        return write_summary(out), stats

    cluster = ray.cluster_resources()
    has_gpu = cluster.get("GPU", 0) >= 1 and cfg.device != "cpu"
    gpus = gpus_per_worker if gpus_per_worker is not None else (1.0 if has_gpu else 0.0)
    cpus = cpus_per_worker if cpus_per_worker is not None else 1.0
    if workers is None:
        workers = int(cluster.get("GPU", 0) // max(gpus, 1e-9)) if gpus else max(1, int(cluster.get("CPU", 1) // 2))
    workers = max(1, min(workers, len(todo)))
    wcfg = cfg if gpus else dataclasses.replace(cfg, device="cpu")
    actor_cls = ray.remote(max_restarts=MAX_ATTEMPTS, max_task_retries=0)(GenerateWorker)
    actors = [actor_cls.options(num_gpus=gpus, num_cpus=cpus).remote(wcfg, threads) for _ in range(workers)]
    pids = ray.get([a.pid.remote() for a in actors])  # waits until every model is loaded
    stats.workers, stats.worker_pids = workers, list(pids)

    pending: deque[int] = deque(range(len(todo)))
    attempts = [0] * len(todo)
    inflight: dict[Any, tuple[int, int]] = {}  # object ref -> (batch index, actor index)
    idle = deque(range(workers))
    dead: set[int] = set()
    try:
        while pending or inflight:
            while pending and idle:
                b, a = pending.popleft(), idle.popleft()
                attempts[b] += 1
                ref = actors[a].run.remote(todo[b])
                inflight[ref] = (b, a)
                if on_submit is not None:
                    on_submit(b, pids[a])
            if not inflight:
                raise FoclipError("--ray", "every generation worker died", "workers that stay up (see Ray logs)")
            ready, _ = ray.wait(list(inflight), num_returns=1)
            b, a = inflight.pop(ready[0])
            try:
                records, files = ray.get(ready[0])
            except ray.exceptions.RayActorError:
                _on_worker_death(b, a, attempts, pending, todo, cfg, out, stats, on_batch, dead, ray, actors, pids)
                if a not in dead:
                    idle.append(a)
                continue
            for rel, data in files.items():
                _write(out / rel, data)
            append_records(out, records)  # after the images, as in one process
            if on_batch is not None:
                on_batch(records)
            idle.append(a)
    finally:
        for actor in actors:
            ray.kill(actor)
    stats.wall_s = time.perf_counter() - t0
    return write_summary(out), stats


def _on_worker_death(b, a, attempts, pending, todo, cfg, out, stats, on_batch, dead, ray, actors, pids) -> None:
    """Send batch ``b`` again (front of the queue) or give it up; learn whether actor ``a`` lives on."""
    if attempts[b] < MAX_ATTEMPTS:
        stats.retried_batches += 1
        pending.appendleft(b)
    else:
        stats.failed_batches += 1
        recs = _failed_records(todo[b], cfg, f"batch | its worker died {attempts[b]} times. "
                                             "Expected a worker that survives the batch (see Ray logs).")
        append_records(out, recs)
        if on_batch is not None:
            on_batch(recs)
    try:  # Ray restarts the actor (max_restarts); a new pid means it is back
        pids[a] = ray.get(actors[a].pid.remote(), timeout=600)
    except (ray.exceptions.RayActorError, ray.exceptions.GetTimeoutError):
        dead.add(a)


def _write(path: Path, data: bytes) -> None:
    atomic_write_bytes(path, data)
