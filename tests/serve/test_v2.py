"""The Open Inference Protocol (v2) routes without Ray: wire format, bounds and status codes.

The app is :func:`foclip.serve.app.create_app` with a :class:`foclip.serve.v2.V2Front` around a
real Detector on the tiny bundle, so parsing, bounds, detection and response shaping are the
production code; the real client (tritonclient) against a running server is in
test_v2_tritonclient.py.
"""

from __future__ import annotations

import base64
import hashlib
import json

import numpy as np
import pytest
from fastapi.testclient import TestClient
from v2_requests import binary_request

from foclip.serve.config import Limits
from foclip.serve.core import DetectService
from foclip.serve.v2 import V2Front, decode_bytes_tensor, output_specs

KEY = "v2-key"


class Recorder:
    def __init__(self) -> None:
        self.requests: list[tuple[str, int]] = []
        self.errors: list[str] = []

    def request(self, route: str, status: int, latency_s: float) -> None:
        self.requests.append((route, status))

    def error(self, code: str) -> None:
        self.errors.append(code)

    def results(self, results) -> None:
        pass


@pytest.fixture(scope="module")
def detector(tiny_bundle):
    from foclip.runtime import Detector

    det = Detector.from_bundle(tiny_bundle, backend="ort-cpu", precision="fp32", batch_size=8, threads=1)
    yield det
    det.close()


def make(detector, key=None, limits=None, ready=lambda: True, delay_s=0.0):
    import asyncio

    async def detect(items):
        if delay_s:
            await asyncio.sleep(delay_s)
        results = await asyncio.to_thread(detector.detect, [it.data for it in items], ids=[it.id for it in items])
        return [r.to_dict() for r in results]

    rec = Recorder()
    svc = DetectService(detect, lambda: {"detector": detector.info()}, {"score_scale": 100.0, "model": "foclip-tiny"},
                        limits or Limits(max_body_bytes=300_000, max_images=5),
                        hashlib.sha256(key.encode()).hexdigest() if key else None, rec)
    front = V2Front(svc, detector.info(), ready=ready)
    from foclip.serve.app import create_app

    return TestClient(create_app(svc, v2=front)), svc, rec


@pytest.fixture(scope="module")
def client(detector):
    return make(detector)




def json_request(images: list[bytes], **extra) -> dict:
    return {"inputs": [{"name": "IMAGE", "datatype": "BYTES", "shape": [len(images)],
                        "data": [base64.b64encode(b).decode() for b in images]}], **extra}


def read_binary_response(r) -> dict[str, np.ndarray]:
    """Outputs of a response, decoded by hand (JSON data or binary tensors after the header)."""
    n = int(r.headers.get("inference-header-content-length", len(r.content)))
    head, blob = json.loads(r.content[:n]), r.content[n:]
    out, pos = {}, 0
    for t in head["outputs"]:
        size = (t.get("parameters") or {}).get("binary_data_size")
        if size is None:
            out[t["name"]] = np.array([np.nan if v is None else v for v in t["data"]]
                                      if t["datatype"] == "FP32" else t["data"])
            continue
        chunk, pos = blob[pos:pos + size], pos + size
        if t["datatype"] == "FP32":
            out[t["name"]] = np.frombuffer(chunk, "<f4")
        elif t["datatype"] == "BOOL":
            out[t["name"]] = np.frombuffer(chunk, np.uint8).astype(bool)
        else:
            out[t["name"]] = np.array([b.decode() for b in decode_bytes_tensor(chunk, t["shape"][0])])
    assert pos == len(blob)
    return out


def test_binary_and_json_give_the_detectors_results(client, detector, uploads, bad_codes):
    http, _, _ = client
    names = ["astronaut.jpg", "truncated.jpg", "chelsea.png", "text.jpg"]
    images = [uploads[n] for n in names]
    direct = [r.to_dict() for r in detector.detect(images, ids=names)]
    body, headers = binary_request(images, params={"binary_data_output": True})
    rb = http.post("/v2/models/foclip/infer", content=body, headers=headers)
    assert rb.status_code == 200 and rb.headers["content-type"] == "application/octet-stream"
    rj = http.post("/v2/models/foclip/versions/1/infer", json=json_request(images, id="req-7"))
    assert rj.status_code == 200 and rj.json()["id"] == "req-7" and "inference-header-content-length" not in rj.headers
    for r in (rb, rj):
        out = read_binary_response(r)
        for i, d in enumerate(direct):
            if d["error"]:
                assert out["ERROR"][i].startswith(bad_codes[names[i]] + ": ")
                assert np.isnan(out["SCORE_COLOR"][i]) and not out["TAMPERED"][i]
            else:
                assert out["ERROR"][i] == ""
                assert out["SCORE_COLOR"][i] == pytest.approx(d["score_color"], abs=1e-4)
                assert out["SCORE_GRAY"][i] == pytest.approx(d["score_gray"], abs=1e-4)
                assert out["DROP"][i] == pytest.approx(d["drop"], abs=1e-6)
                assert bool(out["TAMPERED"][i]) == d["tampered"]


def test_requested_outputs_only_and_binary_per_output(client, uploads):
    http, _, _ = client
    body, headers = binary_request([uploads["coffee.jpg"]], outputs=[
        {"name": "DROP", "parameters": {"binary_data": True}}, {"name": "ERROR"}])
    r = http.post("/v2/models/foclip/infer", content=body, headers=headers)
    assert r.status_code == 200
    n = int(r.headers["inference-header-content-length"])
    head = json.loads(r.content[:n])
    assert [t["name"] for t in head["outputs"]] == ["DROP", "ERROR"]
    assert head["outputs"][0]["parameters"]["binary_data_size"] == 4 and head["outputs"][1]["data"] == [""]


def test_all_bad_images_are_still_200(client, uploads):
    http, _, rec = client
    r = http.post("/v2/models/foclip/infer", json=json_request([uploads["text.jpg"], b"\x00"]))
    assert r.status_code == 200
    errors = next(t for t in r.json()["outputs"] if t["name"] == "ERROR")["data"]
    assert errors[0].startswith("not_an_image: ") and errors[1] != ""
    assert ("/v2/infer", 200) in rec.requests


def test_json_element_that_is_not_base64_is_an_item_error(client, uploads):
    http, _, _ = client
    req = json_request([uploads["astronaut.jpg"]])
    req["inputs"][0]["data"].append("not base64 !!")
    req["inputs"][0]["shape"] = [2]
    out = read_binary_response(http.post("/v2/models/foclip/infer", json=req))
    assert out["ERROR"][0] == "" and out["ERROR"][1].startswith("bad_base64: ")


@pytest.mark.parametrize("mutate, status, words", [
    (lambda r: r["inputs"][0].update(name="INPUT0"), 400, "unknown input"),
    (lambda r: r["inputs"][0].update(datatype="FP32"), 400, "datatype"),
    (lambda r: r["inputs"][0].update(shape=[1, 1]), 400, "shape"),
    (lambda r: r["inputs"][0].update(shape=[3]), 400, "holds 1 elements"),
    (lambda r: r["inputs"][0].update(data=[1]), 400, "base64 string"),
    (lambda r: r.update(outputs=[{"name": "LOGITS"}]), 400, "unknown output"),
    (lambda r: r["inputs"].append(dict(r["inputs"][0])), 400, "exactly one input"),
    (lambda r: r["inputs"][0].update(shape=[0], data=[]), 400, "no elements"),
    (lambda r: r["inputs"][0].update(shape=[6], data=r["inputs"][0]["data"] * 6), 413, "limit is 5"),
])
def test_malformed_requests_get_the_protocol_error(client, uploads, mutate, status, words):
    http, _, _ = client
    req = json_request([uploads["astronaut.jpg"]])
    mutate(req)
    r = http.post("/v2/models/foclip/infer", json=req)
    assert r.status_code == status
    assert set(r.json()) == {"error"} and words in r.json()["error"]


def test_malformed_bodies(client, uploads):
    http, _, _ = client
    for content, headers in [
        (b"{not json", {}),
        (b"[1, 2]", {}),
        (b'{"inputs": []}xx', {"inference-header-content-length": "99"}),
        (b"{}", {"content-encoding": "gzip"}),
    ]:
        r = http.post("/v2/models/foclip/infer", content=content, headers=headers)
        assert r.status_code == 400 and isinstance(r.json()["error"], str), content
    body, headers = binary_request([uploads["astronaut.jpg"]])
    r = http.post("/v2/models/foclip/infer", content=body[:-3], headers=headers)  # cut inside the element
    assert r.status_code == 400 and "binary_data_size" in r.json()["error"]


def test_bounds_of_v1_apply(detector, uploads):
    http, svc, rec = make(detector, key=KEY, limits=Limits(max_body_bytes=50_000, max_images=5))
    body, headers = binary_request([uploads["astronaut.jpg"]])
    assert http.post("/v2/models/foclip/infer", content=body, headers=headers).status_code == 401
    r = http.post("/v2/models/foclip/infer", content=body, headers={**headers, "x-api-key": "wrong"})
    assert r.status_code == 401 and set(r.json()) == {"error"}
    assert http.post("/v2/models/foclip/infer", content=body,
                     headers={**headers, "authorization": f"Bearer {KEY}"}).status_code == 200
    big, big_headers = binary_request([b"\xff" * 60_000])
    r = http.post("/v2/models/foclip/infer", content=big, headers={**big_headers, "x-api-key": KEY})
    assert r.status_code == 413 and "limit" in r.json()["error"]
    bomb, bomb_headers = binary_request([uploads["bomb.png"]])
    out = read_binary_response(http.post("/v2/models/foclip/infer", content=bomb,
                                         headers={**bomb_headers, "x-api-key": KEY}))
    assert out["ERROR"][0].startswith(("pixel_budget: ", "too_many_pixels: "))
    assert http.get("/v2/models/foclip").status_code == 401  # metadata behind the key, as /v1/info
    assert http.get("/v2/health/ready").status_code == 200  # health is not
    svc.draining = True
    r = http.post("/v2/models/foclip/infer", content=body, headers={**headers, "x-api-key": KEY})
    assert r.status_code == 503 and "retry-after" in r.headers
    assert http.get("/v2/health/ready").status_code == 503 and http.get("/v2/health/live").status_code == 200
    assert rec.errors.count("unauthorized") == 3


def test_deadline_is_504_with_the_protocol_body(detector, uploads):
    http, _, _ = make(detector, limits=Limits(timeout_s=0.05), delay_s=1.0)
    body, headers = binary_request([uploads["astronaut.jpg"]])
    r = http.post("/v2/models/foclip/infer", content=body, headers=headers)
    assert r.status_code == 504 and "did not finish" in r.json()["error"]


def test_metadata_routes_and_readiness(detector):
    state = {"ready": False}
    http, svc, _ = make(detector, ready=lambda: state["ready"])
    assert http.get("/v2/health/live").status_code == 200
    assert http.get("/v2/health/ready").status_code == 503
    assert http.get("/v2/models/foclip/ready").status_code == 503
    state["ready"] = True
    assert http.get("/v2/health/ready").status_code == 200
    assert http.get("/v2/models/foclip/versions/1/ready").status_code == 200
    server = http.get("/v2").json()
    assert server["name"] == "foclip" and "binary_tensor_data" in server["extensions"]
    meta = http.get("/v2/models/foclip").json()
    assert meta == http.get("/v2/models/foclip/versions/1").json()
    assert meta["inputs"] == [{"name": "IMAGE", "datatype": "BYTES", "shape": [-1]}]
    assert [(o["name"], o["datatype"]) for o in meta["outputs"]] == output_specs(("gray",))
    assert meta["parameters"]["score_scale"] == 100.0 and meta["parameters"]["self_check"] == "passed"
    failed = V2Front(svc, {**detector.info(), "self_check": {"passed": False}})
    assert failed.is_ready() is False  # a detector whose self-check failed never serves (its replica fails too)
    for path in ("/v2/models/clip", "/v2/models/foclip/versions/2", "/v2/models/clip/infer", "/v2/repository/index"):
        r = http.get(path) if "infer" not in path else http.post(path, json={})
        assert r.status_code == 404 and "error" in r.json(), path
    assert http.get("/v2/models/foclip/infer").status_code == 405


def test_probe_outputs(tiny_bundle, uploads):
    from foclip.runtime import Detector

    with Detector.from_bundle(tiny_bundle, backend="ort-cpu", probes=("gray", "hue180"), threads=1) as det:
        http, _, _ = make(det)
        meta = http.get("/v2/models/foclip").json()
        assert [o["name"] for o in meta["outputs"]][-3:] == ["PROBE_DROP", "DROP_GRAY", "DROP_HUE180"]
        images = [uploads["astronaut.jpg"], uploads["text.jpg"]]
        body, headers = binary_request(images, params={"binary_data_output": True})
        out = read_binary_response(http.post("/v2/models/foclip/infer", content=body, headers=headers))
        (d, _) = [r.to_dict() for r in det.detect(images)]
        assert out["DROP_GRAY"][0] == pytest.approx(d["drop"], abs=1e-6)
        assert out["PROBE_DROP"][0] == pytest.approx(d["probe_drop"], abs=1e-6)
        assert out["PROBE_DROP"][0] == pytest.approx(max(out["DROP_GRAY"][0], out["DROP_HUE180"][0]), abs=1e-6)
        assert np.isnan(out["DROP_HUE180"][1])


def _as_parsed(node):
    """A load_json result as json.loads gives it (its Base64Text views as the strings they are)."""
    from foclip.serve.v2 import Base64Text

    if isinstance(node, Base64Text):
        return str(node.view, "ascii")
    if isinstance(node, list):
        return [_as_parsed(x) for x in node]
    if isinstance(node, dict):
        return {k: _as_parsed(v) for k, v in node.items()}
    return node


@pytest.mark.parametrize("text, in_place", [
    ('{"inputs": [{"name": "IMAGE", "data": ["%(b)s", "short", ["%(b)s"]]}], "id": "%(b)s"}', 2),
    ('{"%(b)s": 1, "inputs": [{"data": "%(b)s", "%(b)s": "%(b)s"}, "%(b)s", 3], "outputs": [{"name": "%(b)s"}]}', 1),
    ('["%(b)s", {"inputs": []}]', 0),
    # escaped, padded past "==", or a client string like a placeholder: the parser's strings
    ('{"inputs": [{"data": ["%(b)s\\\\/A", "%(b)s=", "%(b)s==="]}], "x": "\\\\u00000"}', 1),
])
def test_load_json_is_json_loads_with_the_images_left_in_place(text, in_place):
    # Long base64 strings are kept as views of the body (issue 32: JSON costs what its bytes cost);
    # the value is otherwise exactly the parser's, wherever such a string sits.
    from foclip.serve.v2 import Base64Text, load_json

    raw = (text % {"b": base64.b64encode(bytes(range(256)) * 8).decode()}).encode()
    got = load_json(memoryview(raw))
    assert _as_parsed(got) == json.loads(raw)

    def count(node):
        if isinstance(node, Base64Text):
            return 1
        values = node.values() if isinstance(node, dict) else node if isinstance(node, list) else []
        return sum(count(v) for v in values)

    assert count(got) == in_place


def test_load_json_reports_malformed_json_as_the_parser_does():
    from foclip.serve.v2 import load_json

    big = base64.b64encode(bytes(4096)).decode()
    raw = ('{"inputs": [{"data": ["' + big + '"]}], "x": tru}').encode()
    with pytest.raises(json.JSONDecodeError) as ours:
        load_json(memoryview(raw))
    with pytest.raises(json.JSONDecodeError) as parser:
        json.loads(raw)
    assert str(ours.value) == str(parser.value)


def test_a_large_json_image_reaches_the_detector_as_base64_decodes_it(client, uploads):
    http, _, _ = client
    image = uploads["astronaut.jpg"]
    assert len(base64.b64encode(image)) > 1024  # the in-place path
    rj = read_binary_response(http.post("/v2/models/foclip/infer", json=json_request([image, image[:1000]])))
    rb = read_binary_response(http.post("/v2/models/foclip/infer", content=binary_request([image, image[:1000]])[0],
                                        headers=binary_request([image, image[:1000]])[1]))
    for name in ("SCORE_COLOR", "DROP", "ERROR"):
        assert np.array_equal(rj[name], rb[name], equal_nan=name != "ERROR")
    bad = base64.b64encode(image).decode()[:-1]  # bad padding: an item error, as b64decode gives it
    out = read_binary_response(http.post("/v2/models/foclip/infer", json={"inputs": [
        {"name": "IMAGE", "datatype": "BYTES", "shape": [1], "data": [bad]}]}))
    assert out["ERROR"][0].startswith("bad_base64")
