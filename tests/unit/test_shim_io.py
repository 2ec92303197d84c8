"""Pure helpers of the shim: stdio URIs, the mini loop and pumps (its mounts: test_mount_core)."""

from __future__ import annotations

import fcntl
import os
import time
from pathlib import Path
from typing import cast

import pytest

from pycontainerd import errdefs
from pycontainerd.shim.io import ProcessIO, Pump, Sink, parse_uri
from pycontainerd.shim.loop import Future, Loop
from pycontainerd.shim.reaper import Reaper


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


def _open_stdin_io(loop: Loop, fifo: str) -> ProcessIO:
    # no logging binary: the reaper is never used
    return loop.run_until_complete(loop.spawn(ProcessIO.open(
        loop, cast(Reaper, None), container_id="c", namespace="n", stdin=fifo, stdout="", stderr="",
        terminal=False, console_path="")))


def _read_child(loop: Loop, fd: int, want: bytes) -> bytes:
    """Run the loop until the process's end of the stdin pipe has ``want``, or hits EOF."""
    got = b""
    deadline = time.monotonic() + 10
    while want not in got and time.monotonic() < deadline:
        loop.run_once(0.01)
        try:
            chunk = os.read(fd, 4096)
        except BlockingIOError:
            continue
        if not chunk:
            break
        got += chunk
    return got


def _fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_stdin_keeper_outlives_writers_until_close_stdin(tmp_path: Path) -> None:
    loop = Loop()
    fifo = str(tmp_path / "stdin")
    os.mkfifo(fifo)
    before = _fds()
    pio = _open_stdin_io(loop, fifo)
    assert pio.child[0] is not None
    child = os.dup(pio.child[0])  # the process's stdin
    os.set_blocking(child, False)
    w = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)  # the client, connected before Start
    loop.run_until_complete(loop.spawn(pio.started()))
    pio.keep_stdin()
    os.write(w, b"one\n")
    os.close(w)  # the client leaves: a detach, not an EOF
    assert _read_child(loop, child, b"one\n") == b"one\n"
    for _ in range(3):
        loop.run_once(0.02)
    assert pio.stdin_pump is not None and not pio.stdin_pump.done.done()
    with pytest.raises(BlockingIOError):
        os.read(child, 10)
    w = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)  # a later writer reaches the same stdin
    os.write(w, b"two\n")
    assert _read_child(loop, child, b"two\n") == b"two\n"
    pio.close_stdin()  # CloseIO: what was written is forwarded, then EOF (the client still holds w)
    os.close(w)
    assert _read_child(loop, child, b"never") == b""
    pio.close()
    os.close(child)
    assert _fds() == before


def test_stdin_writer_gone_before_start_ends_stdin(tmp_path: Path) -> None:
    """``echo x | ctr run --rm``: ctr wrote and left during Create; no keeper, EOF after the data."""
    loop = Loop()
    fifo = str(tmp_path / "stdin")
    os.mkfifo(fifo)
    before = _fds()
    pio = _open_stdin_io(loop, fifo)
    assert pio.child[0] is not None
    child = os.dup(pio.child[0])
    os.set_blocking(child, False)
    w = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
    os.write(w, b"early\n")
    os.close(w)
    loop.run_until_complete(loop.spawn(pio.started()))
    pio.keep_stdin()
    assert _read_child(loop, child, b"never") == b"early\n"  # then EOF
    pio.close()
    os.close(child)
    assert _fds() == before


def test_stdin_keeper_goes_at_exit_and_delete(tmp_path: Path) -> None:
    loop = Loop()
    fifo = str(tmp_path / "stdin")
    os.mkfifo(fifo)
    before = _fds()
    for release in (True, False):
        pio = _open_stdin_io(loop, fifo)
        loop.run_until_complete(loop.spawn(pio.started()))
        pio.keep_stdin()
        assert _fds() == before + 3  # the FIFO's read end, the pipe's write end, the keeper
        if release:  # the process exited
            pio.release_stdin()
            assert _fds() == before + 2
        pio.close()  # Delete
        assert _fds() == before


def _nonblocking(fd: int) -> bool:
    return bool(fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_NONBLOCK)


def test_only_the_shims_ends_of_the_stdio_pipes_are_non_blocking(tmp_path: Path) -> None:
    # O_NONBLOCK is a property of the open file description, shared with the process holding
    # the other copy: the process's ends (its stdin, stdout, stderr) must stay blocking, or a
    # container writing faster than its reader gets EAGAIN; the shim's ends are non-blocking
    # for its loop.  (runc happens to clear the flag on the stdio it passes on, Go's File.Fd;
    # a runtime that does not would hand the container what we made.)
    loop = Loop()
    paths = {name: str(tmp_path / name) for name in ("stdin", "stdout", "stderr")}
    for p in paths.values():
        os.mkfifo(p)
    readers = [os.open(paths[n], os.O_RDONLY | os.O_NONBLOCK) for n in ("stdout", "stderr")]  # the client
    pio = loop.run_until_complete(loop.spawn(ProcessIO.open(
        loop, cast(Reaper, None), container_id="c", namespace="n", stdin=paths["stdin"], stdout=paths["stdout"],
        stderr=paths["stderr"], terminal=False, console_path="")))
    child = [os.dup(fd) for fd in pio.child if fd is not None]  # what runc passes on to the process
    try:
        assert len(child) == 3
        assert [_nonblocking(fd) for fd in child] == [False, False, False]
        loop.run_until_complete(loop.spawn(pio.started()))
        assert [_nonblocking(fd) for fd in child] == [False, False, False]
        assert pio.stdin_pump is not None
        ours = [pio.stdin_pump.sink.fd, *(p.src for p in pio.out_pumps)]
        assert len(ours) == 3 and all(_nonblocking(fd) for fd in ours)
    finally:
        pio.close()
        for fd in child + readers:
            os.close(fd)
