"""daemon.memory: malloc_trim plumbing and the trimmer's scheduling."""

from __future__ import annotations

import asyncio

import pytest

from pycontainerd.daemon import memory

pytestmark = pytest.mark.skipif(not memory.Trimmer().enabled, reason="not glibc")


async def _until(cond: object, timeout: float = 5.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not cond():  # type: ignore[operator]
        assert loop.time() < deadline, "condition not met before the deadline"
        await asyncio.sleep(0.01)


def test_rss_and_trim() -> None:
    assert memory.rss_bytes() > 1 << 20
    blocks = [bytearray(1 << 16) for _ in range(2000)]  # ~128 MiB in small-ish blocks
    del blocks
    memory.malloc_trim()  # does not crash; may or may not release anything
    assert memory.rss_bytes() > 0


def test_requests_coalesce_into_one_trim() -> None:
    async def body() -> None:
        t = memory.Trimmer(delay=0.05, interval=60)
        t.start()
        try:
            for _ in range(5):
                t.request()
                await asyncio.sleep(0.01)
            await _until(lambda: t.trims >= 1)
            await asyncio.sleep(0.2)
            assert t.trims == 1
            t.request()
            await _until(lambda: t.trims == 2)
        finally:
            await t.close()

    asyncio.run(body())


def test_growth_triggers_a_trim_without_request() -> None:
    async def body() -> None:
        t = memory.Trimmer(delay=0.05, interval=0.05, growth=1 << 20)
        t.start()
        try:
            keep = bytearray(8 << 20)
            keep[::4096] = b"x" * len(keep[::4096])  # touch every page: RSS grows
            await _until(lambda: t.trims >= 1)
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
        await _until(lambda: t.trims == 1)  # still running for the other user
        await t.close()
        t.request()  # no task: nothing happens, nothing raises
        await asyncio.sleep(0.05)
        assert t.trims == 1

    asyncio.run(body())


def test_request_to_a_trimmer_never_started_is_a_no_op() -> None:
    t = memory.Trimmer()
    t.request()
    assert t.trims == 0
