"""CRI container logs: the container's stdout/stderr FIFOs copied, daemon-side, into the CRI log file.

Each line is ``<RFC 3339 with nanoseconds, Go's RFC3339Nano> <stdout|stderr> <F|P> <text>\\n`` (the kubelet's
format): ``F`` ends a line; a line longer than ``max_container_log_line_size`` is cut into
``P`` (partial) pieces of that size, the last one ``F``.  Output that ends without a newline
is written as a full line at EOF, as containerd does.  ``reopen`` (ReopenContainerLog, after
the kubelet rotated the file) makes the copier write to a new file at the same path.
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


class FifoLogger:
    """Reads one container's stdout/stderr FIFOs until EOF and writes CRI log lines."""

    def __init__(self, fifo_dir: Path, log_path: str, max_line: int) -> None:
        self.fifo_dir = fifo_dir
        self.stdout = str(fifo_dir / "stdout")
        self.stderr = str(fifo_dir / "stderr")
        self.log = LogFile(log_path)
        self.max_line = max_line
        self._tasks: list[asyncio.Task[None]] = []
        self._keep: list[int] = []  # our own write ends until the shim has opened the FIFOs
        self.done = asyncio.Event()

    async def start(self) -> None:
        for p in (self.stdout, self.stderr):
            with contextlib.suppress(FileExistsError):
                os.mkfifo(p, 0o600)
        for p, stream in ((self.stdout, STDOUT), (self.stderr, STDERR)):
            rfd = os.open(p, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
            self._keep.append(os.open(p, os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC))
            self._tasks.append(asyncio.create_task(self._copy(rfd, stream), name=f"cri-log-{stream}"))
        asyncio.get_running_loop().create_task(self._finish())

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
                if not chunk:
                    return
        finally:
            transport.close()

    async def _finish(self) -> None:
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self.log.close()
        self.done.set()

    def reopen(self) -> None:
        self.log.open()

    async def close(self) -> None:
        self.release()
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self.log.close()
        self.done.set()
