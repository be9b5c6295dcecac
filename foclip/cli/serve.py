"""`foclip serve BUNDLE`: the detection service on Ray Serve (see docs/serve.md)."""

from __future__ import annotations

import argparse


def add_parser(sub) -> None:
    """Register ``foclip serve``."""
    from foclip.scoring import DEFAULT_PROBES
    from foclip.serve.config import TOPOLOGIES  # no Ray import: the config module is plain

    p = sub.add_parser(
        "serve", help="serve detection over HTTP with Ray Serve (batched across callers)",
        description="Serve POST /v1/detect, GET /v1/info, GET /healthz and the Open Inference Protocol (KServe v2: "
                    "/v2/health/ready, /v2/models/foclip, /v2/models/foclip/infer) from a bundle on Ray Serve. "
                    "Starts a local Ray instance bound to loopback unless --address joins a cluster. "
                    "SIGTERM / Ctrl-C stop it after in-flight requests finish.",
    )
    p.add_argument("bundle", metavar="BUNDLE", help="bundle folder from `foclip export` (readable by every replica)")
    p.add_argument("--calibration", default=None, metavar="FILE", help="calibration.json from `foclip calibrate`")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default: %(default)s, loopback only)")
    p.add_argument("--port", type=int, default=8000, help="HTTP port (default: %(default)s)")
    p.add_argument("--replicas", type=int, default=1, help="detector replicas (default: %(default)s)")
    p.add_argument("--gpus-per-replica", type=float, default=0.0, metavar="G",
                   help="GPUs reserved per replica; > 0 selects ort-cuda with --backend auto (default: %(default)s)")
    p.add_argument("--cpus-per-replica", type=float, default=1.0, help="CPUs reserved per replica (default: %(default)s)")
    p.add_argument("--threads", type=int, default=None,
                   help="ONNX Runtime threads per replica (default: the node's cores / replicas)")
    p.add_argument("--max-batch", type=int, default=64, help="largest batch Ray Serve forms (default: %(default)s)")
    p.add_argument("--batch-wait-ms", type=float, default=None,
                   help="how long a batch waits to fill (default: 200 ms on ort-cpu, 5 ms on GPU backends; "
                        "measured in docs/serve.md)")
    p.add_argument("--max-ongoing", type=int, default=None,
                   help="requests one replica works on at once (default: --max-batch)")
    p.add_argument("--max-queued", type=int, default=256,
                   help="requests queued before 503 + Retry-After; -1 = unbounded (default: %(default)s)")
    p.add_argument("--max-body-mb", type=float, default=32.0, help="largest request body, MiB (default: %(default)s)")
    p.add_argument("--max-images", type=int, default=64, help="most images per request (default: %(default)s)")
    p.add_argument("--timeout-s", type=float, default=30.0, help="per-request deadline -> 504 (default: %(default)s)")
    p.add_argument("--body-timeout-s", type=float, default=15.0,
                   help="deadline for receiving a request body -> 408 (default: %(default)s)")
    p.add_argument("--max-request-mpx", type=float, default=256.0,
                   help="most megapixels the images of one request may declare together; images past it "
                        "get the error pixel_budget (default: %(default)s)")
    p.add_argument("--max-per-client", type=int, default=32,
                   help="requests in flight per client address and ingress replica -> 429; 0 = no bound "
                        "(use 0 behind a reverse proxy) (default: %(default)s)")
    p.add_argument("--max-header-kb", type=float, default=32.0,
                   help="largest request head (request line + headers), KiB, checked as it arrives -> 431; "
                        "a single header line may take at most 8 KiB (default: %(default)s)")
    p.add_argument("--header-timeout-s", type=float, default=10.0,
                   help="deadline for a request head to arrive -> 408, connection closed (default: %(default)s)")
    p.add_argument("--max-uploads-per-client", type=int, default=32,
                   help="request bodies read at once per client address, in the proxy -> 429; 0 = no bound "
                        "(default: %(default)s)")
    p.add_argument("--address", default=None, metavar="RAY_ADDRESS",
                   help="join this Ray cluster instead of starting a local one")
    p.add_argument("--metrics-port", type=int, default=0,
                   help="Ray metrics export port in local mode (default: a free port, printed)")
    p.add_argument("--ray-external", action="store_true",
                   help="let the local Ray's own ports (gRPC, agents, metrics) bind the node's address "
                        "instead of 127.0.0.1 (default: loopback only; see docs/serve.md)")
    p.add_argument("--api-key-env", default=None, metavar="VAR",
                   help="require the API key held in environment variable VAR (X-API-Key header)")
    p.add_argument("--backend", default="auto", help="auto, ort-cpu, ort-cuda or trt (default: %(default)s)")
    p.add_argument("--precision", default="fp32", help="fp32, fp16 or int8 (default: %(default)s)")
    p.add_argument("--cascade", action="store_true", help="gray pass only where score_color >= tau_score")
    p.add_argument("--probes", default=",".join(DEFAULT_PROBES),  # scoring owns the default
                   help="colour-space probes (default gray, the paper's rule; e.g. gray,hue180,swap-rb for the "
                        "multi-probe detector; the calibration must have been made with the same probes)")
    p.add_argument("--topology", default="split", choices=TOPOLOGIES,
                   help="split: HTTP replicas in front of detector replicas (a request on a replica that dies is "
                        "retried on another); fused: each replica serves HTTP and detects, one process hop less "
                        "(measured in docs/serve.md) (default: %(default)s)")
    p.add_argument("--draft-factor", type=int, default=4,
                   help="JPEG DCT scaling while decoding, as in `foclip detect` (0 = full decode) "
                        "(default: %(default)s)")
    p.add_argument("--no-self-check", action="store_true",
                   help="skip each replica's start-up parity self-check of the graph (at your own risk)")
    p.set_defaults(func=run)


def config_from_args(args: argparse.Namespace):
    """A validated :class:`foclip.serve.config.ServeConfig` from parsed arguments.

    Raises:
        InputError: an option is out of range, or --api-key-env names an unset variable.
    """
    from foclip.serve.config import Limits, ServeConfig, api_key_digest_from_env

    limits = Limits(max_body_bytes=int(args.max_body_mb * 1024 * 1024), max_images=args.max_images,
                    timeout_s=args.timeout_s, body_timeout_s=args.body_timeout_s,
                    max_request_pixels=int(args.max_request_mpx * 1_000_000), max_per_client=args.max_per_client,
                    max_header_bytes=int(args.max_header_kb * 1024), header_timeout_s=args.header_timeout_s,
                    max_uploads_per_client=args.max_uploads_per_client)
    return ServeConfig(
        bundle=args.bundle, calibration=args.calibration, backend=args.backend, precision=args.precision,
        cascade=args.cascade, probes=tuple(p.strip() for p in args.probes.split(",") if p.strip()),
        self_check=not args.no_self_check, host=args.host, port=args.port, replicas=args.replicas,
        gpus_per_replica=args.gpus_per_replica, cpus_per_replica=args.cpus_per_replica, threads=args.threads,
        max_batch=args.max_batch, batch_wait_ms=args.batch_wait_ms, max_ongoing_requests=args.max_ongoing,
        draft_factor=args.draft_factor, topology=args.topology,
        max_queued_requests=args.max_queued, limits=limits, api_key_sha256=api_key_digest_from_env(args.api_key_env),
    ).validate()


class _StopDuringStartup(KeyboardInterrupt):
    """SIGTERM / SIGINT arrived while the service was starting.

    A KeyboardInterrupt because Ray's own signal check (run while its C++ core waits, e.g. inside
    ``serve.run``) passes only KeyboardInterrupt and SystemExit on: any other exception raised by a
    Python signal handler there is printed as "Exception ignored" and the stop is lost. Ray turns it
    into a plain KeyboardInterrupt on the way out, so the caller checks its own stop flag.
    """


def run(args: argparse.Namespace) -> int:
    """Start the service and block until SIGTERM / SIGINT; returns 0 after a clean stop.

    A signal during startup stops what was started (Ray included) and returns 0 as well.
    """
    import signal
    import threading

    from foclip.cli.common import console, err_console, random_weights_notice
    from foclip.errors import require
    from foclip.manifest import read_manifest
    from foclip.serve.config import LOOPBACK
    from foclip.serve.service import start_service

    cfg = config_from_args(args)
    require("ray", "serve")  # before the bundle: a runtime-only install says which extra, in one line
    manifest = read_manifest(cfg.bundle)
    random_weights_notice(manifest.pretrained)
    if cfg.host not in (LOOPBACK, "localhost", "::1") and cfg.api_key_sha256 is None:
        err_console.print(f"[bold yellow]warning:[/] serving on {cfg.host} without --api-key-env: anyone who can "
                          "reach this address can use the service.", highlight=False)
    console.print(f"starting {cfg.replicas} replica(s) of {manifest.model_name} ({cfg.precision}, "
                  f"{cfg.resolved_backend}) on Ray Serve...", highlight=False)
    stop = threading.Event()
    starting = True

    def on_signal(*_: object) -> None:
        if stop.is_set():
            return  # a second signal while stopping changes nothing
        stop.set()
        if starting:
            raise _StopDuringStartup()

    def install() -> None:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, on_signal)

    install()
    try:
        svc = start_service(cfg, address=args.address, metrics_port=args.metrics_port,
                            ray_external=args.ray_external, after_init=install)
    except KeyboardInterrupt:  # _StopDuringStartup, or what Ray made of it
        if not stop.is_set():
            raise
        console.print("stopped during startup", highlight=False)
        return 0
    except SystemExit as exc:
        # Inside ray.init, Ray's own SIGTERM handler turns the signal into sys.exit(15); start_service
        # has shut Ray down on the way out, so this is the same clean stop.
        if exc.code != signal.SIGTERM:
            raise
        console.print("stopped during startup", highlight=False)
        return 0
    starting = False
    install()  # again: nothing Ray did during startup may keep its own handler
    if stop.is_set():  # the signal landed after start_service returned but before the flag flipped
        svc.stop()
        console.print("stopped", highlight=False)
        return 0
    console.print(f"serving on {svc.url}  (POST /v1/detect, GET /v1/info, GET /healthz; "
                  "v2 protocol: POST /v2/models/foclip/infer)", highlight=False)
    if svc.metrics_url:
        console.print(f"Prometheus metrics (ray_foclip_*, ray_serve_*): {svc.metrics_url}", highlight=False)
    try:
        while not stop.wait(0.5):
            pass
    finally:
        console.print("stopping: finishing in-flight requests...", highlight=False)
        svc.stop()
    console.print("stopped", highlight=False)
    return 0
