"""Protocol-neutral pieces of the streaming server: in-memory pipes, the activity clock, running a command.

Both wire protocols (SPDY in ``spdyserve.py``, WebSocket in ``websocket.py``) demultiplex the
client's frames into ``Pipe``s the runtime reads, write the runtime's output back through
``OutStream``s, and report the result of an exec or attach on the error stream the way the
negotiated remotecommand version wants it (``run_command``).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import socket
from collections.abc import Awaitable, Callable

from .. import errdefs
from . import remotecommand as rc
from .runtime import AttachRequest, ExecRequest, StreamIO, StreamRuntime, TerminalSize

log = logging.getLogger("pycontainerd.streaming")

PIPE_LIMIT = 1 << 20  # bytes a client may have in flight towards a process before its reads stop
RESIZE_QUEUE = 8
CHUNK = 64 * 1024


class Pipe:
    """Bytes from the client to the runtime (an ``InStream``): bounded, with an EOF."""

    def __init__(self, limit: int = PIPE_LIMIT) -> None:
        self._buf: collections.deque[bytes] = collections.deque()
        self._size = 0
        self._limit = limit
        self._eof = False
        self._readable = asyncio.Event()
        self._writable = asyncio.Event()
        self._writable.set()

    @property
    def closed(self) -> bool:
        return self._eof

    async def put(self, data: bytes) -> None:
        """Queue ``data``; waits while the reader is behind by ``limit`` bytes.  Dropped after ``close``."""
        while self._size >= self._limit and not self._eof:
            self._writable.clear()
            await self._writable.wait()
        if self._eof or not data:
            return
        self._buf.append(data)
        self._size += len(data)
        self._readable.set()

    def close(self) -> None:
        self._eof = True
        self._readable.set()
        self._writable.set()

    async def read(self) -> bytes:
        while not self._buf:
            if self._eof:
                return b""
            self._readable.clear()
            await self._readable.wait()
        data = self._buf.popleft()
        self._size -= len(data)
        self._writable.set()
        return data


class Activity:
    """When the session last moved a byte; ``watch`` cancels it after ``idle`` seconds of none."""

    def __init__(self) -> None:
        self._loop = asyncio.get_running_loop()
        self.last = self._loop.time()

    def touch(self) -> None:
        self.last = self._loop.time()

    async def watch(self, idle: float, task: asyncio.Task[None]) -> None:
        if idle <= 0:
            return
        while not task.done():
            remaining = self.last + idle - self._loop.time()
            if remaining <= 0:
                log.debug("streaming session idle for %gs: closing it", idle)
                task.cancel()
                return
            await asyncio.sleep(remaining)


def resize_queue() -> asyncio.Queue[TerminalSize]:
    return asyncio.Queue(RESIZE_QUEUE)


def offer_resize(queue: asyncio.Queue[TerminalSize], size: tuple[int, int]) -> None:
    """A new terminal size into the queue; a full queue drops the oldest (only the latest matters)."""
    if queue.full():
        queue.get_nowait()
    queue.put_nowait(TerminalSize(*size))


def offer_resize_message(queue: asyncio.Queue[TerminalSize], data: bytes) -> None:
    """One WebSocket resize message; a malformed one is ignored (as kubelet logs and drops it)."""
    try:
        offer_resize(queue, rc.parse_resize(data))
    except errdefs.InvalidArgument as exc:
        log.debug("%s", exc)


async def run_command(runtime: StreamRuntime, request: ExecRequest | AttachRequest, io: StreamIO,
                      report: Callable[[bytes], Awaitable[None]], protocol: str) -> None:
    """Run the exec (or attach) and report its outcome with ``report`` (the error stream).

    remotecommand v4 and later: a Kubernetes Status, success included; older versions: a
    plain message, on failure only (``remotecommand.encode_status``).
    """
    try:
        if isinstance(request, ExecRequest):
            status = rc.encode_status(protocol, await runtime.exec(request, io))
        else:
            await runtime.attach(request, io)
            status = rc.encode_status(protocol, 0)
    except (errdefs.ContainerdError, OSError) as exc:  # the process could not run (or the client is gone)
        status = rc.encode_status(protocol, 0, str(exc))
    if status:
        await report(status)


async def pump_socket_out(sock: socket.socket, send: Callable[[bytes], Awaitable[None]]) -> None:
    """Bytes from ``sock`` to the client until the peer in the pod closes its side."""
    loop = asyncio.get_running_loop()
    while True:
        try:
            data = await loop.sock_recv(sock, CHUNK)
        except OSError:
            return
        if not data:
            return
        await send(data)


async def pump_socket_in(sock: socket.socket, source: Pipe) -> None:
    """Bytes from the client into ``sock``; at the client's EOF, shut the socket's write side."""
    loop = asyncio.get_running_loop()
    while data := await source.read():
        await loop.sock_sendall(sock, data)
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_WR)
