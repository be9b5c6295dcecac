"""Start and stop the service: an embedded local Ray (default) or an existing cluster (``address``).

Before anything is deployed, the driver opens the detector exactly as a replica will (bundle,
calibration, precision, backend) and runs one test detection, so a bad bundle or calibration fails
here with its one-line cause instead of a Ray traceback from a replica's constructor.

An embedded Ray binds every port it opens (GCS, raylet, workers' gRPC, dashboard agent, runtime-env
agent, metrics) to 127.0.0.1 unless ``ray_external`` is set; only Serve's HTTP proxy follows
``cfg.host``. Ray has no option for that: a local Ray in "single-node" mode (its
``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`` switch, the default on macOS and Windows) takes loopback as
the node's address, and every process it starts inherits the setting.
"""

from __future__ import annotations

import errno
import os
import re
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from foclip.errors import FoclipError, InputError, require
from foclip.network import ray_address_problem
from foclip.raylogs import quiet_ray_start_notes
from foclip.serve.config import LOOPBACK, ServeConfig
from foclip.serve.edge import environment as edge_environment

_SINGLE_NODE_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"
# Ray Serve's proxy binds its HTTP port with SO_REUSEPORT unless this is "0": a second `foclip serve`
# on the same port then shares it, and the kernel splits connections between two configurations.
_REUSE_PORT_ENV = "SERVE_SOCKET_REUSE_PORT_ENABLED"
_PROXY_READY_ENV = "RAY_SERVE_PROXY_READY_CHECK_TIMEOUT_S"
INLINE_CAP_BYTES = 256 * 2**20  # half of Ray's gRPC message limit (512 MiB)
INLINE_MARGIN_BYTES = 2**20  # pickling overhead of a request's items around its body


def inline_payloads(max_body_bytes: int) -> dict[str, int]:
    """Ray settings that pass a request's payload inside the task call, not through the object store.

    Ray puts a call argument over 100 KiB (``max_direct_call_object_size``), or a call's arguments over
    10 MiB together (``task_rpc_inlined_bytes_limit``), into its shared-memory object store. Every
    replica that reads such an object maps the store's pages, and they stay in its RSS after the
    object is freed: 8-15 MiB per replica after a minute of load (docs/serve.md, "Hardening, round
    two"). Inline, the payload is private memory that ``malloc_trim`` gives back. Bodies up to the
    service's own limit (plus pickling overhead; at most :data:`INLINE_CAP_BYTES`) go inline.

    Args:
        max_body_bytes: the service's request body limit.

    Returns:
        ``_system_config`` entries for ``ray.init``.
    """
    n = min(max_body_bytes + INLINE_MARGIN_BYTES, INLINE_CAP_BYTES)
    return {"max_direct_call_object_size": n, "task_rpc_inlined_bytes_limit": n}


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
    drain_flag: Any = field(default=None, repr=False)
    drain_timeout_s: float = 30.0
    _stopped: bool = field(default=False, repr=False)

    def drain(self) -> bool:
        """Answer new requests with 503 + Retry-After and wait for the in-flight ones to finish.

        Returns:
            True when every ingress replica reported nothing in flight within ``drain_timeout_s``.
        """
        if self.drain_flag is None:
            return False
        import ray

        ray.get(self.drain_flag.set.remote())
        deadline = time.monotonic() + self.drain_timeout_s
        while time.monotonic() < deadline:
            if ray.get(self.drain_flag.idle.remote()):
                return True
            time.sleep(0.1)
        return False

    def stop(self, drain: bool = True) -> None:
        """Stop serving.

        Args:
            drain: first answer new requests with 503 + Retry-After and let in-flight ones finish
                (up to ``graceful_shutdown_timeout_s``). False stops an embedded Ray at once (tests).

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
        drained = self.drain()
        if self.embedded and drained:
            # Nothing is in flight: stop Ray at once. serve.delete would first remove the route while
            # the proxy still accepts connections, answering 404 (a "permanent" error) for seconds.
            ray.shutdown()
            return
        # A joined cluster keeps its proxy (it may serve other apps): delete only this app; a drain
        # that timed out lets stragglers finish within each replica's graceful_shutdown_timeout_s.
        serve.delete(self.app_name)
        if self.drain_flag is not None:
            ray.kill(self.drain_flag)
        if self.embedded:
            serve.shutdown()
            ray.shutdown()


def free_port(host: str = LOOPBACK) -> int:
    """A TCP port that is free on ``host`` right now."""
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def check_port_free(host: str, port: int) -> None:
    """Refuse, before anything starts, a port that another process (another service) listens on.

    A plain bind without SO_REUSEPORT fails on Linux when any socket, a SO_REUSEPORT one included,
    listens on the port; SO_REUSEADDR lets it pass over connections of a stopped service still in
    TIME_WAIT, which would not stop the service from binding.

    Args:
        host: the address the service will bind.
        port: the TCP port.

    Raises:
        InputError: the port is taken, not ours to bind, or the host is not an address of this machine.
    """
    subject = f"--host {host} --port {port}"
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise InputError(subject, f"the host cannot be resolved ({exc.strerror})", "an address of this machine") from None
    family, _, _, _, addr = infos[0]
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(addr)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise InputError(subject, "the port is already in use (another `foclip serve`, Ray Serve or "
                                 "other program listens there)", "a free port; stop the other service or "
                                 "choose another --port") from None
            if exc.errno == errno.EACCES:
                raise InputError(subject, "binding the port is not permitted (ports below 1024 need privileges)",
                                 "a port >= 1024") from None
            raise InputError(subject, f"cannot be bound ({exc.strerror})", "an address of this machine and a "
                             "free port") from None


def validate_detector(cfg: ServeConfig, backend: str | None = None) -> dict[str, Any]:
    """Open the detector as a replica would and run one test detection, in this process.

    Args:
        cfg: the service configuration.
        backend: the backend to check with (default: ``cfg.resolved_backend``).

    Returns:
        The detector's info.

    Raises:
        FoclipError: the bundle, calibration, precision or backend is unusable, or the test
            detection did not give a finite score (its one-line cause).
    """
    import importlib
    import io
    import math

    import numpy as np
    from PIL import Image

    module, _, cls = cfg.detector_factory.partition(":")
    detector_cls = getattr(importlib.import_module(module), cls)
    with detector_cls.from_bundle(cfg.bundle, backend=backend or cfg.resolved_backend, precision=cfg.precision,
                                  calibration=cfg.calibration, cascade=cfg.cascade, probes=cfg.probes,
                                  self_check=cfg.self_check, batch_size=1,
                                  threads=1) as det:
        ramp = np.linspace(0, 255, 256 * 256 * 3).reshape(256, 256, 3).astype(np.uint8)
        buf = io.BytesIO()
        Image.fromarray(ramp).save(buf, "PNG")
        (result,) = det.detect([buf.getvalue()], ids=["startup-check"])
        r = result.to_dict()
        if r.get("error") or r.get("score_color") is None or not math.isfinite(float(r["score_color"])):
            raise FoclipError(f"bundle {cfg.bundle!r}", f"the test detection at startup failed ({r.get('error')})",
                              "a bundle that scores a plain image")
        return det.info()


def replica_failure(exc: BaseException) -> FoclipError | None:
    """The one-line cause of a replica that failed to start, dug out of Ray's error text (or None)."""
    text = str(exc)
    found = re.findall(r"foclip\.errors\.\w+: (.+)", text)
    if found:
        return FoclipError("foclip serve", f"a replica failed to start: {found[-1].strip()}",
                           "the same bundle, calibration and precision to work in the driver and the replicas")
    lines = [ln.strip() for ln in text.splitlines() if re.match(r"\s*\w+(\.\w+)*(Error|Exception): ", ln)]
    if lines:
        return FoclipError("foclip serve", f"a replica failed to start: {lines[-1]}", None)
    return None


def _loopback_ray(enable: bool) -> None:
    # Read by ray at import time (ray_constants) and by every Ray process at start: set both.
    if enable:
        os.environ[_SINGLE_NODE_ENV] = "0"
        import ray._private.ray_constants as rc

        rc.ENABLE_RAY_CLUSTER = False
    else:
        os.environ.pop(_SINGLE_NODE_ENV, None)


def start_service(cfg: ServeConfig, address: str | None = None, metrics_port: int = 0,
                  ray_init_kwargs: dict[str, Any] | None = None, ray_external: bool = False,
                  check: bool = True, after_init: Callable[[], None] | None = None) -> RunningService:
    """Start Ray (or join ``address``), Serve's HTTP proxy on ``cfg.host:cfg.port``, and the app.

    Returns once every replica has loaded its detector.

    Args:
        cfg: the service configuration.
        address: a Ray cluster address to join (``ray://...`` or ``host:port``), or None to start
            a local Ray instance in this process.
        metrics_port: Ray metrics export port in embedded mode (0 picks a free one).
        ray_init_kwargs: extra keyword arguments for ``ray.init`` (tests shorten the metrics
            report interval with ``_system_config``).
        ray_external: let an embedded Ray's own ports (gRPC, agents, metrics) bind the node's
            address instead of 127.0.0.1 (only useful to scrape metrics from another host).
        check: open the detector and run a test detection in this process first.
        after_init: called right after ``ray.init`` (the CLI re-installs its signal handlers there:
            Ray's own SIGTERM handler in the driver would otherwise end it with a crash dump).

    Returns:
        The running service.

    Raises:
        FoclipError: the bundle, calibration, precision or backend is unusable (checked in this
            process before anything starts), or a replica failed to start (its one-line cause).
        MissingExtraError: when Ray Serve is not installed.
    """
    from foclip.manifest import read_manifest

    cfg.validate()
    read_manifest(cfg.bundle)  # fail fast here rather than in every replica's constructor
    if cfg.calibration is not None and not _is_file(cfg.calibration):
        raise InputError(cfg.calibration, "is not a file", "a calibration.json from `foclip calibrate`")
    embedded = address is None
    if check:
        # On a cluster the driver may have no GPU: check with the CPU backend there (bundle,
        # calibration and precision are what matter); locally, with the replicas' own backend.
        validate_detector(cfg, None if embedded else "ort-cpu")
    if embedded:  # a joined cluster's proxy may already own the port (it serves this app there)
        check_port_free(cfg.host, cfg.port)
    if embedded:
        _loopback_ray(not ray_external)
    ray = require("ray", "serve")
    serve = require("ray.serve", "serve")
    from ray.serve.config import HTTPOptions

    quiet_ray_start_notes()  # two start-up notes that read like problems (foclip/raylogs.py)

    metrics_url = None
    if embedded:
        bind = "0.0.0.0" if ray_external else LOOPBACK
        metrics_port = metrics_port or free_port(bind)
        kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False,
                                  "_metrics_export_port": metrics_port}
        kwargs.update(ray_init_kwargs or {})
        kwargs["_system_config"] = {**inline_payloads(cfg.limits.max_body_bytes), **kwargs.get("_system_config", {})}
        # Ray's C++ failure handler would catch a SIGTERM that lands inside ray.init and end the
        # driver with a crash dump; `foclip serve` handles SIGTERM itself (clean stop, exit 0).
        os.environ.setdefault("RAY_DISABLE_FAILURE_SIGNAL_HANDLER", "1")
        os.environ[_REUSE_PORT_ENV] = "0"  # inherited by the proxy: one service per port, never shared
        # Serve marks a proxy unhealthy after 3 readiness checks of 5 s each; on a machine shared with
        # other jobs (both cores busy, measured) the proxy, which also loads foclip's edge, takes longer
        # to start, and `foclip serve` then exits. A slow start is not a failure: allow 30 s a check.
        os.environ.setdefault(_PROXY_READY_ENV, "30")
        # The proxy's head, slow-client and upload bounds (foclip/serve/edge.py), for every route.
        os.environ.update(edge_environment(cfg.edge_limits()))
        ray.init(**kwargs)
        metrics_url = f"http://{_host_ip()}:{metrics_port}/metrics"
    else:
        problem = ray_address_problem(address)
        if problem is not None:
            raise InputError(f"--address {address!r}", f"cannot be joined ({problem})",
                             "the address of a running Ray cluster (`ray start --head` prints it)")
        ray.init(address=address, **(ray_init_kwargs or {}))
    drain_flag = None
    try:
        if after_init is not None:
            after_init()
        from foclip.serve.deployment import DRAIN_NAMESPACE, DrainFlag, build_app

        name = f"{cfg.app_name}-drain-{os.getpid()}"
        drain_flag = DrainFlag.options(name=name, namespace=DRAIN_NAMESPACE).remote(cfg.replicas)
        cfg = replace(cfg, drain_actor=name)
        # The proxy's end-to-end deadline is a backstop behind the replica's own (504) deadline.
        serve.start(http_options=HTTPOptions(host=cfg.host, port=cfg.port,
                                             request_timeout_s=cfg.limits.timeout_s + 10.0))
        try:
            serve.run(build_app(cfg), name=cfg.app_name, route_prefix="/")
        except Exception as exc:
            cause = replica_failure(exc)
            if cause is None:
                raise
            raise cause from None
    except BaseException:
        if embedded:
            serve.shutdown()
            ray.shutdown()
        elif drain_flag is not None:
            ray.kill(drain_flag)
        raise
    host = "127.0.0.1" if cfg.host in ("0.0.0.0", "::") else cfg.host
    return RunningService(f"http://{host}:{cfg.port}", metrics_url, embedded, cfg.app_name, drain_flag,
                          cfg.graceful_shutdown_timeout_s)


def _is_file(path: str) -> bool:
    from pathlib import Path

    return Path(path).is_file()


def _host_ip() -> str:
    import ray

    return ray.util.get_node_ip_address()


__all__ = ["RunningService", "check_port_free", "free_port", "replica_failure", "start_service", "validate_detector"]
