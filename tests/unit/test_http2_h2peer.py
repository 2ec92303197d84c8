"""``http2.ServerConnection`` against an independent HTTP/2 client: hyper-h2's ``H2Connection``.

hyper-h2 encodes with Huffman and the dynamic table, splits to our frame size, honours and checks
flow control and validates everything we send (it raises on a protocol error of ours): unary calls
in bulk, large transfers both ways through the windows, trailers, PING, resets, GOAWAY.
"""

from __future__ import annotations

from typing import Any

import h2.config
import h2.connection
import h2.events
import h2.settings

from pycontainerd.http2 import frames as fr
from pycontainerd.http2.hpack import encode_block
from pycontainerd.http2.server import (
    DataReceived,
    Event,
    RequestReceived,
    ServerConnection,
    ServerSettings,
    StreamReset,
    WindowOpened,
)

RESPONSE = encode_block([(":status", "200"), ("content-type", "application/grpc")])
TRAILERS = encode_block([("grpc-status", "0")])


class Pair:
    def __init__(self, **kw: int) -> None:
        self.client = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding="utf-8"))
        self.client.initiate_connection()
        self.server = ServerConnection(ServerSettings(**kw))
        self.server.initiate()
        self.server_events: list[Event] = []
        self.client_events: list[Any] = []
        self.exchange()
        self.take_client()  # the settings

    def exchange(self) -> None:
        for _ in range(10000):
            a = self.client.data_to_send()
            if a:
                self.server_events += self.server.receive_data(a)
            b = self.server.data_to_send()
            if b:
                self.client_events += self.client.receive_data(b)
            if not a and not b:
                return
        raise AssertionError("no quiet")

    def take_server(self) -> list[Event]:
        out, self.server_events = self.server_events, []
        return out

    def take_client(self) -> list[Any]:
        out, self.client_events = self.client_events, []
        return out


def _request(path: str, **extra: str) -> list[tuple[str, str]]:
    return [(":method", "POST"), (":scheme", "http"), (":path", path), (":authority", "localhost"),
            ("content-type", "application/grpc"), ("te", "trailers"), *extra.items()]


def test_unary_calls_in_bulk() -> None:
    p = Pair()
    for i in range(200):
        sid = p.client.get_next_available_stream_id()
        fields = _request(f"/svc.S/M{i % 5}", **{"grpc-timeout": f"{i}m", "containerd-namespace": f"n{i % 3}"})
        p.client.send_headers(sid, fields)
        p.client.send_data(sid, b"\x00\x00\x00\x00\x03abc", end_stream=True)
        p.exchange()
        req, body = p.take_server()
        assert req == RequestReceived(sid, fields, False)
        assert isinstance(body, DataReceived) and body.data.endswith(b"abc") and body.end_stream
        p.server.consumed(sid, body.flow_length)
        p.server.send_headers(sid, RESPONSE)
        p.server.send_data(sid, b"\x00\x00\x00\x00\x02ok")
        p.server.send_headers(sid, TRAILERS, end_stream=True)
        p.exchange()
        kinds = [type(ev) for ev in p.take_client()]
        assert kinds[:4] == [h2.events.ResponseReceived, h2.events.DataReceived, h2.events.TrailersReceived,
                             h2.events.StreamEnded]
    assert p.server.open_streams == 0


def test_large_upload_through_our_window_updates() -> None:
    p = Pair(initial_window_size=128 << 10, connection_window_size=256 << 10)
    sid = p.client.get_next_available_stream_id()
    p.client.send_headers(sid, _request("/up"))
    p.exchange()
    assert [type(ev) for ev in p.take_server()] == [RequestReceived]
    total, received = 5 << 20, 0
    sent = 0
    while received < total:
        window = min(p.client.local_flow_control_window(sid), p.client.max_outbound_frame_size)
        n = min(window, total - sent)
        if n:
            p.client.send_data(sid, b"u" * n, end_stream=sent + n == total)
            sent += n
        p.exchange()
        for ev in p.take_server():
            assert isinstance(ev, DataReceived)
            received += len(ev.data)
            p.server.consumed(sid, ev.flow_length)
        assert n or received == total, "stalled: no window and nothing received"
    assert received == total


def test_large_download_waits_for_the_clients_windows() -> None:
    p = Pair()
    sid = p.client.get_next_available_stream_id()
    p.client.send_headers(sid, _request("/down"), end_stream=True)
    p.exchange()
    p.take_server()
    p.server.send_headers(sid, RESPONSE)
    body = bytes(range(256)) * (16 << 10)  # 4 MiB
    pos = p.server.send_data(sid, body)
    got = bytearray()
    opened = 0
    while True:
        p.exchange()
        for ev in p.take_client():
            if isinstance(ev, h2.events.DataReceived):
                got += ev.data
                p.client.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
        if pos == len(body):
            break
        p.exchange()  # the client's WINDOW_UPDATEs
        events = p.take_server()
        assert events and all(isinstance(ev, WindowOpened) for ev in events)
        opened += len(events)
        pos += p.server.send_data(sid, body[pos:])
    p.server.send_headers(sid, TRAILERS, end_stream=True)
    p.exchange()
    assert bytes(got) == body and opened > 0


def test_trailers_ping_reset_and_goaway() -> None:
    p = Pair()
    sid = p.client.get_next_available_stream_id()
    p.client.send_headers(sid, _request("/x"))
    p.client.send_data(sid, b"abc")
    p.client.send_headers(sid, [("x-trailer", "1")], end_stream=True)
    p.client.ping(b"pingpong")
    sid2 = p.client.get_next_available_stream_id()
    p.client.send_headers(sid2, _request("/y"))
    p.client.reset_stream(sid2, fr.CANCEL)
    p.exchange()
    assert p.take_server() == [RequestReceived(sid, _request("/x"), False), DataReceived(sid, b"abc", 3, False),
                               DataReceived(sid, b"", 0, True), RequestReceived(sid2, _request("/y"), False),
                               StreamReset(sid2, fr.CANCEL)]
    assert any(isinstance(ev, h2.events.PingAckReceived) and ev.ping_data == b"pingpong" for ev in p.take_client())
    p.server.goaway()
    p.exchange()
    (term,) = [ev for ev in p.take_client() if isinstance(ev, h2.events.ConnectionTerminated)]
    assert term.error_code == 0 and term.last_stream_id == sid2


def test_client_settings_changes_are_applied() -> None:
    p = Pair()
    sid = p.client.get_next_available_stream_id()
    p.client.send_headers(sid, _request("/x"), end_stream=True)
    p.exchange()
    p.take_server()
    p.client.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 1 << 20,
                              h2.settings.SettingCodes.MAX_FRAME_SIZE: 1 << 16})
    p.exchange()
    assert p.take_server() == [WindowOpened(0)]  # INITIAL_WINDOW_SIZE grew every stream's window
    p.client.increment_flow_control_window(4 << 20)
    p.exchange()
    p.take_server()
    assert p.server.send_window(sid) == 1 << 20
    p.server.send_headers(sid, RESPONSE)
    assert p.server.send_data(sid, bytes(200000), end_stream=True) == 200000
    p.exchange()
    data = [ev for ev in p.take_client() if isinstance(ev, h2.events.DataReceived)]
    assert sum(len(ev.data) for ev in data) == 200000 and max(len(ev.data) for ev in data) == 1 << 16
