from __future__ import annotations

import asyncio

import pytest

from pycontainerd import errdefs
from pycontainerd.cri.events import ContainerEventHub


def test_a_subscriber_that_falls_behind_is_dropped() -> None:
    async def main() -> None:
        hub = ContainerEventHub(queue_size=2)
        slow, fast = hub.subscribe(), hub.subscribe()
        first = [asyncio.ensure_future(slow.__anext__()), asyncio.ensure_future(fast.__anext__())]
        for _ in range(100):  # each subscribes when its generator first runs
            if hub.subscribers == 2:
                break
            await asyncio.sleep(0)
        assert hub.subscribers == 2
        hub.publish("a")
        assert [await f for f in first] == ["a", "a"]
        hub.publish(1)
        hub.publish(2)
        assert await fast.__anext__() == 1  # fast keeps up, slow reads nothing
        hub.publish(3)  # slow's queue holds 1 and 2: full, so it is dropped; fast has room
        assert hub.subscribers == 1
        assert [await fast.__anext__() for _ in range(2)] == [2, 3]
        with pytest.raises(errdefs.ResourceExhausted):
            await slow.__anext__()
        await fast.aclose()
        assert hub.subscribers == 0

    asyncio.run(main())
