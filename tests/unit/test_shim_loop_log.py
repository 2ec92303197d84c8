"""The shim keeps serving when its log is gone.

A runtime v2 shim's stderr is containerd's ``log`` FIFO: while containerd is down (restarting)
nobody reads it and every write fails with EPIPE.  Reporting a failed callback must not then
raise out of the loop and end the shim (and with it the management of its containers).
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterator

import pytest

from pycontainerd.shim.loop import Loop


@pytest.fixture
def broken_stderr(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    r, w = os.pipe()
    os.close(r)  # no reader: writes fail with EPIPE (Python ignores SIGPIPE)
    stream = io.TextIOWrapper(io.FileIO(w, "w"), write_through=True)
    monkeypatch.setattr("sys.stderr", stream)
    try:
        yield
    finally:
        monkeypatch.undo()
        try:
            stream.close()
        except OSError:
            pass


def test_a_failing_callback_with_no_log_reader_does_not_stop_the_loop(broken_stderr: None) -> None:
    loop = Loop()
    ran: list[str] = []

    def bad() -> None:
        raise RuntimeError("boom")

    loop.call_soon(bad)
    loop.call_soon(lambda: ran.append("next"))
    loop.run_once(max_wait=0)
    loop.log("a line nobody reads")
    assert ran == ["next"]
