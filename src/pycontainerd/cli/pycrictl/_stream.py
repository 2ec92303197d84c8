"""The local side of pycrictl's streaming commands (exec, attach): stdio, raw terminal, SIGWINCH, detach keys."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import sys
import termios
import threading
import tty
from collections.abc import AsyncGenerator, Iterator

from ... import errdefs
from ...client.streaming import ExecResult, ExecStreams, stream_remotecommand

DETACH_KEYS = b"\x10\x11"  # ctrl-p, ctrl-q: crictl's detach sequence with a TTY


def add_transport_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument("-r", "--transport", choices=["spdy", "websocket"], default="spdy",
                   help="streaming transport (default spdy, as crictl)")


class StdinPump:
    """Reads fd 0 in a thread (works for ttys, pipes and files alike) into an asyncio queue."""

    def __init__(self, detach: bool) -> None:
        self._loop = asyncio.get_running_loop()
        self._queue: asyncio.Queue[bytes] = asyncio.Queue(maxsize=16)
        self._detach = detach
        self._held = b""
        self.detached = asyncio.Event()
        threading.Thread(target=self._run, name="pycrictl-stdin", daemon=True).start()

    def _run(self) -> None:
        while True:
            try:
                data = os.read(0, 32 << 10)
            except OSError:
                data = b""
            fut = asyncio.run_coroutine_threadsafe(self._queue.put(data), self._loop)
            try:
                fut.result()
            except Exception:
                return
            if not data:
                return

    async def read(self) -> bytes:
        if self.detached.is_set():
            await asyncio.Future()  # never: the caller cancels the session
        data = await self._queue.get()
        if not self._detach or not data:
            out, self._held = self._held + data, b""
            return out
        data = self._held + data
        self._held = b""
        idx = data.find(DETACH_KEYS)
        if idx >= 0:
            self.detached.set()
            await asyncio.Future()
        if data.endswith(DETACH_KEYS[:1]):
            self._held, data = data[-1:], data[:-1]
            if not data:
                return await self.read()
        return data


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


async def write_stdout(data: bytes) -> None:
    _write_all(1, data)


async def write_stderr(data: bytes) -> None:
    _write_all(2, data)


def terminal_size() -> tuple[int, int]:
    for fd in (1, 0, 2):
        with contextlib.suppress(OSError):
            size = os.get_terminal_size(fd)
            return size.columns, size.lines
    return 80, 24


async def resize_events() -> AsyncGenerator[tuple[int, int], None]:
    """The terminal's size now, then after every SIGWINCH."""
    loop = asyncio.get_running_loop()
    changed = asyncio.Event()
    loop.add_signal_handler(signal.SIGWINCH, changed.set)
    try:
        last = terminal_size()
        yield last
        while True:
            await changed.wait()
            changed.clear()
            size = terminal_size()
            if size != last:
                last = size
                yield size
    finally:
        loop.remove_signal_handler(signal.SIGWINCH)


@contextlib.contextmanager
def raw_terminal(enabled: bool) -> Iterator[None]:
    """Put stdin (a terminal) into raw mode, as crictl does for -t; restored on the way out."""
    if not enabled:
        yield
        return
    saved = termios.tcgetattr(0)
    tty.setraw(0)
    try:
        yield
    finally:
        termios.tcsetattr(0, termios.TCSADRAIN, saved)


def check_terminal(*, stdin: bool, tty_: bool) -> None:
    """crictl's rules for -t, checked before asking the runtime for a URL."""
    if tty_ and not stdin:
        raise errdefs.InvalidArgument("tty=true must be specified with interactive=true (-it)")
    if tty_ and not os.isatty(0):
        raise errdefs.InvalidArgument("input is not a terminal (-t needs one; drop -t to pipe input)")


async def run_stream(url: str, *, stdin: bool, tty_: bool, transport: str) -> ExecResult | None:
    """Connect the local stdio to an exec/attach URL; None if the user detached (ctrl-p ctrl-q)."""
    check_terminal(stdin=stdin, tty_=tty_)
    pump = StdinPump(detach=tty_) if stdin else None
    resize = resize_events() if tty_ else None
    streams = ExecStreams(
        stdin=pump.read if pump is not None else None,
        stdout=write_stdout,
        stderr=None if tty_ else write_stderr,
        tty=tty_,
        resize=resize,
    )
    with raw_terminal(tty_):
        task = asyncio.ensure_future(stream_remotecommand(url, streams, transport=transport))
        waits: set[asyncio.Future[object]] = {task}  # type: ignore[arg-type]
        detach = asyncio.ensure_future(pump.detached.wait()) if pump is not None else None
        if detach is not None:
            waits.add(detach)  # type: ignore[arg-type]
        try:
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
            if task.done():
                return task.result()
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
            return None
        finally:
            for fut in waits:
                fut.cancel()
            if resize is not None:
                with contextlib.suppress(Exception):
                    await resize.aclose()


def flush_std() -> None:
    with contextlib.suppress(Exception):
        sys.stdout.flush()
