"""Giving a replica's freed memory back (foclip/serve/memory.py); the running service's side is in test_service.py."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap

import pytest
from waits import ceiling

from foclip.serve.memory import IdleTrim, libc_trim, rss_mib
from foclip.serve.service import INLINE_CAP_BYTES, INLINE_MARGIN_BYTES, inline_payloads


def test_a_trim_is_due_only_after_work_a_quiet_period_and_nothing_in_flight():
    busy = [False]
    t = IdleTrim(quiet_s=1.0, busy=lambda: busy[0], trim=lambda _pad: 1)
    assert not t.due(t.last + 10)  # nothing happened since start: nothing to give back
    t.touch()
    assert not t.due(t.last + 0.5)  # a gap shorter than quiet_s is traffic
    assert t.due(t.last + 1.0)
    busy[0] = True
    assert not t.due(t.last + 60)  # a long request in flight: never trim under it
    busy[0] = False
    t.run_once()
    assert t.trims == 1


def test_the_watcher_trims_once_per_quiet_period():
    calls: list[int] = []

    async def scenario() -> list[int]:
        t = IdleTrim(quiet_s=0.05, trim=calls.append, poll_s=0.01)
        t.ensure_running()
        t.ensure_running()  # idempotent: one watcher per loop
        seen = []
        for n in (1, 2):
            t.touch()
            deadline = asyncio.get_running_loop().time() + ceiling(30)
            while t.trims < n and asyncio.get_running_loop().time() < deadline:
                await asyncio.sleep(0.01)
            seen.append(t.trims)
            await asyncio.sleep(0.2)  # quiet, but nothing new happened: no further trim
            seen.append(t.trims)
        return seen

    assert asyncio.run(scenario()) == [1, 1, 2, 2]
    assert calls == [0, 0]


def test_no_trim_function_means_no_watcher():
    async def scenario() -> None:
        t = IdleTrim(trim=None)
        t.ensure_running()
        assert t._task is None

    asyncio.run(scenario())


@pytest.mark.skipif(libc_trim() is None or rss_mib() is None, reason="needs glibc's malloc_trim and /proc")
def test_malloc_trim_gives_back_what_threads_freed():
    """The mechanism the service relies on: heap blocks freed by several threads stay resident until trimmed."""
    code = textwrap.dedent("""
        import threading
        from foclip.serve.memory import IdleTrim, rss_mib
        start = threading.Barrier(4)
        def churn(keep):
            start.wait()  # the four run at once, so each thread works in an arena of its own
            blocks = [bytearray(8192) for _ in range(8000)]  # 64 MiB of malloc'd (not mmap'd) blocks
            for b in blocks:  # written, so that the (calloc'd) pages are resident
                b[::1024] = b"x" * 8
            keep.extend(blocks[::4])  # every 4th stays live: freed runs sit between live blocks, not at a
            del blocks, b             # heap's top, so free() itself cannot give them back
        keep = []
        threads = [threading.Thread(target=churn, args=(keep,)) for _ in range(4)]
        for t in threads: t.start()
        for t in threads: t.join()
        before = rss_mib()
        IdleTrim().run_once()
        print(before, rss_mib())
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         timeout=ceiling(120)).stdout
    before, after = map(float, out.split())
    assert before - after > 100, (before, after)  # of 192 MiB freed by four threads


def test_payloads_travel_inline_up_to_the_body_limit():
    cfg = inline_payloads(32 * 2**20)
    assert cfg == {"max_direct_call_object_size": 32 * 2**20 + INLINE_MARGIN_BYTES,
                   "task_rpc_inlined_bytes_limit": 32 * 2**20 + INLINE_MARGIN_BYTES}
    assert set(inline_payloads(10**12).values()) == {INLINE_CAP_BYTES}  # beyond: Ray's object store
