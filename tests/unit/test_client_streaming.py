"""client/streaming.py against small in-process servers on 127.0.0.1 (the real peer, containerd 1.6's
streaming server, is in tests/integration/test_cri_streaming_client.py)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest
import wsproto
import wsproto.events as wse

from pycontainerd import errdefs
from pycontainerd.cli.pycrictl.portforward import parse_ports
from pycontainerd.client.streaming import ExecStreams, parse_url, stream_remotecommand
from pycontainerd.streaming import remotecommand as rc
from pycontainerd.streaming import spdy, spdyio

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


def test_parse_url():
    t = parse_url("http://127.0.0.1:34567/exec/abc?x=1")
    assert (t.host, t.port, t.tls, t.path) == ("127.0.0.1", 34567, False, "/exec/abc?x=1")
    assert t.authority == "127.0.0.1:34567"
    assert parse_url("https://[::1]/attach/t").authority == "[::1]:443"
    assert parse_url("wss://h:1/x").tls
    assert parse_url("/exec/tok").authority == "127.0.0.1:10250"  # crictl's kubelet default
    with pytest.raises(errdefs.InvalidArgument):
        parse_url("ftp://h/x")


def test_parse_ports():
    assert parse_ports(["8080:80", "90", ":70"]) == [(8080, 80), (90, 90), (0, 70)]
    for bad in ("x", "1:2:3", "70000", "0"):
        with pytest.raises(errdefs.InvalidArgument):
            parse_ports([bad])


async def _serve(handler: Handler) -> tuple[asyncio.Server, str]:
    server = await asyncio.start_server(handler, "127.0.0.1", 0)
    return server, f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/exec/token"


def _collector() -> tuple[bytearray, Callable[[bytes], Awaitable[None]]]:
    buf = bytearray()

    async def sink(data: bytes) -> None:
        buf.extend(data)

    return buf, sink


async def _spdy_exec_server(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """kubelet's v4 behaviour in miniature: wait for the streams, echo stdin upper-cased, exit 7, reset all."""
    head = await reader.readuntil(b"\r\n\r\n")
    assert b"upgrade: spdy/3.1" in head.lower() and b"x-stream-protocol-version: v4.channel.k8s.io" in head.lower()
    writer.write(b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\n"
                 b"X-Stream-Protocol-Version: v4.channel.k8s.io\r\n\r\n")
    session = spdyio.SpdySession(reader, writer, client=False)
    streams: dict[str, spdyio.SpdyStream] = {}
    while len(streams) < 4:
        st = await session.accept_stream()
        assert st is not None
        await st.reply()
        streams[st.header(rc.HEADER_STREAM_TYPE) or ""] = st
    assert list(streams) == ["error", "stdin", "stdout", "stderr"]  # client-go's order
    while data := await streams["stdin"].read():
        await streams["stdout"].write(data.upper())
    await streams["stderr"].write(b"bye\n")
    await streams["error"].write(rc.status_exit_code(7))
    for st in streams.values():
        st.reset()
    await session.aclose()


def test_spdy_remotecommand_against_a_kubelet_like_server():
    async def main() -> None:
        server, url = await _serve(_spdy_exec_server)
        out, to_out = _collector()
        err, to_err = _collector()
        chunks = [b"hello ", b"world", b""]

        async def stdin() -> bytes:
            return chunks.pop(0)

        res = await asyncio.wait_for(stream_remotecommand(url, ExecStreams(stdin=stdin, stdout=to_out, stderr=to_err)),
                                     10)
        assert (res.exit_code, res.protocol, bytes(out), bytes(err)) == (7, "v4.channel.k8s.io", b"HELLO WORLD",
                                                                          b"bye\n")
        server.close()

    asyncio.run(main())


def test_upgrade_refused_maps_to_errdefs():
    async def not_found(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 404 Not Found\r\nContent-Length: 13\r\n\r\ntoken expired")
        await writer.drain()
        writer.close()

    async def main() -> None:
        server, url = await _serve(not_found)
        for transport in ("spdy", "websocket"):
            with pytest.raises(errdefs.NotFound, match="token expired"):
                await asyncio.wait_for(stream_remotecommand(url, ExecStreams(), transport=transport), 10)
        server.close()

    asyncio.run(main())


async def _ws_exec_server(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    def b64(channel: int, data: bytes) -> wse.TextMessage:
        frame = rc.encode_channel_frame(channel, data, base64_variant=True)
        assert isinstance(frame, str)
        return wse.TextMessage(frame)

    ws = wsproto.WSConnection(wsproto.ConnectionType.SERVER)
    chosen = ""
    while not chosen:
        ws.receive_data(await reader.read(65536))
        for event in ws.events():
            if isinstance(event, wse.Request):
                assert event.subprotocols[0] == rc.WS_V5_CHANNEL
                chosen = rc.WS_V4_BASE64_CHANNEL
                writer.write(ws.send(wse.AcceptConnection(subprotocol=chosen)))
                # in the same write as the 101: the client must not lose it
                writer.write(ws.send(b64(1, b"early ")))
    got = bytearray()
    while b"\n" not in got:
        ws.receive_data(await reader.read(65536))
        for event in ws.events():
            if isinstance(event, wse.TextMessage):
                channel, data = rc.decode_channel_frame(event.data)
                if channel == rc.CHANNEL_STDIN:
                    got += data
    writer.write(ws.send(b64(1, bytes(got))))
    writer.write(ws.send(b64(3, rc.status_exit_code(2))))
    writer.write(ws.send(wse.CloseConnection(code=1000)))
    await writer.drain()
    writer.close()


def test_websocket_base64_remotecommand():
    async def main() -> None:
        server, url = await _serve(_ws_exec_server)
        out, to_out = _collector()
        lines = [b"line\n"]

        async def stdin() -> bytes:
            return lines.pop(0) if lines else await asyncio.Future()

        res = await asyncio.wait_for(stream_remotecommand(url, ExecStreams(stdin=stdin, stdout=to_out),
                                                          transport="websocket"), 10)
        assert (res.exit_code, res.protocol, bytes(out)) == (2, "v4.base64.channel.k8s.io", b"early line\n")
        server.close()

    asyncio.run(main())


def test_spdy_stream_reset_reads_as_end():
    c = spdy.SpdyConnection(client=True)
    s = spdy.SpdyConnection(client=False)
    c.open_stream({})
    s.receive_data(c.data_to_send())
    s.reply(1)
    s.send_data(1, b"status")
    s.reset_stream(1)
    events = c.receive_data(s.data_to_send())
    assert events[-2:] == [spdy.DataReceived(1, b"status", False), spdy.StreamReset(1, spdy.RstStatus.CANCEL, True)]


def test_websocket_v5_closes_stdin_with_channel_255():
    seen: list[bytes] = []

    async def v5_server(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        ws = wsproto.WSConnection(wsproto.ConnectionType.SERVER)
        done = False
        while not done:
            data = await reader.read(65536)
            if not data:
                return
            ws.receive_data(data)
            for event in ws.events():
                if isinstance(event, wse.Request):
                    writer.write(ws.send(wse.AcceptConnection(subprotocol=rc.WS_V5_CHANNEL)))
                elif isinstance(event, wse.BytesMessage):
                    seen.append(bytes(event.data))
                    if bytes(event.data) == rc.encode_close_channel(rc.CHANNEL_STDIN):
                        done = True
        writer.write(ws.send(wse.BytesMessage(bytes([rc.CHANNEL_ERROR]) + rc.status_success())))
        writer.write(ws.send(wse.CloseConnection(code=1000)))
        await writer.drain()
        writer.close()

    async def main() -> None:
        server, url = await _serve(v5_server)
        chunks = [b"abc", b""]

        async def stdin() -> bytes:
            return chunks.pop(0)

        res = await asyncio.wait_for(stream_remotecommand(url, ExecStreams(stdin=stdin), transport="websocket"), 10)
        assert (res.exit_code, res.protocol) == (0, rc.WS_V5_CHANNEL)
        assert seen == [b"\x00abc", b"\xff\x00"]
        server.close()

    asyncio.run(main())
