"""Client-side stdio for tasks and exec processes: FIFOs like ctr makes them, and the copying.

Theory of operation.  As with ctr (containerd's cio package), the *client* owns a process's
stdio: it makes a private directory with ``<id>-stdin``, ``<id>-stdout`` and ``<id>-stderr``
FIFOs, hands the paths to Tasks.Create / Tasks.Exec, and the shim opens the other ends.

The order of opens matters, because a FIFO end opened alone misbehaves:

- stdout/stderr: we open the read end non-blocking *and* a keep-alive write end.  Without
  the keep-alive, a read before the shim has opened its write end returns EOF at once.
  The keep-alive is closed once Tasks.Start has returned (the shim opens an init process's
  FIFOs in Create and an exec process's in Start), so EOF then means "the shim closed its
  end": the process exited and its output is drained.
- stdin: we open the FIFO read-write (never blocks, never fails with ENXIO), write what we
  read from our own stdin, and at EOF -- once the process has started -- close our end and
  call Tasks.CloseIO(stdin) so the process sees EOF: the shim holds a write end of the FIFO
  too, so our end closing alone is a detach, not an EOF.  (ctr 1.6 loses that CloseIO when
  its stdin ends before Create returned, containerd/containerd#4489, and ``echo x | ctr run
  --rm IMAGE id cat`` hangs on containerd's shim; we call it only after Start, so
  ``echo x | pyctr run --rm IMAGE id cat`` prints x and exits.)

Our own stdin is read by a daemon thread (regular files and ttys cannot all be polled; the
thread must never keep the process alive), and handed to the loop through a queue.

``--log-uri`` (``file:///path`` or ``binary:///path?args``) replaces the FIFOs: the URI goes
in stdout and stderr and the shim writes there.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import shutil
import signal
import tempfile
import termios
import threading
import tty
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlparse

from .. import errdefs

FIFO_DIR = "/run/pycontainerd/fifo"

__all__ = ["FIFO_DIR", "Attach", "FifoSet", "IOConfig", "RawTerminal", "log_uri_config"]


@dataclass(frozen=True)
class IOConfig:
    """The stdio paths/URIs handed to Tasks.Create / Tasks.Exec (empty = /dev/null)."""

    stdin: str = ""
    stdout: str = ""
    stderr: str = ""
    terminal: bool = False


def log_uri_config(uri: str) -> IOConfig:
    """Send stdout and stderr to a ``file://`` or ``binary://`` URI (ctr's ``--log-uri``)."""
    u = urlparse(uri)
    if u.scheme == "":
        # a bare path means a file, as ctr's cio.LogFile
        if not os.path.isabs(uri):
            raise errdefs.InvalidArgument(f"log path {uri!r} must be absolute")
        uri = f"file://{uri}"
    elif u.scheme not in ("file", "binary"):
        raise errdefs.InvalidArgument(f"unsupported log uri scheme {u.scheme!r}: use file:// or binary://")
    elif not u.path:
        raise errdefs.InvalidArgument(f"log uri {uri!r} has no path")
    return IOConfig(stdout=uri, stderr=uri)


class FifoSet:
    """A private directory holding the FIFOs of one process; ``remove()`` deletes it."""

    def __init__(self, directory: str, config: IOConfig) -> None:
        self.directory = directory
        self.config = config

    @classmethod
    def create(cls, process_id: str, *, stdin: bool = True, terminal: bool = False,
               base: str = FIFO_DIR) -> FifoSet:
        """Make ``<dir>/<id>-stdin|-stdout|-stderr`` (stderr none with a terminal), mode 0700."""
        os.makedirs(base, mode=0o700, exist_ok=True)
        d = tempfile.mkdtemp(dir=base)
        try:
            paths = {name: os.path.join(d, f"{process_id}-{name}") for name in ("stdin", "stdout", "stderr")}
            if not stdin:
                paths["stdin"] = ""
            if terminal:
                paths["stderr"] = ""
            for p in paths.values():
                if p:
                    os.mkfifo(p, 0o700)
        except BaseException:
            shutil.rmtree(d, ignore_errors=True)
            raise
        return cls(d, IOConfig(paths["stdin"], paths["stdout"], paths["stderr"], terminal))

    def remove(self) -> None:
        shutil.rmtree(self.directory, ignore_errors=True)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        try:
            n = os.write(fd, view)
        except BlockingIOError:
            import select

            select.select([], [fd], [], 1.0)
            continue
        except BrokenPipeError:
            return
        view = view[n:]


class _StdinThread:
    """Reads our stdin on a daemon thread and hands chunks (then None at EOF) to the loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop, fd: int) -> None:
        self.queue: asyncio.Queue[bytes | None] = asyncio.Queue()
        self._loop = loop
        self._fd = fd
        self._thread = threading.Thread(target=self._run, name="pycontainerd-stdin", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            try:
                data = os.read(self._fd, 65536)
            except InterruptedError:
                continue
            except OSError:
                data = b""
            try:
                self._loop.call_soon_threadsafe(self.queue.put_nowait, data or None)
            except RuntimeError:  # loop closed: we are exiting
                return
            if not data:
                return


class Attach:
    """Copies our stdio to and from a ``FifoSet`` while the process runs.

    Call ``open()`` before Tasks.Create/Exec, ``started()`` after Tasks.Start, ``wait()``
    after the process exited (output drained), and ``close()`` in a finally.
    """

    def __init__(self, fifos: FifoSet, *, stdin_fd: int | None = 0, stdout_fd: int = 1, stderr_fd: int = 2,
                 close_stdin: Callable[[], Awaitable[None]] | None = None) -> None:
        self.fifos = fifos
        self._stdin_fd = stdin_fd if fifos.config.stdin else None
        self._out_fds = {"stdout": stdout_fd, "stderr": stderr_fd}
        self._close_stdin = close_stdin
        self._readers: dict[int, asyncio.Future[None]] = {}
        self._keepalive: list[int] = []
        self._stdin_fifo: int | None = None
        self._started = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._loop = asyncio.get_running_loop()

    async def open(self) -> None:
        cfg = self.fifos.config
        for name in ("stdout", "stderr"):
            path = getattr(cfg, name)
            if not path:
                continue
            rfd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
            self._keepalive.append(os.open(path, os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC))
            fut: asyncio.Future[None] = self._loop.create_future()
            self._readers[rfd] = fut
            self._loop.add_reader(rfd, self._on_readable, rfd, self._out_fds[name])
        if cfg.stdin:
            self._stdin_fifo = os.open(cfg.stdin, os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
            if self._stdin_fd is not None:
                self._tasks.append(asyncio.create_task(self._copy_stdin(self._stdin_fd)))

    def _on_readable(self, rfd: int, out_fd: int) -> None:
        try:
            data = os.read(rfd, 65536)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if data:
            _write_all(out_fd, data)
            return
        self._loop.remove_reader(rfd)
        os.close(rfd)
        fut = self._readers.pop(rfd)
        if not fut.done():
            fut.set_result(None)

    async def _copy_stdin(self, src_fd: int) -> None:
        source = _StdinThread(self._loop, src_fd)
        while True:
            chunk = await source.queue.get()
            if chunk is None:
                break
            fd = self._stdin_fifo
            if fd is None:
                return
            view = memoryview(chunk)
            while view:
                try:
                    n = os.write(fd, view)
                    view = view[n:]
                except BlockingIOError:
                    await self._writable(fd)
                except OSError as exc:
                    if exc.errno in (errno.EPIPE, errno.EBADF):
                        return
                    raise
        # EOF on our stdin: once the shim holds its end, let go of ours and close the process's stdin
        await self._started.wait()
        if self._stdin_fifo is not None:
            os.close(self._stdin_fifo)
            self._stdin_fifo = None
        if self._close_stdin is not None:
            with contextlib.suppress(errdefs.ContainerdError):
                await self._close_stdin()

    async def _writable(self, fd: int) -> None:
        fut: asyncio.Future[None] = self._loop.create_future()
        def ready() -> None:
            if not fut.done():
                fut.set_result(None)

        self._loop.add_writer(fd, ready)
        try:
            await fut
        finally:
            self._loop.remove_writer(fd)

    def started(self) -> None:
        """The shim has opened its FIFO ends: drop our keep-alive writers so EOF can arrive."""
        for fd in self._keepalive:
            with contextlib.suppress(OSError):
                os.close(fd)
        self._keepalive.clear()
        self._started.set()

    async def wait(self, grace: float | None = None) -> None:
        """Until stdout/stderr reached EOF (all output copied), at most ``grace`` seconds."""
        futs = list(self._readers.values())
        if futs:
            await asyncio.wait(futs, timeout=grace)

    def close(self) -> None:
        for t in self._tasks:
            t.cancel()
        for rfd, fut in list(self._readers.items()):
            self._loop.remove_reader(rfd)
            with contextlib.suppress(OSError):
                os.close(rfd)
            if not fut.done():
                fut.set_result(None)
        self._readers.clear()
        for fd in self._keepalive:
            with contextlib.suppress(OSError):
                os.close(fd)
        self._keepalive.clear()
        if self._stdin_fifo is not None:
            with contextlib.suppress(OSError):
                os.close(self._stdin_fifo)
            self._stdin_fifo = None


class RawTerminal:
    """Put a tty in raw mode for the duration of a ``with`` block (no-op if not a tty)."""

    def __init__(self, fd: int = 0) -> None:
        self.fd = fd
        self._saved: Any = None

    def __enter__(self) -> RawTerminal:
        if os.isatty(self.fd):
            self._saved = termios.tcgetattr(self.fd)
            tty.setraw(self.fd)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._saved is not None:
            termios.tcsetattr(self.fd, termios.TCSADRAIN, self._saved)


def terminal_size(fd: int = 1) -> tuple[int, int] | None:
    """(columns, lines) of the tty on fd (or stdin's), None when neither is a tty."""
    for candidate in (fd, 0, 1, 2):
        try:
            size = os.get_terminal_size(candidate)
            return size.columns, size.lines
        except OSError:
            continue
    return None


FORWARDED_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1, signal.SIGUSR2)


