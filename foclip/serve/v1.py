"""The v1 protocol: ``POST /v1/detect`` (multipart or raw image bodies in, JSON out) and ``GET /v1/info``.

Turns a request into the service's items and the service's results into the v1 response; every
bound is :class:`foclip.serve.core.DetectService`'s.

Status codes: 200 (at least one image was scored; bad ones carry their own ``error``), 422 (every
image in the request was unusable), 400 (no image in the request, or a malformed multipart body),
401 (API key), 408 (the body did not arrive within ``body_timeout_s``), 413 (body or image count too
large), 415 (media type), 429 + Retry-After (too many requests in flight from one client address),
503 + Retry-After (the service is draining for shutdown, or detection replicas are unavailable),
504 (per-request deadline). 503 + Retry-After on overload also comes from Ray Serve's bounded queue
(``max_queued_requests``) before the request reaches a replica. A whole-request failure's body is
``{"error": {"code": ..., "message": ...}}``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from typing import Any

from python_multipart.multipart import parse_options_header
from starlette.datastructures import Headers, UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser

from foclip.serve.config import Limits
from foclip.serve.core import DetectService, HttpError, Item

ROUTE = "/v1/detect"  # the metrics label
RAW_IMAGE_TYPES = frozenset({
    "image/jpeg", "image/jpg", "image/png", "image/webp", "image/gif", "image/bmp", "image/tiff",
    "application/octet-stream",
})
MULTIPART = "multipart/form-data"

Reply = tuple[int, dict[str, Any], dict[str, str]]


def error_body(exc: HttpError) -> dict[str, Any]:
    """The v1 body of a whole-request failure: ``{"error": {"code": ..., "message": ...}}``."""
    return {"error": {"code": exc.code, "message": exc.message}}


async def detect(service: DetectService, headers: Mapping[str, str], stream: AsyncIterator[bytes],
                 query: Mapping[str, str], client: str | None = None) -> Reply:
    """Serve ``POST /v1/detect``.

    Args:
        service: the bounds and the detection path.
        headers: request headers with lower-case keys.
        stream: the body's chunks (read within the size and time limits).
        query: query parameters (``id`` names a raw-body image).
        client: the client's address (for the per-client bound), or None when unknown.

    Returns:
        (status, JSON body, extra headers).
    """
    try:
        async with service.admit(ROUTE, headers, client) as admission:
            check_media_type(headers.get("content-type"))
            body = await service.read_body(headers, stream)
            items = await parse_items(headers, body, service.limits, raw_id=query.get("id", "image"))
            admission.status, payload = shape_response(await service.detect(items), service.meta)
            return admission.status, payload, {}
    except HttpError as exc:
        return exc.status, error_body(exc), exc.headers


def info(service: DetectService, headers: Mapping[str, str]) -> Reply:
    """Serve ``GET /v1/info`` (behind the API key when one is set)."""
    try:
        service.check_key(headers)
    except HttpError as exc:
        service.metrics.error(exc.code)
        return exc.status, error_body(exc), exc.headers
    return 200, service.info(), {}


def media_type(content_type: str | None) -> str:
    """The bare, lower-case media type of a Content-Type header ('' when absent)."""
    return (content_type or "").split(";", 1)[0].strip().lower()


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
    _, params = parse_options_header(content_type)
    boundary = params.get(b"boundary")
    if not boundary:
        raise HttpError(400, "bad_multipart", "the multipart Content-Type has no boundary parameter")
    if b"--" + boundary + b"--" not in body:
        raise HttpError(400, "bad_multipart", "the multipart body has no closing boundary "
                        "(cut in transit?); send the whole body")


async def _parse_multipart(headers: Mapping[str, str], body: bytes, limits: Limits) -> list[Item]:
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


