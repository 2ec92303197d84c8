"""cri.sandbox.together (independent steps of a CRI call run at once, undone on failure) and
cri.phases (per-phase timing at debug level)."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

from pycontainerd import errdefs
from pycontainerd.cri.phases import Phases
from pycontainerd.cri.sandbox import together


def _step(log: list[str], name: str, *, fail: BaseException | None = None, gate: asyncio.Event | None = None
          ) -> tuple[Any, Any]:
    async def run() -> str:
        if gate is not None:
            await gate.wait()
        if fail is not None:
            raise fail
        log.append(f"did {name}")
        return name

    async def undo() -> None:
        log.append(f"undid {name}")

    return run(), undo


def test_together_results_in_order_and_undos_queued() -> None:
    async def main() -> None:
        log: list[str] = []
        undo: list[Any] = []
        gate = asyncio.Event()
        a = _step(log, "a", gate=gate)
        b = _step(log, "b")
        asyncio.get_running_loop().call_soon(gate.set)
        assert await together(undo, a, b) == ["a", "b"]
        assert sorted(log) == ["did a", "did b"]
        for u in reversed(undo):
            await u()
        assert log[-2:] == ["undid b", "undid a"]  # the caller undoes in reverse of the steps' order

    asyncio.run(main())


def test_together_failure_keeps_the_undo_of_what_succeeded_and_raises_the_first_error() -> None:
    async def main() -> None:
        log: list[str] = []
        undo: list[Any] = []
        with pytest.raises(errdefs.NotFound, match="first"):
            await together(undo, _step(log, "a", fail=errdefs.NotFound("first")), _step(log, "b"),
                           _step(log, "c", fail=errdefs.Unavailable("second")))
        assert log == ["did b"]
        assert len(undo) == 1
        await undo[0]()
        assert log == ["did b", "undid b"]
        # a step without an undo adds none
        undo.clear()
        assert await together(undo, (_step(log, "d")[0], None)) == ["d"]
        assert undo == []

    asyncio.run(main())


def test_together_cancelled_waits_for_its_steps() -> None:
    async def main() -> None:
        log: list[str] = []
        undo: list[Any] = []
        gate = asyncio.Event()
        fast = _step(log, "fast")
        slow = _step(log, "slow", gate=gate)
        call = asyncio.ensure_future(together(undo, fast, slow))
        deadline = asyncio.get_running_loop().time() + 5
        while "did fast" not in log:
            assert asyncio.get_running_loop().time() < deadline
            await asyncio.sleep(0)
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call
        assert log == ["did fast"]  # the slow step was cancelled, not left running
        assert len(undo) == 1  # what the finished step made is undone with the rest
        gate.set()

    asyncio.run(main())


def test_phases_log_at_debug_only(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="pycontainerd.cri.phases"):
        p = Phases("StartContainer", "0123456789abcdef")
        p.mark("record")
        p.done()
    assert caplog.records == []
    with caplog.at_level(logging.DEBUG, logger="pycontainerd.cri.phases"):
        p = Phases("StartContainer", "0123456789abcdef")
        p.mark("record")
        p.mark("task create")
        p.done()
    (rec,) = caplog.records
    msg = rec.getMessage()
    assert msg.startswith("StartContainer 0123456789ab: record ") and ", task create " in msg and "(total " in msg
