"""ttrpc on the shim's own loop: a server for ``containerd.task.v2.Task`` and the small client
that forwards events to containerd (``Events.Forward``).

Both are thin I/O around the sans-IO ``pycontainerd.ttrpc.protocol`` state machines; the
shim loop (``pycontainerd.shim.loop``) moves the bytes, so the shim never loads asyncio.
The server reuses the JSON server's ``Connection`` (buffered non-blocking writes, close) and
only swaps what it does with the bytes it reads.
"""

from __future__ import annotations

import socket
import time
from collections import deque
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass
from typing import Any

from google.protobuf.message import DecodeError, Message

from pycontainerd import errdefs
from pycontainerd.shim.loop import Future, Loop, TimerHandle
from pycontainerd.shim.server import Connection, Listening, _as_kind, recv_some
from pycontainerd.ttrpc.protocol import (
    ClientConnection,
    FrameIgnored,
    ProtocolError,
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

Handler = Callable[[Any], Coroutine[Any, Any, Message]]


@dataclass(frozen=True, slots=True)
class Method:
    request_type: type[Message]
    handler: Handler


class TtrpcConnection(Connection):
    def __init__(self, server: Listening, sock: socket.socket) -> None:
        self.proto = ServerConnection()
        super().__init__(server, sock)
        assert isinstance(server, TtrpcServer)
        self.ttrpc = server

    def on_data(self, data: bytes) -> None:
        try:
            events = self.proto.receive_data(data)
        except ProtocolError as exc:
            self.loop.report("bad ttrpc frame from client", exc)
            self.close()
            return
        for ev in events:
            if isinstance(ev, RequestReceived):
                self.ttrpc.dispatch(self, ev.stream_id, ev.request)
            elif isinstance(ev, RequestRefused):
                self.respond(ev.stream_id, Response(ev.status))
            elif isinstance(ev, FrameIgnored):
                self.loop.log(f"ttrpc: ignored frame on stream {ev.stream_id}: {ev.reason}")

    def respond(self, stream_id: int, resp: Response) -> None:
        if not self.closed:
            self.send(self.proto.send_response(stream_id, resp))


class TtrpcServer(Listening):
    """Serve ``methods`` (``{"service/Method": Method}``) on ``listener``; each request runs as
    its own task on the loop, so a pending Wait never holds up a Kill.  ``after_call`` runs
    after each reply is queued (the host uses it to exit after a Shutdown)."""

    connection_class = TtrpcConnection

    def __init__(
        self,
        loop: Loop,
        listener: socket.socket,
        methods: Mapping[str, Method],
        after_call: Callable[[], None] | None = None,
    ) -> None:
        super().__init__(loop, listener)
        self.methods = dict(methods)
        self.after_call = after_call

    def dispatch(self, conn: TtrpcConnection, stream_id: int, req: Request) -> None:
        name = f"{req.service}/{req.method}"
        m = self.methods.get(name)
        if m is None:
            conn.respond(stream_id, Response(status_of("UNIMPLEMENTED", f"ttrpc method {name} not implemented")))
            return
        try:
            msg = m.request_type.FromString(req.payload)
        except DecodeError as exc:
            conn.respond(stream_id, Response(status_of("INVALID_ARGUMENT", f"{name}: malformed request: {exc}")))
            return
        task = self.loop.spawn(m.handler(msg))

        def done(fut: Future[Message]) -> None:
            exc = fut.exception()
            if exc is None:
                conn.respond(stream_id, Response(payload=fut.result().SerializeToString()))
            else:
                kind = _as_kind(exc)
                if isinstance(kind, errdefs.Unknown) and not isinstance(exc, errdefs.ContainerdError):
                    self.loop.report(f"{name} failed", exc)
                conn.respond(stream_id, Response(Status.from_error(kind)))
            if self.after_call is not None:
                self.after_call()

        task.add_done_callback(done)

    def flush(self) -> None:
        """Before the process exits: push out the replies still queued."""
        for conn in list(self.connections):
            conn.flush_blocking()


class Forwarder:
    """Sends events to containerd's ``Events.Forward`` over ttrpc, in order, one at a time.

    Like containerd's shim publisher: a failed forward (containerd restarting, socket not
    there yet) is retried with a growing delay, a few times, then dropped with a log line;
    the connection is made again as needed.  ``flush`` (before the shim exits) waits a
    little for the queue to drain."""

    SERVICE = "containerd.services.events.ttrpc.v1.Events"
    RETRIES = 8  # 0.05 s doubling to 2 s between tries: ~5 s, a containerd restart
    CALL_TIMEOUT = 5.0
    MAX_QUEUE = 1024

    def __init__(self, loop: Loop, address: str, namespace: str) -> None:
        self.loop = loop
        self.path = address.removeprefix("unix://")
        self.metadata = metadata_pairs({"containerd-namespace-ttrpc": namespace})
        self.queue: deque[tuple[bytes, int]] = deque()  # (ForwardRequest bytes, attempts)
        self.sock: socket.socket | None = None
        self.proto: ClientConnection | None = None
        self.in_flight: int | None = None  # stream id
        self.timer: TimerHandle | None = None
        self._deadline: TimerHandle | None = None
        self.out = bytearray()

    def forward(self, request: Message) -> None:
        if not self.path:
            return
        if len(self.queue) >= self.MAX_QUEUE:
            self.loop.log(f"dropping an event for {self.path}: {self.MAX_QUEUE} are waiting already")
            return
        self.queue.append((request.SerializeToString(), 0))
        if self.in_flight is None and self.timer is None:
            self._next()

    def _connect(self) -> bool:
        if self.sock is not None:
            return True
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        try:
            sock.connect(self.path)  # a unix socket connects at once or fails
        except OSError:
            sock.close()
            return False
        sock.setblocking(False)
        self.sock = sock
        self.proto = ClientConnection()
        self.loop.add_reader(sock.fileno(), self._readable)
        return True

    def _drop_connection(self) -> None:
        if self.sock is not None:
            self.loop.forget_fd(self.sock.fileno())
            self.sock.close()
        self.sock = None
        self.proto = None
        self.out.clear()

    def _next(self) -> None:
        self.timer = None
        if self.in_flight is not None or not self.queue:
            return
        if not self._connect():
            self._failed("cannot connect")
            return
        assert self.proto is not None
        payload, _ = self.queue[0]
        sid, data = self.proto.send_request(
            Request(self.SERVICE, "Forward", payload, int(self.CALL_TIMEOUT * 1e9), self.metadata)
        )
        self.in_flight = sid
        self.out += data
        self._flush()
        self._deadline = self.loop.call_later(self.CALL_TIMEOUT, lambda: self._timeout(sid))

    def _flush(self) -> None:
        assert self.sock is not None
        try:
            n = self.sock.send(self.out)
        except BlockingIOError:
            n = 0
        except OSError:
            self._lost()
            return
        del self.out[:n]
        if self.out:
            self.loop.add_writer(self.sock.fileno(), self._flush)
        else:
            self.loop.remove_writer(self.sock.fileno())

    def _readable(self) -> None:
        if self.sock is None or self.proto is None:
            return
        data = recv_some(self.sock)
        if data is None:
            return
        if not data:
            self._lost()
            return
        for ev in self.proto.receive_data(data):
            if isinstance(ev, ResponseReceived) and ev.stream_id == self.in_flight:
                self._cancel_deadline()
                self.in_flight = None
                if ev.response.status.ok:
                    self.queue.popleft()
                    self._next()
                else:
                    self._failed(f"{ev.response.status.code_name}: {ev.response.status.message}")

    def _cancel_deadline(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _timeout(self, sid: int) -> None:
        if self.in_flight == sid:
            self.in_flight = None
            self._drop_connection()
            self._failed("no answer")

    def _lost(self) -> None:
        if self.in_flight is not None:
            self._cancel_deadline()
            self.in_flight = None
            self._drop_connection()
            self._failed("connection lost")
        else:
            self._drop_connection()

    def _failed(self, why: str) -> None:
        payload, attempts = self.queue.popleft()
        if attempts + 1 >= self.RETRIES:
            self.loop.log(f"dropping an event for {self.path} after {attempts + 1} tries: {why}")
        else:
            self.queue.appendleft((payload, attempts + 1))
        delay = min(0.05 * 2**attempts, 2.0)
        self.timer = self.loop.call_later(delay, self._next)

    def flush(self, timeout: float) -> None:
        """Run the loop until the queue is empty or ``timeout`` passed (the shim is exiting)."""
        end = time.monotonic() + timeout
        while self.queue and time.monotonic() < end:
            self.loop.run_once(max_wait=0.05)

    def close(self) -> None:
        self._drop_connection()
