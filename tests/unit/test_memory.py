"""daemon.memory: malloc_trim plumbing and the trimmer's scheduling."""

from __future__ import annotations

import asyncio

import pytest

from pycontainerd.daemon import memory
from tests.fixtures.procs import wait_for_async

pytestmark = pytest.mark.skipif(not memory.Trimmer().enabled, reason="not glibc")

MiB = 1 << 20


def _vm_rss() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS in /proc/self/status")


def _touched(size: int) -> bytearray:
    b = bytearray(size)
    b[::4096] = b"x" * len(b[::4096])  # every page resident
    return b


def test_rss_bytes_is_the_resident_size() -> None:
    assert abs(memory.rss_bytes() - _vm_rss()) < 4 * MiB  # the kernel's own figure
    before = memory.rss_bytes()
    big = _touched(64 * MiB)
    assert memory.rss_bytes() - before >= 60 * MiB  # follows growth
    del big


def test_malloc_trim_returns_freed_heap_pages() -> None:
    # ~128 MiB of heap blocks (below the mmap threshold); the last one stays, so free() alone
    # cannot shrink the heap from the top: only malloc_trim hands the freed middle back
    blocks = [_touched(1 << 16) for _ in range(2000)]
    keep = blocks[-1]
    del blocks
    before = memory.rss_bytes()
    assert memory.malloc_trim() is True  # "True if memory was released"
    assert before - memory.rss_bytes() >= 64 * MiB
    del keep


def test_requests_coalesce_into_one_trim() -> None:
    async def body() -> None:
        t = memory.Trimmer(delay=1.0, interval=60)  # a wide window: a loaded machine stays inside it
        t.start()
        try:
            for i in range(5):
                t.request()
                # the trimmer has taken the request and waits out `delay` for more: the next
                # request lands inside that window and pushes the trim back
                await wait_for_async(lambda: not t._requested, 5, f"the trimmer to take request {i}")
                assert t.trims == 0
            await wait_for_async(lambda: t.trims >= 1, 5, "the trim")
            assert t.trims == 1
            assert not t._requested  # nothing pending: the burst gave exactly one trim
            t.request()
            await wait_for_async(lambda: t.trims >= 2, 5, "the second trim")
            assert t.trims == 2
        finally:
            await t.close()

    asyncio.run(body())


def test_growth_triggers_a_trim_without_request() -> None:
    async def body() -> None:
        t = memory.Trimmer(delay=0.05, interval=0.05, growth=1 * MiB)
        t.start()
        try:
            keep = _touched(8 * MiB)  # RSS grows
            await wait_for_async(lambda: t.trims >= 1, 5, "a trim after RSS grew")
            del keep
        finally:
            await t.close()

    asyncio.run(body())


def test_nested_start_and_close() -> None:
    async def body() -> None:
        t = memory.Trimmer(delay=0.01, interval=60)
        t.start()
        t.start()
        await t.close()
        t.request()
        await wait_for_async(lambda: t.trims == 1, 5, "a trim for the remaining user")
        await t.close()
        # the last close stopped the task: no task left that could trim
        assert t._task is None
        assert asyncio.all_tasks() == {asyncio.current_task()}
        t.request()  # nothing happens, nothing raises
        assert t._task is None
        assert asyncio.all_tasks() == {asyncio.current_task()}
        assert t.trims == 1

    asyncio.run(body())


def test_request_to_a_trimmer_never_started_is_a_no_op() -> None:
    t = memory.Trimmer()
    t.request()
    assert t.trims == 0
