"""The GC scheduler's pacing (containerd's): collections after deletions are held back by the
pause interval, on-demand ones are not."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from pycontainerd.metadata.gc import Scheduler, Stats


class SlowCollector:
    """Stands in for ``Collector``: each collection takes ``took`` seconds."""

    def __init__(self, took: float) -> None:
        self.took = took
        self.runs: list[float] = []

    async def collect(self, *, startup: bool = False) -> Stats:
        del startup
        await asyncio.sleep(self.took)
        self.runs.append(time.monotonic())
        return Stats()


async def _until(cond: Any, timeout: float = 2.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.002)


def test_interval_follows_the_pause_threshold() -> None:
    async def run() -> None:
        c = SlowCollector(0.01)
        s = Scheduler(c, pause_threshold=0.1)  # type: ignore[arg-type]
        assert s.interval() == 0.0  # nothing measured yet
        await s.start()  # the start-up pass does not count
        assert s.interval() == 0.0
        await s.run_now()
        assert 0.05 < s.interval() < 0.2  # ~0.01/0.1 - 0.01
        await s.close()

    asyncio.run(run())


def test_deletions_wait_for_the_interval_but_run_now_does_not() -> None:
    async def run() -> None:
        c = SlowCollector(0.01)
        s = Scheduler(c, pause_threshold=0.05)  # type: ignore[arg-type]  # interval ~0.19 s
        await s.start()
        await s.run_now()
        first = c.runs[-1]
        s.deleted()
        s.deleted()
        await asyncio.sleep(0.05)
        assert c.runs[-1] == first  # held back: still inside the pause interval
        await _until(lambda: c.runs[-1] != first)
        assert c.runs[-1] - first >= s.interval() * 0.9  # one collection for both deletions
        n = len(c.runs)
        s.deleted()  # due again, but held back ...
        t0 = time.monotonic()
        await s.run_now()  # ... while an explicit request goes at once
        assert time.monotonic() - t0 < 0.1
        assert len(c.runs) == n + 1
        await asyncio.sleep(0.05)
        assert len(c.runs) == n + 1  # that collection covered the pending deletion too
        await s.close()

    asyncio.run(run())


def test_without_pause_threshold_deletions_collect_at_once() -> None:
    async def run() -> None:
        c = SlowCollector(0.001)
        s = Scheduler(c, pause_threshold=0.0)  # type: ignore[arg-type]
        await s.start()
        n = len(c.runs)
        s.deleted()
        await _until(lambda: len(c.runs) > n, timeout=0.5)
        await s.close()

    asyncio.run(run())
