"""The streaming server against a fake runtime: tokens, HTTP edge cases, WebSocket exec/attach/port-forward.

Clients are independent implementations: the ``websockets`` library, and raw sockets for
the malformed requests.  The runtime is a working fake (``EchoRuntime``): exec copies stdin
to stdout and exits with the code its command names; dial connects to a local echo server.
"""

from __future__ import annotations

import asyncio
import json
import socket
import ssl
import struct
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import websockets

from pycontainerd import errdefs
from pycontainerd.streaming.runtime import (
    AttachRequest,
    ExecRequest,
    PortForwardRequest,
    StreamIO,
    TerminalSize,
)
from pycontainerd.streaming.server import ServerConfig, StreamServer
from pycontainerd.streaming.tokens import TokenCache

# -- the token cache ------------------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_token_is_one_time() -> None:
    cache: TokenCache[str] = TokenCache()
    token = cache.insert("req")
    assert len(token) == 11
    assert cache.consume(token) == "req"
    assert cache.consume(token) is None


def test_token_expires() -> None:
    clock = Clock()
    cache: TokenCache[str] = TokenCache(ttl=60, clock=clock)
    a = cache.insert("a")
    clock.now += 59.9
    b = cache.insert("b")
    assert cache.consume(a) == "a"
    clock.now += 0.2
    assert cache.consume(b) == "b"
    c = cache.insert("c")
    clock.now += 60
    assert cache.consume(c) is None


def test_token_cache_is_bounded() -> None:
    clock = Clock()
    cache: TokenCache[int] = TokenCache(ttl=60, max_size=3, clock=clock)
    tokens = [cache.insert(i) for i in range(3)]
    with pytest.raises(errdefs.ResourceExhausted):
        cache.insert(3)
    clock.now += 61  # all expired: room again
    cache.insert(4)
    assert len(cache) == 1
    assert all(cache.consume(t) is None for t in tokens)


def test_tokens_differ() -> None:
    cache: TokenCache[int] = TokenCache(max_size=10_000)
    assert len({cache.insert(i) for i in range(5000)}) == 5000


# -- a working fake runtime -----------------------------------------------------------------------


class EchoRuntime:
    def __init__(self, echo_port: int = 0) -> None:
        self.echo_port = echo_port
        self.cancelled = 0
        self.sizes: list[TerminalSize] = []
        self.started = asyncio.Event()

    async def exec(self, request: ExecRequest, io: StreamIO) -> int:
        self.started.set()
        try:
            if request.cmd[0] == "fail":
                raise errdefs.NotFound("no such thing")
            if request.cmd[0] == "resize":
                assert io.resize is not None
                self.sizes.append(await io.resize.get())
            if io.stdin is not None and io.stdout is not None:
                while data := await io.stdin.read():
                    await io.stdout.write(data.upper())
            if request.cmd[0] == "hang":
                await asyncio.Event().wait()
            if io.stderr is not None:
                await io.stderr.write(b"err\n")
            return int(request.cmd[1]) if len(request.cmd) > 1 else 0
        except asyncio.CancelledError:
            self.cancelled += 1
            raise

    async def attach(self, request: AttachRequest, io: StreamIO) -> None:
        assert io.stdout is not None
        await io.stdout.write(b"attached\n")

    async def dial(self, pod_id: str, port: int) -> socket.socket:
        if port != self.echo_port:
            raise errdefs.Unavailable(f"connection refused on port {port}")
        s = socket.socket()
        s.setblocking(False)
        await asyncio.get_running_loop().sock_connect(s, ("127.0.0.1", port))
        return s


def serve(test: Callable[[StreamServer, EchoRuntime], Awaitable[None]], **cfg: Any) -> EchoRuntime:
    async def main() -> EchoRuntime:
        echo = await asyncio.start_server(_echo, "127.0.0.1", 0)
        rt = EchoRuntime(echo.sockets[0].getsockname()[1])
        server = StreamServer(ServerConfig(**cfg), rt)
        await server.start()
        try:
            await asyncio.wait_for(test(server, rt), 30)
        finally:
            await server.close()
            echo.close()
        return rt

    return asyncio.run(main())


async def _echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while data := await reader.read(65536):
        writer.write(data)
        await writer.drain()
    writer.close()


async def ws_exec(url: str, protocol: str, stdin: bytes = b"", close_stdin: bool = True,
                  **kw: Any) -> tuple[dict[int, bytes], websockets.ClientConnection]:
    out: dict[int, bytes] = {}
    async with websockets.connect(url.replace("http", "ws", 1), subprotocols=[protocol],  # type: ignore[list-item]
                                  **kw) as ws:
        assert ws.subprotocol == protocol
        if stdin:
            await ws.send(b"\x00" + stdin)
        if close_stdin:
            await ws.send(b"\xff\x00")
        async for msg in ws:
            assert isinstance(msg, bytes)
            out[msg[0]] = out.get(msg[0], b"") + msg[1:]
    return out, ws


def test_ws_v5_exec_exit_codes() -> None:
    async def t(server: StreamServer, rt: EchoRuntime) -> None:
        url = server.url(ExecRequest("c1", ("cat", "0"), stdin=True))
        assert url.startswith(f"http://127.0.0.1:{server.port}/exec/")
        out, _ = await ws_exec(url, "v5.channel.k8s.io", b"hello")
        assert out[1] == b"HELLO"
        assert out[2] == b"err\n"
        assert json.loads(out[3]) == {"metadata": {}, "status": "Success"}
        out, _ = await ws_exec(server.url(ExecRequest("c1", ("x", "3"))), "v5.channel.k8s.io")
        status = json.loads(out[3])
        assert status["status"] == "Failure" and status["reason"] == "NonZeroExitCode"
        assert status["details"]["causes"] == [{"reason": "ExitCode", "message": "3"}]
        out, _ = await ws_exec(server.url(ExecRequest("c1", ("fail",))), "v4.channel.k8s.io", close_stdin=False)
        assert json.loads(out[3])["message"] == "no such thing"
    serve(t)


def test_ws_base64_and_legacy_protocols() -> None:
    async def t(server: StreamServer, rt: EchoRuntime) -> None:
        url = server.url(ExecRequest("c1", ("x", "2"))).replace("http", "ws", 1)
        got: list[str] = []
        async with websockets.connect(url, subprotocols=["v4.base64.channel.k8s.io"]) as ws:  # type: ignore[list-item]
            got.extend([m async for m in ws])  # type: ignore[misc]
        import base64
        assert got[0] == "1"  # the empty hello on stdout
        assert base64.b64decode(got[1][1:]) == b"err\n" and got[1][0] == "2"
        assert json.loads(base64.b64decode(got[2][1:]))["reason"] == "NonZeroExitCode"
        out, _ = await ws_exec(server.url(ExecRequest("c1", ("x", "4"))), "channel.k8s.io", close_stdin=False)
        assert b"exit status 4" in out[3]
    serve(t)


def test_ws_attach_and_resize() -> None:
    async def t(server: StreamServer, rt: EchoRuntime) -> None:
        out, _ = await ws_exec(server.url(AttachRequest("c1", stdout=True, stderr=False)), "v5.channel.k8s.io",
                               close_stdin=False)
        assert out[1] == b"attached\n"
        url = server.url(ExecRequest("c1", ("resize",), tty=True, stderr=False)).replace("http", "ws", 1)
        async with websockets.connect(url, subprotocols=["v5.channel.k8s.io"]) as ws:  # type: ignore[list-item]
            await ws.send(b"\x04" + json.dumps({"Width": 100, "Height": 30}).encode())
            msgs = [m async for m in ws]
        assert json.loads(msgs[-1][1:])["status"] == "Success"
        assert rt.sizes == [TerminalSize(100, 30)]
    serve(t)


def test_ws_token_reuse_and_unknown_refused() -> None:
    async def t(server: StreamServer, rt: EchoRuntime) -> None:
        url = server.url(ExecRequest("c1", ("x", "0")))
        await ws_exec(url, "v5.channel.k8s.io", close_stdin=False)
        for bad in (url, url.replace("/exec/", "/attach/"), url.rsplit("/", 1)[0] + "/AAAAAAAAAAA"):
            with pytest.raises(websockets.InvalidStatus) as exc:
                await ws_exec(bad, "v5.channel.k8s.io")
            assert exc.value.response.status_code == 404
        with pytest.raises(websockets.InvalidStatus) as exc:  # a token of another kind is used up too
            await ws_exec(server.url(AttachRequest("c1")).replace("/attach/", "/exec/"), "v5.channel.k8s.io")
        assert exc.value.response.status_code == 404
    serve(t)


def test_token_expiry_through_the_server() -> None:
    clock = Clock()

    async def main() -> None:
        server = StreamServer(ServerConfig(), EchoRuntime(), clock=clock)
        await server.start()
        try:
            url = server.url(ExecRequest("c1", ("x", "0")))
            clock.now += 61
            with pytest.raises(websockets.InvalidStatus) as exc:
                await ws_exec(url, "v5.channel.k8s.io")
            assert exc.value.response.status_code == 404
        finally:
            await server.close()

    asyncio.run(main())


def test_ws_unsupported_subprotocol_refused() -> None:
    async def t(server: StreamServer, rt: EchoRuntime) -> None:
        with pytest.raises(websockets.InvalidStatus) as exc:
            await ws_exec(server.url(ExecRequest("c1", ("x",))), "v9.channel.k8s.io")
        assert exc.value.response.status_code == 403
    serve(t)


def test_ws_client_vanishing_cancels_the_exec() -> None:
    async def t(server: StreamServer, rt: EchoRuntime) -> None:
        url = server.url(ExecRequest("c1", ("hang",))).replace("http", "ws", 1)
        ws = await websockets.connect(url, subprotocols=["v5.channel.k8s.io"])  # type: ignore[list-item]
        await ws.recv()  # the hello: the exec runs
        await asyncio.wait_for(rt.started.wait(), 5)
        ws.transport.abort()  # no close handshake: the client is just gone
        while rt.cancelled == 0:
            await asyncio.sleep(0.01)
    assert serve(t).cancelled == 1


def test_idle_timeout_closes_the_session() -> None:
    async def t(server: StreamServer, rt: EchoRuntime) -> None:
        url = server.url(ExecRequest("c1", ("hang",))).replace("http", "ws", 1)
        async with websockets.connect(url, subprotocols=["v5.channel.k8s.io"]) as ws:  # type: ignore[list-item]
            async def drain() -> None:
                while True:
                    await ws.recv()

            with pytest.raises(websockets.ConnectionClosed):
                await drain()
    assert serve(t, idle_timeout=0.3).cancelled == 1


def test_ws_portforward_echo() -> None:
    async def t(server: StreamServer, rt: EchoRuntime) -> None:
        payload = bytes(range(256)) * 4096 * 4  # 4 MiB
        url = server.url(PortForwardRequest("pod", (rt.echo_port,))).replace("http", "ws", 1)
        async with websockets.connect(url, subprotocols=["v4.channel.k8s.io"],  # type: ignore[list-item]
                                      max_size=None) as ws:
            port = struct.pack("<H", rt.echo_port)
            assert await ws.recv() == b"\x00" + port
            assert await ws.recv() == b"\x01" + port
            got = bytearray()

            async def send() -> None:
                for i in range(0, len(payload), 65536):
                    await ws.send(b"\x00" + payload[i:i + 65536])

            sender = asyncio.create_task(send())
            while len(got) < len(payload):
                msg = await ws.recv()
                assert isinstance(msg, bytes) and msg[0] == 0
                got += msg[1:]
            await sender
        assert bytes(got) == payload
        # a port nobody listens on: the error channel says so
        url = server.url(PortForwardRequest("pod", (1,))).replace("http", "ws", 1)
        async with websockets.connect(url, subprotocols=["v4.channel.k8s.io"]) as ws:  # type: ignore[list-item]
            msgs = [m async for m in ws]
        assert any(m[0] == 1 and b"connection refused" in m for m in msgs)
    serve(t)


# -- HTTP edge cases ------------------------------------------------------------------------------


async def raw(server: StreamServer, data: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(data)
    await writer.drain()
    out = await reader.read()
    writer.close()
    return out


def test_http_edge_cases() -> None:
    async def t(server: StreamServer, rt: EchoRuntime) -> None:
        head = b"GET /exec/x HTTP/1.1\r\nHost: a\r\n" + b"X-Big: " + b"a" * 20000 + b"\r\n\r\n"
        assert (await raw(server, head)).startswith(b"HTTP/1.1 431")
        assert (await raw(server, b"NONSENSE\r\n\r\n")).startswith(b"HTTP/1.1 400")
        assert (await raw(server, b"GET /other HTTP/1.1\r\nHost: a\r\n\r\n")).startswith(b"HTTP/1.1 404")
        token_url = server.url(ExecRequest("c1", ("x",)))
        path = token_url.split(str(server.port), 1)[1]
        out = await raw(server, f"POST {path} HTTP/1.1\r\nHost: a\r\n\r\n".encode())
        assert out.startswith(b"HTTP/1.1 400") and b"missing upgrade headers" in out
        path = server.url(ExecRequest("c1", ("x",))).split(str(server.port), 1)[1]
        out = await raw(server, f"DELETE {path} HTTP/1.1\r\nHost: a\r\n\r\n".encode())
        assert out.startswith(b"HTTP/1.1 405")
        # a client that never finishes its head is dropped after the head timeout
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(b"GET /exec/x HTTP/1.1\r\n")
        assert await asyncio.wait_for(reader.read(), 5) == b""
        writer.close()
    serve(t, head_timeout=0.3)


def test_tls_with_generated_certificate() -> None:
    async def t(server: StreamServer, rt: EchoRuntime) -> None:
        assert server.certificate is not None
        url = server.url(ExecRequest("c1", ("x", "0")))
        assert url.startswith("https://127.0.0.1:")
        ctx = ssl.create_default_context(cadata=server.certificate.decode())
        out, _ = await ws_exec(url.replace("https", "wss", 1), "v5.channel.k8s.io", ssl=ctx, close_stdin=False)
        assert json.loads(out[3])["status"] == "Success"
        # a client that does not trust it fails the handshake
        with pytest.raises(ssl.SSLCertVerificationError):
            await ws_exec(server.url(ExecRequest("c1", ("x",))).replace("https", "wss", 1), "v5.channel.k8s.io",
                          ssl=ssl.create_default_context())
    serve(t, tls=True)


# -- SPDY/3.1 (the client: spdyio's session in client role) ---------------------------------------


async def spdy_connect(server: StreamServer, url: str, protocols: list[str]) -> tuple[Any, str]:
    from pycontainerd.streaming.spdyio import SpdySession

    path = url.split(str(server.port), 1)[1]
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    offered = "".join(f"X-Stream-Protocol-Version: {p}\r\n" for p in protocols)
    writer.write(f"POST {path} HTTP/1.1\r\nHost: localhost\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\n"
                 f"{offered}Content-Length: 0\r\n\r\n".encode())
    head = (await reader.readuntil(b"\r\n\r\n")).decode()
    status = head.split("\r\n", 1)[0]
    if " 101 " not in status:
        writer.close()
        return head, ""
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in head.split("\r\n")[1:] if line)}
    assert headers["upgrade"] == "SPDY/3.1" and headers["connection"] == "Upgrade"
    return SpdySession(reader, writer, client=True), headers["x-stream-protocol-version"]


async def read_all(stream: Any) -> bytes:
    out = b""
    while chunk := await stream.read():
        out += chunk
    return out


def test_spdy_v4_exec_exit_codes_and_resize() -> None:
    async def t(server: StreamServer, rt: EchoRuntime) -> None:
        url = server.url(ExecRequest("c1", ("cat", "5"), stdin=True))
        session, proto = await spdy_connect(server, url, ["v4.channel.k8s.io", "channel.k8s.io"])
        assert proto == "v4.channel.k8s.io"
        async with session:
            error = await session.open_stream({"streamType": "error"})
            stdin = await session.open_stream({"streamType": "stdin"})
            stdout = await session.open_stream({"streamType": "stdout"})
            stderr = await session.open_stream({"streamType": "stderr"})
            await stdin.write(b"spdy")
            await stdin.close()
            assert await read_all(stdout) == b"SPDY"
            assert await read_all(stderr) == b"err\n"
            status = json.loads(await read_all(error))
            assert status["reason"] == "NonZeroExitCode"
            assert status["details"]["causes"] == [{"reason": "ExitCode", "message": "5"}]
        # v4 with a terminal: a resize stream, no stderr
        url = server.url(ExecRequest("c1", ("resize",), tty=True, stderr=False))
        session, _ = await spdy_connect(server, url, ["v4.channel.k8s.io"])
        async with session:
            error = await session.open_stream({"streamType": "error"})
            await session.open_stream({"streamType": "stdout"})
            resize = await session.open_stream({"streamType": "resize"})
            await resize.write(b'{"Width":80,"Height":24}')
            assert json.loads(await read_all(error))["status"] == "Success"
        assert rt.sizes == [TerminalSize(80, 24)]
        # v1: a plain message on failure, nothing on success
        url = server.url(ExecRequest("c1", ("x", "0")))
        session, _ = await spdy_connect(server, url, ["channel.k8s.io"])
        async with session:
            error = await session.open_stream({"streamType": "error"})
            await session.open_stream({"streamType": "stdout"})
            await session.open_stream({"streamType": "stderr"})
            assert await read_all(error) == b""
    serve(t)


def test_spdy_negotiation_refusals() -> None:
    async def t(server: StreamServer, rt: EchoRuntime) -> None:
        head, _ = await spdy_connect(server, server.url(ExecRequest("c1", ("x",))), ["v9.channel.k8s.io"])
        assert head.startswith("HTTP/1.1 403") and "X-Accepted-Stream-Protocol-Versions: v4.channel.k8s.io" in head
        head, _ = await spdy_connect(server, server.url(ExecRequest("c1", ("x",))), [])
        assert head.startswith("HTTP/1.1 400")
        head, _ = await spdy_connect(server, server.url(PortForwardRequest("p", (1,))), ["v4.channel.k8s.io"])
        assert head.startswith("HTTP/1.1 403")
    serve(t)


def test_spdy_client_vanishing_cancels_the_exec() -> None:
    async def t(server: StreamServer, rt: EchoRuntime) -> None:
        session, _ = await spdy_connect(server, server.url(ExecRequest("c1", ("hang",))), ["v4.channel.k8s.io"])
        await session.open_stream({"streamType": "error"})
        await session.open_stream({"streamType": "stdout"})
        await session.open_stream({"streamType": "stderr"})
        await asyncio.wait_for(rt.started.wait(), 5)
        session._writer.transport.abort()
        while rt.cancelled == 0:
            await asyncio.sleep(0.01)
    assert serve(t).cancelled == 1


def test_spdy_idle_timeout_closes_the_session() -> None:
    async def t(server: StreamServer, rt: EchoRuntime) -> None:
        session, _ = await spdy_connect(server, server.url(ExecRequest("c1", ("hang",))), ["v4.channel.k8s.io"])
        await session.open_stream({"streamType": "error"})
        await session.open_stream({"streamType": "stdout"})
        await session.open_stream({"streamType": "stderr"})
        await asyncio.wait_for(session.wait_closed(), 10)
        assert session.lost is not None
        await session.aclose()
    assert serve(t, idle_timeout=0.3).cancelled == 1


def test_spdy_portforward_echo_and_refused_port() -> None:
    async def t(server: StreamServer, rt: EchoRuntime) -> None:
        url = server.url(PortForwardRequest("pod", (rt.echo_port, 1)))
        session, proto = await spdy_connect(server, url, ["portforward.k8s.io"])
        assert proto == "portforward.k8s.io"
        payload = bytes(range(256)) * 4096 * 4
        async with session:
            port = str(rt.echo_port)
            error = await session.open_stream({"streamType": "error", "port": port, "requestID": "0"})
            data = await session.open_stream({"streamType": "data", "port": port, "requestID": "0"})

            async def send() -> None:
                for i in range(0, len(payload), 65536):
                    await data.write(payload[i:i + 65536])
                await data.close()

            sender = asyncio.create_task(send())
            assert await read_all(data) == payload
            await sender
            assert await read_all(error) == b""
            # a second forwarded connection on the same session, to a port nobody listens on
            error = await session.open_stream({"streamType": "error", "port": "1", "requestID": "1"})
            await session.open_stream({"streamType": "data", "port": "1", "requestID": "1"})
            assert b"connection refused" in await read_all(error)
    serve(t)


def test_ws_portforward_without_a_port_is_closed_with_policy_violation() -> None:
    async def t(server: StreamServer, rt: EchoRuntime) -> None:
        url = server.url(PortForwardRequest("pod")).replace("http", "ws", 1)
        async with websockets.connect(url, subprotocols=["v4.channel.k8s.io"]) as ws:  # type: ignore[list-item]
            with pytest.raises(websockets.ConnectionClosed) as exc:
                await ws.recv()
        assert exc.value.rcvd is not None and exc.value.rcvd.code == 1008
    serve(t)


def test_cri_config_maps_to_the_server() -> None:
    from pycontainerd.config.model import CRIConfig, X509KeyPairStreaming
    from pycontainerd.cri.wiring import stream_server_config

    cfg = stream_server_config(CRIConfig())
    assert (cfg.address, cfg.port, cfg.tls, cfg.idle_timeout) == ("127.0.0.1", 0, False, 4 * 3600.0)
    cfg = stream_server_config(CRIConfig(stream_server_address="::1", stream_server_port="10010",
                                         enable_tls_streaming=True, stream_idle_timeout=30.0,
                                         x509_key_pair_streaming=X509KeyPairStreaming("/c.pem", "/k.pem")))
    assert (cfg.address, cfg.port, cfg.tls, cfg.cert_file, cfg.key_file, cfg.idle_timeout) == (
        "::1", 10010, True, "/c.pem", "/k.pem", 30.0)
    for bad in ("http", "70000", "-1"):
        with pytest.raises(errdefs.InvalidArgument):
            stream_server_config(CRIConfig(stream_server_port=bad))


def test_tls_needs_both_files_or_neither() -> None:
    from pycontainerd.streaming.tls import server_context

    with pytest.raises(errdefs.InvalidArgument):
        server_context("/some/cert.pem", "", "127.0.0.1")
    with pytest.raises(errdefs.InvalidArgument):
        server_context("/no/such/cert.pem", "/no/such/key.pem", "127.0.0.1")


def test_ipv6_listener_url() -> None:
    async def t(server: StreamServer, rt: EchoRuntime) -> None:
        assert server.url(ExecRequest("c", ("x",))).startswith(f"http://[::1]:{server.port}/exec/")
        out, _ = await ws_exec(server.url(ExecRequest("c1", ("x", "0"))), "v5.channel.k8s.io", close_stdin=False)
        assert json.loads(out[3])["status"] == "Success"
    serve(t, address="::1")


def _masked_frame(payload: bytes, opcode: int = 2) -> bytes:
    """One client WebSocket frame (RFC 6455: FIN, masked), built by hand."""
    import os

    head = bytes([0x80 | opcode])
    n = len(payload)
    if n < 126:
        head += bytes([0x80 | n])
    elif n < 65536:
        head += bytes([0x80 | 126]) + n.to_bytes(2, "big")
    else:
        head += bytes([0x80 | 127]) + n.to_bytes(8, "big")
    mask = os.urandom(4)
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def test_ws_client_that_does_not_wait_for_the_101() -> None:
    """Stream bytes sent right behind the request head (more than one read's worth) keep their order."""
    async def t(server: StreamServer, rt: EchoRuntime) -> None:
        url = server.url(ExecRequest("c1", ("cat", "0"), stdin=True, stderr=False))
        path = url.split(str(server.port), 1)[1]
        data = bytes(range(256)) * 600  # 150 KiB of stdin
        pipelined = (f"GET {path} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                     "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
                     "Sec-WebSocket-Protocol: v5.channel.k8s.io\r\n\r\n").encode()
        pipelined += b"".join(_masked_frame(b"\x00" + data[i:i + 20000]) for i in range(0, len(data), 20000))
        pipelined += _masked_frame(b"\xff\x00")
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(pipelined)
        await writer.drain()
        head = await reader.readuntil(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 101")
        from wsproto.frame_protocol import FrameProtocol, Opcode

        frames = FrameProtocol(client=True, extensions=[])
        out, message, closed = b"", b"", False
        while not closed and (chunk := await reader.read(65536)):
            frames.receive_bytes(chunk)
            for frame in frames.received_frames():  # pieces of frames, as they arrive
                if frame.opcode is Opcode.CLOSE:
                    closed = True
                    break
                assert isinstance(frame.payload, bytes | bytearray)
                message += bytes(frame.payload)
                if frame.message_finished:
                    if message[:1] == b"\x01":
                        out += message[1:]
                    message = b""
        writer.close()
        assert out == data.upper()
    serve(t)


def test_tls_with_a_configured_key_pair(tmp_path: Any) -> None:
    from pycontainerd.streaming.tls import self_signed

    cert, key = self_signed(["127.0.0.1"])
    (tmp_path / "cert.pem").write_bytes(cert)
    (tmp_path / "key.pem").write_bytes(key)

    async def t(server: StreamServer, rt: EchoRuntime) -> None:
        assert server.certificate is None  # nothing generated
        url = server.url(ExecRequest("c1", ("x", "0"))).replace("https", "wss", 1)
        out, _ = await ws_exec(url, "v5.channel.k8s.io", ssl=ssl.create_default_context(cadata=cert.decode()),
                               close_stdin=False)
        assert json.loads(out[3])["status"] == "Success"
    serve(t, tls=True, cert_file=str(tmp_path / "cert.pem"), key_file=str(tmp_path / "key.pem"))
