"""Streaming over SPDY/3.1: remotecommand (exec, attach) and port-forward, as kubelet serves them.

After the 101, the client opens the streams (``spdyio.SpdySession`` on our side, server
role); each carries a ``streamType`` header and we reply to every one at once.

remotecommand: the ``error`` stream, then ``stdin``/``stdout``/``stderr`` as the request
asked (no ``stderr`` with a terminal from v2 on) and, with a terminal from v3 on,
``resize``.  We wait ``stream_creation_timeout`` for the set; then run the command,
write the outcome on the error stream (``remotecommand.encode_status``), close the streams
and the session.  A client that goes away (its connection ends) cancels the command.

port-forward (``portforward.k8s.io``): for each forwarded connection the client opens an
``error`` then a ``data`` stream, both with ``port`` and ``requestID``.  With both there, we
dial the port in the pod and copy both ways (the client's FIN shuts our socket's write side;
the pod's EOF closes the data stream); a failed dial is reported on the error stream.  The
session lasts until the client closes it (or it idles out).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket

from .. import errdefs
from . import remotecommand as rc
from .runtime import AttachRequest, ExecRequest, PortForwardRequest, StreamIO, StreamRuntime, TerminalSize
from .spdyio import SpdySession, SpdyStream
from .streams import Activity, offer_resize, pump_socket_out, resize_queue, run_command

log = logging.getLogger("pycontainerd.streaming")

PAIR_TIMEOUT = 30.0
CHUNK = 64 * 1024


class _In:
    """A client stream as the runtime's stdin: a reset or lost stream reads as EOF."""

    def __init__(self, stream: SpdyStream, activity: Activity) -> None:
        self.stream = stream
        self.activity = activity

    async def read(self) -> bytes:
        try:
            data = await self.stream.read()
        except errdefs.ContainerdError:
            return b""
        self.activity.touch()
        return data


class _Out:
    def __init__(self, stream: SpdyStream, activity: Activity) -> None:
        self.stream = stream
        self.activity = activity

    async def write(self, data: bytes) -> None:
        try:
            await self.stream.write(data)
        except errdefs.ContainerdError as exc:
            raise ConnectionResetError(f"the streaming client went away: {exc}") from exc
        self.activity.touch()


def _version(protocol: str) -> int:
    return {rc.STREAM_PROTOCOL_V4: 4, rc.STREAM_PROTOCOL_V3: 3, rc.STREAM_PROTOCOL_V2: 2}.get(protocol, 1)


async def _accept_streams(session: SpdySession, wanted: set[str]) -> dict[str, SpdyStream]:
    got: dict[str, SpdyStream] = {}
    while not wanted <= got.keys():
        stream = await session.accept_stream()
        if stream is None:
            raise ConnectionResetError("the client closed the connection before creating its streams")
        kind = stream.header(rc.HEADER_STREAM_TYPE) or ""
        await stream.reply()
        if kind not in wanted or kind in got:
            log.debug("spdy: unexpected %r stream reset", kind)
            stream.reset()
            continue
        got[kind] = stream
    return got


async def serve_command(session: SpdySession, protocol: str, runtime: StreamRuntime,
                        request: ExecRequest | AttachRequest, activity: Activity, creation_timeout: float) -> None:
    version = _version(protocol)
    tty = request.tty
    wanted = {rc.STREAM_ERROR}
    if request.stdin:
        wanted.add(rc.STREAM_STDIN)
    if request.stdout:
        wanted.add(rc.STREAM_STDOUT)
    if request.stderr and not (tty and version >= 2):
        wanted.add(rc.STREAM_STDERR)
    if tty and version >= 3:
        wanted.add(rc.STREAM_RESIZE)
    try:
        async with asyncio.timeout(creation_timeout):
            streams = await _accept_streams(session, wanted)
    except TimeoutError:
        log.debug("spdy: timed out waiting for the client to create streams %s", sorted(wanted))
        return
    io = StreamIO(tty=tty)
    if rc.STREAM_STDIN in streams:
        io.stdin = _In(streams[rc.STREAM_STDIN], activity)
    if rc.STREAM_STDOUT in streams:
        io.stdout = _Out(streams[rc.STREAM_STDOUT], activity)
    if rc.STREAM_STDERR in streams:
        io.stderr = _Out(streams[rc.STREAM_STDERR], activity)
    helpers: list[asyncio.Task[None]] = []
    if rc.STREAM_RESIZE in streams:
        io.resize = resize_queue()
        helpers.append(asyncio.create_task(_read_resizes(streams[rc.STREAM_RESIZE], io.resize, activity)))
    error = streams[rc.STREAM_ERROR]
    runner = asyncio.create_task(run_command(runtime, request, io, _Out(error, activity).write, protocol),
                                 name="spdy-command")
    gone = asyncio.create_task(session.wait_closed(), name="spdy-closed")
    try:
        done, _ = await asyncio.wait({runner, gone}, return_when=asyncio.FIRST_COMPLETED)
        if runner in done:
            runner.result()
            for s in streams.values():
                await s.close()
    finally:
        for t in (runner, gone, *helpers):
            t.cancel()
        await asyncio.gather(runner, gone, *helpers, return_exceptions=True)


async def _read_resizes(stream: SpdyStream, queue: asyncio.Queue[TerminalSize], activity: Activity) -> None:
    decoder = rc.ResizeDecoder()
    with contextlib.suppress(errdefs.ContainerdError):
        while data := await stream.read():
            activity.touch()
            for size in decoder.feed(data):
                offer_resize(queue, size)


async def serve_portforward(session: SpdySession, runtime: StreamRuntime, request: PortForwardRequest,
                            activity: Activity) -> None:
    pending: dict[str, SpdyStream] = {}  # requestID -> the error stream waiting for its data stream
    forwards: set[asyncio.Task[None]] = set()
    try:
        while (stream := await session.accept_stream()) is not None:
            activity.touch()
            await stream.reply()
            kind = stream.header(rc.HEADER_STREAM_TYPE)
            rid = stream.header(rc.HEADER_REQUEST_ID) or ""
            if kind == rc.STREAM_ERROR:
                pending[rid] = stream
            elif kind == rc.STREAM_DATA and rid in pending:
                t = asyncio.create_task(_forward(runtime, request, pending.pop(rid), stream, activity))
                forwards.add(t)
                t.add_done_callback(forwards.discard)
            else:
                log.debug("spdy port-forward: unexpected stream %r (request %r) reset", kind, rid)
                stream.reset()
    finally:
        for t in list(forwards):
            t.cancel()
        await asyncio.gather(*forwards, return_exceptions=True)


async def _forward(runtime: StreamRuntime, request: PortForwardRequest, error: SpdyStream, data: SpdyStream,
                   activity: Activity) -> None:
    port_text = data.header(rc.HEADER_PORT) or ""
    try:
        try:
            port = int(port_text)
            if not 0 < port < 65536:
                raise ValueError(port_text)
        except ValueError:
            raise errdefs.InvalidArgument(f"invalid port {port_text!r}") from None
        sock = await runtime.dial(request.pod_id, port)
    except errdefs.ContainerdError as exc:
        with contextlib.suppress(errdefs.ContainerdError):
            await error.write(f"error forwarding port {port_text} to pod {request.pod_id}: {exc}".encode())
            await error.close()
        data.reset()
        return
    with sock:
        out = _Out(data, activity)
        into = asyncio.create_task(_socket_in(sock, _In(data, activity)))
        try:
            with contextlib.suppress(ConnectionError):
                await pump_socket_out(sock, out.write)
            with contextlib.suppress(errdefs.ContainerdError):
                await data.close()
            await into
        finally:
            into.cancel()
            await asyncio.gather(into, return_exceptions=True)
            with contextlib.suppress(errdefs.ContainerdError):
                await error.close()


async def _socket_in(sock: socket.socket, source: _In) -> None:
    loop = asyncio.get_running_loop()
    with contextlib.suppress(OSError):
        while data := await source.read():
            await loop.sock_sendall(sock, data)
        sock.shutdown(socket.SHUT_WR)
