"""SPDY/3.1 framing and session state without any I/O (h11 style).

Kubernetes streams ``exec``/``attach``/``port-forward`` over SPDY/3.1 after an HTTP/1.1
``Upgrade: SPDY/3.1`` (kubelet, containerd's CRI streaming server and kubectl all use
moby/spdystream).  This module turns bytes into events and calls into bytes; ``spdyio`` moves
the bytes over asyncio streams.  Nothing here blocks, sleeps or touches a socket.

Wire format (SPDY draft 3.1), all integers big-endian::

    control frame   1 | version:15 (3) | type:16 | flags:8 | length:24 | data
    data frame      0 | stream-id:31 | flags:8 | length:24 | data

    SYN_STREAM 1    stream-id:31, associated-to:31, priority:3 + 5 unused, slot:8, header block
    SYN_REPLY  2    stream-id:31, header block
    RST_STREAM 3    stream-id:31, status:32
    SETTINGS   4    count:32, then count x (flags:8, id:24, value:32)
    PING       6    id:32 (a client's ids are odd, a server's even)
    GOAWAY     7    last-good-stream-id:31, status:32
    HEADERS    8    stream-id:31, header block
    WINDOW_UPDATE 9 stream-id:31 (0: the session), delta:31

A header block is ``count:32`` then ``count`` x (``len:32 name``, ``len:32 value``) with the
values of one name joined by NUL, compressed with zlib preset with SPDY/3's dictionary; each
direction of a connection is ONE zlib stream (every block ends with a sync flush), so a block
can only be decompressed in order.

Streams: the client opens odd ids, the server even ids, each larger than the last.  A stream
is half-closed by a FIN flag (on SYN_STREAM, SYN_REPLY, HEADERS or DATA); it is gone when
both halves are closed or either side sends RST_STREAM.

Flow control: every stream and the session start with a 64 KiB window in each direction.  We
account for both directions: received data shrinks our windows and the application gives
bytes back with ``acknowledge_received_data`` (we then send WINDOW_UPDATE once half a window
has been consumed); the peer's WINDOW_UPDATEs grow the windows we may send into.  moby
spdystream, Kubernetes' implementation, neither sends nor honours WINDOW_UPDATE, so by
default (``strict_flow_control=False``) we honour the peer's windows only once it has shown
that it does flow control (its first WINDOW_UPDATE), and we tolerate a peer that overruns our
windows (its data is still delivered).  Bounded buffering therefore never depends on the peer:
the I/O layer stops reading the socket while the application has too much unread data (TCP
pushes back), and this module never holds more than one frame of unparsed input (control
frames at most ``max_control_frame``, data frames at most 16 MiB by the 24-bit length) and
never inflates a header block beyond ``max_header_bytes``.
"""

from __future__ import annotations

import enum
import struct
import zlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from pycontainerd import errdefs

VERSION = 3
DEFAULT_WINDOW = 65536
MAX_WINDOW = (1 << 31) - 1
MAX_STREAM_ID = (1 << 31) - 1
MAX_FRAME_LENGTH = (1 << 24) - 1
DEFAULT_MAX_CONTROL_FRAME = 1 << 20
DEFAULT_MAX_HEADER_BYTES = 256 << 10

FLAG_FIN = 0x01
FLAG_UNIDIRECTIONAL = 0x02
SETTINGS_INITIAL_WINDOW_SIZE = 7

_U32 = struct.Struct(">I")
_U32x2 = struct.Struct(">II")
_FRAME_HEAD = struct.Struct(">IB3s")


class FrameType(enum.IntEnum):
    SYN_STREAM = 1
    SYN_REPLY = 2
    RST_STREAM = 3
    SETTINGS = 4
    PING = 6
    GOAWAY = 7
    HEADERS = 8
    WINDOW_UPDATE = 9


class RstStatus(enum.IntEnum):
    PROTOCOL_ERROR = 1
    INVALID_STREAM = 2
    REFUSED_STREAM = 3
    UNSUPPORTED_VERSION = 4
    CANCEL = 5
    INTERNAL_ERROR = 6
    FLOW_CONTROL_ERROR = 7
    STREAM_IN_USE = 8
    STREAM_ALREADY_CLOSED = 9
    INVALID_CREDENTIALS = 10
    FRAME_TOO_LARGE = 11


class GoAwayStatus(enum.IntEnum):
    OK = 0
    PROTOCOL_ERROR = 1
    INTERNAL_ERROR = 2


_DICTIONARY_WORDS = (
    "options head post put delete trace accept accept-charset accept-encoding accept-language "
    "accept-ranges age allow authorization cache-control connection content-base content-encoding "
    "content-language content-length content-location content-md5 content-range content-type date etag "
    "expect expires from host if-match if-modified-since if-none-match if-range if-unmodified-since "
    "last-modified location max-forwards pragma proxy-authenticate proxy-authorization range referer "
    "retry-after server te trailer transfer-encoding upgrade user-agent vary via warning www-authenticate "
    "method get status"
)


def _dictionary() -> bytes:
    """SPDY/3's zlib dictionary (draft 3, section 2.6.10.1): length-prefixed words, then a tail.

    1423 bytes; its sha256 is pinned in the unit tests.
    """
    words = [*_DICTIONARY_WORDS.split(), "200 OK", "version", "HTTP/1.1", "url", "public", "set-cookie"]
    words += ["keep-alive", "origin"]
    tail = (
        "100101201202205206300302303304305306307402405406407408409410411412413414415416417502504505"
        "203 Non-Authoritative Information204 No Content301 Moved Permanently400 Bad Request"
        "401 Unauthorized403 Forbidden404 Not Found500 Internal Server Error501 Not Implemented"
        "503 Service UnavailableJan Feb Mar Apr May Jun Jul Aug Sept Oct Nov Dec 00:00:00 "
        "Mon, Tue, Wed, Thu, Fri, Sat, Sun, GMTchunked,text/html,image/png,image/jpg,image/gif,"
        "application/xml,application/xhtml+xml,text/plain,text/javascript,publicprivatemax-age="
        "gzip,deflate,sdchcharset=utf-8charset=iso-8859-1,utf-,*,enq=0."
    )
    return b"".join(_U32.pack(len(w)) + w.encode() for w in words) + tail.encode()


HEADER_DICTIONARY = _dictionary()

Headers = tuple[tuple[str, str], ...]
HeadersInput = Mapping[str, str] | Iterable[tuple[str, str]]


def header_value(headers: Headers, name: str) -> str | None:
    """The first value of ``name`` (case-insensitive) in a received header list, or None."""
    name = name.lower()
    for key, value in headers:
        if key == name:
            return value
    return None


class ProtocolError(errdefs.InvalidArgument):
    """The peer broke SPDY's framing; the session cannot go on (a GOAWAY is queued)."""


class FlowControlError(errdefs.FailedPrecondition):
    """``send_data`` was given more bytes than the peer's window allows (wait for a WindowUpdated)."""


# --- events ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StreamOpened:
    """The peer opened a stream (SYN_STREAM); answer with ``reply`` or ``reset_stream``."""

    stream_id: int
    headers: Headers
    fin: bool = False
    unidirectional: bool = False
    associated_stream_id: int = 0
    priority: int = 0


@dataclass(frozen=True, slots=True)
class StreamReplied:
    """The peer accepted a stream we opened (SYN_REPLY)."""

    stream_id: int
    headers: Headers
    fin: bool = False


@dataclass(frozen=True, slots=True)
class HeadersReceived:
    stream_id: int
    headers: Headers
    fin: bool = False


@dataclass(frozen=True, slots=True)
class DataReceived:
    """Data on a stream; hand the byte count back with ``acknowledge_received_data`` once consumed."""

    stream_id: int
    data: bytes
    fin: bool = False


@dataclass(frozen=True, slots=True)
class StreamEnded:
    """The peer half-closed the stream (a FIN on any frame): no more data will come."""

    stream_id: int


@dataclass(frozen=True, slots=True)
class StreamReset:
    """The stream is gone: the peer sent RST_STREAM (``remote``), or we reset it for a peer's fault."""

    stream_id: int
    status: int
    remote: bool = True


@dataclass(frozen=True, slots=True)
class WindowUpdated:
    """The peer granted more send window (``stream_id`` 0: the session's)."""

    stream_id: int
    delta: int


@dataclass(frozen=True, slots=True)
class SettingsReceived:
    settings: tuple[tuple[int, int, int], ...]  # (id, value, flags)


@dataclass(frozen=True, slots=True)
class PingReceived:
    """The peer pinged; the answer is already queued."""

    ping_id: int


@dataclass(frozen=True, slots=True)
class PingAcknowledged:
    """The answer to one of our pings."""

    ping_id: int


@dataclass(frozen=True, slots=True)
class GoAway:
    """The peer will accept no new streams; streams up to ``last_good_stream_id`` go on."""

    last_good_stream_id: int
    status: int


Event = (
    StreamOpened
    | StreamReplied
    | HeadersReceived
    | DataReceived
    | StreamEnded
    | StreamReset
    | WindowUpdated
    | SettingsReceived
    | PingReceived
    | PingAcknowledged
    | GoAway
)


# --- state -------------------------------------------------------------------------------


@dataclass(slots=True)
class _Stream:
    stream_id: int
    local_closed: bool = False
    remote_closed: bool = False
    replied: bool = False  # SYN_REPLY sent (peer's streams) or received (ours)
    send_window: int = DEFAULT_WINDOW
    recv_window: int = DEFAULT_WINDOW
    recv_unacked: int = 0


def _encode_header_block(headers: HeadersInput) -> bytes:
    pairs = list(headers.items()) if isinstance(headers, Mapping) else list(headers)
    merged: dict[str, list[str]] = {}
    for name, value in pairs:
        key = name.lower()
        if not key:
            raise errdefs.InvalidArgument("spdy: empty header name")
        if "\x00" in key or "\x00" in value:
            raise errdefs.InvalidArgument(f"spdy: header {name!r} contains NUL")
        merged.setdefault(key, []).append(value)
    out = [_U32.pack(len(merged))]
    for key, values in merged.items():
        kb = key.encode("utf-8")
        vb = "\x00".join(values).encode("utf-8")
        out += [_U32.pack(len(kb)), kb, _U32.pack(len(vb)), vb]
    return b"".join(out)


def _decode_header_block(block: bytes) -> Headers:
    view = memoryview(block)
    if len(view) < 4:
        raise ProtocolError("spdy: header block shorter than its count")
    (count,) = _U32.unpack_from(view, 0)
    if count > (len(view) - 4) // 8:
        raise ProtocolError(f"spdy: header block claims {count} headers in {len(view)} bytes")
    pos = 4
    seen: set[str] = set()
    result: list[tuple[str, str]] = []
    for _ in range(count):
        parts: list[str] = []
        for _what in ("name", "value"):
            if pos + 4 > len(view):
                raise ProtocolError("spdy: header block truncated")
            (length,) = _U32.unpack_from(view, pos)
            pos += 4
            if pos + length > len(view):
                raise ProtocolError("spdy: header block truncated")
            parts.append(bytes(view[pos : pos + length]).decode("utf-8", errors="replace"))
            pos += length
        name, value = parts
        if not name:
            raise ProtocolError("spdy: empty header name")
        name = name.lower()
        if name in seen:
            raise ProtocolError(f"spdy: duplicate header {name!r}")
        seen.add(name)
        result.extend((name, v) for v in value.split("\x00"))
    if pos != len(view):
        raise ProtocolError("spdy: trailing bytes after the header block")
    return tuple(result)


class SpdyConnection:
    """One SPDY/3.1 session, client or server side.

    Feed received bytes to ``receive_data`` and act on the events it returns; after any call,
    send ``data_to_send()`` to the peer.  A ``ProtocolError`` from ``receive_data`` ends the
    session (a GOAWAY(PROTOCOL_ERROR) is queued: send it, then close the transport).
    """

    def __init__(
        self,
        client: bool,
        *,
        strict_flow_control: bool = False,
        max_control_frame: int = DEFAULT_MAX_CONTROL_FRAME,
        max_header_bytes: int = DEFAULT_MAX_HEADER_BYTES,
    ) -> None:
        self.client = client
        self.strict_flow_control = strict_flow_control
        self.max_control_frame = max_control_frame
        self.max_header_bytes = max_header_bytes
        self._out = bytearray()
        self._in = bytearray()
        self._streams: dict[int, _Stream] = {}
        self._next_stream_id = 1 if client else 2
        self._next_ping_id = 1 if client else 2
        self._highest_peer_stream = 0
        self._compressor = zlib.compressobj(
            zlib.Z_DEFAULT_COMPRESSION, zlib.DEFLATED, 15, 9, zlib.Z_DEFAULT_STRATEGY, HEADER_DICTIONARY
        )
        self._decompressor = zlib.decompressobj(zdict=HEADER_DICTIONARY)
        self._peer_initial_window = DEFAULT_WINDOW
        self._session_send_window = DEFAULT_WINDOW
        self._session_recv_window = DEFAULT_WINDOW
        self._session_recv_unacked = 0
        self._peer_flow_control = strict_flow_control
        self._goaway_sent = False
        self._goaway_received = False
        self._broken = False

    # --- introspection ---------------------------------------------------------------

    @property
    def goaway_received(self) -> bool:
        return self._goaway_received

    @property
    def peer_does_flow_control(self) -> bool:
        return self._peer_flow_control

    def open_streams(self) -> list[int]:
        return sorted(self._streams)

    def is_open(self, stream_id: int) -> bool:
        return stream_id in self._streams

    def send_window(self, stream_id: int) -> int:
        """How many bytes ``send_data`` accepts now on the stream (the peer's windows allowing)."""
        st = self._streams.get(stream_id)
        if st is None or st.local_closed:
            return 0
        if not self._peer_flow_control:
            return MAX_WINDOW
        return max(0, min(st.send_window, self._session_send_window))

    # --- output ------------------------------------------------------------------------

    def data_to_send(self) -> bytes:
        out = bytes(self._out)
        self._out.clear()
        return out

    def _control(self, ftype: int, flags: int, payload: bytes) -> None:
        if len(payload) > MAX_FRAME_LENGTH:
            raise errdefs.InvalidArgument(f"spdy: control frame of {len(payload)} bytes is too large")
        self._out += _FRAME_HEAD.pack(0x80000000 | (VERSION << 16) | ftype, flags, len(payload).to_bytes(3, "big"))
        self._out += payload

    def _compress(self, headers: HeadersInput) -> bytes:
        block = _encode_header_block(headers)
        return self._compressor.compress(block) + self._compressor.flush(zlib.Z_SYNC_FLUSH)

    def _live(self, stream_id: int) -> _Stream:
        st = self._streams.get(stream_id)
        if st is None:
            raise errdefs.FailedPrecondition(f"spdy: stream {stream_id} is not open")
        return st

    def _maybe_forget(self, st: _Stream) -> None:
        if st.local_closed and st.remote_closed:
            self._streams.pop(st.stream_id, None)

    # --- commands ----------------------------------------------------------------------

    def open_stream(
        self, headers: HeadersInput, fin: bool = False, *, priority: int = 0, associated_stream_id: int = 0
    ) -> int:
        """Send SYN_STREAM; returns the new stream's id (odd for a client, even for a server)."""
        if self._goaway_sent or self._goaway_received:
            raise errdefs.FailedPrecondition("spdy: the session is going away; no new streams")
        sid = self._next_stream_id
        if sid > MAX_STREAM_ID:
            raise errdefs.ResourceExhausted("spdy: stream ids exhausted")
        self._next_stream_id += 2
        block = self._compress(headers)
        payload = _U32x2.pack(sid, associated_stream_id & MAX_STREAM_ID) + bytes([(priority & 7) << 5, 0]) + block
        self._control(FrameType.SYN_STREAM, FLAG_FIN if fin else 0, payload)
        st = _Stream(sid, local_closed=fin, send_window=self._peer_initial_window)
        self._streams[sid] = st
        return sid

    def reply(self, stream_id: int, headers: HeadersInput = (), fin: bool = False) -> None:
        """Send SYN_REPLY for a stream the peer opened."""
        st = self._live(stream_id)
        if (stream_id % 2 == 1) == self.client or st.replied:
            raise errdefs.FailedPrecondition(f"spdy: stream {stream_id} cannot be replied to")
        st.replied = True
        self._control(FrameType.SYN_REPLY, FLAG_FIN if fin else 0, _U32.pack(stream_id) + self._compress(headers))
        if fin:
            st.local_closed = True
            self._maybe_forget(st)

    def send_headers(self, stream_id: int, headers: HeadersInput, fin: bool = False) -> None:
        st = self._live(stream_id)
        if st.local_closed:
            raise errdefs.FailedPrecondition(f"spdy: stream {stream_id} is closed for sending")
        self._control(FrameType.HEADERS, FLAG_FIN if fin else 0, _U32.pack(stream_id) + self._compress(headers))
        if fin:
            st.local_closed = True
            self._maybe_forget(st)

    def send_data(self, stream_id: int, data: bytes, fin: bool = False) -> None:
        """Send data (split into frames of at most 64 KiB); ``fin`` half-closes the stream."""
        st = self._live(stream_id)
        if st.local_closed:
            raise errdefs.FailedPrecondition(f"spdy: stream {stream_id} is closed for sending")
        if len(data) > self.send_window(stream_id):
            raise FlowControlError(
                f"spdy: {len(data)} bytes exceed stream {stream_id}'s send window of {self.send_window(stream_id)}"
            )
        st.send_window -= len(data)
        self._session_send_window -= len(data)
        view = memoryview(data)
        chunk = DEFAULT_WINDOW
        offsets = range(0, len(view), chunk) if view else range(1)
        last = offsets[-1]
        for off in offsets:
            part = view[off : off + chunk]
            flags = FLAG_FIN if (fin and off == last) else 0
            self._out += _FRAME_HEAD.pack(stream_id, flags, len(part).to_bytes(3, "big"))
            self._out += part
        if fin:
            st.local_closed = True
            self._maybe_forget(st)

    def end_stream(self, stream_id: int) -> None:
        """Half-close: an empty DATA frame with FIN."""
        self.send_data(stream_id, b"", fin=True)

    def reset_stream(self, stream_id: int, status: int = RstStatus.CANCEL) -> None:
        """Send RST_STREAM and forget the stream (a no-op for a stream already gone)."""
        if stream_id in self._streams:
            del self._streams[stream_id]
            self._control(FrameType.RST_STREAM, 0, _U32x2.pack(stream_id, int(status)))

    def acknowledge_received_data(self, stream_id: int, size: int) -> None:
        """The application consumed ``size`` received bytes: reopen the windows (WINDOW_UPDATE)."""
        if size <= 0:
            return
        self._session_recv_unacked += size
        if self._session_recv_unacked >= DEFAULT_WINDOW // 2:
            delta, self._session_recv_unacked = self._session_recv_unacked, 0
            self._session_recv_window = min(MAX_WINDOW, self._session_recv_window + delta)
            self._control(FrameType.WINDOW_UPDATE, 0, _U32x2.pack(0, delta))
        st = self._streams.get(stream_id)
        if st is None or st.remote_closed:
            return
        st.recv_unacked += size
        if st.recv_unacked >= DEFAULT_WINDOW // 2:
            delta, st.recv_unacked = st.recv_unacked, 0
            st.recv_window = min(MAX_WINDOW, st.recv_window + delta)
            self._control(FrameType.WINDOW_UPDATE, 0, _U32x2.pack(stream_id, delta))

    def ping(self) -> int:
        pid = self._next_ping_id
        self._next_ping_id = (pid + 2) if pid + 2 <= 0xFFFFFFFF else (1 if self.client else 2)
        self._control(FrameType.PING, 0, _U32.pack(pid))
        return pid

    def goaway(self, status: int = GoAwayStatus.OK) -> None:
        if not self._goaway_sent:
            self._goaway_sent = True
            self._control(FrameType.GOAWAY, 0, _U32x2.pack(self._highest_peer_stream, int(status)))

    # --- input -------------------------------------------------------------------------

    def receive_data(self, data: bytes) -> list[Event]:
        """Parse what arrived; returns the events of every complete frame."""
        if self._broken:
            raise ProtocolError("spdy: the session already failed")
        self._in += data
        events: list[Event] = []
        pos = 0
        buf = self._in
        try:
            while len(buf) - pos >= 8:
                first, flags, raw_len = _FRAME_HEAD.unpack_from(buf, pos)
                length = int.from_bytes(raw_len, "big")
                control = bool(first & 0x80000000)
                if control and length > self.max_control_frame:
                    raise ProtocolError(f"spdy: control frame of {length} bytes (limit {self.max_control_frame})")
                if len(buf) - pos - 8 < length:
                    break
                payload = bytes(buf[pos + 8 : pos + 8 + length])
                pos += 8 + length
                if control:
                    version = (first >> 16) & 0x7FFF
                    if version != VERSION:
                        raise ProtocolError(f"spdy: unsupported version {version}")
                    self._control_frame(first & 0xFFFF, flags, payload, events)
                else:
                    self._data_frame(first & MAX_STREAM_ID, flags, payload, events)
        except ProtocolError:
            self._broken = True
            self._in.clear()
            self.goaway(GoAwayStatus.PROTOCOL_ERROR)
            raise
        del buf[:pos]
        return events

    def _decompress(self, block: bytes) -> Headers:
        try:
            raw = self._decompressor.decompress(block, self.max_header_bytes + 1)
        except zlib.error as exc:
            raise ProtocolError(f"spdy: bad compressed header block: {exc}") from exc
        if len(raw) > self.max_header_bytes or self._decompressor.unconsumed_tail:
            raise ProtocolError(f"spdy: header block inflates beyond {self.max_header_bytes} bytes")
        return _decode_header_block(raw)

    def _peer_stream_fin(self, st: _Stream, events: list[Event]) -> None:
        st.remote_closed = True
        events.append(StreamEnded(st.stream_id))
        self._maybe_forget(st)

    def _local_reset(self, stream_id: int, status: RstStatus, events: list[Event]) -> None:
        self._streams.pop(stream_id, None)
        self._control(FrameType.RST_STREAM, 0, _U32x2.pack(stream_id, int(status)))
        events.append(StreamReset(stream_id, int(status), remote=False))

    def _control_frame(self, ftype: int, flags: int, payload: bytes, events: list[Event]) -> None:
        n = len(payload)
        if ftype == FrameType.SYN_STREAM:
            if n < 10:
                raise ProtocolError("spdy: short SYN_STREAM")
            sid, assoc = _U32x2.unpack_from(payload, 0)
            sid &= MAX_STREAM_ID
            headers = self._decompress(payload[10:])
            self._syn_stream(sid, assoc & MAX_STREAM_ID, payload[8] >> 5, flags, headers, events)
        elif ftype in (FrameType.SYN_REPLY, FrameType.HEADERS):
            if n < 4:
                raise ProtocolError("spdy: short SYN_REPLY/HEADERS")
            sid = _U32.unpack_from(payload, 0)[0] & MAX_STREAM_ID
            headers = self._decompress(payload[4:])
            if sid == 0:
                raise ProtocolError("spdy: SYN_REPLY/HEADERS on stream 0")
            st = self._streams.get(sid)
            if st is None or st.remote_closed:
                if st is not None:
                    self._local_reset(sid, RstStatus.STREAM_ALREADY_CLOSED, events)
                return
            fin = bool(flags & FLAG_FIN)
            if ftype == FrameType.SYN_REPLY:
                if st.replied or (sid % 2 == 1) != self.client:
                    self._local_reset(sid, RstStatus.STREAM_IN_USE, events)
                    return
                st.replied = True
                events.append(StreamReplied(sid, headers, fin))
            else:
                events.append(HeadersReceived(sid, headers, fin))
            if fin:
                self._peer_stream_fin(st, events)
        elif ftype == FrameType.RST_STREAM:
            if n != 8:
                raise ProtocolError("spdy: RST_STREAM length is not 8")
            sid, status = _U32x2.unpack(payload)
            sid &= MAX_STREAM_ID
            if self._streams.pop(sid, None) is not None:
                events.append(StreamReset(sid, status, remote=True))
        elif ftype == FrameType.SETTINGS:
            if n < 4:
                raise ProtocolError("spdy: short SETTINGS")
            (count,) = _U32.unpack_from(payload, 0)
            if n != 4 + 8 * count:
                raise ProtocolError("spdy: SETTINGS length does not match its count")
            settings = []
            for i in range(count):
                word, value = _U32x2.unpack_from(payload, 4 + 8 * i)
                sflags, sid_ = word >> 24, word & 0xFFFFFF
                settings.append((sid_, value, sflags))
                if sid_ == SETTINGS_INITIAL_WINDOW_SIZE:
                    if value > MAX_WINDOW:
                        raise ProtocolError("spdy: initial window above 2^31-1")
                    delta = value - self._peer_initial_window
                    self._peer_initial_window = value
                    for st in self._streams.values():
                        st.send_window += delta
            events.append(SettingsReceived(tuple(settings)))
        elif ftype == FrameType.PING:
            if n != 4:
                raise ProtocolError("spdy: PING length is not 4")
            (pid,) = _U32.unpack(payload)
            if (pid % 2 == 1) == self.client:
                events.append(PingAcknowledged(pid))
            else:
                self._control(FrameType.PING, 0, payload)
                events.append(PingReceived(pid))
        elif ftype == FrameType.GOAWAY:
            if n != 8:
                raise ProtocolError("spdy: GOAWAY length is not 8")
            last, status = _U32x2.unpack(payload)
            self._goaway_received = True
            events.append(GoAway(last & MAX_STREAM_ID, status))
        elif ftype == FrameType.WINDOW_UPDATE:
            if n != 8:
                raise ProtocolError("spdy: WINDOW_UPDATE length is not 8")
            sid, delta = _U32x2.unpack(payload)
            sid &= MAX_STREAM_ID
            delta &= MAX_WINDOW
            self._peer_flow_control = True
            if sid == 0:
                if delta == 0 or self._session_send_window + delta > MAX_WINDOW:
                    raise ProtocolError(f"spdy: bad session WINDOW_UPDATE delta {delta}")
                self._session_send_window += delta
                events.append(WindowUpdated(0, delta))
                return
            st = self._streams.get(sid)
            if st is None:
                return
            if delta == 0 or st.send_window + delta > MAX_WINDOW:
                self._local_reset(sid, RstStatus.FLOW_CONTROL_ERROR, events)
                return
            st.send_window += delta
            events.append(WindowUpdated(sid, delta))
        # other types (NOOP, CREDENTIAL, unknown) are ignored, as the draft requires

    def _syn_stream(
        self, sid: int, assoc: int, priority: int, flags: int, headers: Headers, events: list[Event]
    ) -> None:
        if sid == 0:
            raise ProtocolError("spdy: SYN_STREAM with stream id 0")
        if (sid % 2 == 1) == self.client or sid <= self._highest_peer_stream:
            # wrong parity or not increasing: the draft's PROTOCOL_ERROR stream error
            self._control(FrameType.RST_STREAM, 0, _U32x2.pack(sid, RstStatus.PROTOCOL_ERROR))
            events.append(StreamReset(sid, RstStatus.PROTOCOL_ERROR, remote=False))
            return
        self._highest_peer_stream = sid
        if self._goaway_sent:
            return  # after our GOAWAY, new streams are ignored
        fin = bool(flags & FLAG_FIN)
        uni = bool(flags & FLAG_UNIDIRECTIONAL)
        st = _Stream(sid, local_closed=uni, send_window=self._peer_initial_window)
        self._streams[sid] = st
        events.append(StreamOpened(sid, headers, fin, uni, assoc, priority))
        if fin:
            self._peer_stream_fin(st, events)

    def _data_frame(self, sid: int, flags: int, payload: bytes, events: list[Event]) -> None:
        if sid == 0:
            raise ProtocolError("spdy: DATA frame on stream 0")
        n = len(payload)
        self._session_recv_window -= n
        st = self._streams.get(sid)
        if st is None:
            # data for a stream we reset or closed is dropped; for one never opened it is an error
            own = (sid % 2 == 1) == self.client
            ever_opened = sid < self._next_stream_id if own else sid <= self._highest_peer_stream
            self._session_recv_window += n
            if not ever_opened:
                self._control(FrameType.RST_STREAM, 0, _U32x2.pack(sid, RstStatus.INVALID_STREAM))
            return
        if st.remote_closed:
            self._local_reset(sid, RstStatus.STREAM_ALREADY_CLOSED, events)
            return
        st.recv_window -= n
        if self.strict_flow_control and (st.recv_window < 0 or self._session_recv_window < 0):
            self._local_reset(sid, RstStatus.FLOW_CONTROL_ERROR, events)
            return
        fin = bool(flags & FLAG_FIN)
        events.append(DataReceived(sid, payload, fin))
        if fin:
            self._peer_stream_fin(st, events)
