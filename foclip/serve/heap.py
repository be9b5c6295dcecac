"""Opt-in heap tracing of a replica, to tell Python-object growth from native growth in a soak.

Set ``FOCLIP_HEAP_TRACE_DIR`` in the environment of ``foclip serve`` (Ray's workers inherit it) and
each detector replica runs :mod:`tracemalloc` and, every ``FOCLIP_HEAP_TRACE_EVERY_S`` seconds
(default 60), rewrites ``<dir>/heap-<pid>.txt``: the replica's RSS, the bytes Python has allocated
and not freed, and the 15 source lines whose allocations grew most since the first report. RSS
that grows while the traced total stays flat is native memory (ONNX Runtime, the decoders, glibc's
heaps), not Python objects. Tracing slows Python allocation; it is for diagnosis, not production.
"""

from __future__ import annotations

import os
import time
import tracemalloc
from pathlib import Path

from foclip.outputs import atomic_write_bytes
from foclip.serve.memory import rss_mib

HEAP_DIR_ENV = "FOCLIP_HEAP_TRACE_DIR"
HEAP_EVERY_ENV = "FOCLIP_HEAP_TRACE_EVERY_S"


class HeapTrace:
    """tracemalloc snapshots compared with the first one, written as text.

    Args:
        out_dir: where ``heap-<pid>.txt`` goes (created).
        every_s: seconds between reports.
    """

    def __init__(self, out_dir: Path, every_s: float = 60.0) -> None:
        self.path = out_dir / f"heap-{os.getpid()}.txt"
        self.every_s = every_s
        self.t0 = time.monotonic()
        self._next = self.t0 + every_s
        self._base: tracemalloc.Snapshot | None = None
        self._lines: list[str] = []
        tracemalloc.start(8)

    @classmethod
    def from_env(cls) -> HeapTrace | None:
        """A tracer when ``FOCLIP_HEAP_TRACE_DIR`` is set, else None."""
        d = os.environ.get(HEAP_DIR_ENV)
        return cls(Path(d), float(os.environ.get(HEAP_EVERY_ENV, "60"))) if d else None

    def tick(self) -> None:
        """Write a report when one is due (call after each batch)."""
        now = time.monotonic()
        if now < self._next:
            return
        self._next = now + self.every_s
        snap = tracemalloc.take_snapshot().filter_traces([tracemalloc.Filter(False, tracemalloc.__file__)])
        current, peak = tracemalloc.get_traced_memory()
        rss = rss_mib()
        self._lines.append(f"t={now - self.t0:7.0f}s rss={float('nan') if rss is None else rss:8.1f} MiB traced={current / 2**20:7.1f} MiB "
                           f"traced_peak={peak / 2**20:7.1f} MiB")
        if self._base is None:
            self._base = snap
        top = snap.compare_to(self._base, "lineno")[:15]
        text = "\n".join(self._lines) + "\n\ngrowth since the first report, by source line:\n" + "\n".join(
            str(s) for s in top) + "\n"
        atomic_write_bytes(self.path, text.encode("utf-8"))
