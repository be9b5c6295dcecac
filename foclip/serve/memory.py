"""Giving a replica's freed memory back to the OS: ``malloc_trim`` after work and once a process goes quiet.

glibc keeps freed blocks in its heaps (one per thread arena) and returns pages to the OS only when the
top of a heap is free or ``malloc_trim`` is called. A replica that decoded a burst of large images, or
an HTTP replica or proxy that held many request bodies at once, otherwise keeps its peak RSS for good
(measured: docs/serve.md, "Memory that comes back"). Three measures here:

* ``malloc_trim`` after every detector call (:class:`foclip.serve.deployment.DetectorCore`), in the
  worker thread;
* :class:`IdleTrim`: once a process (proxy, ingress, detector) has had no request for ``quiet_s``
  seconds and has nothing in flight, one ``gc.collect()`` and one ``malloc_trim(0)`` (all arenas): the
  memory the request path freed outside detector calls (bodies, parsing, Ray's serialisation) goes
  back too. Nothing runs while requests keep coming;
* :data:`ARENA_ENV`: detector replicas start with ``MALLOC_ARENA_MAX=2``. Each new thread that meets a
  locked arena otherwise gets one of its own (up to 8 per core); their scattered live blocks hold pages
  that no trim returns. It must be in the environment when the process starts: glibc fixes its arena
  limit once more than 8 arenas exist, which in a Ray worker is before foclip's code runs, so
  ``mallopt(M_ARENA_MAX)`` from the replica changes nothing (measured).

The request payloads themselves stay out of Ray's shared-memory object store (``inline_payloads`` in
foclip/serve/service.py). On a C library without ``malloc_trim`` (musl, macOS) the trims are no-ops.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ctypes.util
import functools
import gc
import os
import time
from collections.abc import Callable
from typing import Any

QUIET_S = 1.0  # idle time before the trim (a gap shorter than this is traffic, not idleness)
POLL_S = 0.5


def rss_mib() -> float | None:
    """This process's resident set in MiB (Linux; None elsewhere)."""
    try:
        with open(f"/proc/{os.getpid()}/statm") as f:
            return round(int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20, 1)
    except (OSError, ValueError, IndexError):
        return None


@functools.cache
def libc_trim() -> Callable[[int], int] | None:
    """glibc's ``malloc_trim`` (None elsewhere): gives freed heap pages back to the OS."""
    name = ctypes.util.find_library("c")
    try:
        fn = ctypes.CDLL(name).malloc_trim
    except (OSError, AttributeError, TypeError):
        return None
    fn.argtypes, fn.restype = [ctypes.c_size_t], ctypes.c_int
    return fn


ARENA_MAX = 2
ARENA_ENV = {"MALLOC_ARENA_MAX": str(ARENA_MAX)}  # the detector replicas' runtime_env (module docstring)


class IdleTrim:
    """One ``gc.collect()`` + ``malloc_trim(0)`` each time the replica goes quiet after work.

    Call :meth:`touch` when work finishes and :meth:`ensure_running` from code on the
    replica's event loop (it starts the watcher task there, once per loop).

    Args:
        quiet_s: seconds without :meth:`touch` before trimming.
        busy: returns True while work is in flight (no trim then, however long since the last touch).
        trim: the trim function (glibc's by default; None disables trimming).
        poll_s: how often the watcher looks.
    """

    def __init__(self, quiet_s: float = QUIET_S, busy: Callable[[], bool] | None = None,
                 trim: Callable[[int], int] | None | str = "libc", poll_s: float = POLL_S) -> None:
        self.quiet_s = quiet_s
        self.busy = busy or (lambda: False)
        self.trim = libc_trim() if trim == "libc" else trim
        self.poll_s = poll_s
        self.last = time.monotonic()
        self.dirty = False  # work happened since the last trim
        self.trims = 0
        self._task: asyncio.Task[Any] | None = None

    def touch(self) -> None:
        """Record activity (call when work ends; ``busy`` covers the time it runs): the next quiet period ends with a trim."""
        self.last = time.monotonic()
        self.dirty = True

    def ensure_running(self) -> None:
        """Start the watcher on the running loop unless it already runs there."""
        if self.trim is None:
            return
        loop = asyncio.get_running_loop()
        if self._task is None or self._task.done() or self._task.get_loop() is not loop:
            self._task = loop.create_task(self._watch())

    def due(self, now: float | None = None) -> bool:
        """Whether a trim is due now: work happened, nothing is in flight, and it has been quiet long enough."""
        now = time.monotonic() if now is None else now
        return self.dirty and not self.busy() and now - self.last >= self.quiet_s

    def run_once(self) -> None:
        """Collect and trim now (blocking; the watcher calls it in a worker thread)."""
        gc.collect()
        if self.trim is not None:
            self.trim(0)
        self.trims += 1

    def info(self) -> dict[str, Any]:
        """What this process does to give memory back (for ``/v1/info``)."""
        return {"idle_trims": self.trims, "trim": self.trim is not None, "quiet_s": self.quiet_s,
                "malloc_arena_max": os.environ.get("MALLOC_ARENA_MAX"), "rss_mib": rss_mib()}

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(self.poll_s)
            if self.due():
                self.dirty = False  # a request arriving during the trim sets it again
                with contextlib.suppress(Exception):  # a failed trim must never take the replica down
                    await asyncio.to_thread(self.run_once)
