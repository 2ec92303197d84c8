"""A gRPC server on asyncio over the sans-IO HTTP/2 core (``pycontainerd.http2``), without grpc.

Mapping of gRPC onto HTTP/2 (grpc's PROTOCOL-HTTP2.md): a call is a stream; the request is a
HEADERS block (``:method POST``, ``:path /pkg.Service/Method``, ``content-type
application/grpc...``, optional ``grpc-timeout``/``grpc-encoding`` and the caller's metadata)
followed by DATA carrying length-prefixed messages (1 byte compressed flag, 4 bytes length);
the response is HEADERS (``:status 200``), DATA, and trailers with ``grpc-status`` and
``grpc-message`` (percent-encoded); an error before any message is answered "trailers-only".

Shape: one ``asyncio.Protocol`` per connection feeds bytes to ``ServerConnection`` and acts on
its events; each call runs as its own task, created once its request is complete (unary
requests) or at once (streaming requests, fed through a queue).  A unary answer (headers,
message, trailers) is written at once, in one write; a stream's messages are written together
at the end of the loop iteration (or past ``FLUSH_BYTES``).  Handlers' errors become the call's
status through ``status.status_of`` (errdefs kinds by name, anything else UNKNOWN, logged).

Why the call starts are paced (``START_BATCH``): one read can carry thousands of requests of
one client; starting them all at once would queue thousands of tasks ahead of every other
connection's next read.  Each connection starts at most a batch per loop iteration, so a
burst on one connection is served interleaved with the others (tests/security/test_floods.py).
Why reading pauses: while the transport's write buffer is above its high-water mark (a client
not reading its answers) or too many requests wait to start, the connection stops reading, so
memory stays bounded by what we have already accepted.  For the same reason a server stream's
handler is not asked for its next message while its last one waits for the client's window or
its socket: a stuck stream costs one message.

Request memory (what a client can make us hold before a handler has it): the connection window
only paces and is given back as bytes arrive, as in grpc-go; each call is bounded by its
stream's window, the initial 64 KiB given back only as the handler takes messages (a unary
request's never), plus grants for a message larger than what is left of it, reserved from a
budget per connection (``connection_budget``, twice the largest message) and one for the server
(``budget``, eight times), waiting in order while they are full (``_Connection._need``).
A unary request's grant goes back when its handler starts, a streaming one's as the handler
takes the message.  Any one message fits a budget alone, so a client sending several large
messages at once always progresses; a connection holds at most its budget plus 64 KiB a stream.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import os
import socket
import ssl as ssl_mod
import struct
import time
import zlib
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, cast

from ..http2 import frames, hpack
from ..http2.server import (
    ConnectionClosed,
    DataReceived,
    ProtocolError,
    RequestReceived,
    ServerConnection,
    ServerSettings,
    StreamClosedError,
    StreamReset,
    WindowOpened,
)
from . import methods as methods_mod
from .context import ServicerContext
from .encoded import EncodedStream
from .methods import Method
from .observer import Observer
from .status import AbortError, StatusCode, status_of

if TYPE_CHECKING:
    from google.protobuf.descriptor import ServiceDescriptor

    from .methods import Codec

log = logging.getLogger("pycontainerd.rpc")

DEFAULT_MAX_MESSAGE = 4 << 20  # grpc's default for received messages
START_BATCH = 64  # calls one connection starts per loop iteration (see the module docstring)
MAX_WAITING_STARTS = 4096  # past this many requests waiting to start, stop reading the connection
COPY_BELOW = 64 << 10  # messages smaller than this are sent with their prefix as one piece
FLUSH_BYTES = 256 << 10  # streamed output queued before it is written without waiting for the loop

_PREFIX = struct.Struct(">BL")
_RESPONSE_HEADERS = hpack.encode_block([(":status", "200"), ("content-type", "application/grpc")])
_TRAILERS_OK = hpack.encode_block([("grpc-status", "0")])
_TIMEOUT_UNITS = {"H": 3600.0, "M": 60.0, "S": 1.0, "m": 1e-3, "u": 1e-6, "n": 1e-9}
_MESSAGE_UNSAFE = frozenset(range(0x20)) | frozenset(range(0x7F, 0x100)) | {ord("%")}


def percent_encode(text: str) -> str:
    """grpc-message encoding: UTF-8, bytes outside printable ASCII and '%' as %XX."""
    raw = text.encode("utf-8", "replace")
    if not any(b in _MESSAGE_UNSAFE for b in raw):
        return text
    return "".join(f"%{b:02X}" if b in _MESSAGE_UNSAFE else chr(b) for b in raw)


def parse_timeout(value: str) -> float | None:
    """Seconds of a ``grpc-timeout`` value ("100m", "5S"); None when malformed."""
    if not 2 <= len(value) <= 9 or not value[:-1].isdigit():
        return None
    unit = _TIMEOUT_UNITS.get(value[-1])
    return None if unit is None else int(value[:-1]) * unit


def _trailers(code: StatusCode, details: str | None, trailers_only: bool) -> bytes:
    if code == StatusCode.OK and not details and not trailers_only:
        return _TRAILERS_OK
    fields: list[tuple[str, str]] = []
    if trailers_only:
        fields += [(":status", "200"), ("content-type", "application/grpc")]
    fields.append(("grpc-status", str(int(code))))
    if details:
        fields.append(("grpc-message", percent_encode(details)))
    return hpack.encode_block(fields)


class _Inbox:
    """Messages of a streaming request, as the handler iterates them (``Call.requests``)."""

    __slots__ = ("closed", "items", "waiter")

    def __init__(self) -> None:
        self.items: collections.deque[Any] = collections.deque()
        self.closed = False
        self.waiter: asyncio.Future[None] | None = None

    def wake(self) -> None:
        w = self.waiter
        if w is not None and not w.done():
            w.set_result(None)


class Call(ServicerContext):
    """One call: its stream, its state and the handler's context (one object for both)."""

    __slots__ = ("buffer", "conn", "encoding", "ended", "headers_sent", "inbox", "method", "request_closed",
                 "reserved", "stream_id", "task", "timer", "want", "window_waiter")

    def __init__(self, conn: _Connection, stream_id: int, method: Method, headers: list[tuple[str, str]],
                 deadline: float | None, encoding: str | None) -> None:
        self.conn = conn
        self.stream_id = stream_id
        self.method = method
        self._headers = headers
        self._deadline = deadline
        self._peer = conn.peer
        self._code: StatusCode | None = None
        self._details: str | None = None
        self._cancelled = False
        self._done_callbacks = None
        self._metadata = None
        self.encoding = encoding
        self.buffer = bytearray()  # request bytes not yet split into messages
        self.request_closed = False  # the client ended its side (END_STREAM)
        self.headers_sent = False
        self.ended = False  # trailers sent (or the stream reset): nothing more goes out
        self.task: asyncio.Task[None] | None = None
        self.timer: asyncio.TimerHandle | None = None
        self.window_waiter: asyncio.Future[None] | None = None
        self.inbox: _Inbox | None = _Inbox() if method.client_streaming else None
        self.reserved = 0  # window granted beyond the stream's own, held from the request budgets
        self.want = 0  # a grant waiting for room in the budgets (the call is in conn.admission)

    # -- ServicerContext ---------------------------------------------------------------------
    async def write(self, message: Any) -> None:
        await self.send_message(message)

    # -- sending -----------------------------------------------------------------------------
    async def send_message(self, message: Any) -> None:
        await self.send_owned([message])

    async def send_owned(self, box: list[Any]) -> None:
        """Send the message in ``box``, taking it out: the caller keeps no reference, so while
        the client's window or socket is shut only its encoding is held, once queued not even that.
        An ``EncodedStream`` (a server stream's messages, framed already) goes out as it is."""
        codec = self.method.codec
        assert codec is not None  # Server.method gave the call a method with its codec
        item = box.pop()
        framed = item if type(item) is EncodedStream else None
        data = item.data if framed is not None else codec.serialize(item)
        del item
        if self.ended:
            raise asyncio.CancelledError()
        conn = self.conn
        limit = conn.server.max_send_message_length
        size = framed.largest if framed is not None else len(data)
        if size > limit:
            raise AbortError(StatusCode.RESOURCE_EXHAUSTED, f"Sent message larger than max ({size} vs. {limit})")
        if framed is not None and not self.method.server_streaming:
            raise AbortError(StatusCode.INTERNAL, "a stream of messages answers a server-streaming method only")
        h2 = conn.h2
        try:
            if not self.headers_sent:
                self.headers_sent = True
                h2.send_headers(self.stream_id, _RESPONSE_HEADERS)
            if framed is not None:
                await self._send_bytes(data)  # by reference: its frames point into it
            elif len(data) < COPY_BELOW:
                await self._send_bytes(_PREFIX.pack(0, len(data)) + data)  # one DATA frame
            else:
                # no copy of a large message: its prefix, then the message itself, in frames
                # that reference it (a stuck reader costs one message, not several copies)
                await self._send_bytes(_PREFIX.pack(0, len(data)))
                await self._send_bytes(data)
        except StreamClosedError:
            # reset under us (the client's RST_STREAM is on its way as an event)
            self.ended = True
            raise asyncio.CancelledError() from None
        observers = conn.server.observers
        if observers:
            for _ in range(framed.count if framed is not None else 1):
                for o in observers:
                    o.msg_sent(self.method)
        if self.method.server_streaming:
            # a stream's messages leave together at the end of this loop iteration (a list of
            # 50 containers: one write, not 50), or at once past FLUSH_BYTES
            conn.pending_out += len(data) + (5 if framed is None else 0)
            del data  # the connection's queue holds it until written
            if conn.pending_out >= FLUSH_BYTES:
                conn.flush()
            else:
                conn.flush_soon()
            if conn.write_paused:
                # the client is not reading: the handler's next message waits until it does,
                # even when each message leaves alone (events coming one a loop iteration)
                await conn.drained()

    async def _send_bytes(self, buf: bytes) -> None:
        h2 = self.conn.h2
        sent = h2.send_data(self.stream_id, buf)
        if sent == len(buf):
            return
        view = memoryview(buf)
        while sent < len(view):
            # the client's window is shut: what was taken goes out, the rest waits for WINDOW_UPDATE
            self.conn.flush()
            view = view[sent:]
            await self._wait_window()
            if self.ended:
                raise asyncio.CancelledError()
            sent = h2.send_data(self.stream_id, cast(bytes, view))  # h2 queues bytes-likes by reference

    async def _wait_window(self) -> None:
        fut = self.window_waiter = asyncio.get_running_loop().create_future()
        try:
            await fut
        finally:
            self.window_waiter = None

    def window_opened(self) -> None:
        w = self.window_waiter
        if w is not None and not w.done():
            w.set_result(None)

    # -- receiving ---------------------------------------------------------------------------
    def take_messages(self) -> list[tuple[Any, int]] | None:
        """Split the buffered request bytes into decoded messages, each with the bytes it took (its
        prefix included); None after ending the call with an error (too large, bad compression,
        undecodable)."""
        buf = self.buffer
        out: list[Any] = []
        pos = 0
        limit = self.conn.server.max_receive_message_length
        codec = self.method.codec
        assert codec is not None  # Server.method gave the call a method with its codec
        while len(buf) - pos >= 5:
            flag, length = _PREFIX.unpack_from(buf, pos)
            if length > limit:
                self.fail(StatusCode.RESOURCE_EXHAUSTED, f"Received message larger than max ({length} vs. {limit})")
                return None
            if len(buf) - pos - 5 < length:
                break
            raw = bytes(buf[pos + 5:pos + 5 + length])
            pos += 5 + length
            if flag:
                raw2 = self._decompress(raw, limit)
                if raw2 is None:
                    return None
                raw = raw2
            try:
                msg = codec.parse(raw)
            except Exception as exc:  # protobuf's DecodeError and friends, rpc.wire's
                self.fail(StatusCode.INTERNAL, f"Failed to parse request: {exc}")
                return None
            out.append((msg, 5 + length))
        if pos:
            del buf[:pos]
        return out

    def _decompress(self, raw: bytes, limit: int) -> bytes | None:
        if self.encoding != "gzip":
            if not self.encoding or self.encoding == "identity":
                self.fail(StatusCode.INTERNAL, "Compressed message received with identity encoding")
            else:
                self.fail(StatusCode.UNIMPLEMENTED, f"Compression algorithm '{self.encoding}' is not supported")
            return None
        d = zlib.decompressobj(wbits=31)
        try:
            out = d.decompress(raw, limit + 1)
        except zlib.error as exc:
            self.fail(StatusCode.INTERNAL, f"Failed to decompress request: {exc}")
            return None
        if len(out) > limit:  # bounded: never inflate past the limit
            self.fail(StatusCode.RESOURCE_EXHAUSTED, f"Received message larger than max ({len(out)}+ vs. {limit})")
            return None
        return out

    async def requests(self) -> AsyncIterator[Any]:
        """The messages of a streaming request, as they come."""
        inbox = self.inbox
        assert inbox is not None
        while True:
            while not inbox.items:
                if inbox.closed:
                    return
                if self.ended:
                    # reset, cancelled or answered: no more messages will come (not a clean end)
                    raise asyncio.CancelledError()
                inbox.waiter = asyncio.get_running_loop().create_future()
                try:
                    await inbox.waiter
                finally:
                    inbox.waiter = None
            msg, size = inbox.items.popleft()
            self.conn.took(self, size)
            yield msg

    # -- ending ------------------------------------------------------------------------------
    def fail(self, code: StatusCode, details: str) -> None:
        """End the call with an error from the server's side (not the handler's)."""
        if self.task is not None and not self.task.done():
            self._code, self._details = code, details
            self.finish(code, details)
            self.task.cancel()
        else:
            self.finish(code, details)
            self.conn.server.report(self.method, code, None)

    def finish(self, code: StatusCode, details: str | None) -> None:
        """Send the trailers (once) and forget the stream."""
        if self.ended:
            return
        self.ended = True
        conn = self.conn
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if not conn.closed:
            with contextlib.suppress(StreamClosedError):  # reset by the client meanwhile
                conn.h2.send_headers(self.stream_id, _trailers(code, details, not self.headers_sent),
                                     end_stream=True)
                if not self.request_closed:
                    # the answer is complete before the request: ask the client to stop sending
                    conn.h2.reset_stream(self.stream_id, frames.NO_ERROR)
            conn.flush()
        conn.forget(self)
        if self.inbox is not None:
            self.inbox.wake()  # a reader of the request stream outside the handler's task
        self.run_done_callbacks()

    def run_done_callbacks(self) -> None:
        cbs, self._done_callbacks = self._done_callbacks, None
        for cb in cbs or ():
            try:
                cb(self)
            except Exception:
                log.exception("done callback of %s failed", self.method.path)

    def expire(self) -> None:
        """The caller's deadline passed: DEADLINE_EXCEEDED, and the handler is cancelled."""
        self.timer = None
        self._cancelled = True
        self.fail(StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded")


class _Connection(asyncio.Protocol):
    def __init__(self, server: Server) -> None:
        self.server = server
        self.h2 = ServerConnection(server.settings)
        self.transport: asyncio.Transport | None = None
        self.peer = ""
        self.calls: dict[int, Call] = {}
        self.closed = False
        self.write_paused = False
        self._drain_waiters: list[asyncio.Future[None]] = []
        self._waiting: collections.deque[tuple[Call, Any]] = collections.deque()
        self._start_scheduled = False
        self._reading_paused_for: set[str] = set()
        self.goaway_sent = False
        self.pending_out = 0  # bytes of streamed messages queued since the last write
        self.reserved = 0  # window granted to this connection's calls (see _need)
        self.admission: collections.deque[Call] = collections.deque()  # calls waiting for a grant
        self._flush_scheduled = False

    # -- asyncio.Protocol --------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports have the Transport methods without subclassing it
        self.transport = cast(asyncio.Transport, transport)
        self.peer = _peer_name(self.transport)
        self.server.connections.add(self)
        self.h2.initiate()
        self.flush()

    def data_received(self, data: bytes) -> None:
        try:
            events = self.h2.receive_data(data)
        except ProtocolError as exc:
            log.debug("HTTP/2 protocol error from %s: %s", self.peer, exc)
            self.flush()
            self.abort_calls()
            if self.transport is not None:
                self.transport.close()
            return
        for ev in events:
            if isinstance(ev, RequestReceived):
                self._request(ev.stream_id, ev.headers, ev.end_stream)
            elif isinstance(ev, DataReceived):
                # trailers from a client come as an empty DataReceived ending the stream
                self._data(ev.stream_id, ev.data, ev.flow_length, ev.end_stream)
            elif isinstance(ev, StreamReset):
                self._reset(ev.stream_id)
            elif isinstance(ev, WindowOpened):
                self._window(ev.stream_id)
            elif isinstance(ev, ConnectionClosed):
                self.goaway_sent = True  # the peer is leaving: no new calls expected
        self._start_waiting()
        self.flush()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.server.connections.discard(self)
        self.abort_calls()
        self._wake_drain()

    def pause_writing(self) -> None:
        self.write_paused = True
        self._pause_reading("write")

    def resume_writing(self) -> None:
        self.write_paused = False
        self._resume_reading("write")
        self._wake_drain()

    # -- output ------------------------------------------------------------------------------
    def flush_soon(self) -> None:
        if not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._scheduled_flush)

    def _scheduled_flush(self) -> None:
        self._flush_scheduled = False
        self.flush()

    def flush(self) -> None:
        self.pending_out = 0
        out = self.h2.data_to_send()
        if out and self.transport is not None and not self.closed:
            self.transport.write(out)

    async def drained(self) -> None:
        if not self.write_paused or self.closed:
            return
        fut = asyncio.get_running_loop().create_future()
        self._drain_waiters.append(fut)
        await fut

    def _wake_drain(self) -> None:
        waiters, self._drain_waiters = self._drain_waiters, []
        for w in waiters:
            if not w.done():
                w.set_result(None)

    def _pause_reading(self, why: str) -> None:
        if not self._reading_paused_for and self.transport is not None and not self.closed:
            self.transport.pause_reading()
        self._reading_paused_for.add(why)

    def _resume_reading(self, why: str) -> None:
        if why not in self._reading_paused_for:
            return
        self._reading_paused_for.discard(why)
        if not self._reading_paused_for and self.transport is not None and not self.closed:
            self.transport.resume_reading()

    # -- events ------------------------------------------------------------------------------
    def _request(self, sid: int, headers: list[tuple[str, str]], end_stream: bool) -> None:
        path = verb = ctype = timeout = encoding = None
        for k, v in headers:
            if k[:1] == ":":
                if k == ":path":
                    path = v
                elif k == ":method":
                    verb = v
            elif k == "content-type":
                ctype = v
            elif k == "grpc-timeout":
                timeout = v
            elif k == "grpc-encoding":
                encoding = v
        if verb != "POST":
            self._http_error(sid, "405", end_stream)
            return
        if ctype is None or not ctype.startswith("application/grpc"):
            self._http_error(sid, "415", end_stream)
            return
        server = self.server
        try:
            method = server.method(path or "")
        except Exception as exc:  # a deferred service that failed to load: this call fails
            log.exception("loading the service of %s", path)
            self.h2.send_headers(sid, _trailers(StatusCode.UNKNOWN, f"loading the service of {path}: {exc}", True),
                                 end_stream=True)
            if not end_stream:
                self.h2.reset_stream(sid, frames.NO_ERROR)
            return
        if method is None or method.handler is None:
            code, details = StatusCode.UNIMPLEMENTED, server.unimplemented_details(path or "", method)
            self.h2.send_headers(sid, _trailers(code, details, True), end_stream=True)
            if not end_stream:
                self.h2.reset_stream(sid, frames.NO_ERROR)
            return
        deadline = None
        if timeout is not None:
            seconds = parse_timeout(timeout)
            if seconds is not None:
                deadline = asyncio.get_running_loop().time() + seconds
        call = Call(self, sid, method, headers, deadline, encoding)
        call.request_closed = end_stream
        self.calls[sid] = call
        server.live_calls += 1
        if server.observers:
            for o in server.observers:
                o.started(method)
        if self.goaway_sent and server.stopping:
            call.fail(StatusCode.UNAVAILABLE, "server is shutting down")
            return
        if method.client_streaming:
            if end_stream:
                assert call.inbox is not None
                call.inbox.closed = True
            self._queue_start(call, None)
        elif end_stream:
            call.fail(StatusCode.INTERNAL, "Missing request message")  # grpc core: no message at all

    def _http_error(self, sid: int, status: str, end_stream: bool) -> None:
        self.h2.send_headers(sid, hpack.encode_block([(":status", status)]), end_stream=True)
        if not end_stream:
            self.h2.reset_stream(sid, frames.NO_ERROR)

    def _data(self, sid: int, data: bytes, flow_length: int, end_stream: bool) -> None:
        call = self.calls.get(sid)
        h2 = self.h2
        if call is None or call.ended:
            # a stream we answered already (or never knew): its bytes still count on the
            # connection's window, so give them back
            if flow_length:
                h2.consumed(sid, flow_length)
            return
        if flow_length:
            # the connection window only paces (as in grpc-go): what a call holds is bounded by
            # its stream's window, the initial one plus grants from the request budgets (_need)
            h2.consumed_connection(sid, flow_length)
            if flow_length != len(data):
                h2.consumed_stream(sid, flow_length - len(data))  # padding: nothing to hold
        if data:
            call.buffer += data
        if end_stream:
            call.request_closed = True
        observers = self.server.observers
        inbox = call.inbox
        if inbox is None:
            # unary request: the whole message arrives before the handler starts; its stream
            # window is never given back, a message larger than it gets a grant for the rest
            if not end_stream:
                # bounded: a message over the limit is refused as soon as its prefix is seen
                if len(call.buffer) >= 5 and not call.reserved and not call.want:
                    _, length = _PREFIX.unpack_from(call.buffer, 0)
                    limit = self.server.max_receive_message_length
                    if length > limit:
                        call.fail(StatusCode.RESOURCE_EXHAUSTED,
                                  f"Received message larger than max ({length} vs. {limit})")
                        return
                    self._need(call, 5 + length - len(call.buffer))
                return
            msgs = call.take_messages()
            if msgs is None:
                return
            if len(msgs) != 1 or call.buffer:
                call.fail(StatusCode.INTERNAL, "Missing request message" if not msgs and not call.buffer
                          else "Expected exactly one request message")  # grpc core's wording
                return
            if observers:
                for o in observers:
                    o.msg_received(call.method)
            self._queue_start(call, msgs[0][0])
            return
        msgs = call.take_messages()
        if msgs is None:
            return
        for item in msgs:
            inbox.items.append(item)
            if observers:
                for o in observers:
                    o.msg_received(call.method)
        if end_stream:
            if call.buffer:
                call.fail(StatusCode.INTERNAL, "Incomplete request message at end of stream")
                return
            inbox.closed = True
        elif len(inbox.items) <= 1:
            self._progress(call)
        inbox.wake()

    # -- request memory: stream windows and the request budgets ------------------------------
    # A call holds at most its stream's window of request bytes: the initial window (64 KiB),
    # given back only as the handler takes messages (streaming requests, where the message after
    # the one waiting for the handler is let in whole; a unary request's window never), plus
    # grants for a message larger than what the window has left, reserved from a
    # budget per connection and one for the server.  A grant waits (the client's stream stalls)
    # until its budgets have room: granted calls' messages complete and are taken, releasing it.
    # Any one message fits a budget alone, so a client sending a few large messages at once
    # always progresses.  Per connection: max_concurrent_streams x 64 KiB + its budget.
    def _progress(self, call: Call) -> None:
        """A streaming call's handler has at most one message waiting: let the next one arrive
        whole meanwhile (pipelined: the client sends while the handler works), no further."""
        buf = call.buffer
        if len(buf) >= 5:
            need = 5 + _PREFIX.unpack_from(buf, 0)[1] - len(buf)
        elif self.h2.window_shortfall(call.stream_id, 5 - len(buf)):
            # not even the next prefix may come: as much as a fresh stream's window, not 5 bytes
            # (a round trip each); while it may, small messages need no grant at all
            need = self.h2.settings.initial_window_size - len(buf)
        else:
            return
        if not call.want:
            self._need(call, need)

    def _need(self, call: Call, need: int) -> None:
        short = self.h2.window_shortfall(call.stream_id, need)
        if short > 0:
            call.want = short
            self.admission.append(call)
            self._admit()

    def _admit(self) -> None:
        """Grant the waiting calls' windows, in order, while both budgets have room."""
        server = self.server
        q = self.admission
        if self.closed:
            q.clear()
            server.blocked.pop(self, None)
            return
        granted = False
        while q:
            call = q[0]
            n = call.want
            if call.ended or not n:
                q.popleft()
                call.want = 0
                continue
            if self.reserved + n > server.connection_budget:
                break  # room comes back as this connection's own grants are released
            if server.reserved + n > server.budget:
                server.blocked[self] = None  # woken when another connection releases
                break
            q.popleft()
            call.want = 0
            call.reserved += n
            self.reserved += n
            server.reserved += n
            self.h2.consumed_stream(call.stream_id, n, now=True)
            granted = True
        else:
            server.blocked.pop(self, None)
        if granted:
            self.flush()

    def _release(self, call: Call, n: int) -> None:
        call.reserved -= n
        self.reserved -= n
        server = self.server
        server.reserved -= n
        if self.admission:
            self._admit()
        if server.blocked:
            for other in list(server.blocked):
                if other is not self:
                    other._admit()

    def took(self, call: Call, size: int) -> None:
        """The handler took a message of ``size`` bytes: give its window back (first paying back
        the grant it came with), and let the next message come."""
        pay = min(size, call.reserved)
        if pay:
            self._release(call, pay)
        if size > pay:
            self.h2.consumed_stream(call.stream_id, size - pay)
        inbox = call.inbox
        if inbox is not None and len(inbox.items) <= 1 and not call.ended:
            self._progress(call)
        self.flush()

    def forget(self, call: Call) -> None:
        if self.calls.pop(call.stream_id, None) is not None:
            self.server.call_gone()
        call.want = 0
        if call.reserved:
            self._release(call, call.reserved)

    def _reset(self, sid: int) -> None:
        call = self.calls.get(sid)
        if call is not None:
            self._cancel_call(call)

    def _cancel_call(self, call: Call) -> None:
        """The call's stream (or the whole connection) is gone: nothing more is sent or received
        on it and its handler is cancelled.  Whatever waits on the stream wakes up: a writer
        waiting for a window and a reader of the request stream (``Call.requests`` then raises
        CancelledError), in the handler's task or another one the handler reads it from."""
        self.forget(call)
        call.ended = True
        call._cancelled = True
        if call.timer is not None:
            call.timer.cancel()
            call.timer = None
        call.window_opened()
        if call.inbox is not None:
            call.inbox.wake()
        if call.task is not None:
            call.task.cancel()
        else:
            self.server.report(call.method, StatusCode.CANCELLED, None)
            call.run_done_callbacks()

    def _window(self, sid: int) -> None:
        if sid == 0:
            for c in list(self.calls.values()):
                c.window_opened()
        else:
            call = self.calls.get(sid)
            if call is not None:
                call.window_opened()

    # -- starting calls ----------------------------------------------------------------------
    def _queue_start(self, call: Call, request: Any) -> None:
        self._waiting.append((call, request))
        if len(self._waiting) > MAX_WAITING_STARTS:
            self._pause_reading("starts")

    def _start_waiting(self) -> None:
        waiting = self._waiting
        n = START_BATCH
        server = self.server
        loop = asyncio.get_running_loop()
        while waiting and n:
            n -= 1
            call, request = waiting.popleft()
            if call.ended:
                continue
            if call.reserved and call.inbox is None:  # the request is the handler's now: its grant goes back
                self._release(call, call.reserved)
            if call._deadline is not None:
                call.timer = loop.call_at(call._deadline, call.expire)
            call.task = loop.create_task(server.run_call(call, request))
        if waiting:
            if not self._start_scheduled:
                self._start_scheduled = True
                loop.call_soon(self._start_later)
        elif self._reading_paused_for:
            self._resume_reading("starts")

    def _start_later(self) -> None:
        self._start_scheduled = False
        if not self.closed:
            self._start_waiting()

    # -- ending ------------------------------------------------------------------------------
    def abort_calls(self) -> None:
        """The connection is gone: every call's handler is cancelled."""
        self.closed = True
        calls = list(self.calls.values())
        self._waiting.clear()
        for call in calls:
            self._cancel_call(call)

    def goaway(self) -> None:
        if not self.goaway_sent and not self.closed:
            self.goaway_sent = True
            self.h2.goaway(frames.NO_ERROR)
            self.flush()

    def close(self) -> None:
        if self.transport is not None and not self.closed:
            self.transport.close()


def _peer_name(transport: asyncio.Transport) -> str:
    peer = transport.get_extra_info("peername")
    if isinstance(peer, tuple) and len(peer) >= 2:
        host = peer[0]
        return f"ipv6:[{host}]:{peer[1]}" if ":" in host else f"ipv4:{host}:{peer[1]}"
    sock = transport.get_extra_info("sockname")
    return f"unix:{sock}" if isinstance(sock, str) else "unix:"


def tls_context(cert_file: str, key_file: str, client_ca_file: str = "") -> ssl_mod.SSLContext:
    """Server TLS for gRPC: our pair, ALPN "h2", TLS 1.2 or later; with ``client_ca_file``
    every client must present a certificate that CA signed (containerd's ``tcp_tls_ca``)."""
    ctx = ssl_mod.SSLContext(ssl_mod.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl_mod.TLSVersion.TLSv1_2
    ctx.load_cert_chain(cert_file, key_file)
    ctx.set_alpn_protocols(["h2"])
    if client_ca_file:
        ctx.load_verify_locations(cafile=client_ca_file)
        ctx.verify_mode = ssl_mod.CERT_REQUIRED
    return ctx


class Server:
    """A gRPC server: services added from protobuf descriptors or from static method tables
    (``add_service_table``), served on sockets we own."""

    def __init__(self, *, max_receive_message_length: int = DEFAULT_MAX_MESSAGE,
                 max_send_message_length: int = 0x7FFFFFFF, observers: Iterable[Observer] = (),
                 settings: ServerSettings | None = None, max_request_buffer_per_connection: int = 0,
                 max_request_buffer: int = 0) -> None:
        self.max_receive_message_length = max_receive_message_length
        # request bytes granted beyond the streams' initial windows (rpc's _Connection._need): per
        # connection (default twice the largest message) and for the whole server (default eight
        # times); never below one message, or a large one could never be received
        one = max_receive_message_length + 5
        self.connection_budget = max(max_request_buffer_per_connection or 2 * max_receive_message_length, one)
        self.budget = max(max_request_buffer or 8 * max_receive_message_length, self.connection_budget)
        self.reserved = 0
        self.blocked: dict[_Connection, None] = {}  # connections whose next grant waits on self.budget
        self.max_send_message_length = max_send_message_length
        self.observers: list[Observer] = list(observers)
        self.settings = settings if settings is not None else ServerSettings()
        self.methods: dict[str, Method] = {}
        self.services: set[str] = set()
        self._describers: dict[str, Callable[[], ServiceDescriptor]] = {}
        self.connections: set[_Connection] = set()
        self.stopping = False
        self.live_calls = 0
        self._idle: asyncio.Event | None = None  # set when the last call ends, while stopping
        self._listeners: list[asyncio.AbstractServer] = []

    # -- services ----------------------------------------------------------------------------
    def add_service(self, service: ServiceDescriptor, servicer: Any) -> None:
        """Serve every method of ``service`` with ``servicer``'s method of the same name."""
        self.services.add(service.full_name)
        self.methods.update(methods_mod.build(service, servicer))

    def add_service_table(self, full_name: str, methods: Iterable[tuple[str, str]], servicer: Any,
                          describe: Callable[[], ServiceDescriptor],
                          codecs: Mapping[str, Codec] | None = None) -> None:
        """Serve the service ``full_name``, whose methods are ``methods`` (name, kind), with
        ``servicer``'s methods of the same names, without its descriptor: a method in ``codecs``
        is served with its codec, the others with the protobuf classes of ``describe()``'s
        descriptor, asked at the first call of one of them (the generated module and the
        protobuf runtime are imported then, not at start-up: W6, idle PSS).  A ``describe`` that
        raises, or answers a descriptor that is not this table's, fails that call (UNKNOWN) and
        is asked again at the next one."""
        self.services.add(full_name)
        self.methods.update(methods_mod.from_table(full_name, methods, servicer, codecs))
        self._describers[full_name] = describe

    def method(self, path: str) -> Method | None:
        """The method serving ``path``, None if none; a method with a handler comes with its
        codec (its service's descriptor loaded here, at its first call needing it)."""
        method = self.methods.get(path)
        if method is not None and method.codec is None and method.handler is not None:
            self._load_codecs(method.service)
        return method

    def _load_codecs(self, service: str) -> None:
        descriptor = self._describers[service]()
        if descriptor.full_name != service:
            raise RuntimeError(f"the descriptor of {service} is {descriptor.full_name}'s")
        served = [m for m in self.methods.values() if m.service == service]
        codecs = methods_mod.protobuf_codecs(descriptor, [(m.name, m.kind) for m in served])
        for m in served:
            if m.codec is None:
                m.codec = codecs[m.name]
        del self._describers[service]

    def unimplemented_details(self, path: str, method: Method | None) -> str:
        if method is not None:
            return "Method not implemented!"  # what grpc's generated base servicer answers
        # grpc-go's wording (what containerd answers for a path it does not serve)
        service, _, name = path.lstrip("/").rpartition("/")
        if service not in self.services:
            return f"unknown service {service or path}"
        return f"unknown method {name} for service {service}"

    # -- listening ---------------------------------------------------------------------------
    async def serve_unix(self, sock: socket.socket | str | os.PathLike[str]) -> None:
        """Serve on a listening unix socket (ours, already bound), or bind ``sock`` as a path."""
        loop = asyncio.get_running_loop()
        if isinstance(sock, socket.socket):
            listener = await loop.create_unix_server(self._protocol, sock=sock, backlog=1024)
        else:
            listener = await loop.create_unix_server(self._protocol, path=os.fspath(sock), backlog=1024)
        self._listeners.append(listener)

    async def serve_tcp(self, host: str, port: int, ssl: ssl_mod.SSLContext | None = None) -> list[Any]:
        """Serve on TCP (TLS when ``ssl`` is given: it must offer ALPN "h2"); returns the bound addresses."""
        listener = await asyncio.get_running_loop().create_server(self._protocol, host, port, ssl=ssl, backlog=1024)
        self._listeners.append(listener)
        return [s.getsockname() for s in listener.sockets]

    def _protocol(self) -> _Connection:
        return _Connection(self)

    # -- calls -------------------------------------------------------------------------------
    def call_gone(self) -> None:
        self.live_calls -= 1
        if self.live_calls == 0 and self._idle is not None:
            self._idle.set()

    def report(self, method: Method, code: StatusCode, t0: float | None) -> None:
        observers = self.observers
        if observers:
            seconds = time.perf_counter() - t0 if t0 is not None else 0.0
            for o in observers:
                try:
                    o.handled(method, code, seconds)
                except Exception:
                    log.exception("observer failed")

    async def run_call(self, call: Call, request: Any) -> None:
        """The task of one call: run the handler, send its answer and the status."""
        method = call.method
        handler = method.handler
        assert handler is not None
        t0 = time.perf_counter() if self.observers else None
        code = StatusCode.OK
        details: str | None = None
        try:
            arg = call.requests() if method.client_streaming else request
            if method.is_generator:
                agen = handler(arg, call)
                try:
                    async for item in agen:
                        box = [item]
                        del item  # send_owned takes the only reference
                        await call.send_owned(box)
                finally:
                    await agen.aclose()
            else:
                result = await handler(arg, call)
                if not method.server_streaming:
                    if result is None and call._code is None:
                        raise AbortError(StatusCode.INTERNAL, "handler returned no response")
                    if result is not None:
                        await call.send_message(result)
            if call._code is not None:
                code, details = call._code, call._details
            elif call._details:
                details = call._details
        except asyncio.CancelledError:
            # the client went away, reset the stream, or the deadline (already answered) passed;
            # or the server is stopping past its grace period
            if not call.ended:
                call.finish(StatusCode.CANCELLED, "Cancelled")
            code = call._code if call._code is not None and call._code != StatusCode.OK else StatusCode.CANCELLED
            self.report(method, code, t0)
            call.run_done_callbacks()
            return
        except BaseException as exc:  # every error a handler raises becomes its call's status
            code, details, expected = status_of(exc)
            if not expected:
                log.error("unexpected error in %s", method.path, exc_info=exc)
            if isinstance(exc, (KeyboardInterrupt, SystemExit)):
                call.finish(code, details)
                raise
        call.finish(code, details)
        self.report(method, code, t0)

    # -- stopping ----------------------------------------------------------------------------
    async def stop(self, grace: float | None = None) -> None:
        """Stop listening, tell clients to go (GOAWAY), give in-flight calls ``grace`` seconds,
        then cancel what is left and close the connections."""
        self.stopping = True
        for listener in self._listeners:
            listener.close()
        for conn in list(self.connections):
            conn.goaway()
        if grace:
            self._idle = asyncio.Event()
            if self.live_calls == 0:
                self._idle.set()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._idle.wait(), grace)
        tasks = []
        for conn in list(self.connections):
            tasks += [c.task for c in conn.calls.values() if c.task is not None]
            conn.abort_calls()
            conn.close()
        if tasks:
            await asyncio.wait(tasks, timeout=1)
        for listener in self._listeners:
            with contextlib.suppress(Exception):
                await listener.wait_closed()
        self._listeners.clear()


Handler = Callable[[Any, ServicerContext], Any]
