"""The HTTP app: Starlette requests to the protocol modules, their replies back to responses.

:func:`create_app` is the service without Ray (tests, debugging); the Ray Serve ingress
(``deployment.py``) routes its own FastAPI app through the same ``respond_*`` adapters. A request's
walk: a route here, then its protocol module (:mod:`foclip.serve.v1` or :mod:`foclip.serve.v2`),
which calls the service's steps (:mod:`foclip.serve.core`) in order; nothing calls back up.
"""

# No `from __future__ import annotations`: FastAPI reads the route annotations of create_app at runtime.


from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.responses import Response

from foclip.serve import v1
from foclip.serve.core import DetectService
from foclip.serve.v2 import V2Front

# Every method reaches the v2 routes, so that a 405 comes from them, in the protocol's error body.
V2_METHODS = ["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"]

def lower_headers(request: Request) -> dict[str, str]:
    """The request's headers with lower-case names (what the protocol modules read)."""
    return {k.lower(): v for k, v in request.headers.items()}


def client_address(request: Request) -> str | None:
    """The client's address, or None when unknown."""
    return request.client.host if request.client else None


async def respond_detect(service: DetectService, request: Request) -> JSONResponse:
    """``POST /v1/detect`` (:func:`foclip.serve.v1.detect`) as a JSONResponse."""
    status, payload, headers = await v1.detect(service, lower_headers(request), request.stream(),
                                               dict(request.query_params), client_address(request))
    return JSONResponse(payload, status_code=status, headers=headers)


def respond_info(service: DetectService, request: Request) -> JSONResponse:
    """``GET /v1/info`` (:func:`foclip.serve.v1.info`) as a JSONResponse."""
    status, payload, headers = v1.info(service, lower_headers(request))
    return JSONResponse(payload, status_code=status, headers=headers)


async def respond_v2(front: V2Front, request: Request, path: str) -> Response:
    """A request under ``/v2`` (:meth:`foclip.serve.v2.V2Front.dispatch`) as a Response."""
    status, body, headers = await front.dispatch(request.method, path, lower_headers(request), request.stream(),
                                                 client_address(request))
    media = headers.pop("content-type", None)
    return Response(body, status_code=status, headers=headers, media_type=media)


def create_app(service: DetectService, v2: V2Front | None = None) -> FastAPI:
    """A FastAPI app serving ``service`` without Ray (tests, debugging).

    Args:
        service: the bounds and the detection path.
        v2: the Open Inference Protocol routes around ``service``, or None for v1 only.

    Returns:
        The application with ``/v1/detect``, ``/v1/info``, ``/healthz`` (and ``/v2/...``).
    """
    api = FastAPI(title="foclip detection service")

    if v2 is not None:
        @api.api_route("/v2", methods=V2_METHODS)
        @api.api_route("/v2/{path:path}", methods=V2_METHODS)
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


__all__ = ["V2_METHODS", "create_app", "respond_detect", "respond_info", "respond_v2"]
