"""Issue 24, point 3: request heads, slow clients and open uploads are bounded at the HTTP edge.

The edge (foclip/serve/edge.py) runs here in a plain uvicorn server on loopback, as Ray Serve's
proxy runs it, in front of a small ASGI app that records what reached it."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import socket
import threading
import time

import pytest
from waits import ceiling, wait_until

uvicorn = pytest.importorskip("uvicorn")

from foclip.serve.edge import BodyGate, EdgeLimits, edge_protocol

SCALE = ceiling(1.0)
# Timeouts long enough that no request is cut short on a loaded machine; the two tests of the
# timeouts themselves run against a server with 1 s ones (SHORT).
LIMITS = EdgeLimits(max_header_bytes=32 * 1024, max_header_line_bytes=8 * 1024, header_timeout_s=60.0 * SCALE,
                    body_timeout_s=60.0 * SCALE, max_body_bytes=1024 * 1024, max_uploads_per_client=2)
SHORT = dataclasses.replace(LIMITS, header_timeout_s=1.0, body_timeout_s=1.0)


class Recorder:
    """An ASGI app that answers 200 with the body length, counting the requests that reached it.

    ``/slow`` answers after half a second: requests pipelined behind it wait for a pending response.
    """

    def __init__(self) -> None:
        self.calls = 0

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return
        self.calls += 1
        body = b""
        while True:
            m = await receive()
            body += m.get("body", b"")
            if not m.get("more_body"):
                break
        if scope["path"] == "/slow":
            await asyncio.sleep(0.5)
        out = json.dumps({"received": len(body), "path": scope["path"]}).encode()
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(out)).encode())]})
        await send({"type": "http.response.body", "body": out})


@contextlib.contextmanager
def edge_server(limits: EdgeLimits):
    """(port, recorder) of a uvicorn server with the edge protocol and body gate, in a thread.

    The recorder's ``gate`` attribute is the BodyGate in front of it (its ``open_uploads``: a
    readiness signal for tests that hold uploads open).
    """
    from uvicorn.protocols.http.auto import AutoHTTPProtocol

    app = Recorder()
    app.gate = BodyGate(app, limits)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    config = uvicorn.Config(app.gate, http=edge_protocol(AutoHTTPProtocol, limits),
                            lifespan="off", log_level="critical", access_log=False)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=lambda: asyncio.run(server.serve(sockets=[sock])), daemon=True)
    thread.start()
    wait_until(lambda: server.started, "the edge server to start", 120)
    try:
        yield sock.getsockname()[1], app
    finally:
        server.should_exit = True
        thread.join(ceiling(30))


@pytest.fixture
def edge():
    with edge_server(LIMITS) as e:
        yield e


@pytest.fixture
def edge_short():
    """The edge with 1 s head and body timeouts (what the timeout tests measure)."""
    with edge_server(SHORT) as e:
        yield e


def exchange(port: int, data: bytes, wait_s: float = 30.0) -> bytes:
    """Send ``data`` and read until the server closes or answers in full."""
    with socket.create_connection(("127.0.0.1", port), timeout=wait_s * SCALE) as s:
        with contextlib.suppress(OSError):  # the server may close while a large head is still going out
            s.sendall(data)
        out = b""
        with contextlib.suppress(OSError):
            while chunk := s.recv(65536):
                out += chunk
                if b"\r\n\r\n" in out and b"Connection: close" not in out and b"connection: close" not in out:
                    head, _, body = out.partition(b"\r\n\r\n")
                    length = [int(ln.split(b":")[1]) for ln in head.split(b"\r\n") if ln.lower().startswith(b"content-length")]
                    if length and len(body) >= length[0]:
                        break
        return out


def status(response: bytes) -> int:
    return int(response.split(b" ", 2)[1])


def test_a_32_mb_header_is_answered_431_without_reaching_the_app(edge):
    port, app = edge
    big = b"GET /v1/info HTTP/1.1\r\nhost: x\r\nx-pad: " + b"a" * (32 * 1024 * 1024) + b"\r\n\r\n"
    response = exchange(port, big)
    assert status(response) == 431 and b"headers_too_large" in response
    assert app.calls == 0


def test_many_small_header_lines_past_the_total_are_431(edge):
    port, app = edge
    lines = b"".join(b"x-h%d: %s\r\n" % (i, b"b" * 100) for i in range(400))  # 40 KB in 100-byte lines
    assert status(exchange(port, b"GET / HTTP/1.1\r\nhost: x\r\n" + lines + b"\r\n")) == 431
    assert app.calls == 0


def test_one_overlong_line_is_431_and_normal_heads_pass(edge):
    port, app = edge
    assert status(exchange(port, b"GET / HTTP/1.1\r\nhost: x\r\nx-a: " + b"c" * 9000 + b"\r\n\r\n")) == 431
    assert status(exchange(port, b"GET / HTTP/1.1\r\nhost: x\r\nx-a: " + b"c" * 7000 + b"\r\n\r\n")) == 200
    assert app.calls == 1


def read_responses(sock: socket.socket, n: int) -> list[bytes]:
    """Read ``n`` responses (each with a content-length), or fewer if the server closes first."""
    buf, out = b"", []
    while len(out) < n:
        while b"\r\n\r\n" in buf:
            head, _, rest = buf.partition(b"\r\n\r\n")
            length = next(int(ln.split(b":")[1]) for ln in head.split(b"\r\n") if ln.lower().startswith(b"content-length"))
            if len(rest) < length:
                break
            out.append(head + b"\r\n\r\n" + rest[:length])
            buf = rest[length:]
        if len(out) >= n:
            break
        chunk = sock.recv(65536)
        if not chunk:
            break
        buf += chunk
    return out


def test_a_head_pipelined_behind_a_pending_response_is_bounded_and_answered_in_order(edge):
    port, app = edge
    slow = b"GET /slow HTTP/1.1\r\nhost: x\r\n\r\n"
    big = b"GET /after HTTP/1.1\r\nhost: x\r\n" + b"".join(b"x-%d: %s\r\n" % (i, b"e" * 4000) for i in range(2000))
    with socket.create_connection(("127.0.0.1", port), timeout=30 * SCALE) as s:
        with contextlib.suppress(OSError):  # the server stops reading, then closes, while 8 MB are still going out
            s.sendall(slow + big)
        first, second = read_responses(s, 2)
    assert status(first) == 200 and b'"path": "/slow"' in first  # the pending response comes first
    assert status(second) == 431 and b"headers_too_large" in second
    assert app.calls == 1


def test_pipelined_requests_with_bodies_pass(edge):
    port, app = edge
    body = b"b" * 100_000  # far over the head bound: body bytes must not be counted as a head
    reqs = (b"GET /slow HTTP/1.1\r\nhost: x\r\n\r\n"
            + b"POST /one HTTP/1.1\r\nhost: x\r\ncontent-length: 100000\r\n\r\n" + body
            + b"GET /two HTTP/1.1\r\nhost: x\r\n\r\n")
    with socket.create_connection(("127.0.0.1", port), timeout=30 * SCALE) as s:
        s.sendall(reqs)
        got = read_responses(s, 3)
    assert [status(r) for r in got] == [200, 200, 200]
    assert [json.loads(r.partition(b"\r\n\r\n")[2])["path"] for r in got] == ["/slow", "/one", "/two"]
    assert b'"received": 100000' in got[1] and app.calls == 3


def test_a_431_under_v2_has_the_protocols_error_body(edge):
    # Issue 32 item 6: at 9b2574a the edge answered /v2 paths {"error": {"code", "message"}} too.
    port, app = edge
    for target in (b"/v2/models/foclip/infer", b"http://x/v2/health/ready?a=1"):
        response = exchange(port, b"POST " + target + b" HTTP/1.1\r\nhost: x\r\nx-pad: " + b"a" * 10_000 + b"\r\n\r\n")
        body = json.loads(response.partition(b"\r\n\r\n")[2])
        assert status(response) == 431 and body == {"error": "a request header line exceeds 8192 bytes"}
    response = exchange(port, b"POST /v1/detect HTTP/1.1\r\nhost: x\r\nx-pad: " + b"a" * 10_000 + b"\r\n\r\n")
    assert json.loads(response.partition(b"\r\n\r\n")[2])["error"]["code"] == "headers_too_large"
    assert app.calls == 0


def test_a_slow_head_is_408_and_closed(edge_short):
    port, app = edge_short
    t0 = time.monotonic()
    response = exchange(port, b"GET / HTTP/1.1\r\nhost: x\r\n")  # the head never ends
    assert status(response) == 408 and b"header_timeout" in response
    assert time.monotonic() - t0 < 10 * SCALE and app.calls == 0


def test_a_stalled_body_is_408_in_the_gate_and_never_reaches_the_app(edge_short):
    port, app = edge_short
    response = exchange(port, b"POST /v1/detect HTTP/1.1\r\nhost: x\r\ncontent-length: 1000\r\n\r\n" + b"x" * 10)
    assert status(response) == 408 and b"body_timeout" in response
    assert app.calls == 0
    ok = exchange(port, b"POST / HTTP/1.1\r\nhost: x\r\ncontent-length: 5\r\n\r\nhello")
    assert status(ok) == 200 and b'"received": 5' in ok


def test_open_uploads_per_client_are_capped(edge):
    port, app = edge
    stalled = []
    for _ in range(2):
        s = socket.create_connection(("127.0.0.1", port))
        s.sendall(b"POST / HTTP/1.1\r\nhost: x\r\ncontent-length: 100\r\n\r\nab")
        stalled.append(s)
    wait_until(lambda: app.gate.open_uploads.get("127.0.0.1", 0) == 2, "the two stalled uploads to be open", 60)
    # Answered 429 before its 200 KB body has arrived: the rest of the body, sent after the answer, is not
    # taken for the next head (431), and the connection serves the next request.
    with socket.create_connection(("127.0.0.1", port), timeout=30 * SCALE) as s:
        s.sendall(b"POST / HTTP/1.1\r\nhost: x\r\ncontent-length: 200000\r\n\r\n" + b"z" * 10)
        response = b""
        while not response.endswith(b"}}"):  # the whole 429: head and JSON body
            chunk = s.recv(65536)
            assert chunk, response
            response += chunk
        assert status(response) == 429 and b"retry-after" in response.lower()
        s.sendall(b"z" * 199990 + b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
        nxt = b""
        while b'"received": 0,' not in nxt:
            chunk = s.recv(65536)
            assert chunk, nxt
            nxt += chunk
        assert status(nxt) == 200
    assert status(exchange(port, b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")) == 200  # no body: not an upload
    for s in stalled:
        s.close()


def test_keep_alive_requests_each_get_their_own_head_bound(edge):
    port, _ = edge
    pad = b"".join(b"x-%d: %s\r\n" % (i, b"d" * 4000) for i in range(5))
    req = b"GET / HTTP/1.1\r\nhost: x\r\n" + pad + b"\r\n"  # 20 KB each: under 32 KB, 60 KB together
    with socket.create_connection(("127.0.0.1", port), timeout=30 * SCALE) as s:
        for _ in range(3):
            s.sendall(req)
            out = b""
            while b'"received": 0,' not in out:
                chunk = s.recv(65536)
                assert chunk, out
                out += chunk
            assert status(out) == 200
