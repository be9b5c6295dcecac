"""The real Open Inference Protocol client (tritonclient) against a running `foclip serve`.

One server for the module (`foclip serve` in a subprocess, its own local Ray, the default split
topology; the fused one is covered in test_service.py), started here so that readiness is polled
with tritonclient from the moment the process starts. Verdicts are compared with `foclip detect`
run on the same files.
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

httpclient = pytest.importorskip("tritonclient.http")
pytest.importorskip("ray.serve")

from tritonclient.utils import InferenceServerException

KEY = "v2-triton-key"
HEADERS = {"x-api-key": KEY}
OUTPUTS = ("SCORE_COLOR", "SCORE_GRAY", "DROP", "TAMPERED", "ERROR")
SCALE = float(os.environ.get("FOCLIP_TEST_TIMEOUT_SCALE", "1"))


@pytest.fixture(scope="module")
def files(tmp_path_factory, uploads, good_names, bad_codes) -> list:
    """17 image files, good and bad mixed: the 4 good uploads, the 4 bad ones, 9 re-encoded goods."""
    from PIL import Image

    d = tmp_path_factory.mktemp("v2files")
    names = [*good_names, *bad_codes]
    for name in names:
        (d / name).write_bytes(uploads[name])
    for i in range(9):
        src = good_names[i % len(good_names)]
        with Image.open(io.BytesIO(uploads[src])) as img:
            img = img.convert("RGB").rotate(90 * (i // 4 + 1), expand=True)
            buf = io.BytesIO()
            img.save(buf, "JPEG", quality=80 + i)
        name = f"variant{i}.jpg"
        (d / name).write_bytes(buf.getvalue())
        names.append(name)
    order = [names[k] for k in (0, 4, 8, 1, 9, 5, 10, 2, 11, 6, 12, 3, 13, 7, 14, 15, 16)]  # bad ones spread
    return [d / n for n in order]


@pytest.fixture(scope="module")
def expected(tiny_bundle, files, tmp_path_factory) -> dict[str, dict]:
    """`foclip detect` on the same files: file name -> its JSONL record."""
    out = tmp_path_factory.mktemp("v2detect") / "detect.jsonl"
    cmd = [sys.executable, "-m", "foclip.cli.main", "detect", str(tiny_bundle), *map(str, files),
           "--format", "jsonl", "--out", str(out), "--threads", "1", "--exit-zero"]
    subprocess.run(cmd, check=True, capture_output=True, timeout=300 * SCALE)
    records = [json.loads(line) for line in out.read_text().splitlines() if line.strip()]
    return {os.path.basename(r["id"]): r for r in records}


@pytest.fixture(scope="module")
def server(tiny_bundle):
    """`foclip serve` on a free port, with tritonclient polling readiness from the process's start.

    Yields:
        ``(host:port, observations)``: every readiness poll before the first ready answer, as
        ``(seconds since start, answer)`` where answer is True, False (an HTTP answer other than
        200) or the exception's class name (nothing listening yet).
    """
    from foclip.serve.service import free_port

    port = free_port()
    url = f"127.0.0.1:{port}"
    cmd = [sys.executable, "-m", "foclip.cli.main", "serve", str(tiny_bundle), "--port", str(port),
           "--threads", "1", "--max-batch", "16", "--batch-wait-ms", "20", "--max-images", "32",
           "--max-body-mb", "1", "--api-key-env", "FOCLIP_V2_TEST_KEY"]
    env = {**os.environ, "FOCLIP_V2_TEST_KEY": KEY}
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    observations: list[tuple[float, object]] = []
    t0 = time.monotonic()
    client = httpclient.InferenceServerClient(url, connection_timeout=2.0, network_timeout=10.0)
    try:
        while True:
            try:
                answer: object = client.is_server_ready()
            except Exception as exc:  # noqa: BLE001 - nothing listening yet, or the proxy still starting
                answer = exc.__class__.__name__
            observations.append((time.monotonic() - t0, answer))
            if answer is True:
                break
            if proc.poll() is not None:
                pytest.fail(f"foclip serve exited with {proc.returncode}:\n{proc.stdout.read()}")
            if time.monotonic() - t0 > 240 * SCALE:
                pytest.fail("foclip serve did not become ready in time")
            time.sleep(0.1)
        yield url, observations
    finally:
        client.close()
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@pytest.fixture(scope="module")
def client(server):
    with httpclient.InferenceServerClient(server[0], network_timeout=120.0) as c:
        yield c


def infer(client, paths, binary: bool, outputs=OUTPUTS, headers=HEADERS):
    """Send ``paths`` through tritonclient: binary tensors, or JSON with base64 strings."""
    data = [p.read_bytes() for p in paths]
    arr = np.array(data if binary else [base64.b64encode(b) for b in data], dtype=object)
    inp = httpclient.InferInput("IMAGE", [len(data)], "BYTES")
    inp.set_data_from_numpy(arr, binary_data=binary)
    outs = [httpclient.InferRequestedOutput(n, binary_data=binary) for n in outputs]
    # A fresh dict each call: tritonclient adds Inference-Header-Content-Length to the dict it is given.
    return client.infer("foclip", [inp], outputs=outs, headers=dict(headers))


def assert_same_as_detect(result, paths, expected) -> None:
    errors = [e.decode() if isinstance(e, bytes) else e for e in result.as_numpy("ERROR")]
    color, gray, drop = (result.as_numpy(n) for n in ("SCORE_COLOR", "SCORE_GRAY", "DROP"))
    tampered = result.as_numpy("TAMPERED")
    assert color.dtype == np.float32 and tampered.dtype == bool and len(errors) == len(paths)
    for i, p in enumerate(paths):
        want = expected[p.name]
        if want["error"]:
            assert errors[i].startswith(want["error"]["code"] + ": "), (p.name, errors[i])
            assert np.isnan(color[i]) and not tampered[i]
            continue
        assert errors[i] == "", (p.name, errors[i])
        assert bool(tampered[i]) == want["tampered"], p.name
        # float32 on the wire: within 1e-5 of foclip detect's float64 on the 0..100 scale (and drop)
        assert abs(float(color[i]) - want["score_color"]) <= 1e-5 * max(1.0, abs(want["score_color"])), p.name
        assert abs(float(gray[i]) - want["score_gray"]) <= 1e-5 * max(1.0, abs(want["score_gray"])), p.name
        assert abs(float(drop[i]) - want["drop"]) <= 1e-5, p.name


def test_ready_only_after_the_replicas_self_check(server, client):
    _, observations = server
    # Polling began before anything listened: the first answers are not "ready"; the first True is
    # the last observation (the fixture stops there), and then the model reports its self-check passed.
    assert observations[-1][1] is True
    assert len(observations) > 1 and all(a is not True for _, a in observations[:-1])
    assert client.is_server_live() and client.is_model_ready("foclip") and client.is_model_ready("foclip", "1")
    assert not client.is_model_ready("clip")
    params = client.get_model_metadata("foclip", headers=HEADERS)["parameters"]
    assert params["self_check"] == "passed"


def test_metadata_lets_a_generic_client_build_the_request(client):
    server = client.get_server_metadata(headers=HEADERS)
    assert server["name"] == "foclip" and "binary_tensor_data" in server["extensions"]
    meta = client.get_model_metadata("foclip", model_version="1", headers=HEADERS)
    assert meta["name"] == "foclip" and meta["versions"] == ["1"]
    assert meta["inputs"] == [{"name": "IMAGE", "datatype": "BYTES", "shape": [-1]}]
    assert [(o["name"], o["datatype"]) for o in meta["outputs"]] == [
        ("SCORE_COLOR", "FP32"), ("SCORE_GRAY", "FP32"), ("DROP", "FP32"), ("TAMPERED", "BOOL"), ("ERROR", "BYTES")]
    assert meta["parameters"]["score_scale"] == 100.0


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_17_mixed_images_match_foclip_detect(client, files, expected, binary):
    assert len(files) == 17 and sum(1 for p in files if expected[p.name]["error"]) == 4
    assert_same_as_detect(infer(client, files, binary), files, expected)


def test_one_image_and_requested_outputs(client, files, expected):
    result = infer(client, files[:1], True, outputs=("TAMPERED", "ERROR"))
    assert result.as_numpy("SCORE_COLOR") is None  # not asked for, not sent
    assert bool(result.as_numpy("TAMPERED")[0]) == expected[files[0].name]["tampered"]
    full = infer(client, files[:1], False)
    assert_same_as_detect(full, files[:1], expected)


def test_api_key_missing_or_wrong(client, files):
    for headers in ({}, {"x-api-key": "wrong"}, {"authorization": "Bearer wrong"}):
        with pytest.raises(InferenceServerException) as exc:
            infer(client, files[:1], True, headers=headers)
        assert exc.value.status() == "401" and "API key" in exc.value.message()
    assert infer(client, files[:1], True, headers={"authorization": f"Bearer {KEY}"}).as_numpy("ERROR")[0] == b""


def test_body_over_the_limit(client):
    inp = httpclient.InferInput("IMAGE", [1], "BYTES")
    inp.set_data_from_numpy(np.array([b"\xff" * (1024 * 1024 + 1)], dtype=object))
    with pytest.raises(InferenceServerException) as exc:
        client.infer("foclip", [inp], headers=dict(HEADERS))
    assert exc.value.status() == "413"


def test_every_layer_answers_v2_errors_in_one_shape_and_rays_routes_need_the_key(server):
    # Issue 32 item 6 through a running service: the framework (405), foclip's proxy edge (413 on the
    # body, 413 on JSON past its bound) and Ray's own /-/ routes (behind the key).
    import httpx

    base = f"http://{server[0]}"
    with httpx.Client(timeout=120.0) as http:
        shaped = [http.put(f"{base}/v2/models/foclip/infer", headers=HEADERS),
                  http.post(f"{base}/v2/models/foclip/infer", content=b"x" * (1024 * 1024 + 1), headers=HEADERS),
                  http.post(f"{base}/v2/models/foclip/infer", headers=HEADERS,
                            content=b'{"inputs": [], "junk": [' + b"[]," * 30_000 + b"[]]}")]
        assert [r.status_code for r in shaped] == [405, 413, 413]
        for r in shaped:
            assert set(r.json()) == {"error"} and isinstance(r.json()["error"], str), r.text
        for path in ("/-/routes", "/-/healthz"):
            refused = http.get(base + path)
            assert refused.status_code == 401 and refused.json()["error"]["code"] == "unauthorized"
            assert http.get(base + path, headers=HEADERS).status_code == 200


def test_aio_client_concurrent_requests(server, files, expected):
    import tritonclient.http.aio as aioclient

    async def run() -> list:
        async with aioclient.InferenceServerClient(server[0]) as c:
            assert await c.is_server_ready()

            async def one(k: int):
                part = files[k:k + 3]
                data = np.array([p.read_bytes() for p in part], dtype=object)
                inp = aioclient.InferInput("IMAGE", [len(part)], "BYTES")
                inp.set_data_from_numpy(data)
                return part, await c.infer("foclip", [inp], headers=dict(HEADERS))

            return await asyncio.gather(*(one(k) for k in range(0, 15, 3)))

    for part, result in asyncio.run(run()):
        assert_same_as_detect(result, part, expected)
