"""The opt-in heap tracer of a replica (foclip/serve/heap.py)."""

from __future__ import annotations

import tracemalloc

from foclip.serve.heap import HEAP_DIR_ENV, HeapTrace


def test_off_unless_asked(monkeypatch):
    monkeypatch.delenv(HEAP_DIR_ENV, raising=False)
    assert HeapTrace.from_env() is None


def test_reports_growth_by_line(tmp_path, monkeypatch):
    monkeypatch.setenv(HEAP_DIR_ENV, str(tmp_path / "heap"))
    monkeypatch.setenv("FOCLIP_HEAP_TRACE_EVERY_S", "0")
    trace = HeapTrace.from_env()
    try:
        trace.tick()  # the baseline
        kept = [bytearray(4096) for _ in range(256)]  # 1 MiB that stays allocated
        trace.tick()
        text = trace.path.read_text()
    finally:
        tracemalloc.stop()
    lines = text.splitlines()
    assert lines[0].startswith("t=") and "rss=" in lines[0] and len([ln for ln in lines if ln.startswith("t=")]) == 2
    growth = text.split("by source line:\n", 1)[1]
    assert "test_heap.py" in growth.splitlines()[0] and len(kept) == 256  # the line that kept 1 MiB leads
