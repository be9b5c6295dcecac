"""Locust load for `foclip serve`: a mix of good and bad uploads, bounded in count and time.

Driven by scripts/loadtest/run.py (headless); settings come from environment variables:

* ``LOADTEST_PAYLOADS``: folder with ``good/*`` images and the bad bodies (``truncated.jpg``,
  ``text.jpg``, ``bomb.png``);
* ``LOADTEST_REQUESTS``: stop after this many requests (0 = only the time bound ``-t``);
* ``LOADTEST_OUT``: JSON file written at the end: per-request (t, kind, status, ms, images), t in
  Unix seconds (so the runner can line requests up with the moment it killed a replica).

Each kind has the status it should get; anything else is a locust failure. Only 127.0.0.1 is a
sensible ``--host``: this generates heavy load.
"""

from __future__ import annotations

import itertools
import json
import os
import random
import time
from pathlib import Path

import gevent
from locust import events, task
from locust.contrib.fasthttp import FastHttpUser
from locust.exception import StopUser
from urllib3 import encode_multipart_formdata

PAYLOADS = Path(os.environ.get("LOADTEST_PAYLOADS", "payloads"))
MAX_REQUESTS = int(os.environ.get("LOADTEST_REQUESTS", "0"))
OUT = os.environ.get("LOADTEST_OUT", "loadtest_requests.json")

GOOD = [(p.name, p.read_bytes()) for p in sorted((PAYLOADS / "good").glob("*"))]
BAD = {name: (PAYLOADS / name).read_bytes() for name in ("truncated.jpg", "text.jpg", "bomb.png")}
LOG: list[tuple[float, str, int, float, int]] = []
_count = itertools.count(1)


def _ctype(name: str) -> str:
    return "image/png" if name.endswith(".png") else "image/jpeg"


class DetectUser(FastHttpUser):
    """A closed-loop client: sends the next request as soon as the last one is answered."""

    def _send(self, kind: str, expected: int, images: int, **kwargs) -> None:
        n = next(_count)
        if MAX_REQUESTS and n > MAX_REQUESTS:
            # quit() from a user's own greenlet would kill that greenlet mid-quit: run it in its own.
            if n == MAX_REQUESTS + 1:
                gevent.spawn(self.environment.runner.quit)
            raise StopUser()
        t, wall = time.monotonic(), time.time()
        with self.client.post("/v1/detect", name=kind, catch_response=True, **kwargs) as r:
            LOG.append((wall, kind, r.status_code, (time.monotonic() - t) * 1000.0, images))
            if r.status_code == expected:
                r.success()
            else:
                r.failure(f"{kind}: got {r.status_code}, expected {expected}")

    @task(84)
    def good_raw(self) -> None:
        name, body = random.choice(GOOD)
        self._send("good", 200, 1, data=body, headers={"content-type": _ctype(name)})

    @task(5)
    def good_multipart_batch(self) -> None:
        picks = random.sample(GOOD, k=min(4, len(GOOD)))
        body, ctype = encode_multipart_formdata([("files", (name, data, _ctype(name))) for name, data in picks])
        self._send("good_batch4", 200, len(picks), data=body, headers={"content-type": ctype})

    @task(4)
    def truncated(self) -> None:
        self._send("bad_truncated", 422, 1, data=BAD["truncated.jpg"], headers={"content-type": "image/jpeg"})

    @task(3)
    def text_as_jpg(self) -> None:
        self._send("bad_text_as_jpg", 422, 1, data=BAD["text.jpg"], headers={"content-type": "image/jpeg"})

    @task(2)
    def bomb(self) -> None:
        self._send("bad_pixel_bomb", 422, 1, data=BAD["bomb.png"], headers={"content-type": "image/png"})

    @task(2)
    def wrong_type(self) -> None:
        self._send("bad_media_type", 415, 0, data=b"hello", headers={"content-type": "text/plain"})


@events.quitting.add_listener
def _dump(environment, **_kw) -> None:
    tmp = OUT + ".tmp"
    with open(tmp, "w") as f:
        json.dump(LOG, f)
    os.replace(tmp, OUT)
