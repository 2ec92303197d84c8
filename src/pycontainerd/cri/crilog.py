"""CRI container logs: the container's stdout/stderr FIFOs copied, daemon-side, into the CRI log file.

Each line is ``<RFC 3339 with nanoseconds, Go's RFC3339Nano> <stdout|stderr> <F|P> <text>\\n`` (the kubelet's
format): ``F`` ends a line; a line longer than ``max_container_log_line_size`` is cut into
``P`` (partial) pieces of that size, the last one ``F``.  Output that ends without a newline
is written as a full line at EOF, as containerd does.  ``reopen`` (ReopenContainerLog, after
the kubelet rotated the file) makes the copier write to a new file at the same path.

A container with a terminal has one output stream: the pty's, logged as ``stdout`` (as
containerd).  Attached clients (CRI Attach) get the same output as it is read
(``subscribe``): each through a bounded queue, so a slow client never holds the log back —
one that falls behind by ``SUBSCRIBER_QUEUE`` chunks is dropped.  A container created with
``stdin`` gets a stdin FIFO whose write end the daemon holds open (``stdin_fd``), so the
process does not see EOF between attachments; ``close_stdin`` ends it (``stdin_once``).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from pathlib import Path

STDOUT = "stdout"
STDERR = "stderr"
CHUNK = 32 * 1024
SUBSCRIBER_QUEUE = 256


def timestamp(ns: int | None = None) -> str:
    """Go's ``time.RFC3339Nano`` in UTC, as containerd writes it: trailing zeros of the fraction dropped."""
    ns = time.time_ns() if ns is None else ns
    secs, frac = divmod(ns, 1_000_000_000)
    digits = f"{frac:09d}".rstrip("0")
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(secs)) + (f".{digits}" if digits else "") + "Z"


def format_lines(stream: str, buf: bytearray, max_line: int, *, eof: bool, now: str) -> bytes:
    """The CRI log lines for what ``buf`` holds; consumes what it formats (pure but for ``buf``)."""
    out = bytearray()
    prefix_f = f"{now} {stream} F ".encode()
    prefix_p = f"{now} {stream} P ".encode()
    while True:
        nl = buf.find(b"\n")
        if max_line > 0 and (nl < 0 or nl > max_line) and len(buf) > max_line:
            out += prefix_p + bytes(buf[:max_line]) + b"\n"
            del buf[:max_line]
            continue
        if nl >= 0:
            out += prefix_f + bytes(buf[:nl]) + b"\n"
            del buf[: nl + 1]
            continue
        break
    if eof and buf:
        out += prefix_f + bytes(buf) + b"\n"
        buf.clear()
    return bytes(out)


class LogFile:
    """The CRI log file of one container, shared by its stdout and stderr copiers."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._fd = -1
        self.open()

    def open(self) -> None:
        if not self.path:  # no log file asked for: output only goes to attached clients
            return
        Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o640)
        old, self._fd = self._fd, fd
        if old >= 0:
            os.close(old)

    def write(self, data: bytes) -> None:
        if self._fd >= 0 and data:
            os.write(self._fd, data)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


class Subscriber:
    """One attached client's view of a container's output: chunks per stream, ``None`` at the end."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[tuple[str, bytes] | None] = asyncio.Queue(SUBSCRIBER_QUEUE)
        self.dropped = False

    def offer(self, item: tuple[str, bytes] | None) -> bool:
        """Queue ``item``; ``False`` once the subscriber has fallen behind (it gets ``None`` then)."""
        if self.dropped:
            return False
        if self.queue.full():
            self.dropped = True
            with contextlib.suppress(asyncio.QueueEmpty):
                self.queue.get_nowait()
            self.queue.put_nowait(None)
            return False
        self.queue.put_nowait(item)
        return True


class FifoLogger:
    """Reads one container's stdout/stderr FIFOs until EOF, writes CRI log lines, feeds attached clients."""

    def __init__(self, fifo_dir: Path, log_path: str, max_line: int, *, tty: bool = False,
                 stdin: bool = False) -> None:
        self.fifo_dir = fifo_dir
        self.stdout = str(fifo_dir / "stdout")
        self.stderr = "" if tty else str(fifo_dir / "stderr")
        self.stdin = str(fifo_dir / "stdin") if stdin else ""
        self.stdin_fd = -1
        self.log = LogFile(log_path)
        self.max_line = max_line
        self._tasks: list[asyncio.Task[None]] = []
        self._keep: list[int] = []  # our own write ends until the shim has opened the FIFOs
        self.subscribers: set[Subscriber] = set()
        self.done = asyncio.Event()

    async def start(self) -> None:
        outputs = [(p, stream) for p, stream in ((self.stdout, STDOUT), (self.stderr, STDERR)) if p]
        for p in [p for p, _ in outputs] + ([self.stdin] if self.stdin else []):
            with contextlib.suppress(FileExistsError):
                os.mkfifo(p, 0o600)
        if self.stdin:
            # read-write: never blocks, never ENXIO, and the process sees no EOF while we hold it
            self.stdin_fd = os.open(self.stdin, os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
        for p, stream in outputs:
            rfd = os.open(p, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
            self._keep.append(os.open(p, os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC))
            self._tasks.append(asyncio.create_task(self._copy(rfd, stream), name=f"cri-log-{stream}"))
        asyncio.get_running_loop().create_task(self._finish())

    def subscribe(self) -> Subscriber:
        sub = Subscriber()
        if self.done.is_set():
            sub.offer(None)
        else:
            self.subscribers.add(sub)
        return sub

    def unsubscribe(self, sub: Subscriber) -> None:
        self.subscribers.discard(sub)

    def close_stdin(self) -> None:
        """No more stdin for the container: our write end goes, the FIFO too (a restart must not reopen it)."""
        if self.stdin_fd >= 0:
            os.close(self.stdin_fd)
            self.stdin_fd = -1
        if self.stdin:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.stdin)

    def release(self) -> None:
        """The shim holds the FIFOs now: drop our write ends, so EOF comes when it closes them."""
        for fd in self._keep:
            os.close(fd)
        self._keep.clear()

    async def _copy(self, rfd: int, stream: str) -> None:
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader(limit=CHUNK * 4)
        proto = asyncio.StreamReaderProtocol(reader)
        transport, _ = await loop.connect_read_pipe(lambda: proto, os.fdopen(rfd, "rb", buffering=0))
        buf = bytearray()
        try:
            while True:
                chunk = await reader.read(CHUNK)
                buf += chunk
                self.log.write(format_lines(stream, buf, self.max_line, eof=not chunk, now=timestamp()))
                if chunk:
                    for sub in list(self.subscribers):
                        if not sub.offer((stream, chunk)):
                            self.subscribers.discard(sub)
                if not chunk:
                    return
        finally:
            transport.close()

    async def _finish(self) -> None:
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._end()

    def _end(self) -> None:
        self.log.close()
        if self.stdin_fd >= 0:
            os.close(self.stdin_fd)
            self.stdin_fd = -1
        for sub in self.subscribers:
            sub.offer(None)
        self.subscribers.clear()
        self.done.set()

    def reopen(self) -> None:
        self.log.open()

    async def close(self) -> None:
        self.release()
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._end()
