"""Prometheus metrics of the service, recorded with Ray's metrics API (``ray.util.metrics``).

Ray aggregates them from every replica and exports them on each node's metrics endpoint
(``http://<node>:<metrics-export-port>/metrics``, names prefixed ``ray_``), next to Ray Serve's own
``ray_serve_*`` series; ``foclip serve`` prints that address. Names:

* ``foclip_requests`` (counter; tags route, status)
* ``foclip_errors`` (counter; tag code: whole-request codes such as ``body_too_large`` and per-image
  codes from the Detector such as ``decode_error``)
* ``foclip_images`` (counter; tag outcome = ok | error)
* ``foclip_request_latency_seconds`` (histogram; tag route)
* ``foclip_batch_size`` (histogram: images per detector call, as formed by Ray Serve's batching)
* ``foclip_score_color`` (histogram, 0..score_scale) and ``foclip_drop`` (histogram, fraction)
"""

from __future__ import annotations

from typing import Any

LATENCY_BOUNDS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0]
BATCH_BOUNDS = [1, 2, 4, 8, 16, 32, 64, 128, 256]
# Ray wants positive bucket bounds: drops <= 0.01 (negative ones too: gray scored higher) share the first bucket.
DROP_BOUNDS = [0.01, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0]


class RayMetrics:
    """The service's metrics as Ray metrics (create one per replica process).

    Args:
        score_scale: w, the top of the CLIPscore scale (histogram buckets follow it).
    """

    def __init__(self, score_scale: float = 100.0) -> None:
        from ray.util.metrics import Counter, Histogram

        self._requests = Counter("foclip_requests", description="HTTP requests by route and status",
                                 tag_keys=("route", "status"))
        self._errors = Counter("foclip_errors", description="errors by code (request- and image-level)",
                               tag_keys=("code",))
        self._images = Counter("foclip_images", description="images answered, by outcome", tag_keys=("outcome",))
        self._latency = Histogram("foclip_request_latency_seconds", description="request latency inside the replica",
                                  boundaries=LATENCY_BOUNDS, tag_keys=("route",))
        self._batch = Histogram("foclip_batch_size", description="images per detector call (Ray Serve batching)",
                                boundaries=BATCH_BOUNDS)
        score_bounds = [score_scale * f for f in (0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5, 0.75, 1.0)]
        self._score = Histogram("foclip_score_color", description=f"score_color (0..{score_scale:g} scale)",
                                boundaries=score_bounds)
        self._drop = Histogram("foclip_drop", description="drop (fraction) of scored images", boundaries=DROP_BOUNDS)

    def request(self, route: str, status: int, latency_s: float) -> None:
        """Count one request and record its latency."""
        self._requests.inc(1, tags={"route": route, "status": str(status)})
        self._latency.observe(latency_s, tags={"route": route})

    def error(self, code: str) -> None:
        """Count one error by its code."""
        self._errors.inc(1, tags={"code": code})

    def batch(self, size: int) -> None:
        """Record the size of one detector call."""
        self._batch.observe(size)

    def results(self, results: list[dict[str, Any]]) -> None:
        """Record the scores and drops of a request's results."""
        for r in results:
            if r.get("error"):
                self._images.inc(1, tags={"outcome": "error"})
                continue
            self._images.inc(1, tags={"outcome": "ok"})
            if r.get("score_color") is not None:
                self._score.observe(float(r["score_color"]))
            if r.get("drop") is not None:
                # Ray's OpenTelemetry histograms drop negative records (with a log warning): a negative
                # drop (the gray image scored higher) goes into the first bucket, as DROP_BOUNDS says.
                self._drop.observe(max(float(r["drop"]), 0.0))
