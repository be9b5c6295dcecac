"""Overload over real HTTP: a burst past the bounded queue gets 503 + Retry-After, the rest are scored.

`foclip serve` runs in a subprocess (its own local Ray, so the in-process service of
test_service.py is untouched) with one request in flight per replica (`--max-ongoing 1`), one queued
request (`--max-queued 1`) and a 2 s batch wait, so a burst of simultaneous requests cannot all fit:
Ray Serve's router must refuse the overflow with the deployment's BackpressureConfig (503, Retry-After).
The burst is released at once by a barrier; the batch wait holds the first request for 2 s, far longer
than 12 threads take to send, even on a loaded machine. Every other wait is a ceiling (tests/waits.py).
"""

from __future__ import annotations

import concurrent.futures as cf
import threading

import httpx
import pytest
from waits import ceiling

pytest.importorskip("ray.serve")

BURST = 12  # 1 in flight + 1 queued leaves at least 10 to refuse


def test_burst_past_the_queue_gets_503_with_retry_after(tiny_bundle, uploads, serve_subprocess):
    flags = ("--max-ongoing", "1", "--max-queued", "1", "--batch-wait-ms", f"{ceiling(2) * 1000:.0f}",
             "--max-batch", "8", "--threads", "1", "--timeout-s", str(ceiling(120)))
    with serve_subprocess(tiny_bundle, *flags) as (_proc, url):
        body, headers = uploads["astronaut.jpg"], {"content-type": "image/jpeg"}
        start = threading.Barrier(BURST)

        def call(client: httpx.Client) -> httpx.Response:
            start.wait(ceiling(120))  # release all requests at once
            return client.post("/v1/detect", content=body, headers=headers)

        limits = httpx.Limits(max_connections=BURST, max_keepalive_connections=BURST)
        with httpx.Client(base_url=url, timeout=ceiling(180), limits=limits) as client:
            with cf.ThreadPoolExecutor(BURST) as pool:
                answers = list(pool.map(lambda _: call(client), range(BURST)))
            by_code: dict[int, list[httpx.Response]] = {}
            for r in answers:
                by_code.setdefault(r.status_code, []).append(r)
            counts = {code: len(rs) for code, rs in sorted(by_code.items())}
            print(f"burst of {BURST}: status counts {counts}")

            assert set(by_code) == {200, 503}, counts
            for r in by_code[503]:
                assert r.headers.get("retry-after") == "1", dict(r.headers)
            for r in by_code[200]:
                (item,) = r.json()["results"]
                assert item["error"] is None and 0 <= item["score_color"] <= 100

            after = client.post("/v1/detect", content=body, headers=headers)
            assert after.status_code == 200
            assert after.json()["results"][0]["error"] is None
