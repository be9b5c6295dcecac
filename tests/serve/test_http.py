"""Request handling without Ray: limits, parsing, status codes and result shaping over HTTP.

The app here is :func:`foclip.serve.app.create_app` around a real Detector on the tiny bundle, so
everything but Ray Serve's batching and process model is the production path.
"""

from __future__ import annotations

import asyncio
import hashlib

import pytest
from fastapi.testclient import TestClient

from foclip.serve.app import create_app
from foclip.serve.config import Limits, ServeConfig, api_key_digest_from_env
from foclip.serve.core import DetectService, HttpError, check_api_key
from foclip.serve.v1 import shape_response

KEY = "s3cret-key"


class Recorder:
    """Collects what the service reports to its metrics."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, int]] = []
        self.errors: list[str] = []
        self.scored: int = 0

    def request(self, route: str, status: int, latency_s: float) -> None:
        assert latency_s >= 0
        self.requests.append((route, status))

    def error(self, code: str) -> None:
        self.errors.append(code)

    def results(self, results) -> None:
        self.scored += sum(1 for r in results if not r["error"])


@pytest.fixture(scope="module")
def detector(tiny_bundle):
    from foclip.runtime import Detector

    det = Detector.from_bundle(tiny_bundle, backend="ort-cpu", precision="fp32", batch_size=8, threads=1)
    yield det
    det.close()


def make_service(detector, limits=None, key=None, delay_s=0.0):
    limits = limits or Limits(max_body_bytes=300_000, max_images=5)
    async def detect(items):
        if delay_s:
            await asyncio.sleep(delay_s)
        results = await asyncio.to_thread(detector.detect, [it.data for it in items], ids=[it.id for it in items])
        return [r.to_dict() for r in results]

    rec = Recorder()
    key_sha = hashlib.sha256(key.encode()).hexdigest() if key else None
    svc = DetectService(detect, lambda: {"detector": detector.info()}, {"score_scale": 100.0}, limits, key_sha, rec)
    return TestClient(create_app(svc)), rec


@pytest.fixture(scope="module")
def client(detector):
    return make_service(detector)


def test_good_raw_image_is_scored_like_the_detector(client, detector, uploads):
    http, _ = client
    r = http.post("/v1/detect?id=a1", content=uploads["astronaut.jpg"], headers={"content-type": "image/jpeg"})
    assert r.status_code == 200
    body = r.json()
    assert body["score_scale"] == 100.0 and body["count"] == 1 and body["errors"] == 0
    (item,) = body["results"]
    direct = detector.detect([uploads["astronaut.jpg"]], ids=["a1"])[0].to_dict()
    assert item == pytest.approx(direct)
    assert set(item) >= {"id", "score_color", "score_gray", "drop", "tampered", "error"}


def test_multipart_batch_keeps_order_and_ids(client, uploads, good_names):
    http, _ = client
    files = [("files", (n, uploads[n], "image/png" if n.endswith("png") else "image/jpeg")) for n in good_names]
    r = http.post("/v1/detect", files=files)
    assert r.status_code == 200
    results = r.json()["results"]
    assert [x["id"] for x in results] == list(good_names)
    assert all(x["error"] is None and x["score_color"] is not None for x in results)


def test_each_bad_kind_gets_its_code_and_spares_the_good_one(client, uploads, bad_codes):
    http, rec = client
    names = ["astronaut.jpg", *bad_codes]
    r = http.post("/v1/detect", files=[("files", (n, uploads[n], "image/jpeg")) for n in names])
    assert r.status_code == 200  # one image was good
    results = {x["id"]: x for x in r.json()["results"]}
    assert results["astronaut.jpg"]["error"] is None
    for name, code in bad_codes.items():
        assert results[name]["error"]["code"] == code, name
        assert results[name]["score_color"] is None
    assert set(bad_codes.values()) <= set(rec.errors)


@pytest.mark.parametrize("name", ["truncated.jpg", "text.jpg", "bomb.png"])
def test_a_request_of_only_bad_images_is_422(client, uploads, bad_codes, name):
    http, _ = client
    r = http.post("/v1/detect", content=uploads[name], headers={"content-type": "image/jpeg"})
    assert r.status_code == 422
    assert r.json()["results"][0]["error"]["code"] == bad_codes[name]


def test_empty_raw_body_is_400(client):
    http, _ = client
    r = http.post("/v1/detect", content=b"", headers={"content-type": "image/jpeg"})
    assert r.status_code == 400 and r.json()["error"]["code"] == "no_images"


def test_multipart_part_with_a_text_type_is_an_item_error(client, uploads):
    http, _ = client
    r = http.post("/v1/detect", files=[("f", ("a.jpg", uploads["astronaut.jpg"], "image/jpeg")),
                                       ("f", ("notes.txt", b"hello", "text/plain"))])
    assert r.status_code == 200
    assert r.json()["results"][1]["error"]["code"] == "unsupported_media_type"


def test_unsupported_media_type_is_415(client):
    http, rec = client
    for ctype in ("text/plain", "application/json", None):
        headers = {"content-type": ctype} if ctype else {}
        r = http.post("/v1/detect", content=b"{}", headers=headers)
        assert r.status_code == 415, ctype
        assert r.json()["error"]["code"] == "unsupported_media_type"
    assert ("/v1/detect", 415) in rec.requests


def test_body_over_the_limit_is_413_declared_or_chunked(client):
    http, _ = client
    big = b"\xff" * 400_000
    r = http.post("/v1/detect", content=big, headers={"content-type": "image/jpeg"})
    assert r.status_code == 413 and r.json()["error"]["code"] == "body_too_large"

    def chunks():  # no Content-Length: the limit must hold while streaming
        for _ in range(10):
            yield b"\xff" * 50_000

    r = http.post("/v1/detect", content=chunks(), headers={"content-type": "image/jpeg"})
    assert r.status_code == 413


def test_too_many_images_is_413(client, uploads):
    http, _ = client
    files = [("f", (f"{i}.jpg", uploads["astronaut.jpg"], "image/jpeg")) for i in range(6)]
    r = http.post("/v1/detect", files=files)
    assert r.status_code == 413 and r.json()["error"]["code"] == "too_many_images"


def test_multipart_without_files_is_400(client):
    http, _ = client
    r = http.post("/v1/detect", data={"note": "no files here"})  # urlencoded: not a media type we take
    assert r.status_code == 415
    body = b'--x\r\nContent-Disposition: form-data; name="note"\r\n\r\nno files here\r\n--x--\r\n'
    r = http.post("/v1/detect", content=body, headers={"content-type": "multipart/form-data; boundary=x"})
    assert r.status_code == 400 and r.json()["error"]["code"] == "no_images"  # multipart, but no file part
    r = http.post("/v1/detect", content=b"--x--\r\n", headers={"content-type": "multipart/form-data; boundary=x"})
    assert r.status_code == 400


def test_api_key_is_required_and_checked(detector, uploads):
    http, rec = make_service(detector, key=KEY)
    body, jpeg = uploads["astronaut.jpg"], {"content-type": "image/jpeg"}
    assert http.post("/v1/detect", content=body, headers=jpeg).status_code == 401
    assert http.post("/v1/detect", content=body, headers={**jpeg, "x-api-key": "wrong"}).status_code == 401
    assert http.get("/v1/info").status_code == 401
    assert http.post("/v1/detect", content=body, headers={**jpeg, "x-api-key": KEY}).status_code == 200
    assert http.post("/v1/detect", content=body, headers={**jpeg, "authorization": f"Bearer {KEY}"}).status_code == 200
    assert http.get("/v1/info", headers={"x-api-key": KEY}).status_code == 200
    assert rec.errors.count("unauthorized") == 3


def test_deadline_gives_504(detector, uploads):
    http, _ = make_service(detector, limits=Limits(timeout_s=0.05), delay_s=1.0)
    r = http.post("/v1/detect", content=uploads["astronaut.jpg"], headers={"content-type": "image/jpeg"})
    assert r.status_code == 504 and r.json()["error"]["code"] == "timeout"


def test_info_and_healthz(client):
    http, _ = client
    info = http.get("/v1/info").json()
    assert info["detector"]["model_name"] == "foclip-tiny"
    assert info["detector"]["score_scale"] == 100.0
    assert http.get("/healthz").json() == {"status": "ok"}


def test_shape_response_status_rules():
    ok = {"id": "a", "error": None}
    bad = {"id": "b", "error": {"code": "truncated", "message": "x"}}
    assert shape_response([ok, bad], {"score_scale": 100.0})[0] == 200
    status, body = shape_response([bad, bad], {"score_scale": 100.0})
    assert status == 422 and body["errors"] == 2 and body["score_scale"] == 100.0


def test_check_api_key_constant_time_digest():
    digest = hashlib.sha256(b"k").hexdigest()
    check_api_key(None, None)
    check_api_key(digest, "k")
    for wrong in (None, "", "K", "k "):
        with pytest.raises(HttpError) as exc:
            check_api_key(digest, wrong)
        assert exc.value.status == 401


def test_config_validation_and_key_env(monkeypatch):
    from foclip.errors import InputError

    with pytest.raises(InputError, match="--replicas"):
        ServeConfig(bundle="b", replicas=0).validate()
    assert ServeConfig(bundle="b").resolved_backend == "ort-cpu"
    assert ServeConfig(bundle="b", gpus_per_replica=1).resolved_backend == "ort-cuda"
    assert ServeConfig(bundle="b", max_batch=16).resolved_max_ongoing == 16
    # batching waits longer on CPU (measured, docs/serve.md) than on GPU backends; a given value wins
    assert ServeConfig(bundle="b").resolved_batch_wait_ms == 200.0
    assert ServeConfig(bundle="b", gpus_per_replica=1).resolved_batch_wait_ms == 5.0
    assert ServeConfig(bundle="b", batch_wait_ms=0).resolved_batch_wait_ms == 0
    with pytest.raises(InputError, match="--batch-wait-ms"):
        ServeConfig(bundle="b", batch_wait_ms=-1).validate()
    with pytest.raises(InputError, match="--draft-factor"):
        ServeConfig(bundle="b", draft_factor=-1).validate()
    with pytest.raises(InputError, match="--topology.*split, fused"):
        ServeConfig(bundle="b", topology="merged").validate()
    monkeypatch.delenv("FOCLIP_TEST_KEY", raising=False)
    with pytest.raises(InputError, match="FOCLIP_TEST_KEY"):
        api_key_digest_from_env("FOCLIP_TEST_KEY")
    monkeypatch.setenv("FOCLIP_TEST_KEY", KEY)
    assert api_key_digest_from_env("FOCLIP_TEST_KEY") == hashlib.sha256(KEY.encode()).hexdigest()
