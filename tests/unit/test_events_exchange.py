"""events.Exchange: per-subscriber bounds in events and bytes, and a clear status for a dropped subscriber."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from pycontainerd import errdefs
from pycontainerd.events import exchange as ex


async def _first(agen: AsyncIterator[ex.Envelope]) -> ex.Envelope:
    return await agen.__anext__()


def test_stalled_subscriber_is_dropped_by_bytes_and_others_go_on() -> None:
    async def run() -> None:
        x = ex.Exchange()
        stalled = x.subscribe()
        reader = x.subscribe(['topic=="/keep"'])
        t_stalled = asyncio.ensure_future(_first(stalled))
        t_reader = asyncio.ensure_future(_first(reader))
        await asyncio.sleep(0)  # both generators have registered
        assert x.subscriber_count == 2
        x.publish("default", "/keep", {})
        assert (await t_stalled).topic == "/keep"
        assert (await t_reader).topic == "/keep"
        big = {"labels": {f"k{i}": "v" * 4000 for i in range(16)}}  # ~64 KiB
        n = ex._QUEUE_BYTES // (64 << 10) + 2  # a few more than 4 MiB of them: far below 4096 events
        for _ in range(n):
            x.publish("default", "/big", big)
        # the stalled subscriber is gone; the reader filters /big out, so none of it queued for it
        assert x.subscriber_count == 1
        x.publish("default", "/keep", {"after": True})
        assert (await _first(reader)).payload == {"after": True}
        with pytest.raises(errdefs.ResourceExhausted, match="KiB"):
            await _first(stalled)
    asyncio.run(run())


def test_dropped_subscriber_ends_with_resource_exhausted() -> None:
    async def run() -> None:
        x = ex.Exchange()
        sub = x.subscribe()
        first = asyncio.ensure_future(_first(sub))
        await asyncio.sleep(0)
        x.publish("default", "/one", {})
        assert (await first).topic == "/one"
        for i in range(ex._QUEUE_LIMIT + 1):
            x.publish("default", "/flood", {"i": i})
        assert x.subscriber_count == 0
        with pytest.raises(errdefs.ResourceExhausted, match=r"fell .* behind"):
            await _first(sub)
    asyncio.run(run())


def test_a_subscriber_that_keeps_up_is_never_dropped() -> None:
    async def run() -> None:
        x = ex.Exchange()
        sub = x.subscribe()
        first = asyncio.ensure_future(_first(sub))
        await asyncio.sleep(0)
        x.publish("default", "/start", {})
        await first
        big = {"labels": {"k": "v" * 60000}}
        for _ in range(3 * (ex._QUEUE_BYTES // 60000)):
            x.publish("default", "/big", big)
            assert (await _first(sub)).topic == "/big"
        assert x.subscriber_count == 1
    asyncio.run(run())
