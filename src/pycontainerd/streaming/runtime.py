"""What the streaming server asks of the runtime: the requests it serves and the ``StreamRuntime`` Protocol.

The server (``server.py``) speaks the wire protocols (SPDY, WebSocket) and turns each
session into plain byte streams; the runtime (the CRI plugin's ``cri/streaming.py``) runs
the process or dials the port.  Lifecycle of an exec, seen from the runtime:

1. ``exec(request, io)`` is called once the client's streams are there;
2. it starts the process with the streams ``request`` asked for (``io.stdin`` etc. are
   ``None`` where not), copies ``io.stdin`` into it until ``read()`` gives ``b""`` (then
   closes the process's stdin), its output into ``io.stdout``/``io.stderr`` (``write``
   awaits the client: back-pressure), and applies the sizes ``io.resize`` delivers;
3. it returns the exit code once the process has exited and its output was written; or
4. it is cancelled (the client went away, the stream went idle): it must then kill and
   delete the process and remove every FIFO before the cancellation propagates.

``attach`` is the same for a container's own process (it returns when the container exits
or is cancelled, and never kills the container).  ``dial`` connects to a port inside a pod's
network namespace and returns the connected, non-blocking socket; the server pumps it.
"""

from __future__ import annotations

import asyncio
import socket
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class ExecRequest:
    container_id: str
    cmd: tuple[str, ...]
    tty: bool = False
    stdin: bool = False
    stdout: bool = True
    stderr: bool = True


@dataclass(frozen=True)
class AttachRequest:
    container_id: str
    tty: bool = False
    stdin: bool = False
    stdout: bool = True
    stderr: bool = True


@dataclass(frozen=True)
class PortForwardRequest:
    pod_id: str
    ports: tuple[int, ...] = ()


StreamRequest = ExecRequest | AttachRequest | PortForwardRequest


@dataclass(frozen=True)
class TerminalSize:
    width: int
    height: int


class InStream(Protocol):
    async def read(self) -> bytes:
        """The next bytes from the client; ``b""`` once it closed its side."""
        ...


class OutStream(Protocol):
    async def write(self, data: bytes) -> None:
        """Send ``data`` to the client; returns once it is handed on (back-pressure)."""
        ...


@dataclass
class StreamIO:
    stdin: InStream | None = None
    stdout: OutStream | None = None
    stderr: OutStream | None = None
    tty: bool = False
    resize: asyncio.Queue[TerminalSize] | None = None


class StreamRuntime(Protocol):
    async def exec(self, request: ExecRequest, io: StreamIO) -> int:
        """Run the command; its exit code (see the module docstring for the contract)."""
        ...

    async def attach(self, request: AttachRequest, io: StreamIO) -> None:
        """Copy a running container's stdio until it exits or the call is cancelled."""
        ...

    async def dial(self, pod_id: str, port: int) -> socket.socket:
        """A connected non-blocking TCP socket to ``localhost:port`` in the pod's network namespace."""
        ...
