"""A hand-written HTTP/2 client side for the http2 unit tests: frames built byte by byte, output parsed.

Deliberately independent of ``pycontainerd.http2.frames``: the layout comes from RFC 9113 4.1
here, so a mistake in the module under test cannot cancel out in its tests.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import pytest

from pycontainerd.http2.hpack import Decoder, encode_block
from pycontainerd.http2.server import Event, ProtocolError, ServerConnection, ServerSettings

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
DATA, HEADERS, PRIORITY, RST_STREAM, SETTINGS, PUSH_PROMISE, PING, GOAWAY, WINDOW_UPDATE, CONTINUATION = (
    0, 1, 2, 3, 4, 5, 6, 7, 8, 9)


def frame(ftype: int, flags: int, sid: int, payload: bytes = b"") -> bytes:
    return struct.pack(">I", len(payload))[1:] + bytes([ftype, flags]) + struct.pack(">I", sid) + payload


def settings(*pairs: tuple[int, int]) -> bytes:
    return frame(SETTINGS, 0, 0, b"".join(struct.pack(">HI", k, v) for k, v in pairs))


def window_update(sid: int, inc: int) -> bytes:
    return frame(WINDOW_UPDATE, 0, sid, struct.pack(">I", inc))


def rst(sid: int, code: int = 8) -> bytes:
    return frame(RST_STREAM, 0, sid, struct.pack(">I", code))


def ping(data: bytes = b"12345678", ack: bool = False) -> bytes:
    return frame(PING, 1 if ack else 0, 0, data)


REQUEST = [(":method", "POST"), (":scheme", "http"), (":path", "/t.T/M"), (":authority", "x"),
           ("content-type", "application/grpc"), ("te", "trailers")]
REQUEST_BLOCK = encode_block(REQUEST)


def headers(sid: int, block: bytes = REQUEST_BLOCK, end_stream: bool = False, end_headers: bool = True) -> bytes:
    return frame(HEADERS, (1 if end_stream else 0) | (4 if end_headers else 0), sid, block)


def data(sid: int, payload: bytes, end_stream: bool = False) -> bytes:
    return frame(DATA, 1 if end_stream else 0, sid, payload)


def grpc_message(msg: bytes) -> bytes:
    return b"\x00" + struct.pack(">I", len(msg)) + msg


@dataclass
class Frame:
    type: int
    flags: int
    sid: int
    payload: bytes

    @property
    def error_code(self) -> int:
        """RST_STREAM's code, or GOAWAY's."""
        if self.type == GOAWAY:
            return int(struct.unpack(">I", self.payload[4:8])[0])
        assert self.type == RST_STREAM
        return int(struct.unpack(">I", self.payload)[0])

    @property
    def last_stream_id(self) -> int:
        assert self.type == GOAWAY
        return int(struct.unpack(">I", self.payload[:4])[0]) & 0x7FFFFFFF

    @property
    def u32(self) -> int:
        return int(struct.unpack(">I", self.payload[:4])[0])


def parse(out: bytes) -> list[Frame]:
    frames, i = [], 0
    while i < len(out):
        assert len(out) - i >= 9, "truncated frame header"
        length = int.from_bytes(out[i:i + 3], "big")
        ftype, flags, sid = out[i + 3], out[i + 4], int.from_bytes(out[i + 5:i + 9], "big") & 0x7FFFFFFF
        payload = out[i + 9:i + 9 + length]
        assert len(payload) == length, "truncated frame payload"
        frames.append(Frame(ftype, flags, sid, payload))
        i += 9 + length
    return frames


class Peer:
    """A ServerConnection with the client's preface and SETTINGS already sent and its output drained."""

    def __init__(self, settings_frame: bytes = b"", **kw: int) -> None:
        self.conn = ServerConnection(ServerSettings(**kw))
        self.conn.initiate()
        self.initial = parse(self.conn.data_to_send())
        self.decoder = Decoder()
        assert self.conn.receive_data(PREFACE + (settings_frame or settings())) == []
        self.out()  # the SETTINGS ack

    def send(self, *chunks: bytes) -> list[Event]:
        return self.conn.receive_data(b"".join(chunks))

    def out(self) -> list[Frame]:
        return parse(self.conn.data_to_send())

    def fails(self, *chunks: bytes) -> Frame:
        """The input must be a connection error: the GOAWAY queued for it."""
        with pytest.raises(ProtocolError) as info:
            self.send(*chunks)
        goaways = [fr for fr in self.out() if fr.type == GOAWAY]
        assert len(goaways) == 1
        assert info.value.error_code == goaways[0].error_code
        assert self.conn.closed
        return goaways[0]
