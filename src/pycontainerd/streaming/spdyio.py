"""An asyncio SPDY/3.1 session over a (StreamReader, StreamWriter) pair, on top of ``spdy``.

One task reads the socket and feeds ``SpdyConnection``; streams keep what arrived in a
per-stream queue until the application ``read``s it, and every byte read is given back to
the peer as window (WINDOW_UPDATE).  Backpressure both ways:

- receiving: while any stream holds more than ``max_buffered`` unread bytes the reader task
  stops reading the socket, so a peer that ignores windows (moby spdystream does) is held
  back by TCP instead of growing our memory;
- sending: ``write`` waits for the peer's window when the peer does flow control, and
  always for the transport (``drain``).

``open_stream`` waits for the peer's SYN_REPLY, as Kubernetes' clients do: spdystream drops
data that arrives on a stream before it has replied.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
from collections.abc import Awaitable, Callable, Mapping

from pycontainerd import errdefs
from pycontainerd.streaming import spdy

DEFAULT_MAX_BUFFERED = 1 << 20
_READ_CHUNK = 1 << 16


class SpdyStream:
    """One stream of a session.  ``headers`` are the SYN_STREAM headers (ours or the peer's)."""

    def __init__(self, session: SpdySession, stream_id: int, headers: spdy.Headers) -> None:
        self._session = session
        self.stream_id = stream_id
        self.headers = headers
        self.reply_headers: spdy.Headers = ()
        self._chunks: collections.deque[bytes] = collections.deque()
        self.buffered = 0
        self._ended = False  # the peer half-closed
        self._reset: int | None = None  # RST status, ours or the peer's
        self._local_closed = False
        self._replied = asyncio.get_running_loop().create_future()
        self._readable = asyncio.Event()
        self._window = asyncio.Event()

    def header(self, name: str) -> str | None:
        return spdy.header_value(self.headers, name)

    @property
    def was_reset(self) -> bool:
        return self._reset is not None

    @property
    def reset_status(self) -> int | None:
        """The RST_STREAM status (ours or the peer's), None if the stream was not reset."""
        return self._reset

    async def read(self) -> bytes:
        """Next chunk of data; b"" once the peer half-closed or reset the stream.

        A reset reads as the end, as in moby spdystream (kubelet resets every stream when an
        exec ends, right after the last data): check ``reset_status`` to tell them apart.
        Raises ``Unavailable`` if the connection was lost.
        """
        while not self._chunks:
            if self._reset is not None:
                return b""
            if self._ended:
                self._session._maybe_done(self)
                return b""
            if self._session._lost is not None:
                raise errdefs.Unavailable(f"spdy connection lost: {self._session._lost}")
            self._readable.clear()
            await self._readable.wait()
        data = self._chunks.popleft()
        self.buffered -= len(data)
        self._session._consumed(self, len(data))
        return data

    async def write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            if self._reset is not None or self._local_closed:
                raise errdefs.FailedPrecondition(f"spdy stream {self.stream_id} is closed for writing")
            if self._session._lost is not None:
                raise errdefs.Unavailable(f"spdy connection lost: {self._session._lost}")
            avail = self._session._conn.send_window(self.stream_id)
            if avail <= 0:
                self._window.clear()
                await self._window.wait()
                continue
            n = min(avail, len(view), _READ_CHUNK)
            self._session._conn.send_data(self.stream_id, bytes(view[:n]))
            view = view[n:]
            await self._session._flush()

    async def close(self) -> None:
        """Half-close (FIN): we send no more; reading goes on."""
        if self._local_closed or self._reset is not None or self._session._lost is not None:
            return
        self._local_closed = True
        if self._session._conn.is_open(self.stream_id):
            self._session._conn.end_stream(self.stream_id)
            await self._session._flush()
        self._session._maybe_done(self)

    def reset(self, status: int = spdy.RstStatus.CANCEL) -> None:
        if self._reset is None:
            self._reset = int(status)
            self._session._conn.reset_stream(self.stream_id, status)
            self._session._flush_nowait()
            self._session._forget(self)

    async def reply(self, headers: spdy.HeadersInput = ()) -> None:
        """Accept a stream the peer opened (SYN_REPLY)."""
        self._session._conn.reply(self.stream_id, headers)
        await self._session._flush()

    # events from the session
    def _wake(self) -> None:
        self._readable.set()
        self._window.set()


class SpdySession:
    """A SPDY session on an established connection (after the HTTP Upgrade).

    Must be created inside a running loop; it starts its reader task at once.  Use as an
    async context manager or call ``aclose``.
    """

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        *,
        client: bool,
        max_buffered: int = DEFAULT_MAX_BUFFERED,
        strict_flow_control: bool = False,
    ) -> None:
        self._reader = reader
        self._writer = writer
        self._conn = spdy.SpdyConnection(client, strict_flow_control=strict_flow_control)
        self.max_buffered = max_buffered
        self._streams: dict[int, SpdyStream] = {}
        self._incoming: asyncio.Queue[SpdyStream | None] = asyncio.Queue()
        self._write_lock = asyncio.Lock()
        self._can_read = asyncio.Event()
        self._can_read.set()
        self._lost: str | None = None
        self._closed = False
        self._pings: dict[int, asyncio.Future[None]] = {}
        self.goaway_received = False
        self.on_event: Callable[[spdy.Event], Awaitable[None] | None] | None = None
        self._task = asyncio.get_running_loop().create_task(self._run(), name="spdy-session-reader")

    async def __aenter__(self) -> SpdySession:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    @property
    def lost(self) -> str | None:
        """Why the connection ended (None while it is up)."""
        return self._lost

    async def open_stream(self, headers: spdy.HeadersInput, *, fin: bool = False) -> SpdyStream:
        """Open a stream and wait for the peer's SYN_REPLY."""
        if self._lost is not None:
            raise errdefs.Unavailable(f"spdy connection lost: {self._lost}")
        sid = self._conn.open_stream(headers, fin=fin)
        items = list(headers.items()) if isinstance(headers, Mapping) else list(headers)
        pairs = tuple((k.lower(), v) for k, v in items)
        stream = SpdyStream(self, sid, pairs)
        stream._local_closed = fin
        self._streams[sid] = stream
        await self._flush()
        await stream._replied
        return stream

    async def accept_stream(self) -> SpdyStream | None:
        """The next stream the peer opened (reply to it with ``stream.reply()``); None once the session ended."""
        if self._closed and self._incoming.empty():
            return None
        return await self._incoming.get()

    async def ping(self) -> None:
        """Send a PING and wait for its answer."""
        pid = self._conn.ping()
        fut = asyncio.get_running_loop().create_future()
        self._pings[pid] = fut
        await self._flush()
        try:
            await fut
        finally:
            self._pings.pop(pid, None)

    async def aclose(self) -> None:
        """GOAWAY, then close the transport; streams still open read as lost."""
        if not self._closed and self._lost is None:
            with contextlib.suppress(Exception):
                self._conn.goaway()
                await self._flush()
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await self._task
        self._shutdown("session closed")
        self._writer.close()
        with contextlib.suppress(Exception):
            await self._writer.wait_closed()

    async def wait_closed(self) -> None:
        """Wait until the peer ended the connection."""
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.shield(self._task)

    # --- internals -------------------------------------------------------------------

    def _flush_nowait(self) -> None:
        data = self._conn.data_to_send()
        if data and self._lost is None:
            self._writer.write(data)

    async def _flush(self) -> None:
        self._flush_nowait()
        if self._lost is not None:
            return
        async with self._write_lock:
            try:
                await self._writer.drain()
            except (ConnectionError, OSError) as exc:
                self._shutdown(f"write failed: {exc}")

    def _consumed(self, stream: SpdyStream, n: int) -> None:
        self._conn.acknowledge_received_data(stream.stream_id, n)
        self._flush_nowait()
        self._update_can_read()

    def _update_can_read(self) -> None:
        if all(s.buffered <= self.max_buffered for s in self._streams.values()):
            self._can_read.set()
        else:
            self._can_read.clear()

    def _maybe_done(self, stream: SpdyStream) -> None:
        """Drop a stream closed both ways and fully read (the session keeps no finished streams)."""
        if stream._ended and stream._local_closed and not stream._chunks:
            self._streams.pop(stream.stream_id, None)

    def _forget(self, stream: SpdyStream) -> None:
        if stream.stream_id in self._streams and not stream._chunks:
            del self._streams[stream.stream_id]
        self._update_can_read()

    def _shutdown(self, why: str) -> None:
        if self._lost is None:
            self._lost = why
        self._closed = True
        for stream in list(self._streams.values()):
            if not stream._replied.done():
                stream._replied.set_exception(errdefs.Unavailable(f"spdy stream {stream.stream_id}: {why}"))
                stream._replied.exception()  # mark retrieved: nobody may be waiting
            stream._wake()
        for fut in self._pings.values():
            if not fut.done():
                fut.set_exception(errdefs.Unavailable(f"spdy ping: {why}"))
        self._incoming.put_nowait(None)

    async def _run(self) -> None:
        try:
            while True:
                await self._can_read.wait()
                data = await self._reader.read(_READ_CHUNK)
                if not data:
                    self._shutdown("connection closed by peer")
                    return
                try:
                    events = self._conn.receive_data(data)
                except spdy.ProtocolError as exc:
                    self._flush_nowait()
                    self._shutdown(str(exc))
                    return
                for event in events:
                    self._dispatch(event)
                    if self.on_event is not None:
                        res = self.on_event(event)
                        if res is not None:
                            await res
                await self._flush()
        except (ConnectionError, OSError) as exc:
            self._shutdown(f"read failed: {exc}")

    def _dispatch(self, event: spdy.Event) -> None:
        if isinstance(event, spdy.StreamOpened):
            stream = SpdyStream(self, event.stream_id, event.headers)
            stream._replied.set_result(None)
            stream._local_closed = event.unidirectional
            self._streams[event.stream_id] = stream
            self._incoming.put_nowait(stream)
        elif isinstance(event, spdy.StreamReplied):
            stream_ = self._streams.get(event.stream_id)
            if stream_ is not None and not stream_._replied.done():
                stream_.reply_headers = event.headers
                stream_._replied.set_result(None)
        elif isinstance(event, spdy.DataReceived):
            stream_ = self._streams.get(event.stream_id)
            if stream_ is None:
                self._conn.acknowledge_received_data(event.stream_id, len(event.data))
                return
            if event.data:
                stream_._chunks.append(event.data)
                stream_.buffered += len(event.data)
                if stream_.buffered > self.max_buffered:
                    self._can_read.clear()
            stream_._readable.set()
        elif isinstance(event, spdy.StreamEnded):
            stream_ = self._streams.get(event.stream_id)
            if stream_ is not None:
                stream_._ended = True
                stream_._readable.set()
        elif isinstance(event, spdy.StreamReset):
            stream_ = self._streams.get(event.stream_id)
            if stream_ is not None:
                stream_._reset = event.status
                if not stream_._replied.done():
                    stream_._replied.set_exception(
                        errdefs.Unavailable(f"spdy stream {event.stream_id} refused (status {event.status})")
                    )
                stream_._wake()
                del self._streams[event.stream_id]
                self._update_can_read()
        elif isinstance(event, spdy.WindowUpdated):
            targets = self._streams.values() if event.stream_id == 0 else [self._streams.get(event.stream_id)]
            for s in targets:
                if s is not None:
                    s._window.set()
        elif isinstance(event, spdy.PingAcknowledged):
            fut = self._pings.get(event.ping_id)
            if fut is not None and not fut.done():
                fut.set_result(None)
        elif isinstance(event, spdy.GoAway):
            self.goaway_received = True
