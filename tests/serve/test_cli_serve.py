"""`foclip serve` as a user runs it: option errors, and a clean SIGTERM that lets in-flight requests finish."""

from __future__ import annotations

import signal
import threading

import httpx
import pytest
from waits import ceiling, wait_until

from foclip.cli.main import main


def test_missing_bundle_is_one_line_error(tmp_path, capsys):
    assert main(["serve", str(tmp_path / "nope")]) == 1
    err = " ".join(capsys.readouterr().err.split())  # rich wraps long lines
    assert "is not a folder" in err and "Traceback" not in err


def test_unset_api_key_variable_is_refused(tiny_bundle, capsys, monkeypatch):
    monkeypatch.delenv("FOCLIP_NO_SUCH_KEY", raising=False)
    assert main(["serve", str(tiny_bundle), "--api-key-env", "FOCLIP_NO_SUCH_KEY"]) == 1
    assert "FOCLIP_NO_SUCH_KEY" in " ".join(capsys.readouterr().err.split())


def test_out_of_range_option_is_refused(tiny_bundle, capsys):
    assert main(["serve", str(tiny_bundle), "--replicas", "0"]) == 1
    assert "--replicas" in " ".join(capsys.readouterr().err.split())


@pytest.mark.parametrize("topology", ["split", "fused"])
def test_sigterm_lets_in_flight_requests_finish(tiny_bundle, uploads, serve_subprocess, serve_in_flight, topology):
    # A long batch wait (6 s x the scale: /v1/info answers slowly on a loaded machine) keeps the request in flight
    # when SIGTERM arrives; the signal is sent only once the service counts the request in flight (a
    # request that arrives after it is rightly refused).
    flags = ("--batch-wait-ms", f"{ceiling(6) * 1000:.0f}", "--max-batch", "8", "--threads", "1",
             "--topology", topology, "--timeout-s", str(ceiling(120)))
    with serve_subprocess(tiny_bundle, *flags) as (proc, url):
        got: dict = {}

        def call() -> None:
            try:
                got["r"] = httpx.post(f"{url}/v1/detect", content=uploads["astronaut.jpg"],
                                      headers={"content-type": "image/jpeg"}, timeout=ceiling(180))
            except httpx.HTTPError as exc:  # reported by the assert below, not lost in the thread
                got["r"] = exc

        t = threading.Thread(target=call)
        t.start()
        wait_until(lambda: serve_in_flight(url) or "r" in got, "the request to be in flight", 120, interval=0.05)
        assert "r" not in got, "the request finished before SIGTERM: make --batch-wait-ms longer"
        proc.send_signal(signal.SIGTERM)
        t.join(ceiling(240))
        assert isinstance(got.get("r"), httpx.Response), got
        assert got["r"].status_code == 200
        assert got["r"].json()["results"][0]["error"] is None
        assert proc.wait(ceiling(300)) == 0
