"""The pixel budget, the body deadline and per-client bound, the drain, and the minor HTTP items, without Ray.

The service is :class:`foclip.serve.core.DetectService` around a recording detect function, driven
directly (async) or through Starlette's test client.
"""

from __future__ import annotations

import asyncio
import hashlib

from fastapi.testclient import TestClient

from foclip.serve import v1
from foclip.serve.app import create_app
from foclip.serve.config import Limits
from foclip.serve.core import DetectService


def make(limits: Limits | None = None, key: str | None = None, delay_s: float = 0.0):
    seen: list[list[str]] = []

    async def detect(items):
        seen.append([it.id for it in items])
        if delay_s:
            await asyncio.sleep(delay_s)
        return [{"id": it.id, "score_color": 1.0, "error": None} for it in items]

    key_sha = hashlib.sha256(key.encode("utf-8")).hexdigest() if key else None
    svc = DetectService(detect, dict, {"score_scale": 100.0}, limits or Limits(), key_sha)
    return svc, seen


async def chunks(*parts: bytes, stall_s: float = 0.0):
    for p in parts:
        yield p
    if stall_s:
        await asyncio.sleep(stall_s)  # a client that sent part of its body and stopped


JPEG = {"content-type": "image/jpeg"}


def test_stalled_upload_gets_408_and_frees_its_slot(photo_jpeg):
    svc, seen = make(Limits(body_timeout_s=0.2))

    async def run():
        stalled = await v1.detect(svc, JPEG, chunks(photo_jpeg[:1024], stall_s=30), {}, "10.0.0.1")
        return stalled, svc.in_flight, await v1.detect(svc, JPEG, chunks(photo_jpeg), {}, "10.0.0.1")

    (status, body, _headers), in_flight, (ok_status, _, _) = asyncio.run(run())
    assert status == 408 and body["error"]["code"] == "body_timeout"
    assert in_flight == 0 and ok_status == 200 and seen == [["image"]]


def test_one_client_cannot_take_every_slot(photo_jpeg):
    svc, _ = make(Limits(max_per_client=2, body_timeout_s=5))

    async def run():
        stalled = [asyncio.create_task(v1.detect(svc, JPEG, chunks(b"x", stall_s=1.0), {}, "10.0.0.9"))
                   for _ in range(2)]
        await asyncio.sleep(0.1)
        third = await v1.detect(svc, JPEG, chunks(photo_jpeg), {}, "10.0.0.9")
        other = await v1.detect(svc, JPEG, chunks(photo_jpeg), {}, "10.0.0.10")
        await asyncio.gather(*stalled)
        after = await v1.detect(svc, JPEG, chunks(photo_jpeg), {}, "10.0.0.9")
        return third, other, after

    third, other, after = asyncio.run(run())
    assert third[0] == 429 and third[2]["Retry-After"] == "1"
    assert other[0] == 200 and after[0] == 200


def test_draining_service_answers_503_with_retry_after_and_finishes_in_flight(photo_jpeg):
    svc, _ = make(delay_s=0.3)

    async def run():
        in_flight = asyncio.create_task(v1.detect(svc, JPEG, chunks(photo_jpeg), {}, "a"))
        await asyncio.sleep(0.1)
        svc.draining = True
        new = await v1.detect(svc, JPEG, chunks(photo_jpeg), {}, "b")
        return await in_flight, new

    (old_status, _, _), (new_status, body, headers) = asyncio.run(run())
    assert old_status == 200
    assert new_status == 503 and body["error"]["code"] == "draining" and headers["Retry-After"] == "1"


def test_request_pixel_budget_refuses_images_past_it_without_decoding(bomb, photo_jpeg):
    svc, seen = make(Limits(max_request_pixels=100_000_000))
    client = TestClient(create_app(svc))
    files = [("f", (f"b{i}.jpg", bomb, "image/jpeg")) for i in range(3)] + [("f", ("a.jpg", photo_jpeg, "image/jpeg"))]
    results = client.post("/v1/detect", files=files).json()["results"]
    codes = [r["error"]["code"] if r["error"] else "ok" for r in results]
    assert codes == ["ok", "pixel_budget", "pixel_budget", "ok"]  # 63 Mpx fits once in 100 Mpx
    assert seen == [["b0.jpg", "a.jpg"]]


def test_minor_non_ascii_api_key_matches_when_sent_as_utf8_or_latin1(photo_jpeg):
    # Starlette hands header values over decoded as latin-1, whatever bytes the client sent.
    def as_received(raw: bytes) -> dict[str, str]:
        return {**JPEG, "x-api-key": raw.decode("latin-1")}

    async def status(svc, raw: bytes) -> int:
        return (await v1.detect(svc, as_received(raw), chunks(photo_jpeg), {}, "c"))[0]

    key = "clé-секрет"
    svc, _ = make(key=key)
    assert asyncio.run(status(svc, key.encode("utf-8"))) == 200
    assert asyncio.run(status(svc, "cle-секрет".encode())) == 401
    latin = "clé-key"
    svc2, _ = make(key=latin)
    assert asyncio.run(status(svc2, latin.encode("latin-1"))) == 200
    assert asyncio.run(status(svc2, latin.encode("utf-8"))) == 200


def test_minor_multipart_without_closing_boundary_is_bad_multipart(photo_jpeg):
    svc, seen = make()
    client = TestClient(create_app(svc))
    body = (b"--xyz\r\nContent-Disposition: form-data; name=\"f\"; filename=\"a.jpg\"\r\n"
            b"Content-Type: image/jpeg\r\n\r\n" + photo_jpeg + b"\r\n")  # no "--xyz--"
    r = client.post("/v1/detect", content=body, headers={"content-type": "multipart/form-data; boundary=xyz"})
    assert r.status_code == 400 and r.json()["error"]["code"] == "bad_multipart"
    assert "closing boundary" in r.json()["error"]["message"] and seen == []
    r = client.post("/v1/detect", content=body + b"--xyz--\r\n",
                    headers={"content-type": "multipart/form-data; boundary=xyz"})
    assert r.status_code == 200
