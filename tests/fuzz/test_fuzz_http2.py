"""Fuzz the HTTP/2 server connection and the HPACK decoder (``pycontainerd.http2``): untrusted bytes
from every daemon client.

Property: ``receive_data`` returns events or raises ``ProtocolError`` (GOAWAY queued) and
``Decoder.decode`` returns a header list or raises ``HPACKError`` — never another exception; the
output is always whole, well-formed frames no larger than the peer allows.
"""

from __future__ import annotations

import struct

from hypothesis import given
from hypothesis import strategies as st

from pycontainerd.http2 import frames as f
from pycontainerd.http2.hpack import Decoder, HPACKError, encode_block
from pycontainerd.http2.server import (
    DataReceived,
    ProtocolError,
    RequestReceived,
    ServerConnection,
    ServerSettings,
    StreamClosedError,
)

_REQUEST = encode_block([(":method", "POST"), (":scheme", "http"), (":path", "/a.B/C"), (":authority", "x"),
                         ("content-type", "application/grpc")])
_sids = st.sampled_from([0, 1, 2, 3, 5, 7, 9, 11, 0x7FFFFFFF, 0x80000001])
_payloads = st.one_of(
    st.binary(max_size=48),
    st.just(_REQUEST),
    st.builds(lambda a, b: a + b, st.just(_REQUEST), st.binary(max_size=16)),
    st.lists(st.tuples(st.integers(0, 8), st.integers(0, 0xFFFFFFFF)), max_size=4).map(
        lambda kv: b"".join(struct.pack(">HI", k, v) for k, v in kv)),
    st.integers(0, 0xFFFFFFFF).map(lambda v: struct.pack(">I", v)),
    st.just(b"12345678"),
)
_frames = st.builds(
    lambda t, fl, sid, p: f.frame(t, fl, sid & 0xFFFFFFFF, p),
    st.one_of(st.integers(0, 10), st.integers(0, 255)), st.integers(0, 255), _sids, _payloads)


def _check_output(out: bytes) -> None:
    i = 0
    while i < len(out):
        length, _ftype, _flags, _sid = f.unpack_header(out, i)
        assert length <= f.MAX_FRAME_SIZE_LIMIT
        i += 9 + length
    assert i == len(out)


@given(frames=st.lists(_frames, max_size=25), cut=st.integers(1, 64), respond=st.booleans())
def test_server_connection_survives_any_frames(frames: list[bytes], cut: int, respond: bool) -> None:
    conn = ServerConnection(ServerSettings(max_concurrent_streams=4, max_reset_streams=5, max_empty_frames=5,
                                           max_pending_acks=5, initial_window_size=100))
    conn.initiate()
    wire = f.PREFACE + f.frame(f.SETTINGS, 0, 0) + b"".join(frames)
    for start in range(0, len(wire), cut):
        try:
            events = conn.receive_data(wire[start:start + cut])
        except ProtocolError:
            _check_output(conn.data_to_send())
            assert conn.closed and conn.receive_data(b"anything") == []
            return
        for ev in events:
            if respond and isinstance(ev, RequestReceived | DataReceived):
                try:
                    conn.send_headers(ev.stream_id, b"\x88")
                    conn.send_data(ev.stream_id, b"x" * 300, end_stream=True)
                except StreamClosedError:
                    pass
            if isinstance(ev, DataReceived):
                conn.consumed(ev.stream_id, ev.flow_length)
        _check_output(conn.data_to_send())


@given(data=st.binary(max_size=200), size=st.sampled_from([0, 64, 4096]))
def test_hpack_decoder_only_raises_hpack_errors(data: bytes, size: int) -> None:
    decoder = Decoder(max_table_size=size, max_header_list_size=2048)
    for _ in range(2):  # twice: the second decode meets the table the first one left (and the cache)
        try:
            decoder.decode(data)
        except HPACKError:
            pass
        assert decoder.size <= decoder.max_size
