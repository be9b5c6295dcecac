"""The v1 and v2 wire formats, byte for byte: a fixed set of requests against recorded responses.

Each case is one request (good, malformed, over a bound, edge cases); its status, the headers a
client reads and the whole body were recorded from the service as it stood at 9b2574a (before the
protocols were split from the service, issue 35) in ``golden/responses.json``. A refactor of the
serve package must answer every case byte-identically. Detection is a deterministic stand-in (its
scores come from the image bytes), so the file does not depend on ONNX Runtime's arithmetic; the
real detector behind the same routes is covered by test_http.py and test_v2.py.

Record again (only when a wire change is intended, and say so in the commit):
``FOCLIP_RECORD_GOLDEN=1 python -m pytest tests/serve/test_golden_responses.py``.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
import struct
import zlib
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from v2_requests import binary_request

from foclip.serve.app import create_app
from foclip.serve.config import Limits
from foclip.serve.core import DetectService
from foclip.serve.v2 import V2Front

GOLDEN = Path(__file__).parent / "golden" / "responses.json"
KEY = "golden-key"
# The headers a client acts on; the rest (date, server) are the framework's.
HEADERS = ("content-type", "content-length", "retry-after", "www-authenticate", "allow",
           "inference-header-content-length", "connection")
PROBES = ("gray", "hue180")


def png(w: int, h: int, seed: int, rows_of: tuple[int, int] | None = None) -> bytes:
    """A valid RGB PNG built by hand, stored (zlib level 0) so its bytes never depend on a zlib build.

    ``rows_of`` (width, height) writes pixel rows for that size under a header that claims ``w`` x ``h``
    (a decompression bomb's header).
    """

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    rw, rh = rows_of or (w, h)
    rows = b"".join(b"\x00" + bytes((seed * 7 + x * 3 + y) % 256 for x in range(rw * 3)) for y in range(rh))
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(rows, 0))
            + chunk(b"IEND", b""))


A, B, C = png(8, 6, 1), png(5, 9, 2), png(16, 16, 3)
BOMB = png(40, 40, 4, rows_of=(1, 1))  # its header claims 1,600 pixels, past the budget (headers are read, not pixels)
TEXT = b"plain text, not an image\n"
SLOW = b"SLOW" + A  # the stand-in detector sleeps past the deadline on these bytes


def fake_result(item_id: str, data: bytes, probes: tuple[str, ...]) -> dict[str, Any]:
    """A Detector-shaped result whose numbers come from the bytes (deterministic, numerics-free)."""
    if not data.startswith(b"\x89PNG"):
        return {"id": item_id, "score_color": None, "score_gray": None, "drop": None, "tampered": None,
                "error": {"code": "not_an_image", "message": f"{item_id!r} | is not an image"},
                "calibrated": False, "score_scale": 100.0}
    h = hashlib.sha256(data).digest()
    color, gray = 20 + h[0] / 8, 10 + h[1] / 8
    r = {"id": item_id, "score_color": color, "score_gray": gray, "drop": (color - gray) / color,
         "tampered": h[2] > 127, "error": None, "calibrated": False, "score_scale": 100.0}
    if probes != ("gray",):
        r["probe_scores"] = {p: 10 + h[3 + i] / 8 for i, p in enumerate(probes)}
        r["probe_drop"] = max((color - s) / color for s in r["probe_scores"].values())
    return r


def build(key: str | None, probes: tuple[str, ...], ready: bool = True) -> tuple[TestClient, DetectService]:
    async def detect(items):
        if any(it.data.startswith(b"SLOW") for it in items):
            await asyncio.sleep(30)
        return [fake_result(it.id, it.data, probes) for it in items]

    limits = Limits(max_body_bytes=20_000, max_images=3, timeout_s=0.5, max_request_pixels=1_000)
    info = {"probes": list(probes), "score_scale": 100.0, "tau_score": 30.0, "tau_drop": 0.2, "calibrated": False,
            "model_name": "golden", "precision": "fp32", "backend": "ort-cpu", "bundle_hash": "abc",
            "self_check": {"passed": True}}
    svc = DetectService(detect, lambda: {"detector": info}, {"score_scale": 100.0, "model": "golden",
                                                             "precision": "fp32", "backend": "ort-cpu"},
                        limits, hashlib.sha256(key.encode()).hexdigest() if key else None)
    front = V2Front(svc, info, ready=lambda: ready, server_version="0.0-golden")
    return TestClient(create_app(svc, v2=front)), svc


def multipart(parts: list[tuple[str, str | None, str, bytes]], boundary: str = "gOlDeN",
              close: bool = True) -> tuple[bytes, dict[str, str]]:
    """A multipart body built by hand: (field, file name or None, content type, bytes) per part."""
    out = b""
    for field, name, ctype, data in parts:
        disp = f'form-data; name="{field}"' + (f'; filename="{name}"' if name is not None else "")
        out += f"--{boundary}\r\nContent-Disposition: {disp}\r\nContent-Type: {ctype}\r\n\r\n".encode() + data + b"\r\n"
    if close:
        out += f"--{boundary}--\r\n".encode()
    return out, {"content-type": f"multipart/form-data; boundary={boundary}"}


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def infer(data: list[Any] | None = None, shape: list[Any] | None = None, **extra: Any) -> dict[str, Any]:
    tensor: dict[str, Any] = {"name": "IMAGE", "datatype": "BYTES", "shape": shape if shape is not None else [len(data or [])]}
    if data is not None:
        tensor["data"] = data
    return {"inputs": [tensor], **extra}


binary = binary_request


INFER = "/v2/models/foclip/infer"


def cases() -> list[dict[str, Any]]:
    """Every request: name, app (key / probes), method, path, headers, body bytes."""
    out: list[dict[str, Any]] = []

    def add(name, method, path, body=b"", headers=None, app="open", **kw):
        out.append({"name": name, "app": app, "method": method, "path": path, "body": body,
                    "headers": dict(headers or {}), **kw})

    def add_json(name, obj, path=INFER, app="open", headers=None):
        add(name, "POST", path, json.dumps(obj).encode(), {"content-type": "application/json", **(headers or {})}, app)

    # --- v1 ---
    add("v1 raw png", "POST", "/v1/detect", A, {"content-type": "image/png"})
    add("v1 raw with id", "POST", "/v1/detect?id=photo-1", B, {"content-type": "image/jpeg"})
    add("v1 raw octet-stream not an image", "POST", "/v1/detect", TEXT, {"content-type": "application/octet-stream"})
    add("v1 raw content type with params", "POST", "/v1/detect", C, {"content-type": "Image/PNG; charset=x"})
    add("v1 empty body", "POST", "/v1/detect", b"", {"content-type": "image/png"})
    add("v1 no content type", "POST", "/v1/detect", A)
    add("v1 text/plain", "POST", "/v1/detect", A, {"content-type": "text/plain"})
    add("v1 json", "POST", "/v1/detect", b"{}", {"content-type": "application/json"})
    add("v1 body over limit", "POST", "/v1/detect", b"\x89PNG" + b"0" * 20_000, {"content-type": "image/png"})
    body, h = multipart([("file", "a.png", "image/png", A), ("file", "b.png", "image/png", B),
                         ("file", "t.txt", "image/png", TEXT)])
    add("v1 multipart three, one bad", "POST", "/v1/detect", body, h)
    body, h = multipart([("file", None, "image/png", A), ("img", None, "image/png", B), ("img", None, "image/png", C)])
    add("v1 multipart unnamed parts", "POST", "/v1/detect", body, h)
    body, h = multipart([("file", "a.png", "image/png", A), ("file", "doc.pdf", "application/pdf", b"%PDF-1.4")])
    add("v1 multipart non-image part", "POST", "/v1/detect", body, h)
    body, h = multipart([("file", "t1.txt", "image/png", TEXT), ("file", "t2.txt", "image/png", b"\x00")])
    add("v1 multipart all bad is 422", "POST", "/v1/detect", body, h)
    body, h = multipart([("note", None, "text/plain", b"hello")])
    body = body.replace(b"Content-Type: text/plain\r\n", b"")
    add("v1 multipart no file parts", "POST", "/v1/detect", body, h)
    body, h = multipart([("file", f"{i}.png", "image/png", A) for i in range(4)])
    add("v1 multipart too many images", "POST", "/v1/detect", body, h)
    body, _ = multipart([("file", "a.png", "image/png", A)])
    add("v1 multipart no boundary", "POST", "/v1/detect", body, {"content-type": "multipart/form-data"})
    body, h = multipart([("file", "a.png", "image/png", A)], close=False)
    add("v1 multipart no closing boundary", "POST", "/v1/detect", body, h)
    body, h = multipart([("file", "a.png", "image/png", A), ("file", "big.png", "image/png", C),
                         ("file", "bomb.png", "image/png", BOMB)])
    add("v1 pixel budget", "POST", "/v1/detect", body, h)
    add("v1 deadline", "POST", "/v1/detect", SLOW, {"content-type": "image/png"})
    add("v1 key missing", "POST", "/v1/detect", A, {"content-type": "image/png"}, app="key")
    add("v1 key wrong", "POST", "/v1/detect", A, {"content-type": "image/png", "x-api-key": "nope"}, app="key")
    add("v1 key right", "POST", "/v1/detect", A, {"content-type": "image/png", "x-api-key": KEY}, app="key")
    add("v1 key bearer", "POST", "/v1/detect", A, {"content-type": "image/png", "authorization": f"Bearer {KEY}"},
        app="key")
    add("v1 draining", "POST", "/v1/detect", A, {"content-type": "image/png"}, draining=True)
    add("v1 info", "GET", "/v1/info")
    add("v1 info key missing", "GET", "/v1/info", app="key")
    add("v1 info key right", "GET", "/v1/info", headers={"x-api-key": KEY}, app="key")
    add("healthz", "GET", "/healthz")
    add("v1 detect GET", "GET", "/v1/detect")
    # --- v2 metadata and health ---
    for path in ("/v2", "/v2/", "/v2/health/live", "/v2/health/ready", "/v2/models/foclip", "/v2/models/foclip/versions/1",
                 "/v2/models/foclip/ready", "/v2/models/foclip/versions/1/ready", "/v2/models/other",
                 "/v2/models/foclip/versions/2", "/v2/nothing/here", "/v2/models/foclip/infer"):
        add(f"v2 GET {path}", "GET", path)
    add("v2 POST /v2", "POST", "/v2")
    add("v2 POST health", "POST", "/v2/health/live")
    add("v2 not ready", "GET", "/v2/health/ready", app="unready")
    add("v2 model not ready", "GET", "/v2/models/foclip/ready", app="unready")
    add("v2 health while draining", "GET", "/v2/health/ready", draining=True)
    add("v2 metadata key missing", "GET", "/v2/models/foclip", app="key")
    add("v2 server metadata key right", "GET", "/v2", headers={"x-api-key": KEY}, app="key")
    add("v2 health needs no key", "GET", "/v2/health/live", app="key")
    add("v2 metadata probes", "GET", "/v2/models/foclip", app="probes")
    # --- v2 inference ---
    add_json("v2 json good", infer([b64(A), b64(B)]))
    add_json("v2 json id and versioned path", infer([b64(A)], id="req-7"), path="/v2/models/foclip/versions/1/infer")
    add_json("v2 json numeric id", infer([b64(A)], id=42))
    add_json("v2 json nested data", infer([[b64(A)], [b64(B)]], shape=[2]))
    add_json("v2 json bad base64 item", infer([b64(A), "***not base64***"]))
    add_json("v2 json all bad still 200", infer([b64(TEXT)]))
    add_json("v2 json outputs subset", infer([b64(A)], outputs=[{"name": "DROP"}, {"name": "ERROR"}]))
    add_json("v2 json binary output", infer([b64(A), b64(TEXT)], parameters={"binary_data_output": True}))
    add_json("v2 json per-output binary", infer([b64(A)], outputs=[{"name": "TAMPERED", "parameters": {"binary_data": True}},
                                                                   {"name": "SCORE_COLOR"}]))
    add_json("v2 json pixel budget", infer([b64(C), b64(BOMB)]))
    add_json("v2 json probes", infer([b64(A), b64(TEXT)]), app="probes")
    add_json("v2 json probes binary", infer([b64(B)], parameters={"binary_data_output": True}), app="probes")
    add_json("v2 unknown output", infer([b64(A)], outputs=[{"name": "NOPE"}]))
    add_json("v2 outputs not a list", infer([b64(A)], outputs={"name": "DROP"}))
    add_json("v2 output not an object", infer([b64(A)], outputs=["DROP"]))
    add_json("v2 classification", infer([b64(A)], outputs=[{"name": "DROP", "parameters": {"classification": 2}}]))
    add_json("v2 parameters not an object", infer([b64(A)], parameters=[1]))
    add_json("v2 shared memory", infer([b64(A)], parameters={"shared_memory_region": "r"}))
    add_json("v2 no inputs", {"outputs": []})
    add_json("v2 two inputs", {"inputs": [infer([b64(A)])["inputs"][0]] * 2})
    add_json("v2 input not an object", {"inputs": ["IMAGE"]})
    add_json("v2 wrong input name", {"inputs": [{**infer([b64(A)])["inputs"][0], "name": "INPUT0"}]})
    add_json("v2 wrong datatype", {"inputs": [{**infer([b64(A)])["inputs"][0], "datatype": "UINT8"}]})
    for shape in ([1, 1], [], ["1"], [True], [-1], None, 1):
        add_json(f"v2 shape {shape!r}", {"inputs": [{**infer([b64(A)])["inputs"][0], "shape": shape}]})
    add_json("v2 zero images", infer([], shape=[0]))
    add_json("v2 too many images", infer([b64(A)] * 4))
    add_json("v2 data count mismatch", infer([b64(A)], shape=[2]))
    add_json("v2 data not string", infer([7]))
    add_json("v2 neither data nor size", infer(None, shape=[1]))
    add_json("v2 not an object", [1, 2])
    add("v2 not json", "POST", INFER, b"{not json", {"content-type": "application/json"})
    add("v2 not utf-8", "POST", INFER, b"\xff\xfe{}", {"content-type": "application/json"})
    add("v2 empty body", "POST", INFER, b"", {"content-type": "application/json"})
    add("v2 gzip", "POST", INFER, b"x", {"content-type": "application/json", "content-encoding": "gzip"})
    add("v2 body over limit", "POST", INFER, b"[" + b"0," * 10_000 + b"0]", {"content-type": "application/json"})
    body, h = binary([A, B])
    add("v2 binary good", "POST", INFER, body, h)
    body, h = binary([A, TEXT], params={"binary_data_output": True})
    add("v2 binary in, binary out", "POST", INFER, body, h)
    body, h = binary([A], outputs=[{"name": "ERROR", "parameters": {"binary_data": True}}, {"name": "DROP"}])
    add("v2 binary mixed outputs", "POST", INFER, body, h)
    body, h = binary([A], size=3)
    add("v2 binary size mismatch", "POST", INFER, body, h)
    body, h = binary([A, B])
    add("v2 binary cut inside element", "POST", INFER, body[:-3], {h and "inference-header-content-length":
                                                                   h["inference-header-content-length"]})
    head = json.dumps(infer(None, shape=[1])).encode()
    add("v2 binary without size", "POST", INFER, head + b"\x01\x00\x00\x00x",
        {"inference-header-content-length": str(len(head))})
    data_and_binary = infer([b64(A)])
    data_and_binary["inputs"][0]["parameters"] = {"binary_data_size": 5}
    head = json.dumps(data_and_binary).encode()
    add("v2 data and binary", "POST", INFER, head + b"\x01\x00\x00\x00x", {"inference-header-content-length": str(len(head))})
    head = json.dumps({"inputs": [{"name": "IMAGE", "datatype": "BYTES", "shape": [2],
                                   "parameters": {"binary_data_size": 6}}]}).encode()
    add("v2 binary element count", "POST", INFER, head + b"\x02\x00\x00\x00xy", {"inference-header-content-length": str(len(head))})
    add("v2 binary length inside prefix", "POST", INFER, head + b"\x02\x00", {"inference-header-content-length": str(len(head))})
    add("v2 header length not a number", "POST", INFER, body, {"inference-header-content-length": "ten"})
    add("v2 header length past body", "POST", INFER, b"{}", {"inference-header-content-length": "99"})
    add("v2 header length negative", "POST", INFER, b"{}", {"inference-header-content-length": "-1"})
    add_json("v2 infer key missing", infer([b64(A)]), app="key")
    add_json("v2 infer key right", infer([b64(A)]), app="key", headers={"x-api-key": KEY})
    add_json("v2 infer deadline", infer([b64(SLOW)]))
    add_json("v2 infer draining", infer([b64(A)]))
    out[-1]["draining"] = True
    return out


def answer(case: dict[str, Any], apps: dict[str, tuple[TestClient, DetectService]]) -> dict[str, Any]:
    http, svc = apps[case["app"]]
    svc.draining = bool(case.get("draining"))
    try:
        r = http.request(case["method"], case["path"], content=case["body"], headers=case["headers"])
    finally:
        svc.draining = False
    headers = {k: r.headers[k] for k in HEADERS if k in r.headers}
    return {"name": case["name"], "status": r.status_code, "headers": headers,
            "body": b64(r.content) if not r.content.isascii() else r.content.decode()}


@pytest.fixture(scope="module")
def apps() -> dict[str, tuple[TestClient, DetectService]]:
    return {"open": build(None, ("gray",)), "key": build(KEY, ("gray",)), "probes": build(None, PROBES),
            "unready": build(None, ("gray",), ready=False)}


def test_every_case_answers_as_recorded(apps):
    got = [answer(case, apps) for case in cases()]
    assert len({g["name"] for g in got}) == len(got), "case names must be unique"
    if os.environ.get("FOCLIP_RECORD_GOLDEN"):
        GOLDEN.write_text(json.dumps(got, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
        pytest.skip(f"recorded {len(got)} responses in {GOLDEN}")
    want = {w["name"]: w for w in json.loads(GOLDEN.read_text(encoding="utf-8"))}
    assert [g["name"] for g in got] == list(want), "the case list changed: record again on purpose"
    for g in got:
        assert g == want[g["name"]], g["name"]


def test_the_cases_cover_each_status(apps):
    # A golden file of 200s only would prove little: the recorded set spans the statuses both protocols use.
    statuses = {w["status"] for w in json.loads(GOLDEN.read_text(encoding="utf-8"))}
    assert statuses >= {200, 400, 401, 404, 405, 413, 415, 422, 503, 504}
