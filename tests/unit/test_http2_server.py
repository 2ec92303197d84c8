"""Conformance of ``http2.ServerConnection`` (RFC 9113) with frames written by hand (tests/unit/http2_peer.py).

Connection start, a unary call, arbitrary chunking, padding, CONTINUATION, stream states and
stream-id rules, flow control both ways, GOAWAY; the hostile-input limits are in
test_http2_limits.py, HPACK in test_http2_hpack.py, a real independent peer (hyper-h2) in
test_http2_h2peer.py and grpcio in test_http2_grpc_interop.py.
"""

from __future__ import annotations

import struct

import pytest

from pycontainerd.http2 import frames as fr
from pycontainerd.http2.hpack import Decoder, encode_block
from pycontainerd.http2.server import (
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

from .http2_peer import (
    CONTINUATION,
    DATA,
    GOAWAY,
    HEADERS,
    PING,
    PREFACE,
    PRIORITY,
    PUSH_PROMISE,
    REQUEST,
    REQUEST_BLOCK,
    RST_STREAM,
    SETTINGS,
    WINDOW_UPDATE,
    Peer,
    data,
    frame,
    grpc_message,
    headers,
    parse,
    ping,
    rst,
    settings,
    window_update,
)

RESPONSE = encode_block([(":status", "200"), ("content-type", "application/grpc")])
TRAILERS = encode_block([("grpc-status", "0")])


# -- connection start -------------------------------------------------------------------------------
def test_initiate_advertises_our_settings_and_opens_the_connection_window() -> None:
    conn = ServerConnection(ServerSettings(max_concurrent_streams=7, initial_window_size=1 << 20,
                                           connection_window_size=8 << 20, max_header_list_size=1234))
    conn.initiate()
    first, second = parse(conn.data_to_send())
    assert (first.type, first.flags, first.sid) == (SETTINGS, 0, 0)
    values = dict(struct.unpack(">HI", first.payload[i:i + 6]) for i in range(0, len(first.payload), 6))
    assert values == {3: 7, 4: 1 << 20, 6: 1234}
    assert (second.type, second.sid, second.u32) == (WINDOW_UPDATE, 0, (8 << 20) - 65535)
    assert conn.data_to_send() == b""


def test_preface_and_settings_are_acked_even_when_fed_a_byte_at_a_time() -> None:
    conn = ServerConnection()
    conn.initiate()
    conn.data_to_send()
    for b in PREFACE + settings((4, 100000)) + ping(b"abcdefgh"):
        assert conn.receive_data(bytes([b])) == []
    ack, pong = parse(conn.data_to_send())
    assert (ack.type, ack.flags, ack.payload) == (SETTINGS, 1, b"")
    assert (pong.type, pong.flags, pong.payload) == (PING, 1, b"abcdefgh")


def test_a_bad_preface_is_a_protocol_error() -> None:
    conn = ServerConnection()
    with pytest.raises(ProtocolError) as info:
        conn.receive_data(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert info.value.error_code == fr.PROTOCOL_ERROR
    (goaway,) = parse(conn.data_to_send())
    assert goaway.type == GOAWAY and goaway.error_code == fr.PROTOCOL_ERROR
    assert conn.receive_data(b"more") == []  # dead: input ignored


def test_the_preface_must_be_followed_by_settings() -> None:
    conn = ServerConnection()
    with pytest.raises(ProtocolError):
        conn.receive_data(PREFACE + ping())
    assert parse(conn.data_to_send())[-1].error_code == fr.PROTOCOL_ERROR


def test_ping_ack_is_not_answered() -> None:
    p = Peer()
    assert p.send(ping(ack=True)) == []
    assert p.out() == []


# -- a call -----------------------------------------------------------------------------------------
def test_unary_call_events_and_one_coalesced_output() -> None:
    p = Peer()
    events = p.send(headers(1), data(1, grpc_message(b"hello"), end_stream=True))
    assert events == [RequestReceived(1, REQUEST, False), DataReceived(1, grpc_message(b"hello"), 10, True)]
    p.conn.consumed(1, 10)
    p.conn.send_headers(1, RESPONSE)
    assert p.conn.send_data(1, grpc_message(b"world")) == 10
    p.conn.send_headers(1, TRAILERS, end_stream=True)
    out = p.conn.data_to_send()
    frames = parse(out)
    assert [(x.type, x.flags, x.sid) for x in frames] == [(HEADERS, 4, 1), (DATA, 0, 1), (HEADERS, 5, 1)]
    assert frames[1].payload == grpc_message(b"world")
    assert p.decoder.decode(frames[0].payload) == [(":status", "200"), ("content-type", "application/grpc")]
    assert p.conn.open_streams == 0
    with pytest.raises(StreamClosedError):
        p.conn.send_data(1, b"late")


def test_request_split_at_every_byte_gives_the_same_events() -> None:
    wire = headers(1) + data(1, grpc_message(b"abc")) + data(1, b"", end_stream=True)
    p = Peer()
    events = []
    for b in wire:
        events += p.send(bytes([b]))
    assert events == [RequestReceived(1, REQUEST, False), DataReceived(1, grpc_message(b"abc"), 8, False),
                      DataReceived(1, b"", 0, True)]


def test_bytearray_and_memoryview_input() -> None:
    p = Peer()
    wire = headers(1) + data(1, b"abc", end_stream=True)
    assert p.send() == []
    events = p.conn.receive_data(bytearray(wire[:20])) + p.conn.receive_data(memoryview(wire)[20:])
    assert events == [RequestReceived(1, REQUEST, False), DataReceived(1, b"abc", 3, True)]
    assert all(type(ev.data) is bytes for ev in events if isinstance(ev, DataReceived))


def test_padding_and_priority_fields_are_stripped() -> None:
    p = Peer()
    padded_headers = frame(HEADERS, 0x4 | 0x8 | 0x20, 1, b"\x03" + b"\x00\x00\x00\x00\x10" + REQUEST_BLOCK + b"\0" * 3)
    padded_data = frame(DATA, 0x1 | 0x8, 1, b"\x04" + b"body" + b"\0" * 4)
    events = p.send(padded_headers, padded_data)
    assert events == [RequestReceived(1, REQUEST, False), DataReceived(1, b"body", 9, True)]


def test_padding_longer_than_the_frame_is_a_protocol_error() -> None:
    p = Peer()
    p.send(headers(1))
    assert p.fails(frame(DATA, 0x8, 1, b"\x05abc")).error_code == fr.PROTOCOL_ERROR


def test_headers_with_continuation() -> None:
    p = Peer()
    block = encode_block([*REQUEST, ("x-long", "v" * 100)])
    events = p.send(headers(1, block[:10], end_stream=True, end_headers=False),
                    frame(CONTINUATION, 0, 1, block[10:50]), frame(CONTINUATION, 4, 1, block[50:]))
    assert events == [RequestReceived(1, [*REQUEST, ("x-long", "v" * 100)], True)]


def test_header_block_interrupted_is_a_protocol_error() -> None:
    p = Peer()
    assert p.fails(headers(1, REQUEST_BLOCK[:5], end_headers=False), ping()).error_code == fr.PROTOCOL_ERROR


def test_continuation_on_another_stream_or_without_headers_is_a_protocol_error() -> None:
    p = Peer()
    assert p.fails(headers(1, REQUEST_BLOCK[:5], end_headers=False),
                   frame(CONTINUATION, 4, 3, REQUEST_BLOCK[5:])).error_code == fr.PROTOCOL_ERROR
    assert Peer().fails(frame(CONTINUATION, 4, 1, REQUEST_BLOCK)).error_code == fr.PROTOCOL_ERROR


def test_trailers_from_the_client_end_the_stream() -> None:
    p = Peer()
    events = p.send(headers(1), data(1, b"x"), headers(3), headers(1, encode_block([("x-trailer", "t")]),
                                                                   end_stream=True))
    assert events[-1] == DataReceived(1, b"", 0, True)
    # a second HEADERS that does not end the stream is malformed: the stream is reset
    assert p.send(headers(3, encode_block([("x-trailer", "t")]))) == [StreamReset(3, fr.PROTOCOL_ERROR)]
    assert [(x.type, x.sid, x.error_code) for x in p.out()] == [(RST_STREAM, 3, fr.PROTOCOL_ERROR)]


def test_a_request_without_method_or_path_is_reset() -> None:
    p = Peer()
    assert p.send(headers(1, encode_block([(":method", "POST"), (":scheme", "http")]), end_stream=True)) == []
    assert [(x.type, x.sid, x.error_code) for x in p.out()] == [(RST_STREAM, 1, fr.PROTOCOL_ERROR)]


def test_malformed_requests_are_reset() -> None:
    base = [(":method", "POST"), (":scheme", "http"), (":path", "/a.B/C")]
    malformed = [
        [*base, ("Content-Type", "application/grpc")],  # upper case
        [*base, ("connection", "keep-alive")],
        [*base, ("transfer-encoding", "chunked")],
        [*base, ("te", "gzip")],
        [*base, (":path", "/again")],
        [(":method", "POST"), ("x", "y"), (":path", "/late")],
        [*base, (":status", "200")],
        [(":method", "POST"), (":scheme", "http")],
    ]
    p = Peer()
    sid = 1
    for fields in malformed:
        assert p.send(headers(sid, encode_block(fields), end_stream=True)) == [], fields
        assert [(x.type, x.sid, x.error_code) for x in p.out()] == [(RST_STREAM, sid, fr.PROTOCOL_ERROR)]
        sid += 2
    ok = [*base, ("te", "trailers"), ("x-a", "1")]
    assert p.send(headers(sid, encode_block(ok), end_stream=True)) == [RequestReceived(sid, ok, True)]


def test_the_well_formed_check_follows_the_dynamic_table() -> None:
    # the same block bytes (an index into the dynamic table) are checked again once the table changed
    p = Peer()
    add_ok = REQUEST_BLOCK + b"\x40\x04x-ok\x011"  # literal with incremental indexing: index 62
    assert len(p.send(headers(1, add_ok, end_stream=True))) == 1
    for sid in (3, 5):  # checked once, then from the memo
        assert len(p.send(headers(sid, REQUEST_BLOCK + b"\xbe", end_stream=True))) == 1
    p.send(headers(7, REQUEST_BLOCK + b"\x40\x03Bad\x011", end_stream=True))  # malformed, but indexed
    p.out()
    assert p.send(headers(9, REQUEST_BLOCK + b"\xbe", end_stream=True)) == []  # 62 is now ("Bad", "1")
    assert [(x.type, x.sid, x.error_code) for x in p.out()] == [(RST_STREAM, 9, fr.PROTOCOL_ERROR)]


# -- stream states and ids --------------------------------------------------------------------------
def test_even_stream_id_is_a_protocol_error() -> None:
    assert Peer().fails(headers(2)).error_code == fr.PROTOCOL_ERROR


def test_decreasing_stream_id_is_a_protocol_error() -> None:
    p = Peer()
    p.send(headers(5, end_stream=True))
    assert p.fails(headers(3, end_stream=True)).error_code == fr.PROTOCOL_ERROR


def test_frames_on_stream_zero_or_on_idle_streams() -> None:
    assert Peer().fails(data(0, b"x")).error_code == fr.PROTOCOL_ERROR
    assert Peer().fails(headers(0)).error_code == fr.PROTOCOL_ERROR
    assert Peer().fails(data(1, b"x")).error_code == fr.PROTOCOL_ERROR  # idle
    assert Peer().fails(rst(1)).error_code == fr.PROTOCOL_ERROR  # idle
    assert Peer().fails(window_update(1, 10)).error_code == fr.PROTOCOL_ERROR  # idle
    assert Peer().fails(frame(PING, 0, 1, b"12345678")).error_code == fr.PROTOCOL_ERROR
    assert Peer().fails(frame(SETTINGS, 0, 1)).error_code == fr.PROTOCOL_ERROR


def test_wrong_frame_sizes() -> None:
    assert Peer().fails(frame(PING, 0, 0, b"1234")).error_code == fr.FRAME_SIZE_ERROR
    assert Peer().fails(frame(SETTINGS, 0, 0, b"12345")).error_code == fr.FRAME_SIZE_ERROR
    assert Peer().fails(frame(SETTINGS, 1, 0, b"123456")).error_code == fr.FRAME_SIZE_ERROR
    assert Peer().fails(frame(WINDOW_UPDATE, 0, 0, b"123")).error_code == fr.FRAME_SIZE_ERROR
    p = Peer()
    p.send(headers(1))
    assert p.fails(frame(RST_STREAM, 0, 1, b"12")).error_code == fr.FRAME_SIZE_ERROR


def test_priority_is_accepted_and_ignored_and_unknown_frames_are_skipped() -> None:
    p = Peer()
    assert p.send(frame(PRIORITY, 0, 7, b"\x00\x00\x00\x01\x10"), frame(0x42, 0xFF, 0, b"whatever")) == []
    assert p.out() == []
    # PRIORITY on an idle stream does not open it: stream 1 may still start (ids need only grow)
    assert p.send(headers(1, end_stream=True)) == [RequestReceived(1, REQUEST, True)]


def test_priority_of_the_wrong_size() -> None:
    p = Peer()
    p.send(headers(1))
    assert p.send(frame(PRIORITY, 0, 1, b"\x00\x00\x00")) == [StreamReset(1, fr.FRAME_SIZE_ERROR)]
    assert [(x.type, x.error_code) for x in p.out()] == [(RST_STREAM, fr.FRAME_SIZE_ERROR)]
    assert p.fails(frame(PRIORITY, 0, 9, b"\x00")).error_code == fr.FRAME_SIZE_ERROR  # idle: no RST there


def test_push_promise_from_a_client_is_a_protocol_error() -> None:
    p = Peer()
    p.send(headers(1))
    assert p.fails(frame(PUSH_PROMISE, 4, 1, b"\x00\x00\x00\x02" + REQUEST_BLOCK)).error_code == fr.PROTOCOL_ERROR


def test_data_after_end_stream_resets_the_stream() -> None:
    p = Peer()
    p.send(headers(1, end_stream=True))
    assert p.send(data(1, b"x")) == [StreamReset(1, fr.STREAM_CLOSED)]
    assert [(x.type, x.sid, x.error_code) for x in p.out()] == [(RST_STREAM, 1, fr.STREAM_CLOSED)]
    # the stream is now reset by us: its in-flight frames are ignored
    assert p.send(data(1, b"y"), window_update(1, 5), rst(1)) == []


def test_frames_on_a_stream_we_reset_are_ignored_but_count_for_the_connection_window() -> None:
    p = Peer(connection_window_size=65535 * 2)
    p.send(headers(1))
    p.conn.reset_stream(1, fr.CANCEL)
    assert [(x.type, x.error_code) for x in p.out()] == [(RST_STREAM, fr.CANCEL)]
    big = b"z" * 16384
    for _ in range(8):
        assert p.send(data(1, big)) == []  # 128 KiB: more than the window unless given back
    updates = p.out()
    assert updates and all((x.type, x.sid) == (WINDOW_UPDATE, 0) for x in updates)
    assert p.send(headers(1)) == []  # even a HEADERS (trailers) of it: decoded, ignored


def test_data_on_a_stream_that_ended_both_ways_is_stream_closed() -> None:
    p = Peer()
    p.send(headers(1, end_stream=True))
    p.conn.send_headers(1, TRAILERS, end_stream=True)
    assert p.fails(data(1, b"late")).error_code == fr.STREAM_CLOSED


def test_peer_reset_stream() -> None:
    p = Peer()
    p.send(headers(1))
    assert p.send(rst(1, fr.CANCEL)) == [StreamReset(1, fr.CANCEL)]
    with pytest.raises(StreamClosedError):
        p.conn.send_headers(1, RESPONSE)
    assert p.conn.send_window(1) == 0
    assert p.send(rst(1)) == []  # a second reset of a closed stream: nothing


def test_half_closed_local_still_receives() -> None:
    p = Peer()
    p.send(headers(1))
    p.conn.send_headers(1, encode_block([(":status", "200"), ("grpc-status", "3")]), end_stream=True)
    assert p.conn.open_streams == 1
    assert p.send(data(1, b"rest", end_stream=True)) == [DataReceived(1, b"rest", 4, True)]
    assert p.conn.open_streams == 0


def test_peer_goaway_is_reported() -> None:
    p = Peer()
    assert p.send(frame(GOAWAY, 0, 0, struct.pack(">II", 7, fr.NO_ERROR))) == [ConnectionClosed(fr.NO_ERROR, 7)]


def test_graceful_goaway_names_the_last_stream_and_ignores_newer_ones() -> None:
    p = Peer()
    p.send(headers(1), headers(3))
    p.conn.goaway()
    (goaway,) = p.out()
    assert (goaway.last_stream_id, goaway.error_code) == (3, fr.NO_ERROR)
    assert p.send(headers(5, end_stream=True), data(5, b"x")) == []  # newer: ignored
    assert p.send(data(3, b"y", end_stream=True)) == [DataReceived(3, b"y", 1, True)]  # older: served
    p.conn.send_headers(3, TRAILERS, end_stream=True)
    assert p.conn.closed


# -- flow control -----------------------------------------------------------------------------------
def test_send_data_honours_the_peers_windows_and_reports_them_opening() -> None:
    p = Peer()
    p.send(headers(1, end_stream=True))
    body = bytes(100000)
    assert p.conn.send_window(1) == 65535
    assert p.conn.send_data(1, body, end_stream=True) == 65535
    frames = p.out()
    assert [len(x.payload) for x in frames] == [16384, 16384, 16384, 16383]
    assert all(x.flags == 0 for x in frames)  # not all taken: no END_STREAM
    assert p.conn.send_data(1, body[65535:]) == 0
    assert p.send(window_update(1, 50000)) == [WindowOpened(1)]
    assert p.conn.send_data(1, body[65535:]) == 0  # the connection window is still empty
    assert p.send(window_update(0, 1 << 20)) == [WindowOpened(0)]
    assert p.conn.send_window(1) == 50000
    assert p.conn.send_window(0) == 1 << 20
    assert p.conn.send_data(1, body[65535:], end_stream=True) == 100000 - 65535
    frames = p.out()
    assert sum(len(x.payload) for x in frames) == 100000 - 65535 and frames[-1].flags == 1
    assert p.conn.open_streams == 0


def test_initial_window_size_changes_apply_to_open_streams() -> None:
    p = Peer()
    p.send(headers(1, end_stream=True), window_update(0, 1 << 20))
    assert p.conn.send_data(1, bytes(60000)) == 60000
    assert p.send(settings((4, 1000))) == []  # 1000 - 65535: the window is now negative
    assert p.conn.send_window(1) == 0 and p.conn.send_data(1, b"x") == 0
    assert p.send(settings((4, 200000))) == [WindowOpened(0)]  # every stream's window grew
    assert p.conn.send_window(1) == 200000 - 60000
    p.send(headers(3, end_stream=True))
    assert p.conn.send_window(3) == 200000


def test_window_opened_for_the_connection_is_reported_once_per_receive() -> None:
    p = Peer()
    p.send(headers(1, end_stream=True), headers(3, end_stream=True))
    events = p.send(window_update(0, 10), settings((4, 70000)), window_update(0, 10), window_update(3, 5),
                    settings((4, 80000)), settings((4, 1000)))
    assert events == [WindowOpened(0), WindowOpened(3)]
    assert p.conn.send_window(1) == 1000 and p.conn.send_window(3) == 1005


def test_a_stream_window_pushed_past_the_limit_by_settings_is_caught_at_its_next_update() -> None:
    p = Peer()
    p.send(headers(1, end_stream=True), window_update(1, (1 << 31) - 1 - 65535))  # exactly the limit
    p.send(settings((4, 70000)))  # now above it
    assert p.send(window_update(1, 1)) == [StreamReset(1, fr.FLOW_CONTROL_ERROR)]


def test_window_update_overflow_is_a_flow_control_error() -> None:
    p = Peer()
    p.send(headers(1))
    assert p.send(window_update(1, (1 << 31) - 1)) == [StreamReset(1, fr.FLOW_CONTROL_ERROR)]
    assert p.out()[0].error_code == fr.FLOW_CONTROL_ERROR
    assert p.fails(window_update(0, (1 << 31) - 1)).error_code == fr.FLOW_CONTROL_ERROR
    p = Peer()
    p.send(headers(1))
    assert p.fails(settings((4, 1 << 31))).error_code == fr.FLOW_CONTROL_ERROR


def test_window_update_of_zero_is_a_protocol_error() -> None:
    p = Peer()
    p.send(headers(1))
    assert p.send(window_update(1, 0)) == [StreamReset(1, fr.PROTOCOL_ERROR)]
    assert p.fails(window_update(0, 0)).error_code == fr.PROTOCOL_ERROR


def test_settings_values_are_checked() -> None:
    assert Peer().fails(settings((5, 100))).error_code == fr.PROTOCOL_ERROR  # MAX_FRAME_SIZE too small
    assert Peer().fails(settings((5, 1 << 24))).error_code == fr.PROTOCOL_ERROR
    assert Peer().fails(settings((2, 2))).error_code == fr.PROTOCOL_ERROR  # ENABLE_PUSH
    p = Peer()
    p.send(settings((0x99, 5), (1, 0)))  # unknown ids and HEADER_TABLE_SIZE: fine
    assert [x.flags for x in p.out()] == [1]


def test_peer_max_frame_size_splits_our_data_and_headers() -> None:
    p = Peer(settings((5, 32768)))
    p.send(headers(1, end_stream=True), window_update(0, 1 << 20), window_update(1, 1 << 20))
    big_block = encode_block([("x-big", "v" * 40000)])
    p.conn.send_headers(1, big_block)
    assert p.conn.send_data(1, bytes(70000), end_stream=True) == 70000
    frames = p.out()
    assert [(x.type, x.flags, len(x.payload)) for x in frames[:2]] == [
        (HEADERS, 0, 32768), (CONTINUATION, 4, len(big_block) - 32768)]
    assert Decoder().decode(frames[0].payload + frames[1].payload) == [("x-big", "v" * 40000)]
    assert [(x.type, len(x.payload)) for x in frames[2:]] == [(DATA, 32768), (DATA, 32768), (DATA, 4464)]
    assert frames[-1].flags == 1


def test_consumed_gives_the_window_back_at_half() -> None:
    p = Peer(initial_window_size=1 << 16, connection_window_size=1 << 18)
    p.send(headers(1))
    chunk = bytes(16384)
    p.send(data(1, chunk))
    p.conn.consumed(1, len(chunk))
    assert p.out() == []
    p.send(data(1, chunk))
    p.conn.consumed(1, len(chunk))  # 32 KiB of 64: half -> one stream update of all of it
    assert [(x.type, x.sid, x.u32) for x in p.out()] == [(WINDOW_UPDATE, 1, 2 * 16384)]
    for _ in range(6):
        p.send(data(1, chunk))
        p.conn.consumed(1, len(chunk))
    # 8 x 16 KiB = 128 KiB: half the connection window -> one connection update
    assert (WINDOW_UPDATE, 0, 8 * 16384) in [(x.type, x.sid, x.u32) for x in p.out()]


def test_data_held_by_reset_streams_goes_back_to_the_connection_window() -> None:
    # the application drops what a reset call received without calling consumed: the connection
    # window must not shrink for good (the peer would stall every other call)
    p = Peer(connection_window_size=128 << 10, initial_window_size=64 << 10)
    sid = 1
    for i in range(30):  # 30 x 48 KiB: ten times the connection window
        p.send(headers(sid), *(data(sid, bytes(16384)) for _ in range(3)))
        if i % 3 == 0:
            p.send(rst(sid))  # the peer resets
        elif i % 3 == 1:
            p.conn.reset_stream(sid)  # we reset (a deadline)
        else:
            p.conn.consumed(sid, 16384)  # part consumed, the rest dropped
            p.conn.reset_stream(sid)
        p.conn.consumed(sid, 1 << 20)  # late and too large: ignored for a reset stream
        sid += 2
    updates = [x for x in p.out() if x.type == WINDOW_UPDATE]
    assert sum(x.u32 for x in updates if x.sid == 0) <= 30 * (3 * 16384 + 20) + (128 << 10)
    assert not p.conn.closed


def test_peer_overrunning_our_windows() -> None:
    p = Peer(initial_window_size=20000)
    p.send(headers(1), headers(3))
    p.send(data(1, bytes(16384)))
    assert p.send(data(1, bytes(16384))) == [StreamReset(1, fr.FLOW_CONTROL_ERROR)]
    assert p.out()[0].error_code == fr.FLOW_CONTROL_ERROR
    q = Peer(connection_window_size=65535, initial_window_size=1 << 20)
    q.send(headers(1))
    for _ in range(3):
        q.send(data(1, bytes(16384)))
    assert q.fails(data(1, bytes(16384))).error_code == fr.FLOW_CONTROL_ERROR
