"""The service on Ray Serve, in-process on a free loopback port, driven over real HTTP (httpx).

One service (one local Ray) per topology (``split``: HTTP and detector deployments; ``fused``: one
deployment doing both) is shared by the module's tests; each starts in ~10-20 s on a 2-core machine.
"""

from __future__ import annotations

import concurrent.futures as cf

import httpx
import pytest
from waits import ceiling, wait_until

from foclip.serve.config import Limits, ServeConfig
from foclip.serve.service import free_port, start_service

pytest.importorskip("ray.serve")

KEY = "service-test-key"
KEY_HEADER = {"x-api-key": KEY}


@pytest.fixture(scope="module", params=["split", "fused"])
def service(tiny_bundle, request):
    import hashlib

    cfg = ServeConfig(
        bundle=str(tiny_bundle), port=free_port(), replicas=1, threads=1, max_batch=16, batch_wait_ms=20,
        topology=request.param,
        limits=Limits(max_body_bytes=300_000, max_images=8, timeout_s=30),
        api_key_sha256=hashlib.sha256(KEY.encode()).hexdigest(),
    )
    svc = start_service(cfg, ray_init_kwargs={"num_cpus": 2, "_system_config": {"metrics_report_interval_ms": 500}})
    yield svc
    svc.stop(drain=False)


@pytest.fixture(scope="module")
def http(service):
    with httpx.Client(base_url=service.url, headers=KEY_HEADER, timeout=ceiling(180)) as client:
        yield client


def test_binds_loopback(service):
    """The HTTP port answers on 127.0.0.1 and is closed on the machine's other addresses."""
    import socket
    from urllib.parse import urlparse

    port = urlparse(service.url).port
    with socket.create_connection(("127.0.0.1", port), timeout=5):
        pass
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        probe.connect(("10.255.255.255", 1))  # no packet is sent; picks the outward interface
        external = probe.getsockname()[0]
    except OSError:
        external = "127.0.0.1"
    finally:
        probe.close()
    if external.startswith("127."):
        pytest.skip("this machine has no non-loopback address to probe")
    with pytest.raises(OSError):
        socket.create_connection((external, port), timeout=5).close()


def test_good_image(http, uploads):
    r = http.post("/v1/detect", content=uploads["astronaut.jpg"], headers={"content-type": "image/jpeg"})
    assert r.status_code == 200
    (item,) = r.json()["results"]
    assert item["error"] is None and 0 <= item["score_color"] <= 100 and isinstance(item["tampered"], bool)


def test_batch_of_images(http, uploads, good_names):
    files = [("files", (n, uploads[n], "application/octet-stream")) for n in good_names]
    r = http.post("/v1/detect", files=files)
    assert r.status_code == 200
    assert [x["id"] for x in r.json()["results"]] == list(good_names)


def test_bad_inputs_over_http(http, uploads, bad_codes):
    files = [("files", (n, uploads[n], "image/jpeg")) for n in ["rocket.png", *bad_codes]]
    r = http.post("/v1/detect", files=files)
    assert r.status_code == 200
    got = {x["id"]: (x["error"] or {}).get("code") for x in r.json()["results"]}
    assert got == {"rocket.png": None, **bad_codes}
    for name in ("truncated.jpg", "text.jpg", "bomb.png"):
        r = http.post("/v1/detect", content=uploads[name], headers={"content-type": "image/png"})
        assert r.status_code == 422, name
        assert r.json()["results"][0]["error"]["code"] == bad_codes[name]


def test_limits_413_415_401(service, http):
    r = http.post("/v1/detect", content=b"\xff" * 400_000, headers={"content-type": "image/jpeg"})
    assert r.status_code == 413
    r = http.post("/v1/detect", content=b"hello", headers={"content-type": "text/plain"})
    assert r.status_code == 415
    r = httpx.post(f"{service.url}/v1/detect", content=b"x", headers={"content-type": "image/jpeg"})
    assert r.status_code == 401
    r = httpx.post(f"{service.url}/v1/detect", content=b"x", headers={"content-type": "image/jpeg", "x-api-key": "no"})
    assert r.status_code == 401


def test_concurrent_callers_are_batched(http, uploads):
    body = uploads["chelsea.png"]

    def one(_):
        return http.post("/v1/detect", content=body, headers={"content-type": "image/png"}).status_code

    with cf.ThreadPoolExecutor(16) as pool:
        codes = list(pool.map(one, range(48)))
    assert codes == [200] * 48
    batching = http.get("/v1/info").json()["batching"]
    assert batching["max_batch_seen"] > 1, batching  # Serve's batcher merged concurrent requests
    assert sum(int(k) * v for k, v in batching["batch_sizes"].items()) >= 48


def test_info_and_healthz(service, http, request):
    info = http.get("/v1/info").json()
    assert info["detector"]["model_name"] == "foclip-tiny"
    assert info["service"]["max_batch"] == 16 and info["service"]["api_key"] is True
    assert info["service"]["topology"] == request.node.callspec.params["service"]
    check = info["detector"]["self_check"]  # each replica checked its graph at start (issue 8)
    assert check["passed"] and check["graph"] == "image.fp32" and check["min_cosine"] >= check["gate"]
    assert httpx.get(f"{service.url}/healthz").status_code == 200  # no key needed for liveness


def test_replicas_give_memory_back_once_quiet(service, http, uploads):
    """Issue 24: after traffic each replica trims its heap once quiet; detectors run with two malloc arenas."""
    for name in ("astronaut.jpg", "coffee.jpg"):
        assert http.post("/v1/detect", content=uploads[name], headers={"content-type": "image/jpeg"}).status_code == 200
    done = {}

    def trimmed() -> bool:
        mem = http.get("/v1/info").json()["memory"]
        done.update(mem)
        return bool(mem) and mem["http_replica"]["idle_trims"] >= 1 and mem["detector_replica"]["idle_trims"] >= 1

    wait_until(trimmed, "both replicas to report a trim after going quiet", ceiling(120), interval=0.5)
    assert done["detector_replica"]["malloc_arena_max"] == "2" and done["detector_replica"]["rss_mib"] > 0
    # the payloads of the calls between processes travel inside Ray's RPCs, not its shared object store
    import ray

    system_config = ray._private.worker._global_node._ray_params._system_config
    assert system_config["max_direct_call_object_size"] == 300_000 + 2**20
    assert system_config["metrics_report_interval_ms"] == 500  # the caller's own entries kept


def test_info_lists_the_edge_bounds(http):
    edge = http.get("/v1/info").json()["service"]["edge"]
    assert edge["max_header_bytes"] == 32 * 1024 and edge["max_body_bytes"] == 300_000
    assert edge["header_timeout_s"] > 0 and edge["max_uploads_per_client"] > 0


def test_metrics_present(service, http, uploads):
    http.post("/v1/detect", content=uploads["coffee.jpg"], headers={"content-type": "image/jpeg"})
    http.post("/v1/detect", content=b"\xff" * 400_000, headers={"content-type": "image/jpeg"})
    http.post("/v1/detect", content=b"hello", headers={"content-type": "text/plain"})
    wanted = ("ray_foclip_requests_total", "ray_foclip_errors_total", "ray_foclip_request_latency_seconds_bucket",
              "ray_foclip_batch_size_bucket", "ray_foclip_score_color_bucket", "ray_foclip_drop_bucket")
    tagged = ('code="body_too_large"', 'status="415"')
    # Ray exports each series on its own schedule: wait for every one asserted below, not the first few.
    text = ""

    def every_series() -> bool:
        nonlocal text
        text = httpx.get(service.metrics_url, timeout=ceiling(30)).text
        return all(w in text for w in wanted + tagged)

    wait_until(every_series, "Ray to export every ray_foclip_* series", 120, interval=0.5)
    missing = [w for w in wanted if w not in text]
    assert not missing, missing
    assert all(t in text for t in tagged), [t for t in tagged if t not in text]
    # Ray Serve's own batching metrics sit beside ours
    assert "ray_serve_" in text


def test_open_inference_protocol_v2(service, uploads, good_names):
    """The v2 routes in both topologies, through the real client (tritonclient; full cases in test_v2_tritonclient.py)."""
    import numpy as np

    httpclient = pytest.importorskip("tritonclient.http")
    url = service.url.removeprefix("http://")
    names = [good_names[0], "truncated.jpg", good_names[1]]
    with httpclient.InferenceServerClient(url) as client, httpx.Client(base_url=service.url) as plain:
        assert client.is_server_ready() and client.is_model_ready("foclip")
        inp = httpclient.InferInput("IMAGE", [len(names)], "BYTES")
        inp.set_data_from_numpy(np.array([uploads[n] for n in names], dtype=object))
        result = client.infer("foclip", [inp], headers=dict(KEY_HEADER))
        v1 = plain.post("/v1/detect", headers=KEY_HEADER,
                        files=[("f", (n, uploads[n], "application/octet-stream")) for n in names]).json()["results"]
    errors = result.as_numpy("ERROR")
    assert errors[1].startswith(b"truncated: ") and errors[0] == errors[2] == b""
    for i in (0, 2):  # same detection path, same numbers as /v1/detect (float32 on the wire)
        assert result.as_numpy("SCORE_COLOR")[i] == pytest.approx(v1[i]["score_color"], abs=1e-4)
        assert bool(result.as_numpy("TAMPERED")[i]) == v1[i]["tampered"]
