"""A small synchronous gRPC client over one HTTP/2 connection, without grpc and without asyncio.

For the commands whose cost is mostly start-up (``pyctr run --rm IMG true``): importing grpc,
asyncio and the generated protobuf modules costs several times what the calls themselves do.
This speaks just enough HTTP/2 (RFC 9113) for gRPC's unary and server-streaming calls over a
unix socket with prior knowledge:

- requests: a HEADERS frame with literal header fields (never indexed, no Huffman: no encoder
  state, ``quick.py``'s encoding) and the length-prefixed message as DATA, split to the peer's
  frame size and send windows (WINDOW_UPDATEs are waited for when they run out);
- responses: an HPACK decoder (static and dynamic table, Huffman strings; RFC 7541) for
  headers and trailers, DATA reassembled per stream, our receive windows replenished as data
  is consumed; ``grpc-status``/``grpc-message`` become the ``errdefs`` kind like the full client's
  mapping;
- several calls in flight at once (``start`` then ``result``), so independent calls share one
  round trip, and ``pump`` waits on the socket together with other file descriptors (the
  process's stdio) in one ``select``.

Messages are bytes here; ``wire.py`` encodes and decodes them.
"""

from __future__ import annotations

import select
import struct

from .. import errdefs
from .quick import (
    ACK,
    CONTINUATION,
    DATA,
    END_HEADERS,
    END_STREAM,
    GOAWAY,
    HEADERS,
    PADDED,
    PING,
    PREFACE,
    PRIORITY,
    RST_STREAM,
    SETTINGS,
    WINDOW_UPDATE,
    _frame,
    _literal,
    connect,
)

# SETTINGS identifiers (RFC 9113 6.5.2)
_INITIAL_WINDOW_SIZE, _MAX_FRAME_SIZE = 0x4, 0x5
_RECV_WINDOW = 1 << 24  # what we let the daemon send before we say we consumed it
_DEFAULT_WINDOW = 65535

_STATUS = ("OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED", "NOT_FOUND", "ALREADY_EXISTS",
           "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION", "ABORTED", "OUT_OF_RANGE",
           "UNIMPLEMENTED", "INTERNAL", "UNAVAILABLE", "DATA_LOSS", "UNAUTHENTICATED")

# -- HPACK (RFC 7541) -------------------------------------------------------------------------------
_STATIC: tuple[tuple[str, str], ...] = (
    (":authority", ""), (":method", "GET"), (":method", "POST"), (":path", "/"), (":path", "/index.html"),
    (":scheme", "http"), (":scheme", "https"), (":status", "200"), (":status", "204"), (":status", "206"),
    (":status", "304"), (":status", "400"), (":status", "404"), (":status", "500"), ("accept-charset", ""),
    ("accept-encoding", "gzip, deflate"), ("accept-language", ""), ("accept-ranges", ""), ("accept", ""),
    ("access-control-allow-origin", ""), ("age", ""), ("allow", ""), ("authorization", ""),
    ("cache-control", ""), ("content-disposition", ""), ("content-encoding", ""), ("content-language", ""),
    ("content-length", ""), ("content-location", ""), ("content-range", ""), ("content-type", ""),
    ("cookie", ""), ("date", ""), ("etag", ""), ("expect", ""), ("expires", ""), ("from", ""), ("host", ""),
    ("if-match", ""), ("if-modified-since", ""), ("if-none-match", ""), ("if-range", ""),
    ("if-unmodified-since", ""), ("last-modified", ""), ("link", ""), ("location", ""), ("max-forwards", ""),
    ("proxy-authenticate", ""), ("proxy-authorization", ""), ("range", ""), ("referer", ""), ("refresh", ""),
    ("retry-after", ""), ("server", ""), ("set-cookie", ""), ("strict-transport-security", ""),
    ("transfer-encoding", ""), ("user-agent", ""), ("vary", ""), ("via", ""), ("www-authenticate", ""),
)

# The Huffman code of RFC 7541 Appendix B is canonical: the code length of each of the 256
# octets (then EOS, 30 bits) determines every code.  Lengths as chr(48 + length).
_HUFFMAN_LENGTHS = (
    "=GLLLLLLLHNLLNLLLLLLLLNLLLLLLLLL6::<=68;::8;8666555666666678?6<:=67777777777777777777777878=C=>6?56565666"
    "577666567655677777?;>=LDFDDFFFGFGGGGGHGHHFGHGGGGEFGFGGHFEDFFGGEGFFHEFGGEEFEGFGGDFFFGFFGJJDCFGFIJJJKKJHICEJ"
    "KKJKHEEJJLKKKDHDEFEEGFFIIHHJGJKJJKKKKKLKKKKKJ"
)
_huffman_table: dict[tuple[int, int], int] | None = None


def _huffman() -> dict[tuple[int, int], int]:
    """(length, code) → symbol, built once from the canonical code lengths."""
    global _huffman_table
    if _huffman_table is None:
        lengths = [ord(c) - 48 for c in _HUFFMAN_LENGTHS] + [30]
        table: dict[tuple[int, int], int] = {}
        code, prev = 0, 0
        for sym in sorted(range(257), key=lambda s: (lengths[s], s)):
            if prev:
                code = (code + 1) << (lengths[sym] - prev)
            prev = lengths[sym]
            table[(prev, code)] = sym
        _huffman_table = table
    return _huffman_table


def huffman_decode(data: bytes) -> bytes:
    table = _huffman()
    out = bytearray()
    code = length = 0
    for byte in data:
        for shift in range(7, -1, -1):
            code = (code << 1) | ((byte >> shift) & 1)
            length += 1
            if length >= 5:
                sym = table.get((length, code))
                if sym is not None:
                    if sym == 256:
                        raise ValueError("HPACK: EOS in a Huffman string")
                    out.append(sym)
                    code = length = 0
            if length > 30:
                raise ValueError("HPACK: bad Huffman code")
    if length > 7 or code != (1 << length) - 1:
        raise ValueError("HPACK: bad Huffman padding")
    return bytes(out)


class Hpack:
    """The decoding half of HPACK: the dynamic table lives as long as the connection."""

    def __init__(self, max_size: int = 4096) -> None:
        self.table: list[tuple[str, str]] = []  # newest first
        self.size = 0
        self.max_size = max_size

    def _int(self, data: bytes, i: int, bits: int) -> tuple[int, int]:
        limit = (1 << bits) - 1
        value = data[i] & limit
        i += 1
        if value < limit:
            return value, i
        shift = 0
        while True:
            b = data[i]
            i += 1
            value += (b & 0x7F) << shift
            shift += 7
            if not b & 0x80:
                return value, i

    def _str(self, data: bytes, i: int) -> tuple[str, int]:
        huff = data[i] & 0x80
        n, i = self._int(data, i, 7)
        raw = data[i:i + n]
        if len(raw) != n:
            raise ValueError("HPACK: truncated string")
        return (huffman_decode(raw) if huff else raw).decode("utf-8", "replace"), i + n

    def _entry(self, index: int) -> tuple[str, str]:
        if 1 <= index <= len(_STATIC):
            return _STATIC[index - 1]
        j = index - len(_STATIC) - 1
        if 0 <= j < len(self.table):
            return self.table[j]
        raise ValueError(f"HPACK: no entry {index}")

    def _evict(self) -> None:
        while self.size > self.max_size and self.table:
            name, value = self.table.pop()
            self.size -= len(name.encode()) + len(value.encode()) + 32

    def decode(self, data: bytes) -> list[tuple[str, str]]:
        headers: list[tuple[str, str]] = []
        i = 0
        while i < len(data):
            b = data[i]
            if b & 0x80:  # indexed field
                index, i = self._int(data, i, 7)
                headers.append(self._entry(index))
                continue
            if b & 0xE0 == 0x20:  # dynamic table size update
                self.max_size, i = self._int(data, i, 5)
                self._evict()
                continue
            indexing = b & 0xC0 == 0x40
            index, i = self._int(data, i, 6 if indexing else 4)
            if index:
                name = self._entry(index)[0]
            else:
                name, i = self._str(data, i)
            value, i = self._str(data, i)
            headers.append((name, value))
            if indexing:
                self.table.insert(0, (name, value))
                self.size += len(name.encode()) + len(value.encode()) + 32
                self._evict()
        return headers


# -- the connection -------------------------------------------------------------------------------
class _Stream:
    __slots__ = ("data", "done", "headers", "message", "send_window", "status")

    def __init__(self, window: int) -> None:
        self.data = bytearray()
        self.done = False
        self.headers: dict[str, str] = {}
        self.send_window = window
        self.status: int | None = None
        self.message = ""


class Channel:
    """One HTTP/2 connection to the daemon's unix socket, bound to a namespace."""

    def __init__(self, address: str, namespace: str = "default", timeout: float = 10.0) -> None:
        self.address, self.namespace = address, namespace
        self.sock = connect(address, timeout)
        self.sock.settimeout(None)
        self._hpack = Hpack()
        self._streams: dict[int, _Stream] = {}
        self._next_sid = 1
        self._out = bytearray(PREFACE)
        self._out += _frame(SETTINGS, 0, 0, struct.pack(">HI", _INITIAL_WINDOW_SIZE, _RECV_WINDOW))
        self._out += _frame(WINDOW_UPDATE, 0, 0, struct.pack(">I", _RECV_WINDOW - _DEFAULT_WINDOW))
        self._peer_initial = _DEFAULT_WINDOW
        self._conn_send_window = _DEFAULT_WINDOW
        self._max_frame = 16384
        self._unacked = 0  # bytes received on the connection not yet given back
        self._rbuf = bytearray()
        self._header_block: tuple[int, int, bytearray] | None = None  # (sid, flags, fragments)

    def close(self) -> None:
        self.sock.close()

    # -- sending --
    def start(self, path: str, request: bytes, *, lease: str | None = None) -> int:
        """Queue a call (sent at the next ``flush``, ``result`` or ``pump``); its stream id."""
        sid = self._next_sid
        self._next_sid += 2
        fields = [(":method", "POST"), (":scheme", "http"), (":path", path), (":authority", "localhost"),
                  ("content-type", "application/grpc"), ("te", "trailers"),
                  ("containerd-namespace", self.namespace)]
        if lease:
            fields.append(("containerd-lease", lease))
        self._streams[sid] = _Stream(self._peer_initial)
        self._out += _frame(HEADERS, END_HEADERS, sid, b"".join(_literal(k, v) for k, v in fields))
        self._send_data(sid, b"\x00" + struct.pack(">I", len(request)) + request)
        return sid

    def _send_data(self, sid: int, payload: bytes) -> None:
        stream = self._streams[sid]
        view = memoryview(payload)
        while True:
            n = min(len(view), self._max_frame, self._conn_send_window, stream.send_window)
            if n == 0 and view:
                self.flush()
                self._read_frame()  # wait for a WINDOW_UPDATE
                continue
            last = n == len(view)
            self._out += _frame(DATA, END_STREAM if last else 0, sid, bytes(view[:n]))
            self._conn_send_window -= n
            stream.send_window -= n
            view = view[n:]
            if last:
                return

    def flush(self) -> None:
        if self._out:
            out, self._out = bytes(self._out), bytearray()
            self.sock.sendall(out)

    def cancel(self, sid: int) -> None:
        """Give up on a call (RST_STREAM CANCEL); its answer, if any, is dropped."""
        stream = self._streams.pop(sid, None)
        if stream is not None and not stream.done:
            self._out += _frame(RST_STREAM, 0, sid, struct.pack(">I", 0x8))

    # -- receiving --
    def done(self, sid: int) -> bool:
        stream = self._streams.get(sid)
        return stream is None or stream.done

    def result(self, sid: int) -> list[bytes]:
        """The messages of a finished call (waiting for it); the errdefs kind of its status if not OK."""
        self.flush()
        stream = self._streams[sid]
        while not stream.done:
            self._read_frame()
            self.flush()  # acks and window updates go out while we wait
        del self._streams[sid]
        if stream.status != 0:
            status = stream.status if stream.status is not None else 2
            name = _STATUS[status] if 0 <= status < len(_STATUS) else "UNKNOWN"
            raise errdefs.from_code(name, stream.message or name.lower())
        return _messages(bytes(stream.data))

    def settle(self) -> None:
        """Wait for every call still in flight, dropping their answers and errors."""
        self.flush()
        while any(not st.done for st in self._streams.values()):
            self._read_frame()
            self.flush()
        self._streams.clear()

    def call(self, path: str, request: bytes, *, lease: str | None = None) -> bytes:
        """A unary call: its answer's bytes, or the errdefs kind of its status."""
        msgs = self.result(self.start(path, request, lease=lease))
        return msgs[0] if msgs else b""

    def pump(self, rfds: list[int], wfds: list[int], timeout: float | None = None) -> tuple[list[int], list[int]]:
        """Wait until the daemon sends something or one of ``rfds``/``wfds`` is ready; handle the
        daemon's frames and say which of the others are ready."""
        self.flush()
        if self._buffered_frame():
            self._read_buffered()
            return [], []
        sock = self.sock.fileno()
        r, w, _ = select.select([sock, *rfds], wfds, [], timeout)
        if sock in r:
            self._recv()
            self._read_buffered()
        return [fd for fd in r if fd != sock], w

    def _buffered_frame(self) -> bool:
        return len(self._rbuf) >= 9 and len(self._rbuf) >= 9 + int.from_bytes(self._rbuf[:3], "big")

    def _read_buffered(self) -> None:
        """Handle the complete frames already received."""
        while self._buffered_frame():
            self._read_frame()
        self.flush()

    def _recv(self) -> None:
        chunk = self.sock.recv(65536)
        if not chunk:
            raise errdefs.Unavailable(f"the daemon at {self.address} closed the connection")
        self._rbuf += chunk

    def _fill(self, n: int) -> None:
        while len(self._rbuf) < n:
            self._recv()

    def _read_frame(self) -> None:
        self._fill(9)
        length = int.from_bytes(self._rbuf[:3], "big")
        self._fill(9 + length)
        ftype, flags = self._rbuf[3], self._rbuf[4]
        sid = int.from_bytes(self._rbuf[5:9], "big") & 0x7FFFFFFF
        payload = bytes(self._rbuf[9:9 + length])
        del self._rbuf[:9 + length]
        self._handle(ftype, flags, sid, payload)

    def _handle(self, ftype: int, flags: int, sid: int, payload: bytes) -> None:
        if self._header_block is not None and ftype != CONTINUATION:
            raise errdefs.Unknown("HTTP/2: header block interrupted")
        if ftype == DATA:
            received = len(payload)  # padding counts against the window too
            if flags & PADDED and payload:
                payload = payload[1:len(payload) - payload[0]]
            stream = self._streams.get(sid)
            if stream is not None:
                stream.data += payload
                if flags & END_STREAM:
                    stream.done = True
            self._consumed(sid, received)
        elif ftype in (HEADERS, CONTINUATION):
            if ftype == HEADERS:
                if flags & PADDED:
                    payload = payload[1:len(payload) - payload[0]]
                if flags & PRIORITY:
                    payload = payload[5:]
                self._header_block = (sid, flags, bytearray(payload))
            elif self._header_block is not None:
                self._header_block[2].extend(payload)
            if flags & END_HEADERS and self._header_block is not None:
                hsid, hflags, block = self._header_block
                self._header_block = None
                self._headers(hsid, hflags, self._hpack.decode(bytes(block)))
        elif ftype == SETTINGS:
            if not flags & ACK:
                for i in range(0, len(payload) - 5, 6):
                    key, value = struct.unpack(">HI", payload[i:i + 6])
                    if key == _INITIAL_WINDOW_SIZE:
                        delta = value - self._peer_initial
                        self._peer_initial = value
                        for stream in self._streams.values():
                            stream.send_window += delta
                    elif key == _MAX_FRAME_SIZE:
                        self._max_frame = value
                self._out += _frame(SETTINGS, ACK, 0)
        elif ftype == WINDOW_UPDATE:
            inc = int.from_bytes(payload[:4], "big") & 0x7FFFFFFF
            if sid == 0:
                self._conn_send_window += inc
            elif sid in self._streams:
                self._streams[sid].send_window += inc
        elif ftype == PING:
            if not flags & ACK:
                self._out += _frame(PING, ACK, 0, payload)
        elif ftype == RST_STREAM:
            stream = self._streams.get(sid)
            if stream is not None and not stream.done:
                stream.done = True
                if stream.status is None:
                    stream.status = 14 if payload[:4] == b"\x00\x00\x00\x07" else 2  # REFUSED_STREAM: retryable
                    stream.message = stream.message or "the daemon reset the call"
        elif ftype == GOAWAY:
            last = int.from_bytes(payload[:4], "big") & 0x7FFFFFFF
            for s, stream in self._streams.items():
                if s > last and not stream.done:
                    stream.done, stream.status, stream.message = True, 14, "the daemon is shutting down (GOAWAY)"

    def _headers(self, sid: int, flags: int, headers: list[tuple[str, str]]) -> None:
        stream = self._streams.get(sid)
        if stream is None:
            return
        for name, value in headers:
            if name == "grpc-status":
                stream.status = int(value) if value.isdigit() else 2
            elif name == "grpc-message":
                stream.message = _percent_decode(value)
            elif name == ":status" and value != "200":
                stream.status, stream.message = 2, f"HTTP status {value} from the daemon"
        if flags & END_STREAM:
            stream.done = True

    def _consumed(self, sid: int, n: int) -> None:
        """Give received bytes back to the daemon's send windows once enough piled up."""
        self._unacked += n
        if self._unacked >= _RECV_WINDOW // 2:
            self._out += _frame(WINDOW_UPDATE, 0, 0, struct.pack(">I", self._unacked))
            stream = self._streams.get(sid)
            if stream is not None and not stream.done:
                self._out += _frame(WINDOW_UPDATE, 0, sid, struct.pack(">I", self._unacked))
            self._unacked = 0


def _percent_decode(text: str) -> str:
    """grpc-message is percent-encoded UTF-8 (gRPC's HTTP/2 protocol)."""
    if "%" not in text:
        return text
    raw = text.encode()
    out = bytearray()
    i = 0
    while i < len(raw):
        hexdigits = raw[i + 1:i + 3]
        if raw[i] == 0x25 and len(hexdigits) == 2 and all(c in b"0123456789abcdefABCDEF" for c in hexdigits):
            out.append(int(hexdigits, 16))
            i += 3
        else:
            out.append(raw[i])
            i += 1
    return out.decode("utf-8", "replace")


def _messages(body: bytes) -> list[bytes]:
    out: list[bytes] = []
    i = 0
    while i + 5 <= len(body):
        if body[i] != 0:
            raise errdefs.Unimplemented("the daemon sent a compressed gRPC message")
        n = int.from_bytes(body[i + 1:i + 5], "big")
        out.append(body[i + 5:i + 5 + n])
        i += 5 + n
    return out
