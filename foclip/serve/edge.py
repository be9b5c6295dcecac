"""Bounds at the HTTP edge: request heads, slow clients and open uploads, before any route runs.

Ray Serve's proxy (uvicorn) parses requests with httptools, which takes a request head of any size,
and hands a request to an ingress replica as soon as its head is in, so an upload that stalls holds
one of the replica's ``max_ongoing_requests`` slots until ``body_timeout_s``. Two pieces run in the
proxy process and apply to every route (``/v1/*``, ``/v2/*``, ``/healthz``):

* :func:`edge_protocol` wraps uvicorn's HTTP protocol: a request head longer than
  ``max_header_bytes`` in all, or with a line longer than ``max_header_line_bytes``, is answered
  431 and the connection closed as soon as those bytes arrive (nothing is parsed past the bound,
  no API key is checked); a head that is not complete ``header_timeout_s`` after the connection
  opened (or after the previous response) is answered 408 and closed.
* :class:`BodyGate` (an ASGI middleware) reads a request body in the proxy, within
  ``body_timeout_s`` (408) and ``max_body_bytes`` (413), before the request is routed: a stalled
  upload holds a coroutine and a socket in the proxy, never a replica slot. At most
  ``max_uploads_per_client`` bodies are read at once per client address (more -> 429 +
  Retry-After). A v2 inference body past the JSON bounds (:mod:`foclip.serve.json_bounds`) is
  refused here, before it crosses to a replica. It also keeps Ray's own ``/-/routes`` and ``/-/healthz`` behind the API key (when
  one is set), and gives every error under ``/v2`` the Open Inference Protocol's body,
  ``{"error": "<message>"}``, whoever produced it (this module, the framework, Ray's proxy).

Error bodies follow the route's protocol: ``{"error": "<message>"}`` under ``/v2`` (as
:mod:`foclip.serve.v2`), ``{"error": {"code": ..., "message": ...}}`` elsewhere (as
:mod:`foclip.serve.v1`); the protocol modules are not imported here (the proxy stays light).

``foclip serve`` installs both through Ray Serve's documented proxy callback
(``RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH`` = :func:`proxy_callback`, the limits in
``FOCLIP_EDGE_LIMITS``), set in the environment the local Ray inherits. The protocol reaches
uvicorn through ``uvicorn.Config``'s ``http`` argument (Ray builds the Config without one), so the
callback replaces ``uvicorn.Config`` in the proxy process with a subclass that sets it.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import os
from collections import Counter
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import asdict, dataclass
from http import HTTPStatus
from typing import Any

from foclip.serve.auth import key_matches, provided_api_key
from foclip.serve.json_bounds import JsonBoundError, check_json_shape, json_head
from foclip.serve.memory import IdleTrim

CALLBACK_ENV = "RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH"
LIMITS_ENV = "FOCLIP_EDGE_LIMITS"
CALLBACK = "foclip.serve.edge:proxy_callback"

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


@dataclass(frozen=True)
class EdgeLimits:
    """Bounds applied in the proxy before a request reaches any route.

    Attributes:
        max_header_bytes: largest request head (request line and headers) -> 431.
        max_header_line_bytes: longest single line of the head -> 431.
        header_timeout_s: time for a whole head to arrive after the connection opens or the previous
            response ends -> 408 and close.
        body_timeout_s: time for a whole body to arrive -> 408 and close.
        max_body_bytes: largest body -> 413.
        max_uploads_per_client: bodies read at once per client address -> 429 (0: no bound).
        retry_after_s: the Retry-After of a 429.
        api_key_sha256: hex sha256 of the service's API key (Ray's ``/-/`` routes need it), or None.
        max_json_bytes: most bytes outside strings in a v2 inference request's JSON -> 413.
        max_json_depth: deepest nesting in a v2 inference request's JSON -> 400.
    """

    max_header_bytes: int = 32 * 1024
    max_header_line_bytes: int = 8 * 1024
    header_timeout_s: float = 10.0
    body_timeout_s: float = 15.0
    max_body_bytes: int = 32 * 1024 * 1024
    max_uploads_per_client: int = 32
    retry_after_s: float = 1.0
    api_key_sha256: str | None = None
    max_json_bytes: int = 64 * 1024
    max_json_depth: int = 16

    def to_env(self) -> str:
        """The JSON that :meth:`from_env` reads back."""
        return json.dumps(asdict(self))

    @classmethod
    def from_env(cls) -> EdgeLimits:
        """The limits in ``FOCLIP_EDGE_LIMITS`` (defaults when unset)."""
        text = os.environ.get(LIMITS_ENV)
        return cls(**json.loads(text)) if text else cls()


@functools.cache
def _ray_counters() -> tuple[Any, Any] | None:
    """The service's ``foclip_requests`` and ``foclip_errors`` counters, in a Ray process (else None).

    The proxy records what the edge refuses in the same series the replicas use (foclip/serve/
    metrics.py), so a 413 or 431 answered here is counted like one answered by a replica.
    """
    try:
        import ray

        if not ray.is_initialized():
            return None
        from ray.util.metrics import Counter

        return (Counter("foclip_requests", description="HTTP requests by route and status", tag_keys=("route", "status")),
                Counter("foclip_errors", description="errors by code (request- and image-level)", tag_keys=("code",)))
    except Exception:  # noqa: BLE001 - metrics must never fail a request
        return None


def _count(route: str, status: int, code: str) -> None:
    counters = _ray_counters()
    if counters is not None:
        with contextlib.suppress(Exception):
            counters[0].inc(1, tags={"route": route, "status": str(status)})
            counters[1].inc(1, tags={"code": code})


def is_v2(path: str) -> bool:
    """Whether ``path`` is one of the Open Inference Protocol's (``/v2`` and below)."""
    return path == "/v2" or path.startswith("/v2/")


def error_json(path: str, code: str, message: str) -> bytes:
    """The error body of the protocol that ``path`` belongs to (see the module's docstring)."""
    return json.dumps({"error": message} if is_v2(path) else {"error": {"code": code, "message": message}}).encode()


def head_path(head: bytes) -> str:
    """The path of the request line at the start of ``head`` ('' when there is none yet).

    Args:
        head: the bytes of a request head received so far.

    Returns:
        The target's path (origin form ``/v2/...`` or absolute form ``http://host/v2/...``).
    """
    line = head.split(b"\n", 1)[0]
    parts = line.split(b" ")
    if len(parts) < 2:
        return ""
    target = parts[1].decode("latin-1")
    if "://" in target:
        target = "/" + target.split("://", 1)[1].partition("/")[2]
    return target.split("?", 1)[0]


def _error_bytes(status: int, reason: str, code: str, message: str, path: str = "") -> bytes:
    body = error_json(path, code, message)
    return (f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\nconnection: close\r\n"
            f"content-length: {len(body)}\r\n\r\n").encode() + body


def edge_protocol(base: type[asyncio.Protocol], limits: EdgeLimits) -> type[asyncio.Protocol]:
    """A subclass of uvicorn's HTTP protocol ``base`` that bounds request heads in size and time.

    The head is found by its blank line in the raw bytes, before the parser sees them, so the bound
    holds whatever the parser buffers. Counting starts at the connection, and again once the previous
    request has been read whole: a head pipelined behind a pending response is counted too (from the
    next read on; the read that ended the previous request is at most one socket read). Its refusal
    waits for the pending response, so that answers stay in request order, and nothing more is read
    meanwhile. The head timer starts at the connection or once the previous response is sent.

    Args:
        base: ``HttpToolsProtocol`` (its parser callbacks say where a request ends).
        limits: the bounds.

    Returns:
        The protocol class to give uvicorn (``Config(http=...)``).
    """

    class EdgeProtocol(base):  # type: ignore[misc, valid-type]
        def connection_made(self, transport: Any) -> None:
            super().connection_made(transport)
            self._edge_closed = False
            self._message_done = False
            self._refusal: bytes | None = None  # a 431 held until the pending response is sent
            self._edge_timer = None
            self._start_head()

        def _start_head(self, timer: bool = True) -> None:
            self._head = bytearray()
            self._scan_from = 0
            self._in_head = True
            if timer:
                self._arm_timer()

        def _arm_timer(self) -> None:
            if self._edge_timer is None:
                self._edge_timer = self.loop.call_later(limits.header_timeout_s, self._head_timeout)

        def _end_head(self) -> None:
            self._in_head = False
            self._message_done = False
            self._head = bytearray()
            if self._edge_timer is not None:
                self._edge_timer.cancel()
                self._edge_timer = None

        def _pending_response(self) -> bool:
            return self._message_done and self.cycle is not None and not self.cycle.response_complete

        def _refuse(self, response: bytes) -> None:
            status = int(response.split(b" ", 2)[1])
            _count("(edge)", status, "headers_too_large" if status == 431 else "header_timeout")
            pipelined = self._pending_response()
            self._end_head()
            if pipelined:  # answer after the response the client is waiting for; read nothing more meanwhile
                self._refusal = response
                self.flow.pause_reading()
                return
            self._close_with(response)

        def _close_with(self, response: bytes) -> None:
            self._edge_closed = True
            if not self.transport.is_closing():
                self.transport.write(response)
                self.transport.close()

        def _head_timeout(self) -> None:
            self._edge_timer = None
            if self._in_head and not self._edge_closed:
                self._refuse(_error_bytes(408, "Request Timeout", "header_timeout",
                                          f"the request head did not arrive within {limits.header_timeout_s:g} s",
                                          head_path(bytes(self._head))))

        def data_received(self, data: bytes) -> None:
            if self._edge_closed or self._refusal is not None:
                return
            if self._in_head:
                self._head.extend(data)
                end = self._head.find(b"\r\n\r\n")
                size = len(self._head) if end < 0 else end + 4
                lines = bytes(self._head[self._scan_from:size]).split(b"\n")
                if size > limits.max_header_bytes:
                    return self._refuse(_error_bytes(
                        431, "Request Header Fields Too Large", "headers_too_large",
                        f"the request head exceeds {limits.max_header_bytes} bytes", head_path(bytes(self._head))))
                if max(len(line) for line in lines) > limits.max_header_line_bytes:
                    return self._refuse(_error_bytes(
                        431, "Request Header Fields Too Large", "headers_too_large",
                        f"a request header line exceeds {limits.max_header_line_bytes} bytes",
                        head_path(bytes(self._head))))
                if end >= 0:
                    self._end_head()
                else:
                    self._scan_from = size - len(lines[-1])
            super().data_received(data)

        def on_headers_complete(self) -> None:
            # The parser found a head's end in bytes read before counting restarted (a pipelined head
            # that arrived in the same read as the end of the previous request): that head is over.
            if self._in_head:
                self._end_head()
            super().on_headers_complete()

        # The next head starts once the request has been read to its end: its timer once it is also
        # answered. A response sent early (429, 413, 415) leaves the rest of its body to arrive, and
        # those bytes are not a head.
        def on_message_complete(self) -> None:
            super().on_message_complete()
            self._message_done = True
            if self.cycle is not None and self.cycle.response_complete:
                self._next_head()
            elif not self._edge_closed and not self._in_head:
                self._start_head(timer=False)  # pipelined behind the pending response: counted, not timed

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if self._refusal is not None:
                response, self._refusal = self._refusal, None
                return self._close_with(response)
            if self._message_done:
                self._next_head()

        def _next_head(self) -> None:
            if self._edge_closed or self.transport.is_closing():
                return
            if self._in_head:
                self._arm_timer()
            else:
                self._start_head()

        def connection_lost(self, exc: Exception | None) -> None:
            self._edge_closed = True
            self._end_head()
            super().connection_lost(exc)

    EdgeProtocol.__name__ = EdgeProtocol.__qualname__ = f"Edge{base.__name__}"
    return EdgeProtocol


class BodyGate:
    """ASGI middleware: read each request body whole, within bounds, before the app sees the request.

    Args:
        app: the wrapped ASGI application (Ray Serve's proxy router).
        limits: the bounds (body timeout, size, open uploads per client).
    """

    def __init__(self, app: Callable[..., Awaitable[None]], limits: EdgeLimits | None = None) -> None:
        self.app = app
        self.limits = limits or EdgeLimits.from_env()
        self.open_uploads: Counter[str] = Counter()
        self.in_flight = 0
        # The proxy holds every body while it is read and routed; give that memory back once quiet.
        self.idle_trim = IdleTrim(busy=lambda: self.in_flight > 0)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        self.idle_trim.ensure_running()
        self.in_flight += 1  # no trim while requests are in flight; the touch after the last arms one
        try:
            await self._gate(scope, receive, send)
        finally:
            self.in_flight -= 1
            self.idle_trim.touch()

    async def _gate(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if is_v2(path):
            send = _v2_errors(send)
        if path.startswith("/-/") and not key_matches(self.limits.api_key_sha256, _scope_api_key(scope)):
            # Ray's own routes (the route table, the proxy's health) answer only with the service's key.
            _count(path, 401, "unauthorized")
            return await _reply(send, path, 401, "unauthorized", "missing or wrong API key (send it in the "
                                "X-API-Key header)", {"www-authenticate": "ApiKey"})
        if not _has_body(scope):
            return await self.app(scope, receive, send)
        client = (scope.get("client") or ("unknown", 0))[0]
        cap = self.limits.max_uploads_per_client
        if cap > 0 and self.open_uploads[client] >= cap:
            _count(path, 429, "too_many_uploads")
            return await _reply(send, path, 429, "too_many_uploads", f"more than {cap} uploads open at once from "
                                "this address", {"retry-after": f"{self.limits.retry_after_s:g}"})
        declared = dict(scope.get("headers") or []).get(b"content-length", b"").strip()
        if declared.isdigit() and int(declared) > self.limits.max_body_bytes:  # refused before a byte is read
            _count(path, 413, "body_too_large")
            return await _reply(send, path, 413, "body_too_large", f"request body is {int(declared)} bytes; the "
                                f"limit is {self.limits.max_body_bytes}", {"connection": "close"})
        self.open_uploads[client] += 1
        try:
            received = await self._read(receive)
        except _Refused as exc:
            _count(path, exc.status, exc.code)
            return await _reply(send, path, exc.status, exc.code, exc.message, {"connection": "close"})
        finally:
            self.open_uploads[client] -= 1
            if self.open_uploads[client] <= 0:
                del self.open_uploads[client]
        if is_v2(path) and path.endswith("/infer"):
            # The replica bounds v2 JSON too; here a body that fails the bound never crosses to it
            # (Ray's transfer alone holds ~3 copies of a body in the replica). One C-speed scan.
            header_length = dict(scope.get("headers") or []).get(b"inference-header-content-length")
            try:
                check_json_shape(json_head(received, None if header_length is None else header_length.decode("latin-1")),
                                 self.limits.max_json_bytes, self.limits.max_json_depth)
            except JsonBoundError as exc:
                _count(path, exc.status, exc.code)
                return await _reply(send, path, exc.status, exc.code, exc.message, {})
        body = bytes(received)
        del received
        sent = False

        async def replay() -> Message:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()  # after the body: the client's disconnect, when it comes

        await self.app(scope, replay, send)

    async def _read(self, receive: Receive) -> bytearray:
        # One growing buffer, not a list of chunks joined at the end: the body is held once while it
        # arrives (and while it is checked), and copied once only if it goes on to a replica.
        buf = bytearray()
        size = 0

        async def collect() -> None:
            nonlocal size
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    raise _Refused(400, "client_disconnected", "the client closed the connection during the upload")
                chunk = message.get("body", b"")
                size += len(chunk)
                if size > self.limits.max_body_bytes:
                    raise _Refused(413, "body_too_large",
                                   f"request body exceeds the limit of {self.limits.max_body_bytes} bytes")
                buf.extend(chunk)
                if not message.get("more_body", False):
                    return

        try:
            await asyncio.wait_for(collect(), self.limits.body_timeout_s)
        except asyncio.TimeoutError:
            raise _Refused(408, "body_timeout", f"the request body did not arrive within "
                           f"{self.limits.body_timeout_s:g} s ({size} bytes received)") from None
        return buf


class _Refused(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def _has_body(scope: Scope) -> bool:
    headers = dict(scope.get("headers") or [])
    length = headers.get(b"content-length")
    if length is not None:
        return length.strip() not in (b"0", b"")
    return b"transfer-encoding" in headers


def _scope_api_key(scope: Scope) -> str | None:
    headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers") or []}
    return provided_api_key(headers)


def _v2_errors(send: Send) -> Send:
    """``send`` that gives an error response the v2 body, ``{"error": "<message>"}``, unless it has it.

    Errors under ``/v2`` come from foclip's v2 routes (already in shape) but also from the framework
    and Ray's proxy (a 503 when its queue is full, a 408 past its request timeout, a 500 when a
    replica died), in their own shapes: those are rewritten, their text kept as the message.
    Successful responses pass through as they stream.
    """
    held: dict[str, Any] = {}

    async def reshaping_send(message: Message) -> None:
        if message["type"] == "http.response.start" and message["status"] >= 400:
            held["start"], held["body"] = message, b""
            return
        if "start" not in held or message["type"] != "http.response.body":
            return await send(message)
        held["body"] += message.get("body", b"")
        if message.get("more_body", False):
            return
        start, body = held.pop("start"), held.pop("body")
        if not _has_v2_shape(body):
            text = body.decode("utf-8", "replace").strip()
            with contextlib.suppress(ValueError):  # a framework's {"detail": ...}: its text, not its JSON
                detail = json.loads(text)
                text = str(detail.get("detail", text)) if isinstance(detail, dict) else text
            body = json.dumps({"error": text or HTTPStatus(start["status"]).phrase}).encode()
            kept = [(k, v) for k, v in start.get("headers", []) if k.lower() not in (b"content-type", b"content-length")]
            start = {**start, "headers": kept + [(b"content-type", b"application/json"),
                                                 (b"content-length", str(len(body)).encode())]}
        await send(start)
        await send({"type": "http.response.body", "body": body, "more_body": False})

    return reshaping_send


def _has_v2_shape(body: bytes) -> bool:
    try:
        obj = json.loads(body)
    except ValueError:
        return False
    return isinstance(obj, dict) and isinstance(obj.get("error"), str)


async def _reply(send: Send, path: str, status: int, code: str, message: str, headers: dict[str, str]) -> None:
    body = error_json(path, code, message)
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    raw += [(k.encode(), v.encode()) for k, v in headers.items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body, "more_body": False})


def install_protocol(limits: EdgeLimits) -> None:
    """Make every ``uvicorn.Config`` built in this process without ``http=`` use :func:`edge_protocol`.

    Args:
        limits: the bounds.
    """
    import uvicorn
    from uvicorn.protocols.http.auto import AutoHTTPProtocol

    if getattr(uvicorn.Config, "_foclip_edge", False):
        return
    # Without httptools uvicorn parses with h11, which bounds a head itself (its incomplete-event
    # limit, answered 400): that limit is set instead, and the head timeout is then uvicorn's own.
    protocol = edge_protocol(AutoHTTPProtocol, limits) if AutoHTTPProtocol.__name__ == "HttpToolsProtocol" else None

    class EdgeConfig(uvicorn.Config):
        _foclip_edge = True

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            if protocol is not None:
                kwargs.setdefault("http", protocol)
            kwargs.setdefault("h11_max_incomplete_event_size", limits.max_header_bytes)
            super().__init__(*args, **kwargs)

    uvicorn.Config = EdgeConfig  # type: ignore[misc]


def proxy_callback() -> list[Any]:
    """Ray Serve's HTTP proxy callback: install the head bounds, return the body gate middleware.

    Returns:
        ``[Middleware(BodyGate, limits=...)]`` for Ray Serve to wrap its proxy app with.
    """
    from starlette.middleware import Middleware

    limits = EdgeLimits.from_env()
    install_protocol(limits)
    return [Middleware(BodyGate, limits=limits)]


def environment(limits: EdgeLimits) -> dict[str, str]:
    """The environment variables that make a local Ray's Serve proxy apply ``limits``."""
    return {CALLBACK_ENV: CALLBACK, LIMITS_ENV: limits.to_env()}


__all__ = ["BodyGate", "EdgeLimits", "edge_protocol", "environment", "install_protocol", "proxy_callback"]
