"""Pure helpers of the shim: stdio URIs, the mini loop and pumps (its mounts: test_mount_core)."""

from __future__ import annotations

import os

import pytest

from pycontainerd import errdefs
from pycontainerd.shim.io import Pump, Sink, parse_uri
from pycontainerd.shim.loop import Future, Loop


def test_parse_uri() -> None:
    assert parse_uri("/run/x/c-stdout") == ("fifo", "/run/x/c-stdout", [])
    assert parse_uri("file:///var/log/c.log") == ("file", "/var/log/c.log", [])
    assert parse_uri("binary:///bin/logger?--tag=x&-v") == ("binary", "/bin/logger", ["--tag", "x", "-v"])
    assert parse_uri("binary:///bin/logger?dir=/tmp/l") == ("binary", "/bin/logger", ["dir", "/tmp/l"])
    with pytest.raises(errdefs.InvalidArgument):
        parse_uri("http://example.com/x")


def test_loop_tasks_timers_and_wait_for() -> None:
    loop = Loop()
    fut: Future[int] = Future()
    order: list[str] = []

    async def worker() -> int:
        order.append("start")
        value = await fut
        order.append("got")
        await loop.sleep(0.01)
        return value * 2

    task = loop.spawn(worker())
    loop.call_later(0.01, lambda: fut.set_result(21))
    assert loop.run_until_complete(task) == 42
    assert order == ["start", "got"]
    never: Future[None] = Future()
    assert loop.run_until_complete(loop.wait_for(never, 0.01)) is False


def test_task_exception_propagates() -> None:
    loop = Loop()

    async def boom() -> None:
        raise errdefs.NotFound("nope")

    with pytest.raises(errdefs.NotFound):
        loop.run_until_complete(loop.spawn(boom()))


def test_pump_copies_with_backpressure_until_eof() -> None:
    loop = Loop()
    src_r, src_w = os.pipe()
    dst_r, dst_w = os.pipe()
    pump = Pump(loop, src_r, Sink(loop, dst_w))
    payload = os.urandom(300_000)  # more than both pipe buffers: the sink must pause the pump
    received = bytearray()
    os.set_blocking(src_w, False)
    os.set_blocking(dst_r, False)
    sent = 0
    while not pump.done.done():
        if sent < len(payload):
            try:
                sent += os.write(src_w, payload[sent : sent + 65536])
            except BlockingIOError:
                pass
            if sent == len(payload):
                os.close(src_w)
        loop.run_once(0.01)
        try:
            received += os.read(dst_r, 1 << 20)
        except BlockingIOError:
            pass
    while True:
        try:
            chunk = os.read(dst_r, 1 << 20)
        except BlockingIOError:
            loop.run_once(0.01)
            continue
        if not chunk:
            break
        received += chunk
    assert bytes(received) == payload
    os.close(dst_r)


def _reaper_scenario() -> None:
    from pycontainerd.shim.reaper import Reaper

    loop = Loop()
    reaper = Reaper(loop)
    got: dict[str, int] = {}
    reaper.spawn(["/bin/sh", "-c", "exit 3"], on_exit=lambda status, at: got.__setitem__("a", status))
    window = reaper.open_window()
    # a process we learn about only after it exited (like runc exec --detach's child)
    late = os.posix_spawn("/bin/sh", ["/bin/sh", "-c", "exit 4"], os.environ)
    while "a" not in got or late not in window:
        loop.run_once(0.05)
    reaper.adopt(window, late, lambda status, at: got.__setitem__("late", status))
    reaper.close_window(window)
    loop.run_once(0.01)
    assert os.waitstatus_to_exitcode(got["a"]) == 3
    assert os.waitstatus_to_exitcode(got["late"]) == 4


def test_reaper_dispatches_exits_and_windows() -> None:
    # in a forked child: the reaper takes over SIGCHLD for its whole process
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            _reaper_scenario()
            code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
