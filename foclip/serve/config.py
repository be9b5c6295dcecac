"""The knobs of the detection service, in one frozen dataclass (no Ray import here)."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass

from foclip.errors import InputError
from foclip.serve.edge import EdgeLimits

LOOPBACK = "127.0.0.1"
# On CPU a replica that starts a batch as soon as one request is there leaves the cores to
# single-image batches while Serve's proxy and the ingress compete for them: ViT-B-32 int8 on
# 2 cores, 32 clients, served 0.68x offline at 5 ms and 0.82x at 200 ms (2 replicas x 1 thread;
# docs/serve.md). GPUs were not measured; they keep the short wait.
CPU_BATCH_WAIT_MS = 200.0
GPU_BATCH_WAIT_MS = 5.0
# "split": HTTP replicas in front of detector replicas; "fused": one deployment does both (deployment.py).
TOPOLOGIES = ("split", "fused")


@dataclass(frozen=True)
class Limits:
    """Per-request limits enforced before any image reaches the detector.

    Attributes:
        max_body_bytes: largest accepted request body (bigger -> 413).
        max_images: most images in one request (more -> 413).
        timeout_s: per-request deadline inside the replica (past it -> 504).
        body_timeout_s: deadline for receiving the whole request body (past it -> 408; a client
            that stalls mid-upload frees its slot).
        max_request_pixels: most pixels the images of one request may declare in their headers,
            together; images past it get the item error ``pixel_budget`` without being decoded.
        max_per_client: most requests one client address may have in flight in one ingress replica
            (more -> 429 + Retry-After); 0 for no bound (behind a reverse proxy every client
            shares its address).
        max_header_bytes: largest request head, checked in the proxy as it arrives (-> 431).
        max_header_line_bytes: longest line of a request head (-> 431).
        header_timeout_s: time for a request head to arrive (-> 408, connection closed).
        max_uploads_per_client: request bodies the proxy reads at once per client address
            (-> 429 + Retry-After); 0 for no bound. Bodies are read whole in the proxy before a
            replica sees the request, so a stalled upload holds no replica slot (foclip/serve/edge.py).
        max_json_bytes: most bytes of a v2 request's JSON outside its strings (-> 413). Images travel
            in base64 strings (4/3 of their bytes, within ``max_body_bytes``); everything else a
            request says fits in a few hundred bytes, and JSON's small values (``[]``, ``0``) cost
            a Python object each: this bounds what parsing can allocate beyond the strings.
        max_json_depth: deepest nesting of arrays and objects in a v2 request (-> 400).
    """

    max_body_bytes: int = 32 * 1024 * 1024
    max_images: int = 64
    timeout_s: float = 30.0
    body_timeout_s: float = 15.0
    max_request_pixels: int = 256_000_000
    max_per_client: int = 32
    max_header_bytes: int = 32 * 1024
    max_header_line_bytes: int = 8 * 1024
    header_timeout_s: float = 10.0
    max_uploads_per_client: int = 32
    max_json_bytes: int = 64 * 1024
    max_json_depth: int = 16


@dataclass(frozen=True)
class ServeConfig:
    """Everything `foclip serve` needs; travels to each replica (small, picklable).

    The bundle is opened inside each replica from ``bundle`` (a path every replica's node can read);
    the Detector itself is never pickled. The API key itself never leaves the driver: replicas get
    only its sha256 (``api_key_sha256``) and compare digests in constant time.
    """

    bundle: str
    calibration: str | None = None
    backend: str = "auto"  # auto -> ort-cuda when gpus_per_replica > 0, else ort-cpu
    precision: str = "fp32"
    cascade: bool = False
    probes: tuple[str, ...] = ("gray",)
    self_check: bool = True
    host: str = LOOPBACK
    port: int = 8000
    replicas: int = 1
    gpus_per_replica: float = 0.0
    cpus_per_replica: float = 1.0
    threads: int | None = None  # ONNX Runtime threads per replica; None -> the node's cores / replicas
    max_batch: int = 64
    batch_wait_ms: float | None = None  # None -> CPU_BATCH_WAIT_MS on ort-cpu, GPU_BATCH_WAIT_MS otherwise
    max_ongoing_requests: int | None = None  # None -> max_batch
    max_queued_requests: int = 256
    topology: str = "split"  # "split": HTTP and detector replicas; "fused": one deployment does both
    draft_factor: int = 4  # JPEG DCT scaling in the replica's decoder (foclip.runtime.decode.DecodeLimits)
    retry_after_s: float = 1.0
    graceful_shutdown_timeout_s: float = 30.0
    limits: Limits = Limits()
    api_key_sha256: str | None = None
    app_name: str = "foclip"
    drain_actor: str | None = None  # name of the DrainFlag actor the driver sets on shutdown (set by start_service)
    detector_factory: str = "foclip.runtime:Detector"  # "module:Class" with from_bundle(); tests swap it

    def edge_limits(self) -> EdgeLimits:
        """The bounds the HTTP proxy applies before any route (foclip/serve/edge.py)."""
        lim = self.limits
        return EdgeLimits(max_header_bytes=lim.max_header_bytes,
                          max_header_line_bytes=min(lim.max_header_line_bytes, lim.max_header_bytes),
                          header_timeout_s=lim.header_timeout_s, body_timeout_s=lim.body_timeout_s,
                          max_body_bytes=lim.max_body_bytes, max_uploads_per_client=lim.max_uploads_per_client,
                          retry_after_s=self.retry_after_s, api_key_sha256=self.api_key_sha256,
                          max_json_bytes=lim.max_json_bytes, max_json_depth=lim.max_json_depth)

    @property
    def resolved_backend(self) -> str:
        """The backend each replica asks the Detector for."""
        if self.backend != "auto":
            return self.backend
        from foclip.runtime.capabilities import default_backend  # lazy: this module stays plain (CLI --help)

        return default_backend(gpu=self.gpus_per_replica > 0)

    @property
    def resolved_batch_wait_ms(self) -> float:
        """How long Serve's batcher waits for a batch to fill (the default depends on the backend)."""
        if self.batch_wait_ms is not None:
            return self.batch_wait_ms
        from foclip.runtime.capabilities import lookup

        row = lookup(self.resolved_backend)  # an unknown name fails at the Detector; GPU wait meanwhile
        return GPU_BATCH_WAIT_MS if row is None or row.gpu else CPU_BATCH_WAIT_MS

    @property
    def resolved_max_ongoing(self) -> int:
        """Requests one replica works on at once (enough to fill a batch)."""
        return self.max_ongoing_requests or self.max_batch

    def replica_threads(self, cores: int) -> int:
        """ONNX Runtime threads for one replica on a node with ``cores`` cores."""
        return self.threads or max(1, cores // self.replicas)

    def validate(self) -> ServeConfig:
        """Check value ranges.

        Returns:
            self, for chaining.

        Raises:
            InputError: on a value out of range.
        """
        checks = (
            ("--replicas", self.replicas >= 1, "an integer >= 1"),
            ("--gpus-per-replica", self.gpus_per_replica >= 0, "a number >= 0"),
            ("--max-batch", self.max_batch >= 1, "an integer >= 1"),
            ("--batch-wait-ms", self.resolved_batch_wait_ms >= 0, "a number of milliseconds >= 0"),
            ("--port", 0 < self.port < 65536, "a TCP port 1..65535"),
            ("--max-body-mb", self.limits.max_body_bytes > 0, "a size > 0"),
            ("--max-images", self.limits.max_images >= 1, "an integer >= 1"),
            ("--timeout-s", self.limits.timeout_s > 0, "seconds > 0"),
            ("--body-timeout-s", self.limits.body_timeout_s > 0, "seconds > 0"),
            ("--max-request-mpx", self.limits.max_request_pixels > 0, "megapixels > 0"),
            ("--max-per-client", self.limits.max_per_client >= 0, "an integer >= 0 (0 = no bound)"),
            ("--max-header-kb", self.limits.max_header_bytes >= 1024, "a size >= 1 KiB"),
            ("--header-timeout-s", self.limits.header_timeout_s > 0, "seconds > 0"),
            ("--max-uploads-per-client", self.limits.max_uploads_per_client >= 0, "an integer >= 0 (0 = no bound)"),
            ("--topology", self.topology in TOPOLOGIES, f"one of {', '.join(TOPOLOGIES)}"),
            ("--draft-factor", self.draft_factor >= 0, "an integer >= 0 (0 = full decode)"),
            ("--max-queued", self.max_queued_requests >= 1 or self.max_queued_requests == -1,
             "an integer >= 1, or -1 for unbounded"),
        )
        for flag, ok, expected in checks:
            if not ok:
                raise InputError(flag, "is out of range", expected)
        return self


def api_key_digest_from_env(var: str | None) -> str | None:
    """sha256 (hex) of the API key held in environment variable ``var``.

    Args:
        var: the variable's name, or None when no key is wanted.

    Returns:
        The hex digest, or None when ``var`` is None.

    Raises:
        InputError: when the variable is unset or empty (serving without the key asked for would
            silently open the service).
    """
    if var is None:
        return None
    key = os.environ.get(var, "")
    if not key:
        raise InputError(f"--api-key-env {var}", "names an unset or empty environment variable",
                         "the variable to hold the API key")
    return hashlib.sha256(key.encode("utf-8")).hexdigest()
