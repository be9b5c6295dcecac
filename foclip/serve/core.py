"""The detection service's core: every bound a request passes, whatever wire protocol carried it.

:class:`DetectService` owns what ``/v1/detect`` and the Open Inference Protocol (v2) share: the
drain switch, the API key, the per-client bound, the body's size and time limits, the per-request
pixel budget, detection within the deadline (through Ray Serve's batcher in a replica) and the
metrics. It knows no protocol: a protocol module (:mod:`foclip.serve.v1`, :mod:`foclip.serve.v2`)
turns its request into :class:`Item` s, calls the steps here in the service's order, and turns the
results (or an :class:`HttpError`) into its own response. No protocol module is imported here, and
nothing here calls back into one. Testable without Ray or an HTTP server.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from PIL import Image

from foclip.runtime.decode import readable_formats
from foclip.serve.auth import key_matches, provided_api_key
from foclip.serve.config import Limits


class HttpError(Exception):
    """A whole-request failure with its HTTP status and a stable error code."""

    def __init__(self, status: int, code: str, message: str, headers: Mapping[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = dict(headers or {})


@dataclass(frozen=True)
class Item:
    """One image of a request: its id, its bytes, or an error found before detection."""

    id: str
    data: bytes
    error: dict[str, str] | None = None


class Metrics(Protocol):
    """What the service reports; Ray's metrics in a replica, a recorder in tests."""

    def request(self, route: str, status: int, latency_s: float) -> None: ...

    def error(self, code: str) -> None: ...

    def results(self, results: list[dict[str, Any]]) -> None: ...


class NullMetrics:
    """Metrics that go nowhere."""

    def request(self, route: str, status: int, latency_s: float) -> None:
        pass

    def error(self, code: str) -> None:
        pass

    def results(self, results: list[dict[str, Any]]) -> None:
        pass


def check_api_key(expected_sha256: str | None, provided: str | None) -> None:
    """Accept the request when no key is configured or the provided key matches, in constant time.

    Args:
        expected_sha256: hex sha256 of the configured key, or None for no key.
        provided: the ``X-API-Key`` header value (or a ``Bearer`` token), or None.

    Raises:
        HttpError: 401 when a key is configured and the provided one is missing or wrong.
    """
    if not key_matches(expected_sha256, provided):
        raise HttpError(401, "unauthorized", "missing or wrong API key (send it in the X-API-Key header)",
                        {"WWW-Authenticate": "ApiKey"})


def check_declared_length(headers: Mapping[str, str], limits: Limits) -> None:
    """Refuse early when Content-Length already says the body is too large.

    Raises:
        HttpError: 413 when the declared length exceeds ``limits.max_body_bytes``; 400 when it is
            not a number.
    """
    declared = headers.get("content-length")
    if declared is None:
        return
    if not declared.strip().isascii() or not declared.strip().isdigit():  # int() would take "1_0" too
        raise HttpError(400, "bad_request", f"Content-Length {declared!r} is not a number")
    n = int(declared)
    if n > limits.max_body_bytes:
        raise HttpError(413, "body_too_large", f"request body is {n} bytes; the limit is {limits.max_body_bytes}")


async def read_body(stream: AsyncIterator[bytes], limits: Limits) -> bytes:
    """Read a request body within ``limits.body_timeout_s``, stopping as soon as it passes the size limit.

    Args:
        stream: the body's chunks.
        limits: the service limits.

    Returns:
        The whole body.

    Raises:
        HttpError: 413 when the body exceeds ``limits.max_body_bytes``; 408 when it has not fully
            arrived within ``limits.body_timeout_s`` (a stalled upload must not hold a request slot).
    """
    chunks: list[bytes] = []
    size = 0

    async def collect() -> None:
        nonlocal size
        async for chunk in stream:
            size += len(chunk)
            if size > limits.max_body_bytes:
                raise HttpError(413, "body_too_large", f"request body exceeds the limit of {limits.max_body_bytes} bytes")
            chunks.append(chunk)

    try:
        await asyncio.wait_for(collect(), limits.body_timeout_s)
    except asyncio.TimeoutError:
        raise HttpError(408, "body_timeout", f"the request body did not arrive within {limits.body_timeout_s:g} s "
                        f"({size} bytes received)", {"Connection": "close"}) from None
    return b"".join(chunks)


def declared_pixels(data: bytes) -> int | None:
    """Width x height from an image's header (PIL reads only the header), or None if unreadable."""
    try:  # the formats the detector decodes: junk is not tried against every other Pillow plugin
        with Image.open(io.BytesIO(data), formats=readable_formats()) as img:
            w, h = img.size
    except Exception:  # noqa: BLE001 - the Detector gives unreadable images their own error code
        return None
    return w * h


def apply_pixel_budget(items: list[Item], budget: int) -> list[Item]:
    """Give ``pixel_budget`` errors to the images past the request's total pixel budget.

    Images are counted in request order by the pixels their headers declare (nothing is decoded);
    once the running total would exceed ``budget`` the image is refused, so one request cannot make
    a replica decode gigapixels however few bytes it sends.

    Args:
        items: the request's items.
        budget: the most pixels the request's images may declare together.

    Returns:
        The items, those over the budget with an error.
    """
    total, out = 0, []
    for item in items:
        n = declared_pixels(item.data) if item.error is None else None
        if n is not None and total + n > budget:
            out.append(Item(item.id, b"", {"code": "pixel_budget", "message": (
                f"{item.id!r} | declares {n:,} pixels, past the request's budget of {budget:,} pixels "
                f"({total:,} used by earlier images). Expected fewer or smaller images per request")}))
            continue
        total += n or 0
        out.append(item)
    return out


def error_result(item: Item, score_scale: float | None = None) -> dict[str, Any]:
    """The per-item result of an image refused before detection (same keys as a Detector result)."""
    return {"id": item.id, "score_color": None, "score_gray": None, "drop": None, "tampered": None,
            "error": item.error, "calibrated": None, "score_scale": score_scale}


DetectFn = Callable[[list[Item]], Awaitable[list[dict[str, Any]]]]


@dataclass
class Admission:
    """One admitted request: the protocol sets ``status`` to the status it answers with (for the metrics)."""

    route: str
    status: int = 500  # an exception that is not an HttpError is a bug: counted as the 500 it becomes


class DetectService:
    """The bounds and the detection path shared by every protocol, around an async ``detect`` function.

    A protocol serves one detection request in this order (the service's contract):
    ``async with service.admit(...)`` (drain, API key, per-client bound; metrics and in-flight count
    on the way out), its own header checks, :meth:`read_body` (declared length, size, time),
    its own parsing into items, :meth:`detect` (pixel budget, deadline, per-item metrics), its own
    response. An :class:`HttpError` from any step is the protocol's to shape.

    Args:
        detect: scores a list of items (no pre-set errors) and returns one result dict per item, in
            order; in a replica this fans the items out to Ray Serve's batcher.
        info: returns the ``/v1/info`` body.
        meta: fields stated in every detection response (``score_scale`` at least).
        limits: request limits.
        api_key_sha256: hex sha256 of the API key, or None for an open service.
        metrics: where counts and latencies go.
    """

    def __init__(self, detect: DetectFn, info: Callable[[], dict[str, Any]], meta: Mapping[str, Any],
                 limits: Limits, api_key_sha256: str | None = None, metrics: Metrics | None = None) -> None:
        self._detect = detect
        self.info = info
        self.meta = dict(meta)
        self.limits = limits
        self.api_key_sha256 = api_key_sha256
        self.metrics = metrics or NullMetrics()
        self.retry_after_s = 1.0
        self.draining = False  # set on shutdown: new requests get 503 + Retry-After, in-flight ones finish
        self.in_flight = 0
        self._per_client: Counter[str] = Counter()

    def check_key(self, headers: Mapping[str, str]) -> None:
        """Refuse a request without the API key (when one is set).

        Raises:
            HttpError: 401.
        """
        check_api_key(self.api_key_sha256, provided_api_key(headers))

    @contextlib.asynccontextmanager
    async def admit(self, route: str, headers: Mapping[str, str], client: str | None = None,
                    ) -> AsyncIterator[Admission]:
        """Admit one detection request: drain, API key, per-client bound; count it on the way out.

        Args:
            route: the metrics label of the protocol's route.
            headers: request headers with lower-case keys.
            client: the client's address (for the per-client bound), or None when unknown.

        Yields:
            The admission; the protocol sets its ``status`` before leaving the block.

        Raises:
            HttpError: 503 while draining, 401 without the key, 429 past the per-client bound, or
                whatever the protocol's block raised (counted by its code, then passed on).
        """
        t0 = time.perf_counter()
        ticket = Admission(route)
        counted = False
        self.in_flight += 1
        try:
            if self.draining:
                raise HttpError(503, "draining", "the service is shutting down; retry on another instance or later",
                                {"Retry-After": f"{self.retry_after_s:g}"})
            self.check_key(headers)
            if client is not None and self.limits.max_per_client > 0:
                if self._per_client[client] >= self.limits.max_per_client:
                    raise HttpError(429, "too_many_requests", f"more than {self.limits.max_per_client} requests in "
                                    "flight from this address", {"Retry-After": f"{self.retry_after_s:g}"})
                self._per_client[client] += 1
                counted = True
            yield ticket
        except HttpError as exc:
            ticket.status = exc.status
            self.metrics.error(exc.code)
            raise
        finally:
            self.in_flight -= 1
            if counted:
                self._per_client[client] -= 1
                if self._per_client[client] <= 0:
                    del self._per_client[client]
            self.metrics.request(route, ticket.status, time.perf_counter() - t0)

    async def read_body(self, headers: Mapping[str, str], stream: AsyncIterator[bytes]) -> bytes:
        """The request body, refused early on its declared length, then read within the size and time limits.

        Raises:
            HttpError: 400 (a Content-Length that is not a number), 413, 408.
        """
        check_declared_length(headers, self.limits)
        return await read_body(stream, self.limits)

    async def detect(self, items: list[Item]) -> list[dict[str, Any]]:
        """Score a request's items: the pixel budget, then detection within the deadline.

        Args:
            items: the request's items, in order (those with an ``error`` are not scored).

        Returns:
            One result dict per item, in order (refused items with their error).

        Raises:
            HttpError: 504 past ``limits.timeout_s``.
        """
        items = apply_pixel_budget(items, self.limits.max_request_pixels)
        todo = [it for it in items if it.error is None]
        try:
            scored = await asyncio.wait_for(self._detect(todo), self.limits.timeout_s) if todo else []
        except asyncio.TimeoutError:
            raise HttpError(504, "timeout", f"detection did not finish within {self.limits.timeout_s:g} s") from None
        it = iter(scored)
        scale = self.meta.get("score_scale")
        results = [error_result(item, scale) if item.error is not None else next(it) for item in items]
        self.metrics.results(results)
        for r in results:
            if r.get("error"):
                self.metrics.error(r["error"]["code"])
        return results
