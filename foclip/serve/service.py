"""Start and stop the service: an embedded local Ray (default) or an existing cluster (``address``)."""

from __future__ import annotations

import socket
from dataclasses import dataclass, field
from typing import Any

from foclip.errors import InputError, require
from foclip.serve.config import LOOPBACK, ServeConfig


@dataclass
class RunningService:
    """A started service.

    Attributes:
        url: base URL of the HTTP API (``http://host:port``).
        metrics_url: the Ray metrics endpoint holding the ``ray_foclip_*`` series (embedded mode), or
            None when joined to a cluster (use that cluster's metrics endpoints).
        embedded: True when this process started the Ray instance (and so shuts it down).
        app_name: the Serve application's name.
    """

    url: str
    metrics_url: str | None
    embedded: bool
    app_name: str
    _stopped: bool = field(default=False, repr=False)

    def stop(self, drain: bool = True) -> None:
        """Stop serving.

        Args:
            drain: let in-flight requests finish first (each replica drains its ongoing requests,
                up to ``graceful_shutdown_timeout_s``). False stops an embedded Ray at once (tests).

        Embedded mode then shuts the local Ray down; a joined cluster only loses this application.
        """
        if self._stopped:
            return
        self._stopped = True
        import ray
        from ray import serve

        if not drain and self.embedded:
            ray.shutdown()
            return

        # Deleting the app first lets each replica drain its ongoing requests while the proxy is still
        # up to deliver their responses (serve.shutdown alone tears the proxy down at once).
        serve.delete(self.app_name)
        if self.embedded:
            serve.shutdown()
            ray.shutdown()


def free_port(host: str = LOOPBACK) -> int:
    """A TCP port that is free on ``host`` right now."""
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def start_service(cfg: ServeConfig, address: str | None = None, metrics_port: int = 0,
                  ray_init_kwargs: dict[str, Any] | None = None) -> RunningService:
    """Start Ray (or join ``address``), Serve's HTTP proxy on ``cfg.host:cfg.port``, and the app.

    Returns once every replica has loaded its detector.

    Args:
        cfg: the service configuration.
        address: a Ray cluster address to join (``ray://...`` or ``host:port``), or None to start
            a local Ray instance in this process.
        metrics_port: Ray metrics export port in embedded mode (0 picks a free one).
        ray_init_kwargs: extra keyword arguments for ``ray.init`` (tests shorten the metrics
            report interval with ``_system_config``).

    Returns:
        The running service.

    Raises:
        BundleError: when ``cfg.bundle`` is not a readable bundle (checked before anything starts).
        MissingExtraError: when Ray Serve is not installed.
    """
    from foclip.manifest import read_manifest

    cfg.validate()
    read_manifest(cfg.bundle)  # fail fast here rather than in every replica's constructor
    if cfg.calibration is not None and not _is_file(cfg.calibration):
        raise InputError(cfg.calibration, "is not a file", "a calibration.json from `foclip calibrate`")
    ray = require("ray", "serve")
    serve = require("ray.serve", "serve")
    from ray.serve.config import HTTPOptions

    embedded = address is None
    metrics_url = None
    if embedded:
        loopback = cfg.host in (LOOPBACK, "localhost")
        node_ip = LOOPBACK if loopback else None
        metrics_port = metrics_port or free_port(LOOPBACK if loopback else "0.0.0.0")
        kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False,
                                  "_metrics_export_port": metrics_port}
        if node_ip:
            kwargs["_node_ip_address"] = node_ip
        kwargs.update(ray_init_kwargs or {})
        ray.init(**kwargs)
        metrics_url = f"http://{node_ip or _host_ip()}:{metrics_port}/metrics"
    else:
        ray.init(address=address, **(ray_init_kwargs or {}))
    try:
        # The proxy's end-to-end deadline is a backstop behind the replica's own (504) deadline.
        serve.start(http_options=HTTPOptions(host=cfg.host, port=cfg.port,
                                             request_timeout_s=cfg.limits.timeout_s + 10.0))
        from foclip.serve.deployment import build_app

        serve.run(build_app(cfg), name=cfg.app_name, route_prefix="/")
    except BaseException:
        if embedded:
            serve.shutdown()
            ray.shutdown()
        raise
    host = "127.0.0.1" if cfg.host in ("0.0.0.0", "::") else cfg.host
    return RunningService(f"http://{host}:{cfg.port}", metrics_url, embedded, cfg.app_name)


def _is_file(path: str) -> bool:
    from pathlib import Path

    return Path(path).is_file()


def _host_ip() -> str:
    import ray

    return ray.util.get_node_ip_address()


__all__ = ["RunningService", "free_port", "start_service"]
