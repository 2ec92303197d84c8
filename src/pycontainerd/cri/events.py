"""GetContainerEvents' fan-out: the CRI plugin's container lifecycle to each subscribed stream.

Each subscriber has a bounded queue; publishing never waits: a subscriber whose queue is full
has fallen behind and is dropped (its stream ends with RESOURCE_EXHAUSTED), so a slow client
cannot hold the lifecycle up or grow the daemon's memory.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncGenerator
from typing import Any

from .. import errdefs

log = logging.getLogger("pycontainerd.cri")

QUEUE_SIZE = 1000


class _Subscriber:
    def __init__(self, size: int) -> None:
        self.queue: asyncio.Queue[Any] = asyncio.Queue(maxsize=size)
        self.dropped = False


class ContainerEventHub:
    def __init__(self, queue_size: int = QUEUE_SIZE) -> None:
        self.queue_size = queue_size
        self._subscribers: set[_Subscriber] = set()

    @property
    def subscribers(self) -> int:
        return len(self._subscribers)

    def publish(self, event: Any) -> None:
        for sub in list(self._subscribers):
            try:
                sub.queue.put_nowait(event)
            except asyncio.QueueFull:
                sub.dropped = True
                self._subscribers.discard(sub)
                log.warning("container events: a subscriber fell %d events behind, dropped", self.queue_size)

    async def subscribe(self) -> AsyncGenerator[Any, None]:
        sub = _Subscriber(self.queue_size)
        self._subscribers.add(sub)
        try:
            while True:
                if sub.dropped:
                    raise errdefs.ResourceExhausted(
                        f"container event subscriber fell {self.queue_size} events behind and was dropped")
                yield await sub.queue.get()
        finally:
            self._subscribers.discard(sub)
