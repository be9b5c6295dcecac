"""Waiting in tests: a readiness signal, and a generous ceiling scaled by one setting.

A test that waits for a service or a process polls for a sign that the thing it waits for has
happened (a health endpoint answering, a manifest line, a request counted in flight) and gives up
only at a ceiling far above what a quiet machine needs. ``FOCLIP_TEST_TIMEOUT_SCALE`` (default 1)
multiplies every ceiling, for machines slower or busier than a shared 2-core CI runner. Ceilings
only matter when something is wrong: a passing test never waits for one.

Tests import this module as ``waits`` (pyproject's ``pythonpath = ["tests"]``; with
``--import-mode=importlib`` test files cannot import each other or conftest).
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable
from typing import TypeVar

import pytest

SCALE_ENV = "FOCLIP_TEST_TIMEOUT_SCALE"

T = TypeVar("T")


def scale() -> float:
    """The factor every test ceiling is multiplied by.

    Returns:
        ``float(FOCLIP_TEST_TIMEOUT_SCALE)``, 1.0 when unset.

    Raises:
        pytest.UsageError: the variable is not a positive number.
    """
    raw = os.environ.get(SCALE_ENV, "1")
    try:
        value = float(raw)
    except ValueError:
        value = float("nan")
    if not value > 0:  # also refuses nan
        raise pytest.UsageError(f"{SCALE_ENV} | {raw!r} is not a positive number. Expected e.g. 1, 2.5 or 4.")
    return value


def ceiling(seconds: float) -> float:
    """A wait ceiling: ``seconds`` (long enough for a loaded 2-core machine) times :func:`scale`.

    Args:
        seconds: the ceiling at scale 1.

    Returns:
        The scaled ceiling in seconds.
    """
    return seconds * scale()


def wait_until(condition: Callable[[], T], what: str, seconds: float, interval: float = 0.1) -> T:
    """Poll ``condition`` until it returns something truthy; fail the test at the scaled ceiling.

    Args:
        condition: called every ``interval`` seconds; may itself call ``pytest.fail`` (e.g. when the
            process being waited for has exited).
        what: what is awaited, for the failure message (``"foclip serve to answer /healthz"``).
        seconds: the ceiling at scale 1 (multiplied by :func:`scale`).
        interval: seconds between polls.

    Returns:
        The first truthy value ``condition`` returned.

    Raises:
        pytest.fail.Exception: ``condition`` stayed falsy past the ceiling.
    """
    limit = ceiling(seconds)
    t0 = time.monotonic()
    while True:
        value = condition()
        if value:
            return value
        waited = time.monotonic() - t0
        if waited > limit:
            pytest.fail(f"waited {waited:.0f} s for {what} (ceiling {seconds:g} s x {SCALE_ENV}={scale():g}); "
                        f"on a machine slower than that, raise {SCALE_ENV}")
        time.sleep(interval)


def terminate(proc: subprocess.Popen, seconds: float = 120.0) -> None:
    """SIGTERM ``proc`` and wait for it (``seconds`` x the scale), then SIGKILL it if it still runs."""
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(ceiling(seconds))
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
