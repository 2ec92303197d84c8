"""The hostile-input limits of ``http2.ServerConnection``: each one a clear error, memory bounded.

MAX_CONCURRENT_STREAMS, MAX_HEADER_LIST_SIZE (decoded list, CONTINUATION bytes and count), frame
size, receive windows (test_http2_server.py), rapid reset (CVE-2023-44487), PING/SETTINGS/empty
frame floods (CVE-2019-9512/9515/9518), HPACK table size updates, stream-id rules.
"""

from __future__ import annotations

import struct

import pytest

from pycontainerd.http2 import frames as fr
from pycontainerd.http2.hpack import Decoder, encode_block
from pycontainerd.http2.server import DataReceived, ProtocolError, RequestReceived, ServerConnection, StreamReset

from .http2_peer import (
    CONTINUATION,
    DATA,
    HEADERS,
    PING,
    PREFACE,
    PRIORITY,
    REQUEST,
    REQUEST_BLOCK,
    RST_STREAM,
    SETTINGS,
    Peer,
    data,
    frame,
    headers,
    parse,
    ping,
    rst,
    settings,
)

TRAILERS = encode_block([("grpc-status", "0")])


def test_streams_above_max_concurrent_are_refused() -> None:
    p = Peer(max_concurrent_streams=3)
    events = p.send(*(headers(sid) for sid in (1, 3, 5, 7)))
    assert [ev.stream_id for ev in events if isinstance(ev, RequestReceived)] == [1, 3, 5]
    assert [(x.type, x.sid, x.error_code) for x in p.out()] == [(RST_STREAM, 7, fr.REFUSED_STREAM)]
    assert p.send(data(7, b"in flight")) == []  # the refused stream's frames are ignored
    p.send(data(1, b"", end_stream=True))
    p.conn.send_headers(1, TRAILERS, end_stream=True)  # one finished: room for another
    assert [ev.stream_id for ev in p.send(headers(9)) if isinstance(ev, RequestReceived)] == [9]


def test_refused_streams_do_not_spend_the_reset_budget() -> None:
    # a burst sent before our SETTINGS arrived: the excess is refused (the client retries it), the
    # connection lives on
    p = Peer(max_concurrent_streams=10, max_reset_streams=20)
    events = p.send(*(headers(sid, end_stream=True) for sid in range(1, 2 * 500, 2)))
    assert len(events) == 10
    assert sum(1 for x in p.out() if x.type == RST_STREAM and x.error_code == fr.REFUSED_STREAM) == 490
    assert not p.conn.closed


def test_a_header_list_above_max_header_list_size_gets_431_and_the_table_stays_in_step() -> None:
    p = Peer(max_header_list_size=1000)
    # literal with incremental indexing, then an indexed reference to it: the table must follow
    big = b"\x40" + bytes([7]) + b"x-index" + b"\x7f" + _varint(300 - 127) + b"v" * 300
    big += encode_block([("x-pad", "p" * 800)])  # without indexing: only makes the list too large
    assert p.send(headers(1, REQUEST_BLOCK + big, end_stream=True)) == []
    (answer,) = p.out()
    assert answer.type == HEADERS and answer.flags & 1
    assert Decoder().decode(answer.payload) == [(":status", "431")]
    # the next request refers to the entry the refused one added (index 62): it must decode
    (ev,) = p.send(headers(3, REQUEST_BLOCK + b"\xbe", end_stream=True))
    assert isinstance(ev, RequestReceived) and ev.headers[-1] == ("x-index", "v" * 300)
    assert len(ev.headers) == len(REQUEST) + 1


def test_hpack_bomb_is_bounded_by_the_decoded_size() -> None:
    # one 4000-byte entry referenced 1000 times: a 1 KiB block that would decode to 4 MB
    p = Peer(max_header_list_size=16 << 10)
    entry = b"\x40" + bytes([1]) + b"b" + bytes([0x7F]) + _varint(3900 - 127) + b"B" * 3900
    assert p.send(headers(1, REQUEST_BLOCK + entry + b"\xbe" * 1000, end_stream=True)) == []
    assert Decoder().decode(p.out()[0].payload) == [(":status", "431")]


def _varint(n: int) -> bytes:
    out = bytearray()
    while n >= 128:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def test_a_header_block_past_the_list_size_costs_only_its_stream() -> None:
    # 8 KiB of raw fields in CONTINUATIONs against a 4 KiB limit (grpc-go and grpc core refuse the
    # stream, not the connection): 431 on stream 1, the block decoded to its end (the literal with
    # indexing at its end enters the table), stream 3 served with a reference to that entry
    p = Peer(max_header_list_size=4096)
    pad = encode_block([("x-pad", "p" * 8000)])
    entry = b"\x40" + bytes([7]) + b"x-index" + bytes([5]) + b"value"
    block = REQUEST_BLOCK + pad + entry
    chunks = [headers(1, block[:1000], end_headers=False)]
    chunks += [frame(CONTINUATION, 0, 1, block[i:i + 1000]) for i in range(1000, len(block), 1000)]
    chunks[-1] = frame(CONTINUATION, 0x4, 1, chunks[-1][9:])
    assert p.send(*chunks) == []
    answer, rst_ = p.out()  # the request is not ended: the rest of it is refused too
    assert (answer.type, answer.sid) == (HEADERS, 1)
    assert Decoder().decode(answer.payload) == [(":status", "431")]
    assert (rst_.type, rst_.sid, rst_.error_code) == (RST_STREAM, 1, fr.NO_ERROR)
    assert not p.conn.closed and p.conn._hb_parts == []
    (ev,) = p.send(headers(3, REQUEST_BLOCK + b"\xbe", end_stream=True))
    assert isinstance(ev, RequestReceived) and ev.headers[-1] == ("x-index", "value")


def test_continuation_bytes_beyond_the_block_cap_are_enhance_your_calm() -> None:
    # past max_header_block_size (four times the list limit by default) buffering is the attack
    p = Peer(max_header_list_size=4096)
    chunks = [headers(1, b"\x00" * 100, end_headers=False)]
    chunks += [frame(CONTINUATION, 0, 1, b"\x00" * 1000) for _ in range(17)]
    goaway = p.fails(*chunks)
    assert goaway.error_code == fr.ENHANCE_YOUR_CALM
    assert p.conn._hb_parts == []  # nothing kept
    q = Peer(max_header_list_size=4096, max_header_block_size=6000)
    assert q.fails(*chunks[:7]).error_code == fr.ENHANCE_YOUR_CALM


def test_continuation_flood_of_empty_frames_is_enhance_your_calm() -> None:
    p = Peer(max_continuation_frames=64)
    chunks = [headers(1, REQUEST_BLOCK, end_headers=False)] + [frame(CONTINUATION, 0, 1) for _ in range(65)]
    assert p.fails(*chunks).error_code == fr.ENHANCE_YOUR_CALM


def test_a_frame_above_16k_is_refused_from_its_header_alone() -> None:
    p = Peer()
    p.send(headers(1))
    # only the 9-byte header: the error comes before a payload is waited for (nothing buffered)
    header_only = struct.pack(">I", 16385)[1:] + bytes([DATA, 0]) + struct.pack(">I", 1)
    assert p.fails(header_only).error_code == fr.FRAME_SIZE_ERROR


def test_rapid_reset_is_enhance_your_calm() -> None:
    p = Peer(max_reset_streams=100)
    sid = 1
    for _ in range(100):
        events = p.send(headers(sid), rst(sid))
        assert [type(ev) for ev in events] == [RequestReceived, StreamReset]
        sid += 2
    goaway = p.fails(headers(sid), rst(sid))
    assert goaway.error_code == fr.ENHANCE_YOUR_CALM
    assert goaway.payload[8:] == b"too many streams reset"  # the reason, as GOAWAY debug data
    assert goaway.last_stream_id == sid


def test_resets_are_paid_back_by_answered_calls() -> None:
    # a client cancelling some of its calls (ctr's ^C, kubelet's timeouts) over a long life is fine
    p = Peer(max_reset_streams=10)
    sid = 1
    for _ in range(300):
        p.send(headers(sid), rst(sid))
        p.send(headers(sid + 2, end_stream=True))
        p.conn.send_headers(sid + 2, TRAILERS, end_stream=True)
        sid += 4
    p.out()
    assert not p.conn.closed


def test_streams_we_reset_for_the_peers_errors_count_as_resets() -> None:
    # zero-length HEADERS (no :method/:path) on new streams: each is reset; a flood of them ends the connection
    p = Peer(max_reset_streams=50)
    chunks = [headers(sid, b"", end_stream=True) for sid in range(1, 2 * 51 + 1, 2)]
    assert p.fails(*chunks).error_code == fr.ENHANCE_YOUR_CALM


def test_ping_flood_without_reading_is_enhance_your_calm() -> None:
    p = Peer(max_pending_acks=256)
    assert p.fails(*(ping() for _ in range(257))).error_code == fr.ENHANCE_YOUR_CALM


def test_pings_drained_as_they_come_are_answered_with_bounded_output() -> None:
    p = Peer(max_pending_acks=256)
    for _ in range(20):
        p.send(*(ping() for _ in range(200)))
        out = p.out()
        assert len(out) == 200 and all(x.type == PING and x.flags == 1 for x in out)


def test_settings_flood_is_enhance_your_calm() -> None:
    p = Peer(max_pending_acks=100)
    assert p.fails(*(settings((4, 65535)) for _ in range(101))).error_code == fr.ENHANCE_YOUR_CALM


def test_empty_data_flood_is_enhance_your_calm() -> None:
    p = Peer(max_empty_frames=100)
    p.send(headers(1))
    assert p.fails(*(data(1, b"") for _ in range(101))).error_code == fr.ENHANCE_YOUR_CALM


def test_empty_frames_between_real_ones_are_fine() -> None:
    p = Peer(max_empty_frames=10)
    p.send(headers(1))
    for _ in range(100):
        events = p.send(*(data(1, b"") for _ in range(5)), data(1, b"x"))
        assert events[-1] == DataReceived(1, b"x", 1, False)
        p.conn.consumed(1, 6)
    assert not p.conn.closed


def test_priority_and_unknown_frame_floods_are_enhance_your_calm() -> None:
    assert Peer(max_empty_frames=100).fails(
        *(frame(PRIORITY, 0, 1, b"\x00\x00\x00\x00\x10") for _ in range(101))).error_code == fr.ENHANCE_YOUR_CALM
    assert Peer(max_empty_frames=100).fails(*(frame(0x33, 0, 0) for _ in range(101))).error_code == fr.ENHANCE_YOUR_CALM


def test_hpack_table_size_update_above_ours_is_a_compression_error() -> None:
    p = Peer(header_table_size=4096)
    update = b"\x3f" + _varint(8192 - 31)  # size update to 8192
    assert p.fails(headers(1, update + REQUEST_BLOCK)).error_code == fr.COMPRESSION_ERROR
    p = Peer()
    ok = b"\x3f" + _varint(1024 - 31)  # shrinking is allowed
    assert [type(ev) for ev in p.send(headers(1, ok + REQUEST_BLOCK))] == [RequestReceived]
    # a size update after a field is not
    assert p.fails(headers(3, REQUEST_BLOCK + b"\x20")).error_code == fr.COMPRESSION_ERROR


def test_garbage_header_blocks_are_compression_errors() -> None:
    for block in (b"\xff\xff\xff\xff\xff\xff\xff\xff\x7f", b"\x80", b"\xfe", b"\x00\x05ab", b"\x00\x81\xff"):
        assert Peer().fails(headers(1, block)).error_code == fr.COMPRESSION_ERROR, block


def test_remembered_resets_are_bounded() -> None:
    p = Peer(remember_reset_streams=32, max_reset_streams=10_000)
    for sid in range(1, 2001, 2):
        p.send(headers(sid))
        p.conn.reset_stream(sid)
    p.out()
    assert len(p.conn._reset_ids) == 32 and p.conn.open_streams == 0


def test_no_state_is_kept_for_refused_streams() -> None:
    p = Peer(max_concurrent_streams=1, max_reset_streams=10_000)
    p.send(headers(1))
    for sid in range(3, 4001, 2):
        p.send(headers(sid, end_stream=True))
    assert p.conn.open_streams == 1 and len(p.conn._reset_ids) <= p.conn.settings.remember_reset_streams


def test_the_first_frame_is_checked_before_anything_else() -> None:
    for bad in (frame(HEADERS, 5, 1, REQUEST_BLOCK), frame(SETTINGS, 1, 0), frame(PING, 0, 0, b"12345678")):
        c = ServerConnection()
        with pytest.raises(ProtocolError) as info:
            c.receive_data(PREFACE + bad)
        assert info.value.error_code == fr.PROTOCOL_ERROR
        assert parse(c.data_to_send())[-1].error_code == fr.PROTOCOL_ERROR
    assert ServerConnection().receive_data(PREFACE[:10]) == []  # a partial preface waits
