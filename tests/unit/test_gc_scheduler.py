"""The GC scheduler's pacing (containerd's): collections after deletions are held back by the
pause interval, on-demand ones are not.

The scheduler runs on the event loop's clock; these tests run it on a virtual one
(tests/fixtures/virtual_clock.py), so the times below are exact and cost no wall time."""

from __future__ import annotations

import asyncio

import pytest

from pycontainerd.metadata.gc import Scheduler, Stats
from tests.fixtures import virtual_clock
from tests.fixtures.procs import wait_for_async


def _now() -> float:
    return asyncio.get_running_loop().time()


class SlowCollector:
    """Stands in for ``Collector``: each collection takes ``took`` seconds (of loop time)."""

    def __init__(self, took: float) -> None:
        self.took = took
        self.runs: list[float] = []  # when each collection finished

    async def collect(self, *, startup: bool = False) -> Stats:
        del startup
        await asyncio.sleep(self.took)
        self.runs.append(_now())
        return Stats()


def test_interval_follows_the_pause_threshold() -> None:
    async def run() -> None:
        c = SlowCollector(0.01)
        s = Scheduler(c, pause_threshold=0.1)  # type: ignore[arg-type]
        assert s.interval() == 0.0  # nothing measured yet
        await s.start()  # the start-up pass does not count
        assert s.interval() == 0.0
        await s.run_now()
        assert s.interval() == pytest.approx(0.01 / 0.1 - 0.01)
        await s.close()

    virtual_clock.run(run())


def test_deletions_wait_for_the_interval_but_run_now_does_not() -> None:
    async def run() -> None:
        c = SlowCollector(0.01)
        s = Scheduler(c, pause_threshold=0.05)  # type: ignore[arg-type]
        await s.start()
        await s.run_now()
        interval = s.interval()
        assert interval == pytest.approx(0.19)  # every collection takes 0.01: it stays so
        first = c.runs[-1]
        n = len(c.runs)
        s.deleted()
        s.deleted()
        await wait_for_async(lambda: len(c.runs) > n, 5, "the collection after the deletions")
        # one collection for both deletions, started when the pause interval was over
        assert len(c.runs) == n + 1
        assert c.runs[-1] == pytest.approx(first + interval + c.took)
        s.deleted()  # due again, but held back ...
        t0 = _now()
        await s.run_now()  # ... while an explicit request goes at once
        assert _now() - t0 == pytest.approx(c.took)
        assert len(c.runs) == n + 2
        # that collection covered the pending deletion too: none follows, however long we wait
        # (a virtual wait: the clock jumps)
        await asyncio.sleep(10 * interval)
        assert len(c.runs) == n + 2
        await s.close()

    virtual_clock.run(run())


def test_without_pause_threshold_deletions_collect_at_once() -> None:
    async def run() -> None:
        c = SlowCollector(0.001)
        s = Scheduler(c, pause_threshold=0.0)  # type: ignore[arg-type]
        await s.start()
        n = len(c.runs)
        t0 = _now()
        s.deleted()
        await wait_for_async(lambda: len(c.runs) > n, 5, "the collection after the deletion")
        assert c.runs[-1] == pytest.approx(t0 + c.took)  # no hold-off
        await s.close()

    virtual_clock.run(run())
