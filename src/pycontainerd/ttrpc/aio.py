"""asyncio client and server for ttrpc over unix sockets (the I/O around ``protocol``).

Client::

    client = await Client.connect("unix:///run/containerd/s/abc")
    resp = await client.call("containerd.task.v2.Task", "State",
                             shim_pb2.StateRequest(id="c1"), shim_pb2.StateResponse, timeout=5)
    await client.close()

A failed call raises the ``errdefs`` kind of the status code the server sent (NOT_FOUND ->
``errdefs.NotFound``...), ``DeadlineExceeded`` when ``timeout`` passes, and ``Unavailable``
when the connection is gone.  Calls on one client may run concurrently.

Server::

    server = Server()
    server.register("containerd.services.events.ttrpc.v1.Events",
                    {"Forward": Method(events_pb2.ForwardRequest, forward)})
    await server.start("/run/x.sock")         # or start(sock=an already bound socket)
    ...
    await server.close()                     # stop accepting, let calls in flight finish

A handler is ``async def forward(request, ctx: CallContext) -> Message``; raising an
``errdefs`` kind sends its code, any other exception UNKNOWN.  The request's timeout_nano
bounds the handler (DEADLINE_EXCEEDED), and a handler is cancelled when its client goes away.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import stat
import struct
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from google.protobuf.message import DecodeError, Message

from pycontainerd import errdefs

from .protocol import (
    MAX_MESSAGE_LENGTH,
    ClientConnection,
    FrameIgnored,
    MetadataLike,
    Request,
    RequestReceived,
    RequestRefused,
    Response,
    ResponseReceived,
    ServerConnection,
    Status,
    metadata_pairs,
    status_of,
)

log = logging.getLogger(__name__)

M = TypeVar("M", bound=Message)
READ_CHUNK = 1 << 16


def socket_path(address: str) -> str:
    """The filesystem (or ``\\0``-prefixed abstract) path of a ``unix://`` address or bare path."""
    path = address.removeprefix("unix://")
    if not path:
        raise errdefs.InvalidArgument(f"ttrpc address {address!r} names no socket")
    return path


def _peer_pid(writer: asyncio.StreamWriter) -> int | None:
    sock = writer.get_extra_info("socket")
    if sock is None or sock.family != socket.AF_UNIX:
        return None
    try:
        creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    except OSError:
        return None
    pid: int = struct.unpack("3i", creds)[0]
    return pid or None


# --- client ------------------------------------------------------------------------------


class Client:
    """One ttrpc connection; ``call`` is safe to use from concurrent tasks."""

    def __init__(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, limit: int = MAX_MESSAGE_LENGTH
    ) -> None:
        self._reader = reader
        self._writer = writer
        self._conn = ClientConnection(limit)
        self._calls: dict[int, asyncio.Future[Response]] = {}
        self._closed = asyncio.Event()
        self._close_reason = "ttrpc connection closed"
        # SO_PEERCRED: the process that called listen() on the server's socket; when the socket
        # was handed down (the Go shim's `start` binds it for its child), that is the parent.
        self.peer_pid = _peer_pid(writer)
        self._read_task = asyncio.create_task(self._read_loop(), name="ttrpc-client-read")

    @classmethod
    async def connect(
        cls,
        address: str,
        *,
        timeout: float | None = 10.0,  # noqa: ASYNC109 - a connect timeout, like grpc's channel_ready
        limit: int = MAX_MESSAGE_LENGTH,
    ) -> Client:
        path = socket_path(address)
        try:
            async with asyncio.timeout(timeout):
                reader, writer = await asyncio.open_unix_connection(path, limit=READ_CHUNK)
        except TimeoutError as exc:
            raise errdefs.DeadlineExceeded(f"ttrpc connect {address}: timed out after {timeout}s") from exc
        except FileNotFoundError as exc:
            raise errdefs.Unavailable(f"ttrpc connect {address}: no socket there") from exc
        except ConnectionRefusedError as exc:
            raise errdefs.Unavailable(f"ttrpc connect {address}: connection refused (no server listening)") from exc
        except OSError as exc:
            raise errdefs.from_oserror(exc, f"ttrpc connect {address}") from exc
        return cls(reader, writer, limit=limit)

    @property
    def closed(self) -> bool:
        return self._closed.is_set()

    async def wait_closed(self) -> None:
        """Return once the connection is gone (closed here, or the server went away)."""
        await self._closed.wait()

    async def call(
        self,
        service: str,
        method: str,
        request: Message,
        response_type: type[M],
        *,
        timeout: float | None = None,  # noqa: ASYNC109 - sent to the server as the call's deadline
        metadata: MetadataLike | None = None,
    ) -> M:
        """Call ``service/method``; the server gets ``timeout`` as the request's deadline."""
        if self.closed:
            raise errdefs.Unavailable(f"ttrpc {service}/{method}: {self._close_reason}")
        timeout_nano = int(timeout * 1e9) if timeout is not None and timeout > 0 else 0
        req = Request(service, method, request.SerializeToString(), timeout_nano, metadata_pairs(metadata))
        sid, data = self._conn.send_request(req)
        fut: asyncio.Future[Response] = asyncio.get_running_loop().create_future()
        self._calls[sid] = fut
        try:
            async with asyncio.timeout(timeout):
                self._writer.write(data)
                await self._writer.drain()
                resp = await fut
        except TimeoutError as exc:
            raise errdefs.DeadlineExceeded(f"ttrpc {service}/{method}: no response within {timeout}s") from exc
        except ConnectionError as exc:
            raise errdefs.Unavailable(f"ttrpc {service}/{method}: {exc or self._close_reason}") from exc
        finally:
            self._calls.pop(sid, None)
            self._conn.forget(sid)
        if not resp.status.ok:
            raise resp.status.to_error()
        try:
            return response_type.FromString(resp.payload)
        except DecodeError as exc:
            raise errdefs.Unknown(f"ttrpc {service}/{method}: malformed {response_type.__name__}: {exc}") from exc

    async def _read_loop(self) -> None:
        reason = "ttrpc connection closed by the server"
        try:
            while True:
                data = await self._reader.read(READ_CHUNK)
                if not data:
                    break
                for ev in self._conn.receive_data(data):
                    if isinstance(ev, ResponseReceived):
                        fut = self._calls.get(ev.stream_id)
                        if fut is not None and not fut.done():
                            fut.set_result(ev.response)
                    else:  # typically the late answer to a call that timed out
                        log.debug("ttrpc client: ignored frame on stream %d: %s", ev.stream_id, ev.reason)
        except (ConnectionError, OSError) as exc:
            reason = f"ttrpc connection lost: {exc}"
        except asyncio.CancelledError:
            reason = "ttrpc connection closed"
            raise
        finally:
            self._shutdown(reason)

    def _shutdown(self, reason: str) -> None:
        if self._closed.is_set():
            return
        self._close_reason = reason
        self._closed.set()
        for fut in self._calls.values():
            if not fut.done():
                fut.set_exception(errdefs.Unavailable(reason))
        self._writer.close()

    async def close(self) -> None:
        """Close the connection; calls still waiting fail with ``Unavailable``."""
        self._shutdown("ttrpc connection closed")
        self._read_task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._read_task
        with contextlib.suppress(OSError, ConnectionError):
            await self._writer.wait_closed()

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


# --- server ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CallContext:
    """What a handler knows about its call besides the request message."""

    service: str
    method: str
    metadata: dict[str, list[str]]
    timeout: float | None  # seconds the client allowed (from timeout_nano), None: no deadline
    peer_pid: int | None  # the client process (SO_PEERCRED)


Handler = Callable[[Any, CallContext], Awaitable[Message]]


@dataclass(frozen=True, slots=True)
class Method:
    request_type: type[Message]
    handler: Handler


@dataclass(eq=False)
class _Conn:
    writer: asyncio.StreamWriter
    proto: ServerConnection
    peer_pid: int | None
    tasks: set[asyncio.Task[None]] = field(default_factory=set)


class Server:
    """Serve registered services on unix sockets, each request in its own task."""

    def __init__(self, *, limit: int = MAX_MESSAGE_LENGTH) -> None:
        self.limit = limit
        self._services: dict[str, dict[str, Method]] = {}
        self._servers: list[asyncio.Server] = []
        self._paths: list[str] = []
        self._conns: set[_Conn] = set()
        self._conn_tasks: set[asyncio.Task[None]] = set()
        self._closing = False

    def register(self, service: str, methods: Mapping[str, Method]) -> None:
        if service in self._services:
            raise errdefs.AlreadyExists(f"ttrpc service {service} is already registered")
        self._services[service] = dict(methods)

    async def start(self, address: str | None = None, *, sock: socket.socket | None = None) -> None:
        """Listen on ``address`` (a path or unix:// address; a stale socket file there is
        replaced) or on ``sock``, an already bound and listening unix socket (inherited fd)."""
        if self._closing:
            raise errdefs.FailedPrecondition("ttrpc server is closed")
        if (address is None) == (sock is None):
            raise errdefs.InvalidArgument("ttrpc server: give exactly one of address and sock")
        if address is not None:
            path = socket_path(address)
            if not path.startswith("\0"):
                with contextlib.suppress(FileNotFoundError):
                    if stat.S_ISSOCK(os.lstat(path).st_mode):
                        os.unlink(path)
                self._paths.append(path)
            srv = await asyncio.start_unix_server(self._accept, path=path, limit=READ_CHUNK)
        else:
            srv = await asyncio.start_unix_server(self._accept, sock=sock, limit=READ_CHUNK)
        self._servers.append(srv)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._conn_tasks.add(task)
        conn = _Conn(writer, ServerConnection(self.limit), _peer_pid(writer))
        self._conns.add(conn)
        try:
            await self._serve(reader, conn)
        finally:
            self._conns.discard(conn)
            for t in conn.tasks:
                t.cancel()
            if conn.tasks:
                await asyncio.gather(*conn.tasks, return_exceptions=True)
            writer.close()
            with contextlib.suppress(OSError, ConnectionError):
                await writer.wait_closed()
            self._conn_tasks.discard(task)

    async def _serve(self, reader: asyncio.StreamReader, conn: _Conn) -> None:
        while True:
            try:
                data = await reader.read(READ_CHUNK)
            except (ConnectionError, OSError):
                return
            if not data:
                return
            for ev in conn.proto.receive_data(data):
                if isinstance(ev, RequestReceived):
                    if self._closing:
                        self._reply(conn, ev.stream_id, Response(status_of("UNAVAILABLE", "ttrpc server closing")))
                        continue
                    t = asyncio.create_task(self._dispatch(conn, ev.stream_id, ev.request))
                    conn.tasks.add(t)
                    t.add_done_callback(conn.tasks.discard)
                elif isinstance(ev, RequestRefused):
                    self._reply(conn, ev.stream_id, Response(ev.status))
                elif isinstance(ev, FrameIgnored):
                    log.warning("ttrpc server: ignored frame on stream %d: %s", ev.stream_id, ev.reason)

    def _reply(self, conn: _Conn, stream_id: int, resp: Response) -> None:
        if conn.writer.is_closing():
            return
        conn.writer.write(conn.proto.send_response(stream_id, resp))

    async def _dispatch(self, conn: _Conn, stream_id: int, req: Request) -> None:
        resp = await self._handle(conn, req)
        self._reply(conn, stream_id, resp)
        with contextlib.suppress(ConnectionError, OSError):
            await conn.writer.drain()

    async def _handle(self, conn: _Conn, req: Request) -> Response:
        methods = self._services.get(req.service)
        if methods is None:
            return Response(status_of("UNIMPLEMENTED", f"service {req.service}"))
        m = methods.get(req.method)
        if m is None:
            return Response(status_of("UNIMPLEMENTED", f"method {req.service}/{req.method}"))
        try:
            msg = m.request_type.FromString(req.payload)
        except DecodeError as exc:
            return Response(status_of("INVALID_ARGUMENT", f"{req.service}/{req.method}: malformed request: {exc}"))
        timeout = req.timeout_nano / 1e9 if req.timeout_nano > 0 else None
        ctx = CallContext(req.service, req.method, req.metadata_dict(), timeout, conn.peer_pid)
        try:
            async with asyncio.timeout(timeout):
                out = await m.handler(msg, ctx)
        except TimeoutError:
            return Response(status_of("DEADLINE_EXCEEDED", f"{req.service}/{req.method}: deadline exceeded"))
        except errdefs.ContainerdError as exc:
            return Response(Status.from_error(exc))
        except Exception as exc:
            log.exception("ttrpc handler %s/%s failed", req.service, req.method)
            return Response(Status.from_error(exc))
        return Response(payload=out.SerializeToString())

    @property
    def closing(self) -> bool:
        return self._closing

    @property
    def in_flight(self) -> int:
        return sum(len(c.tasks) for c in self._conns)

    async def close(self, grace: float | None = 5.0) -> None:
        """Stop listening, let requests in flight finish (up to ``grace`` seconds, then they
        are cancelled), answer new ones with UNAVAILABLE meanwhile, and close every connection."""
        self._closing = True
        for srv in self._servers:
            srv.close()
        pending = {t for c in self._conns for t in c.tasks}
        if pending:
            _, late = await asyncio.wait(pending, timeout=grace)
            for t in late:
                t.cancel()
            if late:
                await asyncio.gather(*late, return_exceptions=True)
        for c in list(self._conns):
            with contextlib.suppress(ConnectionError, OSError):
                await c.writer.drain()
            c.writer.close()
        if self._conn_tasks:
            await asyncio.gather(*self._conn_tasks, return_exceptions=True)
        for srv in self._servers:
            await srv.wait_closed()
        self._servers.clear()
        for path in self._paths:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
        self._paths.clear()

    async def __aenter__(self) -> Server:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
