"""The sans-IO SPDY/3.1 state machine (streaming/spdy.py) and its asyncio session (spdyio)."""

from __future__ import annotations

import asyncio
import hashlib
import struct
import zlib

import pytest

from pycontainerd import errdefs
from pycontainerd.streaming import spdy, spdyio


def pump(a: spdy.SpdyConnection, b: spdy.SpdyConnection) -> list[spdy.Event]:
    """Move a's output into b; b's events."""
    return b.receive_data(a.data_to_send())


def pair(**kw) -> tuple[spdy.SpdyConnection, spdy.SpdyConnection]:
    return spdy.SpdyConnection(client=True, **kw), spdy.SpdyConnection(client=False, **kw)


def control(ftype: int, payload: bytes, flags: int = 0, version: int = 3) -> bytes:
    return struct.pack(">IB", 0x80000000 | (version << 16) | ftype, flags) + len(payload).to_bytes(3, "big") + payload


def data_frame(sid: int, payload: bytes, flags: int = 0) -> bytes:
    return struct.pack(">IB", sid, flags) + len(payload).to_bytes(3, "big") + payload


def test_dictionary_is_spdy3s():
    # length and digest of the draft-3 dictionary as moby/spdystream and Chromium use it
    assert len(spdy.HEADER_DICTIONARY) == 1423
    assert hashlib.sha256(spdy.HEADER_DICTIONARY).hexdigest() == (
        "51d27341373f923f3cd88e1eb7162aeaa3723d7585ff2399201dc06498407f02"
    )
    assert spdy.HEADER_DICTIONARY.startswith(b"\x00\x00\x00\x07options")
    assert spdy.HEADER_DICTIONARY.endswith(b"enq=0.")


def test_loopback_stream_lifecycle():
    c, s = pair()
    sid = c.open_stream({"streamType": "error", "X-Multi": "a"})
    assert sid == 1
    (opened,) = pump(c, s)
    assert isinstance(opened, spdy.StreamOpened)
    assert opened.stream_id == 1
    assert spdy.header_value(opened.headers, "streamtype") == "error"
    s.reply(1, {"x": "y"})
    (replied,) = pump(s, c)
    assert replied == spdy.StreamReplied(1, (("x", "y"),), False)
    c.send_data(1, b"hello")
    assert pump(c, s) == [spdy.DataReceived(1, b"hello", False)]
    c.end_stream(1)
    assert pump(c, s) == [spdy.DataReceived(1, b"", True), spdy.StreamEnded(1)]
    s.send_data(1, b"bye", fin=True)
    assert pump(s, c) == [spdy.DataReceived(1, b"bye", True), spdy.StreamEnded(1)]
    assert c.open_streams() == [] and s.open_streams() == []
    # a second stream: next odd id; server streams are even
    assert c.open_stream([("a", "1")]) == 3
    assert s.open_stream([("b", "2")]) == 2


def test_header_compression_is_one_zlib_stream_per_direction():
    c, s = pair()
    for i in range(5):
        c.open_stream({"streamtype": "stdout", "port": str(i)})
    events = pump(c, s)
    assert [spdy.header_value(e.headers, "port") for e in events if isinstance(e, spdy.StreamOpened)] == [
        "0", "1", "2", "3", "4"
    ]


def test_multi_valued_headers_join_with_nul():
    c, s = pair()
    c.open_stream([("a", "1"), ("A", "2")])
    (ev,) = pump(c, s)
    assert isinstance(ev, spdy.StreamOpened)
    assert ev.headers == (("a", "1"), ("a", "2"))


def test_frames_split_across_receive_calls():
    c, s = pair()
    c.open_stream({"k": "v"})
    c.send_data(1, b"x" * 1000, fin=True)
    raw = c.data_to_send()
    events = []
    for i in range(len(raw)):
        events += s.receive_data(raw[i : i + 1])
    assert isinstance(events[0], spdy.StreamOpened)
    assert b"".join(e.data for e in events if isinstance(e, spdy.DataReceived)) == b"x" * 1000
    assert events[-1] == spdy.StreamEnded(1)


def test_ping_is_answered_and_acknowledged():
    c, s = pair()
    pid = c.ping()
    assert pid == 1
    assert pump(c, s) == [spdy.PingReceived(1)]
    assert pump(s, c) == [spdy.PingAcknowledged(1)]


def test_goaway_stops_new_streams():
    c, s = pair()
    c.open_stream({})
    pump(c, s)
    s.goaway()
    assert pump(s, c) == [spdy.GoAway(1, 0)]
    with pytest.raises(errdefs.FailedPrecondition):
        c.open_stream({})


def test_reset_both_ways():
    c, s = pair()
    c.open_stream({})
    pump(c, s)
    s.reset_stream(1, spdy.RstStatus.REFUSED_STREAM)
    assert pump(s, c) == [spdy.StreamReset(1, spdy.RstStatus.REFUSED_STREAM, True)]
    assert not c.is_open(1)
    # late data for a stream we no longer know is dropped, not an error
    s2 = spdy.SpdyConnection(client=False)
    assert s2.receive_data(data_frame(1, b"x")) == []
    assert s2.data_to_send()[:4] == control(spdy.FrameType.RST_STREAM, b"")[:4]  # never opened: INVALID_STREAM


def test_window_updates_follow_consumption():
    c, s = pair()
    c.open_stream({})
    pump(c, s)
    s.reply(1)
    pump(s, c)
    c.send_data(1, b"a" * 40000)
    pump(c, s)
    s.acknowledge_received_data(1, 40000)
    events = pump(s, c)
    assert spdy.WindowUpdated(0, 40000) in events and spdy.WindowUpdated(1, 40000) in events
    assert c.peer_does_flow_control
    # the client now honours the server's window: 65536 - 40000 + 40000
    assert c.send_window(1) == 65536
    with pytest.raises(spdy.FlowControlError):
        c.send_data(1, b"b" * 65537)


def test_peer_without_flow_control_is_tolerated():
    # spdystream never sends WINDOW_UPDATE: we must neither stall nor refuse its data
    c, s = pair()
    c.open_stream({})
    pump(c, s)
    assert c.send_window(1) == spdy.MAX_WINDOW
    c.send_data(1, b"z" * 200000)
    events = pump(c, s)
    assert sum(len(e.data) for e in events if isinstance(e, spdy.DataReceived)) == 200000


def test_strict_flow_control_resets_an_overrunning_stream():
    c = spdy.SpdyConnection(client=True)
    s = spdy.SpdyConnection(client=False, strict_flow_control=True)
    c.open_stream({})
    pump(c, s)
    c.send_data(1, b"z" * 70000)
    events = pump(c, s)
    assert spdy.StreamReset(1, spdy.RstStatus.FLOW_CONTROL_ERROR, False) in events


def test_settings_initial_window_applies_to_streams():
    c = spdy.SpdyConnection(client=True, strict_flow_control=True)
    c.open_stream({})
    payload = struct.pack(">III", 1, spdy.SETTINGS_INITIAL_WINDOW_SIZE, 1000)
    (ev,) = c.receive_data(control(spdy.FrameType.SETTINGS, payload))
    assert ev == spdy.SettingsReceived(((spdy.SETTINGS_INITIAL_WINDOW_SIZE, 1000, 0),))
    assert c.send_window(1) == 1000


@pytest.mark.parametrize(
    ("frame", "what"),
    [
        (control(spdy.FrameType.PING, b"\x00\x00\x01"), "PING length"),
        (control(spdy.FrameType.RST_STREAM, b"\x00" * 4), "RST_STREAM length"),
        (control(spdy.FrameType.GOAWAY, b"\x00" * 4), "GOAWAY length"),
        (control(spdy.FrameType.WINDOW_UPDATE, b"\x00" * 7), "WINDOW_UPDATE length"),
        (control(spdy.FrameType.SETTINGS, struct.pack(">I", 5)), "SETTINGS length"),
        (control(spdy.FrameType.SYN_STREAM, b"\x00" * 5), "short SYN_STREAM"),
        (control(spdy.FrameType.SYN_STREAM, struct.pack(">IIBB", 1, 0, 0, 0) + b"garbage"), "compressed"),
        (control(spdy.FrameType.PING, b"\x00\x00\x00\x01", version=2), "version"),
        (data_frame(0, b"x"), "stream 0"),
        (control(spdy.FrameType.WINDOW_UPDATE, struct.pack(">II", 0, 0)), "session WINDOW_UPDATE"),
    ],
)
def test_malformed_frames_are_protocol_errors(frame, what):
    s = spdy.SpdyConnection(client=False)
    with pytest.raises(spdy.ProtocolError, match=what):
        s.receive_data(frame)
    # a GOAWAY(PROTOCOL_ERROR) is queued and the session refuses further input
    out = s.data_to_send()
    assert out[:4] == struct.pack(">I", 0x80000000 | (3 << 16) | spdy.FrameType.GOAWAY)
    assert out[-4:] == struct.pack(">I", spdy.GoAwayStatus.PROTOCOL_ERROR)
    with pytest.raises(spdy.ProtocolError):
        s.receive_data(b"")


def test_oversized_control_frame_refused_before_buffering():
    s = spdy.SpdyConnection(client=False, max_control_frame=1024)
    head = struct.pack(">IB", 0x80000000 | (3 << 16) | spdy.FrameType.SYN_STREAM, 0) + (5000).to_bytes(3, "big")
    with pytest.raises(spdy.ProtocolError, match="control frame of 5000"):
        s.receive_data(head)


def test_header_bomb_is_bounded():
    # a small compressed block that inflates far beyond the limit
    comp = zlib.compressobj(9, zlib.DEFLATED, 15, 9, zlib.Z_DEFAULT_STRATEGY, spdy.HEADER_DICTIONARY)
    big = struct.pack(">I", 1) + struct.pack(">I", 1) + b"a" + struct.pack(">I", 10 << 20) + b"b" * (10 << 20)
    block = comp.compress(big) + comp.flush(zlib.Z_SYNC_FLUSH)
    assert len(block) < 64 << 10
    s = spdy.SpdyConnection(client=False)
    with pytest.raises(spdy.ProtocolError, match="inflates beyond"):
        s.receive_data(control(spdy.FrameType.SYN_STREAM, struct.pack(">IIBB", 1, 0, 0, 0) + block))


def test_bad_header_blocks():
    for block in (
        struct.pack(">I", 1000),  # count larger than the block
        struct.pack(">II", 1, 50) + b"x",  # truncated name
        struct.pack(">II", 1, 0) + struct.pack(">I", 0),  # empty name
        struct.pack(">I", 2) + (struct.pack(">I", 1) + b"a" + struct.pack(">I", 0)) * 2,  # duplicate
    ):
        with pytest.raises(spdy.ProtocolError):
            spdy._decode_header_block(block)


def test_wrong_parity_syn_stream_is_refused():
    c, s = pair()
    s.open_stream({})  # the server's even stream 2, delivered to the server itself
    ev = s.receive_data(c.data_to_send() + pair()[1].data_to_send())
    assert ev == []
    other = spdy.SpdyConnection(client=False)
    other.open_stream({})
    events = spdy.SpdyConnection(client=False).receive_data(other.data_to_send())
    assert events == [spdy.StreamReset(2, spdy.RstStatus.PROTOCOL_ERROR, False)]


def test_unknown_control_frames_are_ignored():
    s = spdy.SpdyConnection(client=False)
    assert s.receive_data(control(10, b"whatever")) == []  # CREDENTIAL
    assert s.receive_data(control(5, b"")) == []  # NOOP (SPDY/2)


# --- asyncio session ------------------------------------------------------------------------


async def _session_pair(**kw):
    server_side: asyncio.Future = asyncio.get_running_loop().create_future()

    async def on_conn(reader, writer):
        server_side.set_result(spdyio.SpdySession(reader, writer, client=False, **kw))

    server = await asyncio.start_server(on_conn, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    client = spdyio.SpdySession(reader, writer, client=True, **kw)
    srv = await server_side
    return server, client, srv


def test_spdyio_echo_and_large_transfer():
    async def main():
        server, client, srv = await _session_pair(max_buffered=64 << 10)

        async def serve():
            while (st := await srv.accept_stream()) is not None:
                await st.reply()
                asyncio.get_running_loop().create_task(echo(st))

        async def echo(st):
            while data := await st.read():
                await st.write(data)
            await st.close()

        task = asyncio.get_running_loop().create_task(serve())
        st = await client.open_stream({"streamType": "data"})
        payload = bytes(range(256)) * (8 << 10)  # 2 MiB

        async def send():
            await st.write(payload)
            await st.close()

        sender = asyncio.get_running_loop().create_task(send())
        got = bytearray()
        while data := await st.read():
            got += data
        await sender
        assert bytes(got) == payload
        await client.ping()
        await client.aclose()
        await srv.aclose()
        task.cancel()
        server.close()
        await server.wait_closed()

    asyncio.run(main())


def test_spdyio_refused_stream_and_lost_connection():
    async def main():
        server, client, srv = await _session_pair()

        async def refuse():
            st = await srv.accept_stream()
            st.reset(spdy.RstStatus.REFUSED_STREAM)

        task = asyncio.get_running_loop().create_task(refuse())
        with pytest.raises(errdefs.Unavailable, match="refused"):
            await client.open_stream({"a": "b"})
        await task

        async def accept_and_drop():
            st = await srv.accept_stream()
            await st.reply()
            await srv.aclose()

        task = asyncio.get_running_loop().create_task(accept_and_drop())
        st = await client.open_stream({"a": "c"})
        await task
        with pytest.raises(errdefs.Unavailable):
            await st.read()
        assert await srv.accept_stream() is None
        await client.aclose()
        server.close()
        await server.wait_closed()

    asyncio.run(main())


def test_spdyio_forgets_finished_streams():
    async def main():
        server, client, srv = await _session_pair()

        async def serve():
            st = await srv.accept_stream()
            await st.reply()
            assert await st.read() == b"ping"
            assert await st.read() == b""
            await st.write(b"pong")
            await st.close()

        task = asyncio.get_running_loop().create_task(serve())
        st = await client.open_stream({"streamType": "data"})
        await st.write(b"ping")
        await st.close()
        assert await st.read() == b"pong"
        assert await st.read() == b""
        await task
        assert client._streams == {} and srv._streams == {}
        assert client._conn.open_streams() == [] and srv._conn.open_streams() == []
        await client.aclose()
        await srv.aclose()
        server.close()
        await server.wait_closed()

    asyncio.run(main())
