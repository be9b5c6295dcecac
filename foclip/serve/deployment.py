"""The Ray Serve application: a light HTTP ingress in front of the detector replicas.

Two deployments (topology ``split``, the default):

* :class:`FoclipDetector` (``--replicas`` of them) opens the bundle itself (``Detector.from_bundle``
  in ``__init__``, nothing heavy is pickled from the driver) and gathers the images of all concurrent
  callers into detector calls with Ray Serve's batching (``@serve.batch``; size and wait from
  ``--max-batch`` and ``--batch-wait-ms``).
* :class:`FoclipIngress` serves HTTP (:mod:`foclip.serve.app` routes to the v1 and v2 protocol
  modules over :class:`foclip.serve.core.DetectService`: limits, deadlines, status codes) and calls the detectors through a deployment handle. Detection is
  idempotent, so when the detector replica working on a request dies the ingress sends the request
  once more, to another replica, within the request's deadline: a replica's death costs clients
  nothing. The ingress also answers 503 + Retry-After while the service drains for shutdown (it
  polls a small named actor, :class:`DrainFlag`, that the driver sets on SIGTERM).

Topology ``fused`` deploys :class:`FoclipIngress` alone; each of its replicas holds a
:class:`DetectorCore` (the class behind :data:`FoclipDetector`) and batches in-process: one
process hop less per request, no retry on another replica when one dies.

Importing this module imports Ray Serve and FastAPI (the ``serve`` extra).
"""

# No `from __future__ import annotations`: FastAPI must see real annotations on the ingress methods.

import asyncio
import contextlib
import os
import time
import uuid
from dataclasses import asdict
from typing import Any

import ray
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from ray import serve
from ray.serve.config import BackpressureConfig
from ray.serve.handle import DeploymentHandle

from foclip.serve.app import V2_METHODS, respond_detect, respond_info, respond_v2
from foclip.serve.config import ServeConfig
from foclip.serve.core import DetectService, HttpError, Item
from foclip.serve.heap import HeapTrace
from foclip.serve.memory import ARENA_ENV, IdleTrim, libc_trim
from foclip.serve.v2 import V2Front

api = FastAPI(title="foclip detection service", docs_url=None, redoc_url=None, openapi_url=None)
DRAIN_NAMESPACE = "foclip"
DRAIN_POLL_S = 0.2
LOOPBACK_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"  # "0": an embedded Ray bound to loopback (service.py)


def plain_json(obj: Any) -> Any:
    """JSON-safe copy of ``obj`` (tuples -> lists, numpy scalars -> Python numbers)."""
    if isinstance(obj, dict):
        return {str(k): plain_json(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [plain_json(v) for v in obj]
    if hasattr(obj, "item") and callable(obj.item):
        return obj.item()
    if obj is None or isinstance(obj, (str, int, float, bool)):
        return obj
    return str(obj)


def find_key(d: Any, key: str, default: Any) -> Any:
    """First value of ``key`` anywhere in nested dicts, or ``default``."""
    if isinstance(d, dict):
        if key in d:
            return d[key]
        for v in d.values():
            found = find_key(v, key, None)
            if found is not None:
                return found
    return default


def _bind_replica_grpc_to_loopback() -> None:
    # Ray Serve (2.60) starts each replica's inter-deployment gRPC server on "[::]:0", hard-coded,
    # whatever the node's address. In a loopback-only Ray (every process inherits LOOPBACK_ENV=0)
    # this module is imported in the replica before that server starts: bind it to 127.0.0.1 instead.
    # Ray's token authentication guards the port either way; this keeps it off the network too.
    if os.environ.get(LOOPBACK_ENV) != "0":
        return
    try:
        from ray.serve._private import replica as replica_mod
    except ImportError:  # pragma: no cover - another Ray layout: leave Ray's default
        return
    original = getattr(replica_mod, "add_port_to_grpc_server", None)
    if original is None or getattr(original, "_foclip_loopback", False):
        return

    def add_port(server: Any, address: str) -> int:
        if address.startswith(("[::]:", "0.0.0.0:")):
            address = "127.0.0.1:" + address.rsplit(":", 1)[1]
        return original(server, address)

    add_port._foclip_loopback = True  # type: ignore[attr-defined]
    replica_mod.add_port_to_grpc_server = add_port


_bind_replica_grpc_to_loopback()


@ray.remote(num_cpus=0)
class DrainFlag:
    """Shared shutdown state: the driver sets it; ingress replicas poll it and report their load."""

    def __init__(self, replicas: int = 1) -> None:
        self.replicas = replicas
        self.draining = False
        self.since = 0.0
        self.reports: dict[str, tuple[float, int]] = {}  # replica -> (time of report, requests in flight)

    def set(self) -> None:
        """Start draining."""
        if not self.draining:
            self.draining, self.since = True, time.monotonic()

    def poll(self, replica: str, in_flight: int, refusing: bool = False) -> bool:
        """Record a replica's requests in flight; returns whether the service is draining.

        Args:
            replica: the replica's id.
            in_flight: its requests in flight when it sent this report.
            refusing: whether it already refused new requests when it sent this report. Only such
                reports count towards :meth:`idle`: a report sent before the replica knew of the
                drain may arrive after the drain started and still miss a request that came in since.
        """
        self.reports[replica] = (time.monotonic() if refusing else 0.0, in_flight)
        return self.draining

    def idle(self) -> bool:
        """True once every replica has reported, while refusing new requests, that nothing is in flight."""
        fresh = [n for t, n in self.reports.values() if t > self.since]
        return self.draining and len(fresh) >= min(self.replicas, len(self.reports)) and not any(fresh)


class DetectorCore:
    """A Detector and Serve's batcher in front of it: the body of a detector replica.

    Served as its own deployment (:data:`FoclipDetector`, topology ``split``) or held in-process by
    the HTTP replica (topology ``fused``).

    Args:
        cfg: the service configuration (the bundle path is opened here, in the replica).
    """

    def __init__(self, cfg: ServeConfig) -> None:
        import importlib

        from foclip.runtime.decode import DecodeLimits
        from foclip.serve.metrics import RayMetrics

        module, _, cls = cfg.detector_factory.partition(":")
        Detector = getattr(importlib.import_module(module), cls)

        self.cfg = cfg
        self.detector = Detector.from_bundle(
            cfg.bundle, backend=cfg.resolved_backend, precision=cfg.precision,
            calibration=cfg.calibration, cascade=cfg.cascade, probes=cfg.probes, self_check=cfg.self_check,
            limits=DecodeLimits(draft_factor=cfg.draft_factor),
            batch_size=cfg.max_batch,
            threads=cfg.replica_threads(os.cpu_count() or 1),
            spin_wait=False,  # cores are shared with Serve's proxy and the request path (measured: +14% served)
            mem_arena=False,  # RSS back to warm after a burst of large batches (issue 24, docs/serve.md)
        )
        self._detect_batch.set_max_batch_size(cfg.max_batch)
        self._detect_batch.set_batch_wait_timeout_s(cfg.resolved_batch_wait_ms / 1000.0)
        self._info = plain_json(self.detector.info())
        self.metrics = RayMetrics(float(find_key(self._info, "score_scale", 100.0)))
        self._trim = libc_trim()
        self._in_batch = 0
        self.idle_trim = IdleTrim(busy=self.busy)  # after a quiet second (foclip/serve/memory.py)
        self._heap = HeapTrace.from_env()  # opt-in soak diagnosis (foclip/serve/heap.py)
        self._batch_sizes: dict[int, int] = {}  # batch size -> how many batches ran at that size

    def busy(self) -> bool:
        """Whether a batch is running now."""
        return self._in_batch > 0

    def info(self) -> dict[str, Any]:
        """The detector's info (manifest summary, calibration, limits)."""
        return self._info

    def stats(self) -> dict[str, Any]:
        """This replica's batch sizes (Serve's batcher at work) and memory housekeeping."""
        return {"batch_sizes": dict(self._batch_sizes), "memory": self.idle_trim.info()}

    @serve.batch(max_batch_size=64, batch_wait_timeout_s=0.005)
    async def _detect_batch(self, items: list[Item]) -> list[dict[str, Any]]:
        self.metrics.batch(len(items))
        self.idle_trim.ensure_running()
        self._in_batch += 1  # no trim while it runs (busy); the touch after it arms the next quiet-time trim
        self._batch_sizes[len(items)] = self._batch_sizes.get(len(items), 0) + 1
        # The detector is synchronous and CPU/GPU bound: run it off the event loop so the replica
        # keeps accepting requests (and answering health checks) while a batch runs.
        try:
            results = await asyncio.to_thread(self._detect_and_trim, items)
            return [plain_json(r.to_dict()) for r in results]
        finally:
            self._in_batch -= 1
            self.idle_trim.touch()

    def _detect_and_trim(self, items: list[Item]) -> list[Any]:
        try:
            return self.detector.detect([it.data for it in items], ids=[it.id for it in items])
        finally:
            # Decoding leaves large freed blocks in glibc's heap; without a trim a burst of big images
            # keeps the replica's RSS at its peak for good (measured: see docs/serve.md).
            if self._trim is not None:
                self._trim(0)
            if self._heap is not None:
                self._heap.tick()

    async def detect_items(self, items: list[Item]) -> list[dict[str, Any]]:
        """Score items (each joins Serve's batcher); one result dict per item, in order."""
        return list(await asyncio.gather(*(self._detect_batch(it) for it in items)))


FoclipDetector = serve.deployment(name="FoclipDetector", max_constructor_retry_count=3)(DetectorCore)


@serve.deployment(name="FoclipIngress", max_constructor_retry_count=3)
@serve.ingress(api)
class FoclipIngress:
    """The HTTP routes; detection goes to :class:`FoclipDetector` replicas, retried once if one dies.

    Args:
        cfg: the service configuration.
        detector: handle to the detector deployment, or None (topology ``fused``): this replica then
            holds its own :class:`DetectorCore`.
    """

    async def __init__(self, cfg: ServeConfig, detector: DeploymentHandle | None) -> None:
        from foclip.serve.metrics import RayMetrics

        # Serve pickles this (decorated) class by value, so the module-level call above never ran
        # in this process; the replica's gRPC server starts only after this constructor.
        _bind_replica_grpc_to_loopback()
        self.cfg = cfg
        self.detector = detector
        # Topology "fused": no handle; this replica holds the detector and batches in-process.
        self.local = DetectorCore(cfg) if detector is None else None
        self._detector_info = self.local.info() if self.local else await detector.info.remote()
        score_scale = float(find_key(self._detector_info, "score_scale", 100.0))
        self.metrics = self.local.metrics if self.local else RayMetrics(score_scale)
        meta = {"score_scale": score_scale, "model": find_key(self._detector_info, "model_name", None),
                "precision": cfg.precision, "backend": cfg.resolved_backend}
        self.service = DetectService(self._detect_items, self._info, meta, cfg.limits,
                                     cfg.api_key_sha256, self.metrics)
        self.service.retry_after_s = cfg.retry_after_s
        # The Open Inference Protocol on the same DetectService (foclip/serve/v2.py). This replica
        # exists only once its detector (split: a detector replica) loaded and passed its self-check.
        self.v2 = V2Front(self.service, self._detector_info)
        # One trimmer per process: the memory request bodies, parsing and Ray's serialisation freed
        # goes back to the OS once the replica is quiet (fused: the detector's trimmer, which then
        # also waits for this replica's requests in flight).
        local = self.local
        self.idle_trim = IdleTrim(busy=lambda: self.service.in_flight > 0 or (local is not None and local.busy()))
        if local is not None:
            local.idle_trim = self.idle_trim
        self._id = uuid.uuid4().hex
        self._batching: dict[str, Any] = {}
        self._memory: dict[str, Any] = {}
        self._drain = None
        self._poller: Any = None
        if cfg.drain_actor:
            try:
                self._drain = ray.get_actor(cfg.drain_actor, namespace=DRAIN_NAMESPACE)
            except ValueError:
                self._drain = None  # started without a driver that drains (tests building the app directly)
        self._ensure_poller()

    def _ensure_poller(self) -> None:
        # Started from the constructor and checked again on every request: the tasks must live on the
        # loop that serves requests, which need not be the constructor's.
        self.idle_trim.ensure_running()
        if self._drain is None:
            return
        loop = asyncio.get_running_loop()
        if self._poller is None or self._poller.done() or self._poller.get_loop() is not loop:
            self._poller = loop.create_task(self._poll_drain())

    async def _poll_drain(self) -> None:
        while True:
            try:
                if await self._drain.poll.remote(self._id, self.service.in_flight, self.service.draining):
                    self.service.draining = True
            except ray.exceptions.RayError:
                pass  # the driver is gone or going; the replica is about to be stopped anyway
            await asyncio.sleep(DRAIN_POLL_S)

    async def _detect_items(self, items: list[Item]) -> list[dict[str, Any]]:
        if self.local is not None:  # fused: the batcher is in this process; nothing to retry elsewhere
            return await self.local.detect_items(items)
        # Within DetectService's deadline (it cancels this coroutine at timeout_s): one retry on a
        # live replica when the replica holding the request died or became unreachable.
        for attempt in (1, 2):
            try:
                return await self.detector.detect_items.remote(items)
            except (ray.exceptions.ActorDiedError, ray.exceptions.ActorUnavailableError,
                    ray.exceptions.RayActorError) as exc:
                self.metrics.error("replica_died")
                if attempt == 2:
                    raise HttpError(503, "replica_unavailable", "the detector replica failed twice while "
                                    f"working on this request ({exc.__class__.__name__}); retry later",
                                    {"Retry-After": f"{self.cfg.retry_after_s:g}"}) from None
            except serve.exceptions.BackPressureError:
                raise HttpError(503, "overloaded", "the detector replicas are at capacity; retry later",
                                {"Retry-After": f"{self.cfg.retry_after_s:g}"}) from None
        raise AssertionError("unreachable")

    def _info(self) -> dict[str, Any]:
        c = self.cfg
        return {
            "detector": self._detector_info,
            "batching": self._batching,
            "memory": self._memory,
            "service": {
                "topology": c.topology, "replicas": c.replicas, "gpus_per_replica": c.gpus_per_replica,
                "max_batch": c.max_batch,
                "batch_wait_ms": c.resolved_batch_wait_ms, "max_ongoing_requests": c.resolved_max_ongoing,
                "max_queued_requests": c.max_queued_requests, "max_body_bytes": c.limits.max_body_bytes,
                "max_images": c.limits.max_images, "timeout_s": c.limits.timeout_s,
                "body_timeout_s": c.limits.body_timeout_s, "max_request_pixels": c.limits.max_request_pixels,
                "max_per_client": c.limits.max_per_client, "api_key": c.api_key_sha256 is not None,
                "max_json_bytes": c.limits.max_json_bytes, "max_json_depth": c.limits.max_json_depth,
                # What the proxy bounds before any route (foclip/serve/edge.py); the key's digest stays private.
                "edge": {k: v for k, v in asdict(c.edge_limits()).items() if k != "api_key_sha256"},
                "in_flight": self.service.in_flight,  # this replica's requests now (readiness for drain tests)
            },
        }

    @api.post("/v1/detect")
    async def detect(self, request: Request) -> JSONResponse:
        """Score the request's images (multipart files, or one raw image body)."""
        self._ensure_poller()
        try:  # in flight meanwhile (no trim); the touch after it arms the next quiet-time trim
            return await respond_detect(self.service, request)
        finally:
            self.idle_trim.touch()

    @api.get("/v1/info")
    async def info(self, request: Request) -> JSONResponse:
        """The bundle's manifest summary, calibration, service limits, one replica's batch sizes and memory."""
        with contextlib.suppress(Exception):  # a replica that is busy or gone must not fail /v1/info
            stats = (self.local.stats() if self.local is not None
                     else await asyncio.wait_for(self.detector.stats.remote(), timeout=2.0))
            sizes = stats["batch_sizes"]
            self._batching = {"batch_sizes": {str(k): v for k, v in sorted(sizes.items())},
                              "max_batch_seen": max(sizes, default=0), "note": "one replica's view"}
            self._memory = {"http_replica": self.idle_trim.info(), "detector_replica": stats["memory"],
                            "note": "one replica's view each (fused: the same process)"}
        return respond_info(self.service, request)

    @api.api_route("/v2", methods=V2_METHODS)
    @api.api_route("/v2/{path:path}", methods=V2_METHODS)
    async def v2_routes(self, request: Request, path: str = "") -> Response:
        """The Open Inference Protocol (KServe v2) routes: metadata, health and infer (foclip/serve/v2.py)."""
        self._ensure_poller()
        try:  # in flight meanwhile (no trim); the touch after it arms the next quiet-time trim
            return await respond_v2(self.v2, request, "/" + path if path else "")
        finally:
            self.idle_trim.touch()

    @api.get("/healthz")
    async def healthz(self) -> JSONResponse:
        """Liveness: 200 once the replica is up (503 while draining)."""
        self._ensure_poller()
        if self.service.draining:
            return JSONResponse({"status": "draining"}, status_code=503,
                                headers={"Retry-After": f"{self.cfg.retry_after_s:g}"})
        return JSONResponse({"status": "ok"})


def build_app(cfg: ServeConfig) -> serve.Application:
    """Bind the ingress and detector deployments with the replica counts, resources and queue bounds of ``cfg``.

    The ingress holds the HTTP-facing bounds (``max_ongoing_requests``, ``max_queued_requests``,
    503 + Retry-After past them); it needs no CPU reservation (it only parses and waits).

    Topology ``fused`` binds one deployment only: each HTTP replica holds a detector (and takes the
    detector's CPU/GPU reservation), so a request crosses no second process; a replica that dies
    takes its requests with it (no retry on another replica).

    Args:
        cfg: the service configuration.

    Returns:
        The bound application for ``serve.run``.
    """
    http_options = {
        "num_replicas": cfg.replicas,
        "max_ongoing_requests": cfg.resolved_max_ongoing,
        "max_queued_requests": cfg.max_queued_requests,
        "backpressure_config": BackpressureConfig(status_code=503, retry_after_s=cfg.retry_after_s),
        "graceful_shutdown_timeout_s": cfg.graceful_shutdown_timeout_s,
    }
    if cfg.topology == "fused":
        return FoclipIngress.options(
            ray_actor_options={"num_cpus": cfg.cpus_per_replica, "num_gpus": cfg.gpus_per_replica,
                               "runtime_env": {"env_vars": ARENA_ENV}},
            **http_options).bind(cfg, None)
    detector = FoclipDetector.options(
        num_replicas=cfg.replicas,
        ray_actor_options={"num_cpus": cfg.cpus_per_replica, "num_gpus": cfg.gpus_per_replica,
                           "runtime_env": {"env_vars": ARENA_ENV}},
        max_ongoing_requests=cfg.resolved_max_ongoing,
        max_queued_requests=-1,  # bounded by the ingress in front
        graceful_shutdown_timeout_s=cfg.graceful_shutdown_timeout_s,
    ).bind(cfg)
    return FoclipIngress.options(ray_actor_options={"num_cpus": 0}, **http_options).bind(cfg, detector)
