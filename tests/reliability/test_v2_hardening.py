"""Issue 32, items 1, 2 and 6: the v2 protocol bounded like v1, without Ray.

The app is :func:`foclip.serve.app.create_app` with the v2 routes around a DetectService whose
detection is a stand-in that counts what reached it; the proxy's gate (foclip/serve/edge.py) is
driven as the ASGI middleware it is. What a 32 MB probe costs a running service (peak RSS, a
concurrent request's latency) is measured by scripts/measure/json_probe.py, not here.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json

import pytest
from fastapi.testclient import TestClient

from foclip.serve.app import create_app
from foclip.serve.config import Limits
from foclip.serve.core import DetectService
from foclip.serve.edge import BodyGate, EdgeLimits
from foclip.serve.v2 import V2Front

INFER = "/v2/models/foclip/infer"
PNG = base64.b64encode(b"\x89PNG\r\n\x1a\n" + b"\x00" * 64).decode()
KEY = "edge-key"


def make(limits: Limits | None = None):
    seen: list[int] = []

    async def detect(items):
        seen.append(len(items))
        return [{"id": it.id, "score_color": 30.0, "score_gray": 20.0, "drop": 0.33, "tampered": True,
                 "error": None} for it in items]

    svc = DetectService(detect, dict, {"score_scale": 100.0}, limits or Limits())
    front = V2Front(svc, {"probes": ["gray"], "self_check": {"passed": True}})
    # A bug must show as the 500 a client would get, not as an exception in the test.
    return TestClient(create_app(svc, v2=front), raise_server_exceptions=False), seen


def request(data: list | None = None, **extra) -> dict:
    return {"inputs": [{"name": "IMAGE", "datatype": "BYTES", "shape": [1], "data": data or [PNG]}], **extra}


def assert_v2_error(r, status: int, *words: str) -> None:
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) == {"error"} and isinstance(body["error"], str), body
    for w in words:
        assert w in body["error"], body["error"]


def test_a_junk_array_in_a_valid_request_is_refused_before_it_is_parsed():
    # Item 1: "[]," x N in a request that is otherwise valid; at 9b2574a it was parsed (a Python list
    # per "[]") and answered 200. The bytes outside strings are bounded: 413 before any parse.
    http, seen = make()
    junk = b"[]," * 700_000  # 2.1 MB (the probe in the issue: 32 MB)
    body = json.dumps(request()).encode()[:-1] + b', "junk": [' + junk + b"[]]}"
    r = http.post(INFER, content=body, headers={"content-type": "application/json"})
    assert_v2_error(r, 413, "outside its strings")
    assert seen == []


def test_large_base64_strings_are_not_counted_against_the_json_bound():
    http, seen = make(Limits(max_json_bytes=1024))
    big = base64.b64encode(b"\x89PNG" + bytes(600_000)).decode()  # 800 KB of base64, far past 1 KiB
    r = http.post(INFER, json=request([big]))
    assert r.status_code == 200 and seen == [1]
    many = request([PNG] * 1) | {"outputs": [{"name": "DROP"}] * 200}  # ~4.6 KB outside strings
    assert_v2_error(http.post(INFER, json=many), 413, "1024 bytes outside")


@pytest.mark.parametrize("depth", [17, 600, 100_000])
def test_deep_nesting_is_a_400_with_the_protocol_body(depth):
    # Item 2: at 9b2574a nesting past Python's recursion limit was a plain-text 500.
    http, seen = make()
    nested = "[" * depth + '"x"' + "]" * depth
    body = json.dumps(request())[:-1] + f', "parameters": {{"deep": {nested}}}}}'
    r = http.post(INFER, content=body.encode(), headers={"content-type": "application/json"})
    if depth * 2 + 60 > Limits().max_json_bytes:
        assert_v2_error(r, 413)
    else:
        assert_v2_error(r, 400, "deep", "16")
    assert seen == []


def test_nesting_within_the_limit_is_served():
    http, seen = make()
    r = http.post(INFER, json=request([[[[PNG]]]]))  # row-major nested data, 7 levels in all
    assert r.status_code == 200 and seen == [1]


@pytest.mark.parametrize("outputs", [[{"name": ["DROP"]}], [{"name": {"a": 1}}], [{"name": 3}], [{"name": None}]])
def test_an_output_name_that_is_not_a_string_is_400(outputs):
    # Item 2: a list as the name was a TypeError (unhashable) and a plain-text 500 at 9b2574a.
    http, _ = make()
    assert_v2_error(http.post(INFER, json=request(outputs=outputs)), 400, "unknown output")


@pytest.mark.parametrize("change, words", [
    ({"parameters": {"binary_data_output": "false"}}, ["binary_data_output", "a string", "true or false"]),
    ({"parameters": {"binary_data_output": 0}}, ["binary_data_output", "a number"]),
    ({"outputs": [{"name": "DROP", "parameters": {"binary_data": {"x": 1}}}]}, ["binary_data", "an object"]),
    ({"outputs": [{"name": "DROP", "parameters": {"binary_data": "true"}}]}, ["binary_data", "a string"]),
    ({"id": {"a": 1}}, ["'id'", "an object"]),
    ({"id": True}, ["'id'", "a boolean"]),
    ({"id": "x" * 257}, ["'id'", "257"]),
])
def test_every_documented_parameter_has_a_strict_type(change, words):
    # Item 6: at 9b2574a "false" and {"x": 1} were read as true (bool() of them), and any id was str()-ed.
    http, seen = make()
    assert_v2_error(http.post(INFER, json=request(**change)), 400, *words)
    assert seen == []


def test_binary_data_size_must_be_an_integer_not_a_boolean():
    http, _ = make()
    raw = b"\x01\x00\x00\x00x"  # one element of 1 byte: 5 bytes, and True == 1 would not match anyway
    head = {"inputs": [{"name": "IMAGE", "datatype": "BYTES", "shape": [1], "parameters": {"binary_data_size": True}}]}
    h = json.dumps(head).encode()
    r = http.post(INFER, content=h + raw[:1], headers={"inference-header-content-length": str(len(h))})
    assert_v2_error(r, 400, "binary_data_size is True")


@pytest.mark.parametrize("declared", ["1_0_9", "0x6d", "1e2", "109.0"])
def test_the_header_length_is_plain_decimal_digits(declared):
    # Item 6: int("1_0_9") is 109, so at 9b2574a that header was read as a length.
    http, seen = make()
    head = json.dumps(request()).encode()
    assert len(head) > 109
    r = http.post(INFER, content=head, headers={"inference-header-content-length": declared})
    assert_v2_error(r, 400, "Inference-Header-Content-Length", "not a number")
    assert seen == []


@pytest.mark.parametrize("method", ["PUT", "DELETE", "PATCH"])
def test_a_405_from_any_method_has_the_protocol_body(method):
    # Item 6: at 9b2574a the framework answered these {"detail": "Method Not Allowed"}.
    http, _ = make()
    for path in (INFER, "/v2/health/live", "/v2"):
        r = http.request(method, path)
        assert_v2_error(r, 405, method)
        assert "allow" in r.headers


# --- the proxy's gate (edge.py) ----------------------------------------------------------------


async def _call(app, method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None):
    """One request through an ASGI app: (status, headers, body)."""
    raw = [(k.encode(), v.encode()) for k, v in (headers or {}).items()]
    if body:
        raw.append((b"content-length", str(len(body)).encode()))
    scope = {"type": "http", "method": method, "path": path, "headers": raw, "client": ("127.0.0.1", 1),
             "query_string": b""}
    sent: list[dict] = []
    messages = [{"type": "http.request", "body": body, "more_body": False}]

    async def receive():
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    async def send(m):
        sent.append(m)

    await app(scope, receive, send)
    start = next(m for m in sent if m["type"] == "http.response.start")
    data = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return start["status"], {k.decode(): v.decode() for k, v in start["headers"]}, data


class Downstream:
    """What sits behind the gate in Ray's proxy: here it answers as Ray does when its queue is full."""

    def __init__(self) -> None:
        self.paths: list[str] = []

    async def __call__(self, scope, receive, send):
        self.paths.append(scope["path"])
        if scope["path"].endswith("/busy"):
            body = b"Request dropped due to backpressure (num_queued_requests=256, max_queued_requests=256)."
            await send({"type": "http.response.start", "status": 503,
                        "headers": [(b"content-type", b"text/plain; charset=utf-8"),
                                    (b"content-length", str(len(body)).encode()), (b"retry-after", b"1")]})
            await send({"type": "http.response.body", "body": body[:20], "more_body": True})
            await send({"type": "http.response.body", "body": body[20:], "more_body": False})
            return
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
        await send({"type": "http.response.body", "body": b"ok", "more_body": False})


def gate(**limits) -> tuple[BodyGate, Downstream]:
    app = Downstream()
    return BodyGate(app, EdgeLimits(**limits)), app


def test_the_gate_answers_v2_paths_in_the_v2_shape_and_v1_paths_in_the_v1_shape():
    # Item 6: at 9b2574a the gate's 413 under /v2 was {"error": {"code", "message"}}.
    g, app = gate(max_body_bytes=10)
    status, headers, body = asyncio.run(_call(g, "POST", INFER, b"x" * 11))
    assert status == 413 and json.loads(body) == {"error": "request body is 11 bytes; the limit is 10"}
    assert int(headers["content-length"]) == len(body)
    status, _, body = asyncio.run(_call(g, "POST", "/v1/detect", b"x" * 11))
    assert status == 413 and json.loads(body)["error"]["code"] == "body_too_large"
    assert app.paths == []


def test_errors_from_behind_the_gate_get_the_v2_shape_under_v2_only():
    g, _ = gate()
    status, headers, body = asyncio.run(_call(g, "GET", "/v2/busy"))
    assert status == 503 and headers["retry-after"] == "1" and headers["content-type"] == "application/json"
    assert json.loads(body) == {"error": "Request dropped due to backpressure (num_queued_requests=256, "
                                         "max_queued_requests=256)."}
    assert int(headers["content-length"]) == len(body)
    assert asyncio.run(_call(g, "GET", "/v1/busy"))[2].startswith(b"Request dropped")  # v1: untouched
    assert asyncio.run(_call(g, "GET", "/v2/fine"))[2] == b"ok"  # a success streams through as it was


def test_rays_own_routes_need_the_api_key_when_one_is_set():
    # Ray's /-/routes (the route table) and /-/healthz answered anyone at 9b2574a.
    digest = hashlib.sha256(KEY.encode()).hexdigest()
    g, app = gate(api_key_sha256=digest)
    for path in ("/-/routes", "/-/healthz"):
        status, headers, body = asyncio.run(_call(g, "GET", path))
        assert status == 401 and headers["www-authenticate"] == "ApiKey"
        assert json.loads(body)["error"]["code"] == "unauthorized"
        assert asyncio.run(_call(g, "GET", path, headers={"x-api-key": "wrong"}))[0] == 401
        assert asyncio.run(_call(g, "GET", path, headers={"x-api-key": KEY}))[0] == 200
        assert asyncio.run(_call(g, "GET", path, headers={"authorization": f"Bearer {KEY}"}))[0] == 200
    assert app.paths == ["/-/routes", "/-/routes", "/-/healthz", "/-/healthz"]
    open_gate, _ = gate()  # no key configured: open, as every other route
    assert asyncio.run(_call(open_gate, "GET", "/-/routes"))[0] == 200


def test_the_gate_refuses_a_junk_json_body_before_it_reaches_a_replica():
    # Item 1: the body is read whole in the proxy anyway; past the JSON bounds it never crosses to
    # the ingress replica (at 9b2574a it was routed, and parsed there).
    g, app = gate(max_json_bytes=1024, max_json_depth=4)
    body = json.dumps(request()).encode()[:-1] + b', "junk": [' + b"[]," * 2000 + b"[]]}"
    status, _, out = asyncio.run(_call(g, "POST", INFER, body))
    assert status == 413 and "outside its strings" in json.loads(out)["error"]
    deep = json.dumps(request()).encode()[:-1] + b', "junk": [[[[[1]]]]]}'
    status, _, out = asyncio.run(_call(g, "POST", "/v2/models/foclip/versions/1/infer", deep))
    assert status == 400 and "deep" in json.loads(out)["error"]
    # Binary tensor data after the JSON header is not JSON: only the header is bounded.
    head = json.dumps(request()).encode()
    binary = head + b"[]," * 2000
    status, _, _ = asyncio.run(_call(g, "POST", INFER, binary, {"inference-header-content-length": str(len(head))}))
    assert status == 200
    ok = json.dumps(request([base64.b64encode(bytes(50_000)).decode()])).encode()  # 67 KB, nearly all string
    assert asyncio.run(_call(g, "POST", INFER, ok))[0] == 200
    assert asyncio.run(_call(g, "POST", "/v1/detect", body))[0] == 200  # v1 bodies are not JSON
    assert app.paths == [INFER, INFER, "/v1/detect"]


def _mutate(obj, rng):
    """``obj`` with one value somewhere replaced by a value of another JSON type (or a key added)."""
    values = [None, True, False, 0, -1, 1.5, "x", "", [], {}, [1], {"a": 1}, "false", 10**40, [[[]]], PNG, "IMAGE"]
    if isinstance(obj, dict):
        obj = dict(obj)
        if obj and rng.random() < 0.5:
            k = rng.choice(list(obj))
            obj[k] = _mutate(obj[k], rng) if rng.random() < 0.6 else rng.choice(values)
        if rng.random() < 0.2:
            obj[rng.choice(["parameters", "outputs", "id", "binary_data_output", "binary_data", "binary_data_size",
                            "shape", "data", "name", "datatype", "classification", "shared_memory_region"])] = \
                rng.choice(values)
        return obj
    if isinstance(obj, list):
        obj = list(obj)
        if obj and rng.random() < 0.7:
            i = rng.randrange(len(obj))
            obj[i] = _mutate(obj[i], rng)
        else:
            obj.append(rng.choice(values))
        return obj
    return rng.choice(values)


def test_no_malformed_request_is_anything_but_a_protocol_error():
    # Item 2 ("every malformed request is a 400 with the documented body"), as a seeded search: 1,500
    # requests, each a valid one with values swapped for values of other JSON types, and 1,500
    # binary-tensor requests with bytes changed, cut or inserted and a wrong header length. Each
    # answer is 200 or a 400/413 with {"error": "<message>"}; none is a 500.
    import random
    import struct

    http, _ = make()
    rng = random.Random(0)
    base = request(outputs=[{"name": "DROP", "parameters": {"binary_data": True}}],
                   parameters={"binary_data_output": False}, id="a")
    raw = b"".join(struct.pack("<I", len(b)) + b for b in [b"\x89PNG" + bytes(30), b"abc"])
    head = json.dumps({"inputs": [{"name": "IMAGE", "datatype": "BYTES", "shape": [2],
                                   "parameters": {"binary_data_size": len(raw)}}],
                       "outputs": [{"name": "ERROR", "parameters": {"binary_data": True}}]}).encode()
    failures = []
    for _ in range(1500):
        obj = base
        for _ in range(rng.randrange(1, 4)):
            obj = _mutate(obj, rng)
        r = http.post(INFER, content=json.dumps(obj).encode(), headers={"content-type": "application/json"})
        if not (r.status_code == 200 or (r.status_code in (400, 413) and set(r.json()) == {"error"})):
            failures.append((r.status_code, json.dumps(obj)[:200], r.text[:200]))
    for _ in range(1500):
        body = bytearray(head + raw)
        for _ in range(rng.randrange(1, 4)):
            p, op = rng.randrange(len(body)), rng.random()
            if op < 0.5:
                body[p] = rng.randrange(256)
            elif op < 0.75:
                del body[p:p + rng.randrange(1, 5)]
            else:
                body[p:p] = rng.choice([b"[", b"{", b"]", b"\\", b'"', b"\x00", b"\xff"])
        length = str(len(head) + rng.randrange(-3, 4)) if rng.random() < 0.8 else rng.choice(["", "abc", "+5", "9" * 9])
        r = http.post(INFER, content=bytes(body), headers={"inference-header-content-length": length})
        if not (r.status_code == 200 or (r.status_code in (400, 413) and set(r.json()) == {"error"})):
            failures.append((r.status_code, bytes(body)[:120], r.text[:200]))
    assert failures == []
