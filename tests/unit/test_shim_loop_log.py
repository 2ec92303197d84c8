"""The shim keeps serving when its log is gone.

A runtime v2 shim's stderr is containerd's ``log`` FIFO: while containerd is down (restarting)
nobody reads it and every write fails with EPIPE.  Reporting a failed callback must not then
raise out of the loop and end the shim (and with it the management of its containers).
"""

from __future__ import annotations

import contextlib
import io
import os

import pytest

from pycontainerd.shim.loop import Loop


def test_a_failing_callback_with_no_log_reader_does_not_stop_the_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    r, w = os.pipe()
    os.close(r)  # no reader: writes fail with EPIPE (Python ignores SIGPIPE)
    stream = io.TextIOWrapper(io.FileIO(w, "w"), write_through=True)
    # in the test body: pytest's capture resets sys.stderr between the setup and call phases
    monkeypatch.setattr("sys.stderr", stream)
    try:
        loop = Loop()
        ran: list[str] = []

        def bad() -> None:
            raise RuntimeError("boom")

        loop.call_soon(bad)
        loop.call_soon(lambda: ran.append("next"))
        loop.run_once(max_wait=0)
        assert ran == ["next"]
    finally:
        monkeypatch.undo()
        with contextlib.suppress(OSError):
            stream.close()
