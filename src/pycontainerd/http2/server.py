"""The server side of one HTTP/2 connection, sans-IO: bytes in -> events, calls -> bytes out.

Modelled on hyper-h2/h11; the caller owns the transport::

    conn = ServerConnection(ServerSettings())
    conn.initiate()                                  # our SETTINGS (+ the connection window)
    transport.write(conn.data_to_send())
    ...
    events = conn.receive_data(chunk)                # ProtocolError: GOAWAY queued; flush, close
    conn.send_headers(sid, block, end_stream=False)  # block: HPACK bytes (hpack.encode_block)
    taken = conn.send_data(sid, data, end_stream=False)  # within the peer's windows; the rest
                                                     # waits for WindowOpened(sid or 0)
    conn.consumed(sid, event.flow_length)            # give receive window back (batched; done
                                                     # by itself for what a reset stream held)
    conn.consumed_connection(sid, n); conn.consumed_stream(sid, n)  # the two halves apart;
    conn.window_shortfall(sid, need)                 # a grant the stream needs beyond its window
    conn.reset_stream(sid, CANCEL); conn.goaway(NO_ERROR)
    transport.write(conn.data_to_send())             # everything queued, as one bytes

Events (frozen, slotted dataclasses): ``RequestReceived``, ``DataReceived`` (trailers from the
client come as ``DataReceived(sid, b"", 0, end_stream=True)``), ``StreamReset`` (the peer reset
the stream, or we did because of its error: the stream's handler should stop), ``WindowOpened``
(0: the connection window opened, or SETTINGS_INITIAL_WINDOW_SIZE grew every stream's: wake
every writer; at most one per ``receive_data``), ``ConnectionClosed`` (the peer's GOAWAY).  PING
and SETTINGS are acknowledged inside.  ``send_window(0)`` is the connection's window.
``send_headers`` and
``send_data`` on a stream that is closed for sending (ended, reset, unknown) raise
``StreamClosedError``.  Additions to the documented API: ``open_streams`` (streams not yet
closed, for a graceful shutdown's wait), ``closed`` (after a connection error we raised or our
GOAWAY), ``goaway(code, debug=b"")``.

Stream states: open, half-closed(remote) (the peer's END_STREAM), half-closed(local) (ours),
closed (both, or a reset: forgotten, except the ids we reset recently, whose in-flight frames are
ignored; other frames on closed streams are STREAM_CLOSED errors, RFC 9113 5.1).

Hostile input (each limit a ``ServerSettings`` field): frames above 16 KiB -> FRAME_SIZE_ERROR
before their payload is buffered; more concurrent streams than advertised -> RST_STREAM
REFUSED_STREAM (not counted as resets below: clients may open streams before they have our
SETTINGS, and retry refused ones); a header list above MAX_HEADER_LIST_SIZE -> a 431 response
and that stream alone refused, as grpc-go and grpc core do (the block is still decoded, the
fields past the limit discarded, the table stays in step); header blocks whose raw fragments
exceed ``max_header_block_size`` (four times the list limit) or ``max_continuation_frames``
-> GOAWAY ENHANCE_YOUR_CALM (a CONTINUATION flood: buffering it would be the attack); the peer
overrunning a receive window -> FLOW_CONTROL_ERROR; streams reset before we answered them (by the peer, or by us for its
errors), net of streams we completed, above ``max_reset_streams`` -> GOAWAY ENHANCE_YOUR_CALM
(rapid reset, CVE-2023-44487); more than ``max_pending_acks`` PING/SETTINGS acknowledgements
queued between two ``data_to_send`` calls, or more than ``max_empty_frames`` frames in a row
that carry nothing (empty DATA/CONTINUATION, PRIORITY, unknown types) -> GOAWAY
ENHANCE_YOUR_CALM (CVE-2019-9512/9515/9518); HPACK table size updates above ours ->
COMPRESSION_ERROR; even or decreasing stream ids, PUSH_PROMISE, a bad preface -> PROTOCOL_ERROR;
malformed requests (no :method/:path, unknown, repeated or late pseudo-headers, upper-case names,
connection-specific fields) -> RST_STREAM PROTOCOL_ERROR, counted like resets.
Memory per connection is bounded by these: no queue grows with the peer's input except the output
the caller drains with ``data_to_send`` (and stops reading while its transport is full).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from . import frames as f
from .hpack import Decoder, HeaderListTooLarge, HPACKError, encode_block


@dataclass(frozen=True, slots=True)
class RequestReceived:
    stream_id: int
    headers: list[tuple[str, str]]
    end_stream: bool


@dataclass(frozen=True, slots=True)
class DataReceived:
    stream_id: int
    data: bytes
    flow_length: int  # what to pass to ``consumed`` (padding included)
    end_stream: bool


@dataclass(frozen=True, slots=True)
class StreamReset:
    stream_id: int
    error_code: int


@dataclass(frozen=True, slots=True)
class WindowOpened:
    stream_id: int  # 0: the connection window


@dataclass(frozen=True, slots=True)
class ConnectionClosed:
    error_code: int
    last_stream_id: int


Event = RequestReceived | DataReceived | StreamReset | WindowOpened | ConnectionClosed


class ProtocolError(Exception):
    """The peer broke the protocol or a limit: GOAWAY with ``error_code`` is queued; flush and close."""

    def __init__(self, error_code: int, message: str) -> None:
        super().__init__(f"{f.ERROR_NAMES.get(error_code, hex(error_code))}: {message}")
        self.error_code = error_code


class StreamClosedError(Exception):
    """Sending on a stream that is closed for sending (ended, reset by either side, or unknown)."""

    def __init__(self, stream_id: int) -> None:
        super().__init__(f"HTTP/2 stream {stream_id} is closed")
        self.stream_id = stream_id


@dataclass(slots=True)
class ServerSettings:
    max_concurrent_streams: int = 1000
    # per stream, what the peer may send before we consume: grpc's 64 KiB, since every open stream
    # may hold that much (a larger message is granted its window as a whole: rpc.server)
    initial_window_size: int = 64 << 10
    connection_window_size: int = 8 << 20
    max_header_list_size: int = 64 << 10
    # raw bytes of one header block (HEADERS + CONTINUATIONs) we buffer to decode it; 0: four times
    # max_header_list_size.  Between the two the stream gets a 431, past this the connection goes
    max_header_block_size: int = 0
    header_table_size: int = 4096
    max_continuation_frames: int = 64
    max_reset_streams: int = 200
    max_pending_acks: int = 256
    max_empty_frames: int = 100
    remember_reset_streams: int = 256  # ids we reset, whose in-flight frames are ignored


class _ConnError(Exception):
    def __init__(self, code: int, message: str) -> None:
        self.code, self.message = code, message


class _Stream:
    __slots__ = ("held", "local_open", "recv_window", "remote_open", "send_credit", "unacked")

    def __init__(self, recv_window: int, remote_open: bool) -> None:
        self.local_open = True
        self.remote_open = remote_open
        # the peer's window for the stream minus its SETTINGS_INITIAL_WINDOW_SIZE: a change of that
        # setting then applies to every open stream at once, without a loop over them per SETTINGS
        self.send_credit = 0
        self.recv_window = recv_window
        self.unacked = 0  # consumed, not yet given back to the peer
        self.held = 0  # received, not yet consumed: given back for it if the stream is reset


_HEADER = struct.Struct(">HBBBL")
_U32 = struct.Struct(">L")
_GOAWAY = struct.Struct(">LL")
_SETTING = struct.Struct(">HL")
_pack_header = _HEADER.pack
_SETTINGS_ACK = f.frame(f.SETTINGS, f.ACK, 0)
_BLOCK_431 = encode_block([(":status", "431")])


_REQUEST_PSEUDO = frozenset((":method", ":path", ":scheme", ":authority"))
# connection-specific fields have no place in HTTP/2 (RFC 9113 8.2.2); te only as "trailers"
_CONNECTION_FIELDS = frozenset(("connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade"))


def _well_formed(headers: list[tuple[str, str]]) -> bool:
    """RFC 9113 8.1.1/8.2/8.3: :method and :path once each, pseudo-headers first and known, names in
    lower case, no connection-specific fields.  Malformed requests are reset (PROTOCOL_ERROR)."""
    seen: set[str] = set()
    regular = False
    for name, value in headers:
        if name[:1] == ":":
            if regular or name in seen or name not in _REQUEST_PSEUDO:
                return False
            seen.add(name)
        else:
            regular = True
            if name in _CONNECTION_FIELDS or (name == "te" and value != "trailers"):
                return False
        if not name or name != name.lower():
            return False
    return ":method" in seen and ":path" in seen


class ServerConnection:
    def __init__(self, settings: ServerSettings | None = None) -> None:
        s = self.settings = settings or ServerSettings()
        self._decoder = Decoder(s.header_table_size, s.max_header_list_size)
        self._checked: dict[bytes, bool] = {}  # header block -> well formed (see _on_block)
        self._checked_generation = 0
        self._out: list[bytes | memoryview] = []
        self._inbuf = b""
        self._events: list[Event] = []
        self._opened_all = False  # WindowOpened(0) already among this receive_data's events
        self._streams: dict[int, _Stream] = {}
        self._reset_ids: dict[int, None] = {}  # recently reset by us, oldest first
        self._highest = 0  # highest stream id the peer opened
        self._preface = False
        self._got_settings = False
        self._dead = False
        self._goaway_sent = False
        # our receive side
        self._recv_initial = s.initial_window_size
        self._recv_conn = s.connection_window_size
        self._conn_unacked = 0
        self._conn_threshold = max(1, s.connection_window_size // 2)
        self._stream_threshold = max(1, s.initial_window_size // 2)
        # the peer's receive side (our sending)
        self._send_initial = f.DEFAULT_WINDOW
        self._send_conn = f.DEFAULT_WINDOW
        self._peer_max_frame = f.DEFAULT_MAX_FRAME_SIZE
        # header block being assembled from HEADERS + CONTINUATION
        self._hb_sid = 0
        self._hb_flags = 0
        self._hb_parts: list[bytes] = []
        self._hb_size = 0
        self._hb_frames = 0
        self._hb_cap = s.max_header_block_size or 4 * s.max_header_list_size
        # hostile-input counters
        self._resets = 0
        self._pending_acks = 0
        self._empty = 0

    # -- state -------------------------------------------------------------------------------------
    @property
    def open_streams(self) -> int:
        return len(self._streams)

    @property
    def closed(self) -> bool:
        return self._dead or self._goaway_sent

    def send_window(self, stream_id: int) -> int:
        """How many DATA bytes ``send_data`` would take now on the stream (0 when closed); for
        stream 0, the connection's window."""
        if not stream_id:
            return max(0, self._send_conn)
        stream = self._streams.get(stream_id)
        if stream is None or not stream.local_open:
            return 0
        return max(0, min(self._send_initial + stream.send_credit, self._send_conn))

    # -- output ------------------------------------------------------------------------------------
    def initiate(self) -> None:
        """Queue our SETTINGS and open the connection window beyond the default 65535."""
        s = self.settings
        payload = _SETTING.pack(f.SETTINGS_MAX_CONCURRENT_STREAMS, s.max_concurrent_streams)
        payload += _SETTING.pack(f.SETTINGS_INITIAL_WINDOW_SIZE, s.initial_window_size)
        payload += _SETTING.pack(f.SETTINGS_MAX_HEADER_LIST_SIZE, s.max_header_list_size)
        if s.header_table_size != 4096:
            payload += _SETTING.pack(f.SETTINGS_HEADER_TABLE_SIZE, s.header_table_size)
        self._out.append(f.frame(f.SETTINGS, 0, 0, payload))
        if s.connection_window_size > f.DEFAULT_WINDOW:
            self._out.append(f.frame(f.WINDOW_UPDATE, 0, 0, _U32.pack(s.connection_window_size - f.DEFAULT_WINDOW)))

    def data_to_send(self) -> bytes:
        """Everything queued since the last call, as one bytes (b"" when nothing)."""
        out = self._out
        if not out:
            return b""
        self._out = []
        self._pending_acks = 0
        return b"".join(out)

    def send_headers(self, stream_id: int, block: bytes, end_stream: bool = False) -> None:
        """Queue a HEADERS frame (CONTINUATIONs past the peer's frame size) with an HPACK block."""
        stream = self._streams.get(stream_id)
        if stream is None or not stream.local_open:
            raise StreamClosedError(stream_id)
        flags = f.END_STREAM if end_stream else 0
        n = len(block)
        max_frame = self._peer_max_frame
        out = self._out
        if n <= max_frame:
            out.append(_pack_header(n >> 8, n & 0xFF, f.HEADERS, flags | f.END_HEADERS, stream_id))
            out.append(block)
        else:
            view = memoryview(block)
            ftype = f.HEADERS
            for start in range(0, n, max_frame):
                chunk = view[start:start + max_frame]
                last = start + max_frame >= n
                fl = (flags if ftype == f.HEADERS else 0) | (f.END_HEADERS if last else 0)
                out.append(_pack_header(len(chunk) >> 8, len(chunk) & 0xFF, ftype, fl, stream_id))
                out.append(chunk)
                ftype = f.CONTINUATION
        if end_stream:
            self._end_local(stream_id, stream)

    def send_data(self, stream_id: int, data: bytes, end_stream: bool = False) -> int:
        """Queue DATA within the peer's windows; how many bytes were taken.

        ``end_stream`` applies only when all of ``data`` was taken; the rest waits for a
        ``WindowOpened`` of the stream or of the connection (0).  ``data`` is queued by
        reference: do not mutate it before ``data_to_send``.
        """
        stream = self._streams.get(stream_id)
        if stream is None or not stream.local_open:
            raise StreamClosedError(stream_id)
        n = len(data)
        out = self._out
        if n == 0:
            if end_stream:
                out.append(_pack_header(0, 0, f.DATA, f.END_STREAM, stream_id))
                self._end_local(stream_id, stream)
            return 0
        take = min(n, self._send_conn, self._send_initial + stream.send_credit)
        if take <= 0:
            return 0
        flags = f.END_STREAM if end_stream and take == n else 0
        max_frame = self._peer_max_frame
        if take <= max_frame:
            out.append(_pack_header(take >> 8, take & 0xFF, f.DATA, flags, stream_id))
            out.append(data if take == n else memoryview(data)[:take])
        else:
            view = memoryview(data)
            for start in range(0, take, max_frame):
                size = min(max_frame, take - start)
                last = start + size >= take
                out.append(_pack_header(size >> 8, size & 0xFF, f.DATA, flags if last else 0, stream_id))
                out.append(view[start:start + size])
        self._send_conn -= take
        stream.send_credit -= take
        if flags:
            self._end_local(stream_id, stream)
        return take

    def reset_stream(self, stream_id: int, error_code: int = f.CANCEL) -> None:
        """Queue RST_STREAM and forget the stream (no-op when it is already closed)."""
        stream = self._streams.pop(stream_id, None)
        if stream is not None:
            self._queue_rst(stream_id, error_code)
            self._release(stream)

    def consumed(self, stream_id: int, n: int) -> None:
        """The application consumed ``n`` flow-controlled bytes of the stream: give them back to the
        peer, batched (a WINDOW_UPDATE once half a window is owed).  Once a stream is reset (by
        either side) what it held is given back at once and ``consumed`` for it is ignored."""
        if n <= 0:
            return
        self.consumed_connection(stream_id, n)
        self.consumed_stream(stream_id, n)

    def consumed_connection(self, stream_id: int, n: int) -> None:
        """Give ``n`` received bytes of the stream back to the connection window only (batched); the
        stream's own window opens with ``consumed_stream``.  For a caller that bounds what it
        holds with the streams' windows (gRPC's flow control: the connection window only paces)."""
        if n <= 0:
            return
        stream = self._streams.get(stream_id)
        if stream is None:
            if stream_id in self._reset_ids:
                return  # reset: what it held was given back then
        else:
            stream.held = max(0, stream.held - n)
        self._give_back(n)

    def consumed_stream(self, stream_id: int, n: int, now: bool = False) -> None:
        """Open the stream's receive window by ``n`` (batched, a WINDOW_UPDATE once half a window
        is owed; ``now``: at once, with what is owed).  ``n`` may exceed what it received: a grant
        for a message larger than the window.  No-op once the peer ended or reset the stream."""
        stream = self._streams.get(stream_id)
        if stream is None or not stream.remote_open:
            return
        stream.unacked += max(0, n)
        if stream.unacked and (now or stream.unacked >= self._stream_threshold):
            inc = min(stream.unacked, f.MAX_WINDOW - stream.recv_window)
            if inc > 0:
                self._out.append(f.frame(f.WINDOW_UPDATE, 0, stream_id, _U32.pack(inc)))
                stream.recv_window += inc
            stream.unacked = 0

    def window_shortfall(self, stream_id: int, need: int) -> int:
        """How far the peer's window on the stream falls short of ``need`` more bytes, after sending
        what ``consumed_stream`` owes it (0 when it suffices, or the stream takes no more input)."""
        stream = self._streams.get(stream_id)
        if stream is None or not stream.remote_open or stream.recv_window >= need:
            return 0
        if stream.unacked:
            self.consumed_stream(stream_id, 0, now=True)
        return max(0, need - stream.recv_window)

    def goaway(self, error_code: int = f.NO_ERROR, debug: bytes = b"") -> None:
        """Queue GOAWAY naming the highest stream the peer opened; later new streams are ignored."""
        self._out.append(f.frame(f.GOAWAY, 0, 0, _GOAWAY.pack(self._highest, error_code) + debug))
        self._goaway_sent = True

    def _end_local(self, stream_id: int, stream: _Stream) -> None:
        stream.local_open = False
        if self._resets:
            self._resets -= 1  # a call answered to the end pays back one reset (rapid-reset budget)
        if not stream.remote_open:
            del self._streams[stream_id]

    def _queue_rst(self, stream_id: int, error_code: int) -> None:
        self._out.append(f.frame(f.RST_STREAM, 0, stream_id, _U32.pack(error_code)))
        self._remember(stream_id)

    def _stream_error(self, stream_id: int, code: int) -> None:
        """Reset a stream for the peer's error; its handler hears of it; counts as a reset."""
        stream = self._streams.pop(stream_id, None)
        self._queue_rst(stream_id, code)
        if stream is not None:
            self._release(stream)
            self._events.append(StreamReset(stream_id, code))
        self._count_reset()

    def _count_reset(self) -> None:
        self._resets += 1
        if self._resets > self.settings.max_reset_streams:
            raise _ConnError(f.ENHANCE_YOUR_CALM, "too many streams reset")

    def _release(self, stream: _Stream) -> None:
        """A reset stream's received bytes not yet consumed go back to the connection window now:
        an application dropping a reset call's data must not shrink the connection for good."""
        if stream.held:
            self._give_back(stream.held)
            stream.held = 0

    def _give_back(self, n: int) -> None:
        """Connection-window bytes nobody will consume (frames of closed or refused streams)."""
        self._conn_unacked += n
        if self._conn_unacked >= self._conn_threshold:
            self._out.append(f.frame(f.WINDOW_UPDATE, 0, 0, _U32.pack(self._conn_unacked)))
            self._recv_conn += self._conn_unacked
            self._conn_unacked = 0

    def _empty_frame(self) -> None:
        self._empty += 1
        if self._empty > self.settings.max_empty_frames:
            raise _ConnError(f.ENHANCE_YOUR_CALM, "too many frames without content")

    # -- input -------------------------------------------------------------------------------------
    def receive_data(self, data: bytes | bytearray | memoryview) -> list[Event]:
        """Parse what the peer sent; the events it caused.  On a connection error: GOAWAY is
        queued and ``ProtocolError`` raised (later input is ignored)."""
        if self._dead:
            return []
        if type(data) is not bytes:  # slices must be bytes: header blocks are cache keys, events carry bytes
            data = bytes(data)
        if self._inbuf:
            data = self._inbuf + data
            self._inbuf = b""
        events: list[Event] = []
        self._events = events
        self._opened_all = False
        n = len(data)
        pos = 0
        try:
            if not self._preface:
                if n < 24:
                    if not f.PREFACE.startswith(data):
                        raise _ConnError(f.PROTOCOL_ERROR, "not an HTTP/2 connection preface")
                    self._inbuf = data
                    return events
                if data[:24] != f.PREFACE:
                    raise _ConnError(f.PROTOCOL_ERROR, "not an HTTP/2 connection preface")
                self._preface = True
                pos = 24
            unpack = _HEADER.unpack_from
            while n - pos >= 9:
                hi, lo, ftype, flags, sid = unpack(data, pos)
                length = (hi << 8) | lo
                if length > f.DEFAULT_MAX_FRAME_SIZE:
                    raise _ConnError(f.FRAME_SIZE_ERROR, f"frame of {length} bytes")
                end = pos + 9 + length
                if end > n:
                    break
                sid &= 0x7FFFFFFF
                start = pos + 9
                pos = end
                if self._hb_sid and (ftype != f.CONTINUATION or sid != self._hb_sid):
                    raise _ConnError(f.PROTOCOL_ERROR, "header block interrupted")
                if ftype == f.DATA:
                    self._on_data(data, start, end, flags, sid)
                elif ftype == f.HEADERS:
                    self._on_headers(data, start, end, flags, sid)
                elif not self._got_settings and ftype != f.SETTINGS:
                    raise _ConnError(f.PROTOCOL_ERROR, "the preface must be followed by SETTINGS")
                elif ftype == f.WINDOW_UPDATE:
                    self._on_window_update(data, start, length, sid)
                elif ftype == f.CONTINUATION:
                    self._on_continuation(data, start, end, flags, sid)
                elif ftype == f.SETTINGS:
                    self._on_settings(data, start, length, flags, sid)
                elif ftype == f.PING:
                    self._on_ping(data, start, end, flags, sid)
                elif ftype == f.RST_STREAM:
                    self._on_rst(data, start, length, sid)
                elif ftype == f.GOAWAY:
                    if sid:
                        raise _ConnError(f.PROTOCOL_ERROR, "GOAWAY on a stream")
                    if length < 8:
                        raise _ConnError(f.FRAME_SIZE_ERROR, "GOAWAY shorter than 8 bytes")
                    last, code = _GOAWAY.unpack_from(data, start)
                    events.append(ConnectionClosed(code, last & 0x7FFFFFFF))
                elif ftype == f.PRIORITY_FRAME:
                    if not sid:
                        raise _ConnError(f.PROTOCOL_ERROR, "PRIORITY on stream 0")
                    if length != 5:
                        if sid not in self._streams:  # no RST_STREAM on an idle stream: the connection's error
                            raise _ConnError(f.FRAME_SIZE_ERROR, "PRIORITY payload not 5 bytes")
                        self._stream_error(sid, f.FRAME_SIZE_ERROR)
                    self._empty_frame()
                elif ftype == f.PUSH_PROMISE:
                    raise _ConnError(f.PROTOCOL_ERROR, "PUSH_PROMISE from a client")
                else:
                    self._empty_frame()  # unknown frame types are ignored (RFC 9113 5.5)
            if pos < n:
                self._inbuf = data[pos:]
        except _ConnError as exc:
            self._fail(exc.code, exc.message)
            raise ProtocolError(exc.code, exc.message) from None
        return events

    def _fail(self, code: int, message: str) -> None:
        self._out.append(f.frame(f.GOAWAY, 0, 0, _GOAWAY.pack(self._highest, code) + message.encode()[:256]))
        self._dead = True
        self._goaway_sent = True
        self._streams.clear()
        self._inbuf = b""
        self._hb_parts = []

    def _on_data(self, data: bytes, start: int, end: int, flags: int, sid: int) -> None:
        if not sid:
            raise _ConnError(f.PROTOCOL_ERROR, "DATA on stream 0")
        flow = end - start
        if flow > self._recv_conn:
            raise _ConnError(f.FLOW_CONTROL_ERROR, "the peer overran the connection window")
        self._recv_conn -= flow
        if flags & f.PADDED:
            if not flow or data[start] >= flow:
                raise _ConnError(f.PROTOCOL_ERROR, "padding longer than the DATA frame")
            body = data[start + 1:end - data[start]]
        else:
            body = data[start:end]
        stream = self._streams.get(sid)
        if stream is None or not stream.remote_open:
            self._give_back(flow)
            if stream is not None:
                self._stream_error(sid, f.STREAM_CLOSED)  # half-closed (remote)
            elif sid > self._highest:
                raise _ConnError(f.PROTOCOL_ERROR, f"DATA on idle stream {sid}")
            elif sid not in self._reset_ids:
                raise _ConnError(f.STREAM_CLOSED, f"DATA on closed stream {sid}")
            return
        if flow > stream.recv_window:
            self._give_back(flow)
            self._stream_error(sid, f.FLOW_CONTROL_ERROR)
            return
        stream.recv_window -= flow
        stream.held += flow
        end_stream = flags & f.END_STREAM
        if body:
            self._empty = 0
        elif not end_stream:
            self._empty_frame()
        if end_stream:
            stream.remote_open = False
            if not stream.local_open:
                del self._streams[sid]
        self._events.append(DataReceived(sid, body, flow, bool(end_stream)))

    def _on_headers(self, data: bytes, start: int, end: int, flags: int, sid: int) -> None:
        if not sid:
            raise _ConnError(f.PROTOCOL_ERROR, "HEADERS on stream 0")
        if not self._got_settings:
            raise _ConnError(f.PROTOCOL_ERROR, "the preface must be followed by SETTINGS")
        pad = 0
        if flags & f.PADDED:
            if start >= end:
                raise _ConnError(f.FRAME_SIZE_ERROR, "PADDED HEADERS without its pad length")
            pad = data[start]
            start += 1
        if flags & f.PRIORITY:
            start += 5  # priority fields: accepted and ignored
        if start + pad > end:
            raise _ConnError(f.PROTOCOL_ERROR, "padding longer than the HEADERS frame")
        fragment = data[start:end - pad]
        if flags & f.END_HEADERS:
            self._on_block(sid, flags, fragment)
            return
        if not fragment:
            self._empty_frame()
        self._hb_sid, self._hb_flags, self._hb_parts = sid, flags, [fragment]
        self._hb_size, self._hb_frames = len(fragment), 0

    def _on_continuation(self, data: bytes, start: int, end: int, flags: int, sid: int) -> None:
        if not self._hb_sid:
            raise _ConnError(f.PROTOCOL_ERROR, "CONTINUATION without HEADERS")
        self._hb_frames += 1
        self._hb_size += end - start
        if self._hb_frames > self.settings.max_continuation_frames:
            raise _ConnError(f.ENHANCE_YOUR_CALM, "too many CONTINUATION frames")
        if self._hb_size > self._hb_cap:
            # a block a little past the limit only costs its stream (a 431 once decoded, the fields
            # past the limit discarded); one this large is a flood: buffering it is the attack
            raise _ConnError(f.ENHANCE_YOUR_CALM, f"header block larger than {self._hb_cap} bytes")
        if end == start:
            self._empty_frame()
        self._hb_parts.append(data[start:end])
        if flags & f.END_HEADERS:
            block = b"".join(self._hb_parts)
            self._hb_sid, self._hb_parts = 0, []
            self._on_block(sid, self._hb_flags, block)

    def _on_block(self, sid: int, flags: int, block: bytes) -> None:
        too_large = False
        generation = self._decoder.generation
        try:
            headers = self._decoder.decode(block)
        except HeaderListTooLarge:
            headers, too_large = [], True
        except HPACKError as exc:
            raise _ConnError(f.COMPRESSION_ERROR, str(exc)) from None
        end_stream = bool(flags & f.END_STREAM)
        stream = self._streams.get(sid)
        if stream is not None:  # trailers
            if not stream.remote_open:
                self._stream_error(sid, f.STREAM_CLOSED)
            elif not end_stream:
                self._stream_error(sid, f.PROTOCOL_ERROR)  # a second HEADERS must end the stream
            else:
                stream.remote_open = False
                if not stream.local_open:
                    del self._streams[sid]
                self._events.append(DataReceived(sid, b"", 0, True))
            return
        if sid <= self._highest:
            if sid in self._reset_ids:
                return
            # a new stream's id must grow (RFC 9113 5.1.1); the HEADERS of a stream that ended is
            # no better (5.1, closed): both are the peer's bug, the connection cannot go on
            raise _ConnError(f.PROTOCOL_ERROR, f"HEADERS on stream {sid}, not above the last one ({self._highest})")
        if not sid & 1:
            raise _ConnError(f.PROTOCOL_ERROR, f"even stream id {sid} from a client")
        self._highest = sid
        if self._goaway_sent:
            self._remember(sid)  # after our GOAWAY new streams are ignored (RFC 9113 6.8)
            return
        if too_large:
            # RFC 9113 10.5.1: answer 431; the request's remaining frames are ignored
            self._out.append(f.frame(f.HEADERS, f.END_HEADERS | f.END_STREAM, sid, _BLOCK_431))
            if not end_stream:
                self._queue_rst(sid, f.NO_ERROR)
            else:
                self._remember(sid)
            self._count_reset()
            return
        if len(self._streams) >= self.settings.max_concurrent_streams:
            # not counted as a reset: a client may open streams before it has our SETTINGS (grpc
            # core does, on a busy new channel) and retries refused ones; they cost us no handler
            self._queue_rst(sid, f.REFUSED_STREAM)
            return
        # a block that left the table alone decodes the same until it changes: check it once
        if generation != self._checked_generation:
            self._checked.clear()
            self._checked_generation = generation
        ok = self._checked.get(block)
        if ok is None:
            ok = _well_formed(headers)
            if self._decoder.generation == generation and len(block) <= 1024:
                if len(self._checked) >= 128:
                    self._checked.clear()
                self._checked[block] = ok
        if not ok:
            self._queue_rst(sid, f.PROTOCOL_ERROR)
            self._count_reset()
            return
        self._empty = 0
        self._streams[sid] = _Stream(self._recv_initial, not end_stream)
        self._events.append(RequestReceived(sid, headers, end_stream))

    def _remember(self, sid: int) -> None:
        """Ignore the stream's in-flight frames for a while (bounded: the oldest id is forgotten)."""
        ids = self._reset_ids
        ids[sid] = None
        if len(ids) > self.settings.remember_reset_streams:
            del ids[next(iter(ids))]

    def _on_settings(self, data: bytes, start: int, length: int, flags: int, sid: int) -> None:
        if sid:
            raise _ConnError(f.PROTOCOL_ERROR, "SETTINGS on a stream")
        if flags & f.ACK:
            if length:
                raise _ConnError(f.FRAME_SIZE_ERROR, "SETTINGS ACK with a payload")
            if not self._got_settings:
                raise _ConnError(f.PROTOCOL_ERROR, "the preface must be followed by SETTINGS")
            return
        if length % 6:
            raise _ConnError(f.FRAME_SIZE_ERROR, "SETTINGS length not a multiple of 6")
        self._got_settings = True
        for off in range(start, start + length, 6):
            key, value = _SETTING.unpack_from(data, off)
            if key == f.SETTINGS_INITIAL_WINDOW_SIZE:
                if value > f.MAX_WINDOW:
                    raise _ConnError(f.FLOW_CONTROL_ERROR, "SETTINGS_INITIAL_WINDOW_SIZE above 2^31-1")
                # every open stream's window moves with it (send_credit is relative).  A window
                # pushed above 2^31-1 this way is caught at the stream's next WINDOW_UPDATE
                # rather than by a loop over all streams per SETTINGS frame (a cheap CPU lever)
                if value > self._send_initial and self._streams:
                    self._window_opened_all()
                self._send_initial = value
            elif key == f.SETTINGS_MAX_FRAME_SIZE:
                if not f.DEFAULT_MAX_FRAME_SIZE <= value <= f.MAX_FRAME_SIZE_LIMIT:
                    raise _ConnError(f.PROTOCOL_ERROR, f"SETTINGS_MAX_FRAME_SIZE {value}")
                self._peer_max_frame = value
            elif key == f.SETTINGS_ENABLE_PUSH and value > 1:
                raise _ConnError(f.PROTOCOL_ERROR, f"SETTINGS_ENABLE_PUSH {value}")
            # HEADER_TABLE_SIZE: our encoder uses no dynamic table; others do not bind a server
        self._out.append(_SETTINGS_ACK)
        self._ack_queued()

    def _ack_queued(self) -> None:
        self._pending_acks += 1
        if self._pending_acks > self.settings.max_pending_acks:
            raise _ConnError(f.ENHANCE_YOUR_CALM, "too many PING/SETTINGS frames")

    def _on_ping(self, data: bytes, start: int, end: int, flags: int, sid: int) -> None:
        if sid:
            raise _ConnError(f.PROTOCOL_ERROR, "PING on a stream")
        if end - start != 8:
            raise _ConnError(f.FRAME_SIZE_ERROR, "PING payload not 8 bytes")
        if flags & f.ACK:
            return
        self._out.append(_pack_header(0, 8, f.PING, f.ACK, 0) + data[start:end])
        self._ack_queued()

    def _window_opened_all(self) -> None:
        """WindowOpened(0), once per receive_data: every writer may go on (the caller wakes them all)."""
        if not self._opened_all:
            self._opened_all = True
            self._events.append(WindowOpened(0))

    def _on_rst(self, data: bytes, start: int, length: int, sid: int) -> None:
        if not sid:
            raise _ConnError(f.PROTOCOL_ERROR, "RST_STREAM on stream 0")
        if length != 4:
            raise _ConnError(f.FRAME_SIZE_ERROR, "RST_STREAM payload not 4 bytes")
        if sid > self._highest:
            raise _ConnError(f.PROTOCOL_ERROR, f"RST_STREAM on idle stream {sid}")
        stream = self._streams.pop(sid, None)
        if stream is None:
            return  # already closed: a reset crossing ours, or late
        self._release(stream)
        self._remember(sid)
        code = _U32.unpack_from(data, start)[0]
        self._events.append(StreamReset(sid, code))
        if stream.local_open:
            self._count_reset()  # reset before we answered: the rapid-reset pattern

    def _on_window_update(self, data: bytes, start: int, length: int, sid: int) -> None:
        if length != 4:
            raise _ConnError(f.FRAME_SIZE_ERROR, "WINDOW_UPDATE payload not 4 bytes")
        inc = _U32.unpack_from(data, start)[0] & 0x7FFFFFFF
        if not sid:
            if not inc:
                raise _ConnError(f.PROTOCOL_ERROR, "WINDOW_UPDATE of 0 on the connection")
            self._send_conn += inc
            if self._send_conn > f.MAX_WINDOW:
                raise _ConnError(f.FLOW_CONTROL_ERROR, "connection window above 2^31-1")
            self._window_opened_all()
            return
        stream = self._streams.get(sid)
        if stream is None:
            if sid > self._highest:
                raise _ConnError(f.PROTOCOL_ERROR, f"WINDOW_UPDATE on idle stream {sid}")
            return  # closed: the peer's update crossed our end of the stream
        if not inc:
            self._stream_error(sid, f.PROTOCOL_ERROR)
            return
        stream.send_credit += inc
        if self._send_initial + stream.send_credit > f.MAX_WINDOW:
            self._stream_error(sid, f.FLOW_CONTROL_ERROR)
            return
        if stream.local_open:
            self._events.append(WindowOpened(sid))
