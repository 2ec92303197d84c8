"""``http2.ServerConnection`` against real gRPC clients over a unix socket: grpcio (C core) and the real
``ctr`` (grpc-go), which needs no daemon for ``ctr version``: the tiny server answers it.

A tiny asyncio server (the least a gRPC server needs: request headers, one length-prefixed
message, response headers, messages, trailers) built on the sans-IO connection; grpcio makes
unary calls, a server-streaming call large enough to need the client's WINDOW_UPDATEs, and a
call that sends more than our initial stream window (our WINDOW_UPDATEs).
"""

from __future__ import annotations

import asyncio
import shutil
import struct
import subprocess
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, cast

import grpc
import pytest

from pycontainerd.http2.hpack import encode_block
from pycontainerd.http2.server import (
    ConnectionClosed,
    DataReceived,
    ProtocolError,
    RequestReceived,
    ServerConnection,
    ServerSettings,
    StreamReset,
    WindowOpened,
)

RESPONSE_HEADERS = encode_block([(":status", "200"), ("content-type", "application/grpc")])
TRAILERS_OK = encode_block([("grpc-status", "0")])


# what `ctr version` asks (protobuf by hand: field 1 and 2, strings)
CANNED = {
    "/containerd.services.version.v1.Version/Version": b"\x0a\x06v9.8.7\x12\x07rev-abc",
    "/containerd.services.introspection.v1.Introspection/Server": b"\x0a\x24" + b"0" * 36,
}


class _Call:
    def __init__(self, headers: list[tuple[str, str]]) -> None:
        self.headers = dict(headers)
        self.body = bytearray()
        self.pending: list[tuple[bytes, bool]] = []  # response bytes waiting for window
        self.trailers_after = False


class MiniGrpc(asyncio.Protocol):
    """One connection: answers /t.T/Echo (unary echo) and /t.T/Chunks (N messages of 1 MiB)."""

    def __init__(self, settings: ServerSettings) -> None:
        self.conn = ServerConnection(settings)
        self.calls: dict[int, _Call] = {}
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's transports are not its subclasses
        self.conn.initiate()
        self.flush()

    def flush(self) -> None:
        out = self.conn.data_to_send()
        if out and self.transport is not None:
            self.transport.write(out)

    def data_received(self, data: bytes) -> None:
        try:
            events = self.conn.receive_data(data)
        except ProtocolError:
            self.flush()
            assert self.transport is not None
            self.transport.close()
            return
        for ev in events:
            if isinstance(ev, RequestReceived):
                self.calls[ev.stream_id] = _Call(ev.headers)
            elif isinstance(ev, DataReceived):
                call = self.calls[ev.stream_id]
                call.body += ev.data
                self.conn.consumed(ev.stream_id, ev.flow_length)
                if ev.end_stream:
                    self.answer(ev.stream_id, call)
            elif isinstance(ev, WindowOpened):
                for sid in [ev.stream_id] if ev.stream_id else list(self.calls):
                    if sid in self.calls:
                        self.pump(sid, self.calls[sid])
            elif isinstance(ev, StreamReset):
                self.calls.pop(ev.stream_id, None)
            elif isinstance(ev, ConnectionClosed):
                pass
        self.flush()

    def answer(self, sid: int, call: _Call) -> None:
        request = bytes(call.body[5:])
        path = call.headers[":path"]
        self.conn.send_headers(sid, RESPONSE_HEADERS)
        if path in CANNED:
            call.pending.append((b"\x00" + struct.pack(">I", len(CANNED[path])) + CANNED[path], False))
        elif path == "/t.T/Echo":
            call.pending.append((b"\x00" + struct.pack(">I", len(request)) + request, False))
        elif path == "/t.T/Chunks":
            for i in range(int(request)):
                msg = bytes([i % 256]) * (1 << 20)
                call.pending.append((b"\x00" + struct.pack(">I", len(msg)) + msg, False))
        call.trailers_after = True
        self.pump(sid, call)

    def pump(self, sid: int, call: _Call) -> None:
        while call.pending:
            data, _ = call.pending[0]
            taken = self.conn.send_data(sid, data)
            if taken < len(data):
                call.pending[0] = (data[taken:], False)
                return
            call.pending.pop(0)
        if call.trailers_after:
            self.conn.send_headers(sid, TRAILERS_OK, end_stream=True)
            del self.calls[sid]


class Server:
    def __init__(self, path: str, settings: ServerSettings) -> None:
        self.path, self.settings = path, settings
        self.ready = threading.Event()
        self.loop: asyncio.AbstractEventLoop | None = None
        self.stop: asyncio.Event | None = None
        self.thread = threading.Thread(target=lambda: asyncio.run(self._main()), daemon=True)

    async def _main(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.stop = asyncio.Event()
        server = await self.loop.create_unix_server(lambda: MiniGrpc(self.settings), self.path)
        self.ready.set()
        await self.stop.wait()
        server.close()
        await server.wait_closed()

    def __enter__(self) -> Server:
        self.thread.start()
        assert self.ready.wait(10)
        return self

    def __exit__(self, *exc: Any) -> None:
        assert self.loop is not None and self.stop is not None
        self.loop.call_soon_threadsafe(self.stop.set)
        self.thread.join(10)


@pytest.fixture
def server() -> Iterator[Callable[[ServerSettings], Server]]:
    with tempfile.TemporaryDirectory(prefix="pycd-h2-") as tmp:
        started: list[Server] = []

        def start(settings: ServerSettings) -> Server:
            s = Server(str(Path(tmp) / f"s{len(started)}.sock"), settings)
            started.append(s.__enter__())
            return s

        yield start
        for s in started:
            s.__exit__()


def _identity(x: bytes) -> bytes:
    return x


def test_grpcio_unary_calls(server: Callable[[ServerSettings], Server]) -> None:
    s = server(ServerSettings())
    with grpc.insecure_channel(f"unix:{s.path}") as channel:
        echo = channel.unary_unary("/t.T/Echo", request_serializer=_identity, response_deserializer=_identity)
        for i in range(50):
            payload = b"x" * i + b"end"
            assert echo(payload, timeout=10, metadata=(("containerd-namespace", f"ns{i}"),)) == payload


def test_grpcio_large_request_needs_our_window_updates(server: Callable[[ServerSettings], Server]) -> None:
    # 3 MiB against a 256 KiB stream window and 1 MiB connection window: only our WINDOW_UPDATEs let it through
    s = server(ServerSettings(initial_window_size=256 << 10, connection_window_size=1 << 20))
    with grpc.insecure_channel(f"unix:{s.path}", options=[("grpc.max_receive_message_length", 8 << 20),
                                                          ("grpc.max_send_message_length", 8 << 20)]) as channel:
        echo = channel.unary_unary("/t.T/Echo", request_serializer=_identity, response_deserializer=_identity)
        payload = bytes(range(256)) * (3 << 12)
        assert echo(payload, timeout=20) == payload


def test_grpcio_server_streaming_waits_for_the_client_windows(server: Callable[[ServerSettings], Server]) -> None:
    s = server(ServerSettings())
    with grpc.insecure_channel(f"unix:{s.path}", options=[("grpc.max_receive_message_length", 8 << 20)]) as channel:
        chunks = channel.unary_stream("/t.T/Chunks", request_serializer=_identity, response_deserializer=_identity)
        got = list(chunks(b"6", timeout=20))
        assert [len(m) for m in got] == [1 << 20] * 6
        assert [m[0] for m in got] == [0, 1, 2, 3, 4, 5]


def test_grpcio_concurrent_calls_on_one_channel(server: Callable[[ServerSettings], Server]) -> None:
    s = server(ServerSettings(max_concurrent_streams=16))
    with grpc.insecure_channel(f"unix:{s.path}") as channel:
        echo = channel.unary_unary("/t.T/Echo", request_serializer=_identity, response_deserializer=_identity)
        futures = [echo.future(str(i).encode(), timeout=20) for i in range(200)]
        assert [fut.result() for fut in futures] == [str(i).encode() for i in range(200)]


def test_grpcio_burst_beyond_max_concurrent_streams(server: Callable[[ServerSettings], Server]) -> None:
    # 2000 calls at once on a new channel, 100 streams allowed: grpc core queues them once it has
    # our SETTINGS (and whatever it opened before that is refused, retried, the connection lives)
    s = server(ServerSettings(max_concurrent_streams=100))
    with grpc.insecure_channel(f"unix:{s.path}") as channel:
        echo = channel.unary_unary("/t.T/Echo", request_serializer=_identity, response_deserializer=_identity)
        futures = [echo.future(str(i).encode(), timeout=30) for i in range(2000)]
        assert [fut.result() for fut in futures] == [str(i).encode() for i in range(2000)]


def test_real_ctr_version(server: Callable[[ServerSettings], Server]) -> None:
    """grpc-go (the real ctr): Huffman-coded, indexed header blocks, its SETTINGS/WINDOW_UPDATE/PING habits."""
    if not shutil.which("ctr"):
        pytest.skip("the real ctr (Debian package containerd) is not installed")
    s = server(ServerSettings())
    for _ in range(3):
        r = subprocess.run(["ctr", "-a", s.path, "version"], capture_output=True, text=True, timeout=30)
        assert r.returncode == 0, r.stderr
        assert "Version:  v9.8.7" in r.stdout and "Revision: rev-abc" in r.stdout
