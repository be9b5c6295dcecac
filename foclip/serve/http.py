"""Request handling of the detection service, independent of Ray.

Everything between the HTTP request and the detector lives here as plain functions and one small
class, :class:`DetectService`, so that it is testable with Starlette's test client and no Ray: the
API key check, body-size and media-type limits, multipart / raw-body parsing, the per-request
deadline, result shaping and the status code. The Ray Serve deployment (``deployment.py``) only
wires a Detector, Serve's batching and Ray's metrics into it.

Status codes: 200 (at least one image was scored; bad ones carry their own ``error``), 422 (every
image in the request was unusable), 400 (no image in the request, or a malformed multipart body),
401 (API key), 408 (the body did not arrive within ``body_timeout_s``), 413 (body or image count too
large), 415 (media type), 429 + Retry-After (too many requests in flight from one client address),
503 + Retry-After (the service is draining for shutdown, or detection replicas are unavailable),
504 (per-request deadline). 503 + Retry-After on overload also comes from Ray Serve's bounded queue
(``max_queued_requests``) before the request reaches a replica.
"""

# No `from __future__ import annotations`: FastAPI reads the route annotations of create_app at runtime.

import asyncio
import hashlib
import hmac
import io
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from foclip.serve.config import Limits

API_KEY_HEADER = "x-api-key"
RAW_IMAGE_TYPES = frozenset({
    "image/jpeg", "image/jpg", "image/png", "image/webp", "image/gif", "image/bmp", "image/tiff",
    "application/octet-stream",
})
MULTIPART = "multipart/form-data"


class HttpError(Exception):
    """A whole-request failure with its HTTP status and a stable error code."""

    def __init__(self, status: int, code: str, message: str, headers: Mapping[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = dict(headers or {})

    def payload(self) -> dict[str, Any]:
        """The JSON body sent for this error."""
        return {"error": {"code": self.code, "message": self.message}}


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


def media_type(content_type: str | None) -> str:
    """The bare, lower-case media type of a Content-Type header ('' when absent)."""
    return (content_type or "").split(";", 1)[0].strip().lower()


def check_api_key(expected_sha256: str | None, provided: str | None) -> None:
    """Accept the request when no key is configured or the provided key matches, in constant time.

    Args:
        expected_sha256: hex sha256 of the configured key, or None for no key.
        provided: the ``X-API-Key`` header value (or a ``Bearer`` token), or None.

    Raises:
        HttpError: 401 when a key is configured and the provided one is missing or wrong.
    """
    if expected_sha256 is None:
        return
    text = provided or ""
    # HTTP header values reach us decoded as latin-1: re-encoding them that way gives the bytes the
    # client sent, so a key sent as UTF-8 (the usual case) matches; a key sent as latin-1 matches too.
    try:
        raw = text.encode("latin-1")
    except UnicodeEncodeError:  # a str that never went through HTTP (tests, direct calls)
        raw = text.encode("utf-8")
    got = [hashlib.sha256(raw).hexdigest(), hashlib.sha256(text.encode("utf-8")).hexdigest()]
    # Compare digests (fixed length) so that neither the key's length nor its prefix leaks.
    matches = [hmac.compare_digest(g, expected_sha256) for g in got]  # both compared, always
    if provided is None or not any(matches):
        raise HttpError(401, "unauthorized", "missing or wrong API key (send it in the X-API-Key header)",
                        {"WWW-Authenticate": "ApiKey"})


def provided_api_key(headers: Mapping[str, str]) -> str | None:
    """The API key from ``X-API-Key`` or ``Authorization: Bearer <key>``, or None."""
    if API_KEY_HEADER in headers:
        return headers[API_KEY_HEADER]
    auth = headers.get("authorization", "")
    if auth.lower().startswith("bearer "):
        return auth[7:].strip()
    return None


def check_declared_length(headers: Mapping[str, str], limits: Limits) -> None:
    """Refuse early when Content-Length already says the body is too large.

    Raises:
        HttpError: 413 when the declared length exceeds ``limits.max_body_bytes``; 400 when it is
            not a number.
    """
    declared = headers.get("content-length")
    if declared is None:
        return
    try:
        n = int(declared)
    except ValueError:
        raise HttpError(400, "bad_request", f"Content-Length {declared!r} is not a number") from None
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


def check_media_type(content_type: str | None) -> str:
    """The request's media type when the service accepts it.

    Raises:
        HttpError: 415 for anything but multipart/form-data or a raw image type.
    """
    mt = media_type(content_type)
    if mt == MULTIPART or mt in RAW_IMAGE_TYPES:
        return mt
    accepted = ", ".join(sorted(RAW_IMAGE_TYPES | {MULTIPART}))
    raise HttpError(415, "unsupported_media_type", f"Content-Type {mt or '(none)'!r} is not accepted; send one of {accepted}")


async def parse_items(headers: Mapping[str, str], body: bytes, limits: Limits, raw_id: str = "image") -> list[Item]:
    """Split a request body into images.

    Multipart: every file part is one image, in order, its id the part's file name (or
    ``<field>[i]``); a part with a non-image content type becomes an item with an
    ``unsupported_media_type`` error rather than failing the request. Raw body: one image whose id is
    ``raw_id``.

    Args:
        headers: the request headers (lower-case keys).
        body: the request body, already within the size limit.
        limits: the service limits.
        raw_id: id of a raw-body image.

    Returns:
        The items, in request order.

    Raises:
        HttpError: 415 on a media type the service does not take, 400 when there is no image or the
            multipart body is malformed, 413 when there are more than ``limits.max_images``.
    """
    mt = check_media_type(headers.get("content-type"))
    if mt != MULTIPART:
        if not body:
            raise HttpError(400, "no_images", "the request body is empty")
        return [Item(raw_id, body)]
    items = await _parse_multipart(headers, body, limits)
    if not items:
        raise HttpError(400, "no_images", "the multipart body has no file parts")
    return items


def _check_closing_boundary(content_type: str, body: bytes) -> None:
    # Starlette's parser accepts a body cut before its closing delimiter; such a body was cut in
    # transit (or built wrongly), so its last part may be incomplete: refuse it as malformed.
    from python_multipart.multipart import parse_options_header

    _, params = parse_options_header(content_type)
    boundary = params.get(b"boundary")
    if not boundary:
        raise HttpError(400, "bad_multipart", "the multipart Content-Type has no boundary parameter")
    if b"--" + boundary + b"--" not in body:
        raise HttpError(400, "bad_multipart", "the multipart body has no closing boundary "
                        "(cut in transit?); send the whole body")


async def _parse_multipart(headers: Mapping[str, str], body: bytes, limits: Limits) -> list[Item]:
    from starlette.datastructures import Headers, UploadFile
    from starlette.formparsers import MultiPartException, MultiPartParser

    _check_closing_boundary(headers.get("content-type", ""), body)

    async def once() -> AsyncIterator[bytes]:
        yield body

    parser = MultiPartParser(
        Headers(headers=dict(headers)), once(), max_files=limits.max_images + 1, max_fields=1000,
        max_part_size=limits.max_body_bytes,
    )
    try:
        form = await parser.parse()
    except MultiPartException as exc:
        if "Too many files" in str(exc):
            raise HttpError(413, "too_many_images", f"more than {limits.max_images} images in one request") from None
        raise HttpError(400, "bad_multipart", f"the multipart body cannot be parsed: {exc}") from None
    items: list[Item] = []
    try:
        counts: dict[str, int] = {}
        for field, value in form.multi_items():
            if not isinstance(value, UploadFile):
                continue  # plain form fields carry no image
            i = counts[field] = counts.get(field, -1) + 1
            item_id = value.filename or f"{field}[{i}]"
            part_type = media_type(value.content_type)
            data = await value.read()
            if part_type and part_type not in RAW_IMAGE_TYPES:
                items.append(Item(item_id, b"", {"code": "unsupported_media_type",
                                                 "message": f"part content type {part_type!r} is not an image type"}))
            else:
                items.append(Item(item_id, data))
    finally:
        await form.close()
    if len(items) > limits.max_images:
        raise HttpError(413, "too_many_images", f"{len(items)} images in one request; the limit is {limits.max_images}")
    return items


def declared_pixels(data: bytes) -> int | None:
    """Width x height from an image's header (PIL reads only the header), or None if unreadable."""
    from PIL import Image

    from foclip.runtime.decode import readable_formats

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


def shape_response(results: list[dict[str, Any]], meta: Mapping[str, Any]) -> tuple[int, dict[str, Any]]:
    """The status and JSON body of a detection response.

    Args:
        results: per-item result dicts, in request order.
        meta: fields stated with every response (score_scale, model, precision, ...).

    Returns:
        (200 when at least one image was scored, else 422; the body).
    """
    errors = sum(1 for r in results if r.get("error"))
    status = 422 if results and errors == len(results) else 200
    body = {**meta, "count": len(results), "errors": errors, "results": results}
    return status, body


DetectFn = Callable[[list[Item]], Awaitable[list[dict[str, Any]]]]


class Route(Protocol):
    """The wire format of one detection route: how its requests are read and its responses written.

    :meth:`DetectService.handle` applies every bound and runs detection; a route only checks its
    headers, turns a body into items and turns results into its response.
    """

    name: str  # the metrics label

    def check_headers(self, headers: Mapping[str, str]) -> None:
        """Refuse a request on its headers alone, before the body is read (raises HttpError)."""

    async def parse(self, headers: Mapping[str, str], body: bytes, limits: Limits) -> list[Item]:
        """The request's images, in order (raises HttpError for a malformed request)."""

    def respond(self, results: list[dict[str, Any]], meta: Mapping[str, Any]) -> tuple[int, Any, dict[str, str]]:
        """(status, body, extra headers) for the per-item results, in request order."""

    def error_body(self, exc: HttpError) -> Any:
        """The body of a whole-request failure."""


class DetectRoute:
    """``POST /v1/detect``: multipart or raw image bodies in, the JSON of :func:`shape_response` out.

    Args:
        raw_id: id of a raw-body image (the ``id`` query parameter).
    """

    name = "/v1/detect"

    def __init__(self, raw_id: str = "image") -> None:
        self.raw_id = raw_id

    def check_headers(self, headers: Mapping[str, str]) -> None:
        """415 on a media type the route does not take."""
        check_media_type(headers.get("content-type"))

    async def parse(self, headers: Mapping[str, str], body: bytes, limits: Limits) -> list[Item]:
        """See :func:`parse_items`."""
        return await parse_items(headers, body, limits, raw_id=self.raw_id)

    def respond(self, results: list[dict[str, Any]], meta: Mapping[str, Any]) -> tuple[int, Any, dict[str, str]]:
        """See :func:`shape_response`."""
        status, body = shape_response(results, meta)
        return status, body, {}

    def error_body(self, exc: HttpError) -> Any:
        """``{"error": {"code": ..., "message": ...}}``."""
        return exc.payload()


class DetectService:
    """The HTTP behaviour of the service around an async ``detect`` function.

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
        self._info = info
        self.meta = dict(meta)
        self.limits = limits
        self.api_key_sha256 = api_key_sha256
        self.metrics = metrics or NullMetrics()
        self.retry_after_s = 1.0
        self.draining = False  # set on shutdown: new requests get 503 + Retry-After, in-flight ones finish
        self.in_flight = 0
        self._per_client: Counter[str] = Counter()

    async def handle_detect(self, headers: Mapping[str, str], body: AsyncIterator[bytes],
                            query: Mapping[str, str], client: str | None = None,
                            ) -> tuple[int, dict[str, Any], dict[str, str]]:
        """Serve ``POST /v1/detect``.

        Args:
            headers: request headers with lower-case keys.
            body: the body's chunks (read here, within the size and time limits).
            query: query parameters (``id`` names a raw-body image).
            client: the client's address (for the per-client bound), or None when unknown.

        Returns:
            (status, JSON body, extra headers).
        """
        return await self.handle(DetectRoute(query.get("id", "image")), headers, body, client)

    async def handle(self, route: "Route", headers: Mapping[str, str], body: AsyncIterator[bytes],
                     client: str | None = None) -> tuple[int, Any, dict[str, str]]:
        """Serve one detection request of any wire format: every bound, then the shared detection path.

        The order is the service's contract whatever the route: drain, API key, per-client bound,
        the route's header checks, declared length, body (size and time bounded), the route's
        parsing, the pixel budget, detection (Serve's batcher, within the deadline), the route's
        response. Only parsing and shaping differ between ``/v1/detect`` and the v2 protocol.

        Args:
            route: how this route reads its requests and writes its responses.
            headers: request headers with lower-case keys.
            body: the body's chunks.
            client: the client's address (for the per-client bound), or None when unknown.

        Returns:
            (status, body as ``route`` shaped it, extra headers).
        """
        t0 = time.perf_counter()
        counted = False
        self.in_flight += 1
        try:
            if self.draining:
                raise HttpError(503, "draining", "the service is shutting down; retry on another instance or later",
                                {"Retry-After": f"{self.retry_after_s:g}"})
            check_api_key(self.api_key_sha256, provided_api_key(headers))
            if client is not None and self.limits.max_per_client > 0:
                if self._per_client[client] >= self.limits.max_per_client:
                    raise HttpError(429, "too_many_requests", f"more than {self.limits.max_per_client} requests in "
                                    "flight from this address", {"Retry-After": f"{self.retry_after_s:g}"})
                self._per_client[client] += 1
                counted = True
            route.check_headers(headers)
            check_declared_length(headers, self.limits)
            data = await read_body(body, self.limits)
            items = await route.parse(headers, data, self.limits)
            items = apply_pixel_budget(items, self.limits.max_request_pixels)
            results = await self._run(items)
            status, payload, extra = route.respond(results, self.meta)
            self.metrics.results(results)
            for r in results:
                if r.get("error"):
                    self.metrics.error(r["error"]["code"])
        except HttpError as exc:
            status, payload, extra = exc.status, route.error_body(exc), exc.headers
            self.metrics.error(exc.code)
        finally:
            self.in_flight -= 1
            if counted:
                self._per_client[client] -= 1
                if self._per_client[client] <= 0:
                    del self._per_client[client]
        self.metrics.request(route.name, status, time.perf_counter() - t0)
        return status, payload, extra

    async def _run(self, items: list[Item]) -> list[dict[str, Any]]:
        todo = [it for it in items if it.error is None]
        try:
            scored = await asyncio.wait_for(self._detect(todo), self.limits.timeout_s) if todo else []
        except asyncio.TimeoutError:
            raise HttpError(504, "timeout", f"detection did not finish within {self.limits.timeout_s:g} s") from None
        it = iter(scored)
        scale = self.meta.get("score_scale")
        return [error_result(item, scale) if item.error is not None else next(it) for item in items]

    def handle_info(self, headers: Mapping[str, str]) -> tuple[int, dict[str, Any], dict[str, str]]:
        """Serve ``GET /v1/info`` (behind the API key when one is set)."""
        try:
            check_api_key(self.api_key_sha256, provided_api_key(headers))
        except HttpError as exc:
            self.metrics.error(exc.code)
            return exc.status, exc.payload(), exc.headers
        return 200, self._info(), {}


def create_app(service: DetectService, v2: Any = None):
    """A FastAPI app serving ``service`` without Ray (tests, debugging).

    Args:
        service: the request handling.
        v2: a :class:`foclip.serve.v2.V2Front` around ``service`` to serve the v2 protocol, or None.

    Returns:
        The ``fastapi.FastAPI`` application with ``/v1/detect``, ``/v1/info``, ``/healthz`` (and ``/v2/...``).
    """
    from fastapi import FastAPI, Request
    from fastapi.responses import JSONResponse

    api = FastAPI(title="foclip detection service")

    if v2 is not None:  # the Open Inference Protocol routes (foclip/serve/v2.py)
        from starlette.responses import Response

        from foclip.serve.v2 import respond_v2

        @api.api_route("/v2", methods=["GET", "POST"])
        @api.api_route("/v2/{path:path}", methods=["GET", "POST"])
        async def v2_routes(request: Request, path: str = "") -> Response:
            return await respond_v2(v2, request, "/" + path if path else "")

    @api.post("/v1/detect")
    async def detect(request: Request) -> JSONResponse:
        return await respond_detect(service, request)

    @api.get("/v1/info")
    async def info(request: Request) -> JSONResponse:
        return respond_info(service, request)

    @api.get("/healthz")
    async def healthz() -> JSONResponse:
        return JSONResponse({"status": "ok"})

    return api


async def respond_detect(service: DetectService, request) -> Any:
    """Run ``service.handle_detect`` on a Starlette request and wrap the result in a JSONResponse."""
    from fastapi.responses import JSONResponse

    client = request.client.host if request.client else None
    status, payload, headers = await service.handle_detect(
        {k.lower(): v for k, v in request.headers.items()}, request.stream(), dict(request.query_params), client)
    return JSONResponse(payload, status_code=status, headers=headers)


def respond_info(service: DetectService, request) -> Any:
    """Run ``service.handle_info`` on a Starlette request and wrap the result in a JSONResponse."""
    from fastapi.responses import JSONResponse

    status, payload, headers = service.handle_info({k.lower(): v for k, v in request.headers.items()})
    return JSONResponse(payload, status_code=status, headers=headers)


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
