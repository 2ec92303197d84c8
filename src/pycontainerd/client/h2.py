"""A small synchronous gRPC client over one HTTP/2 connection, without grpc and without asyncio.

For the commands whose cost is mostly start-up (``pyctr run --rm IMG true``): importing grpc,
asyncio and the generated protobuf modules costs several times what the calls themselves do.
This speaks just enough HTTP/2 (RFC 9113) for gRPC's unary and server-streaming calls over a
unix socket with prior knowledge:

- requests: a HEADERS frame encoded by ``http2.hpack.encode_block`` (static-table indexes or
  literals, no Huffman: no encoder state) and the length-prefixed message as DATA, split to the peer's
  frame size and send windows (WINDOW_UPDATEs are waited for when they run out);
- responses: ``http2.hpack.Decoder`` (static and dynamic table, Huffman strings; RFC 7541) for
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
from ..http2.frames import (
    ACK,
    CONTINUATION,
    DATA,
    DEFAULT_WINDOW,
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
    SETTINGS_INITIAL_WINDOW_SIZE,
    SETTINGS_MAX_FRAME_SIZE,
    WINDOW_UPDATE,
)
from ..http2.frames import frame as _frame
from ..http2.hpack import Decoder as Hpack
from ..http2.hpack import encode_block, huffman_decode
from .quick import connect

__all__ = ["Channel", "Hpack", "huffman_decode"]

_INITIAL_WINDOW_SIZE, _MAX_FRAME_SIZE = SETTINGS_INITIAL_WINDOW_SIZE, SETTINGS_MAX_FRAME_SIZE
_RECV_WINDOW = 1 << 24  # what we let the daemon send before we say we consumed it
_DEFAULT_WINDOW = DEFAULT_WINDOW

_STATUS = ("OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED", "NOT_FOUND", "ALREADY_EXISTS",
           "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION", "ABORTED", "OUT_OF_RANGE",
           "UNIMPLEMENTED", "INTERNAL", "UNAVAILABLE", "DATA_LOSS", "UNAUTHENTICATED")

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
        self._out += _frame(HEADERS, END_HEADERS, sid, encode_block(fields))
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
