"""Issue 24, point 2: one server per port; a taken port is refused with one line before Ray starts."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

import pytest

from foclip.errors import InputError
from foclip.serve.service import check_port_free

SCALE = float(os.environ.get("FOCLIP_TEST_TIMEOUT_SCALE", "1"))


@pytest.fixture
def listener():
    """A loopback port that another program listens on (with SO_REUSEPORT, as Ray's proxy did)."""
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    s.bind(("127.0.0.1", 0))
    s.listen()
    yield s.getsockname()[1]
    s.close()


def test_a_taken_port_is_refused_even_when_its_owner_allows_sharing(listener):
    with pytest.raises(InputError) as info:
        check_port_free("127.0.0.1", listener)
    assert "already in use" in str(info.value)
    with pytest.raises(InputError):  # the wildcard address overlaps the loopback listener
        check_port_free("0.0.0.0", listener)


def test_a_free_port_passes_and_time_wait_does_not_count():
    a = socket.socket()
    a.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn's own bind; Linux asks both sides
    a.bind(("127.0.0.1", 0))
    a.listen()
    port = a.getsockname()[1]
    c = socket.create_connection(("127.0.0.1", port))
    conn, _ = a.accept()
    conn.close()  # the server side closes first: its end of the connection stays in TIME_WAIT
    c.close()
    a.close()
    check_port_free("127.0.0.1", port)


def test_second_serve_on_a_taken_port_exits_1_with_one_line(tiny_bundle, listener):
    t0 = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "foclip.cli.main", "serve", str(tiny_bundle), "--port", str(listener)],
        check=False, capture_output=True, text=True, timeout=300 * SCALE,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "HF_HUB_OFFLINE": "1"})
    seconds = time.monotonic() - t0
    # The tiny bundle's random-weights notice (a wrapped note) comes first; the error is its own line.
    err = proc.stderr[proc.stderr.find("error:"):].strip()
    print(f"second serve on a taken port: exit {proc.returncode} after {seconds:.1f} s: {err}")
    assert proc.returncode == 1
    assert len(err.splitlines()) == 1 and "already in use" in err and "Traceback" not in proc.stderr
    assert "serving on" not in proc.stdout
