"""Clients of a CRI streaming server: exec/attach (remotecommand) and port-forward, as kubelet speaks them.

The CRI's Exec, Attach and PortForward RPCs return a URL on the runtime's streaming server
(``CriClient.exec``/``attach``/``port_forward``); these functions connect to it:

    url = await cri.exec(container_id, ["sh"], tty=True, stdin=True, stderr=False)
    result = await stream_remotecommand(url, ExecStreams(stdin=read_stdin, stdout=write_stdout, tty=True))
    sys.exit(result.exit_code)

Transports (``transport=``):
  - ``spdy`` (crictl's default): HTTP/1.1 ``Upgrade: SPDY/3.1`` offering the remotecommand
    protocols v4..v1 (``X-Stream-Protocol-Version``), then one SPDY stream per stream type, in
    client-go's order: error, stdin, stdout, stderr, resize.  The server expects exactly the
    streams the Exec request asked for (stdin / stdout / stderr / a TTY's resize): pass the
    same flags here.
  - ``websocket``: ``Sec-WebSocket-Protocol`` offering v5, v4, v4.base64, channel and
    base64.channel; one channel byte per message.  Before v5 a client cannot end stdin: the
    command sees EOF only when the connection ends.

The exit code comes from the error stream: a Status (v4+) with reason NonZeroExitCode, or
success; an error Status without a code raises ``errdefs.Unknown`` with its message.

TLS: ``https``/``wss`` URLs are not verified unless ``tls`` is given an ``ssl.SSLContext``:
crictl does the same (with no --tls-ca/--tls-cert/--tls-key it sets ``Insecure: true``),
because a runtime's streaming server serves a self-signed certificate it made at start-up
(containerd's ``enable_tls_streaming`` without a cert) that no client could verify; the
URL's one-time token is the credential.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import urllib.parse
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import h11
import wsproto
import wsproto.events as wse

from .. import errdefs
from ..streaming import remotecommand as rc
from ..streaming import spdyio

TRANSPORT_SPDY = "spdy"
TRANSPORT_WEBSOCKET = "websocket"
TRANSPORTS = (TRANSPORT_SPDY, TRANSPORT_WEBSOCKET)

MAX_RESPONSE_HEAD = 64 << 10
MAX_ERROR_BODY = 64 << 10
MAX_STATUS = 1 << 20
_CHUNK = 32 << 10

Source = Callable[[], Awaitable[bytes]]
"""Returns the next chunk of input, b"" at EOF."""
Sink = Callable[[bytes], Awaitable[None]]


@dataclass
class ExecStreams:
    """The local ends of an exec/attach: which exist must match the Exec/Attach request."""

    stdin: Source | None = None
    stdout: Sink | None = None
    stderr: Sink | None = None
    tty: bool = False
    resize: AsyncIterator[tuple[int, int]] | None = None  # (width, height), first the initial size


@dataclass(frozen=True)
class ExecResult:
    exit_code: int
    message: str = ""
    protocol: str = ""


# --- connecting ------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Target:
    host: str
    port: int
    tls: bool
    path: str  # path + query

    @property
    def authority(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


def parse_url(url: str) -> _Target:
    """http/https/ws/wss URL → where to connect.  A URL without host is kubelet's default (crictl's rule)."""
    parsed = urllib.parse.urlsplit(url)
    scheme = (parsed.scheme or "http").lower()
    if scheme not in ("http", "https", "ws", "wss"):
        raise errdefs.InvalidArgument(f"streaming URL {url!r}: unsupported scheme {scheme!r}")
    tls = scheme in ("https", "wss")
    host = parsed.hostname or "127.0.0.1"
    port = parsed.port or (10250 if not parsed.hostname else (443 if tls else 80))
    path = parsed.path or "/"
    if parsed.query:
        path += "?" + parsed.query
    return _Target(host, port, tls, path)


def _ssl_context(tls: ssl.SSLContext | None) -> ssl.SSLContext:
    if tls is not None:
        return tls
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE  # see the module docstring: crictl's Insecure default
    return ctx


async def _connect(target: _Target, tls: ssl.SSLContext | None, timeout: float) -> tuple[  # noqa: ASYNC109
    asyncio.StreamReader, asyncio.StreamWriter
]:
    try:
        return await asyncio.wait_for(
            asyncio.open_connection(
                target.host,
                target.port,
                ssl=_ssl_context(tls) if target.tls else None,
                server_hostname=target.host if target.tls else None,
                limit=MAX_RESPONSE_HEAD,
            ),
            timeout,
        )
    except TimeoutError:
        raise errdefs.DeadlineExceeded(f"streaming server {target.authority}: connect timed out") from None
    except (OSError, ssl.SSLError) as exc:
        raise errdefs.Unavailable(f"cannot reach the streaming server at {target.authority}: {exc}") from exc


def _http_error(status: int, body: bytes, what: str) -> errdefs.ContainerdError:
    text = body.decode("utf-8", errors="replace").strip()[:500]
    msg = f"{what}: the streaming server answered {status}" + (f": {text}" if text else "")
    if status == 404:
        return errdefs.NotFound(msg + " (the URL's token is single-use and expires; ask the runtime again)")
    if status in (400, 403):
        return errdefs.InvalidArgument(msg)
    return errdefs.Unknown(msg)


async def _read_error_body(conn: h11.Connection, reader: asyncio.StreamReader) -> bytes:
    body = bytearray()
    while len(body) < MAX_ERROR_BODY:
        ev = conn.next_event()
        if ev is h11.NEED_DATA:
            chunk = await reader.read(_CHUNK)
            if not chunk:
                break
            conn.receive_data(chunk)
        elif isinstance(ev, h11.Data):
            body += ev.data
        else:
            break
    return bytes(body)


async def open_spdy(
    url: str,
    protocols: tuple[str, ...],
    *,
    tls: ssl.SSLContext | None = None,
    timeout: float = 10.0,  # noqa: ASYNC109
) -> tuple[spdyio.SpdySession, str]:
    """Upgrade to SPDY/3.1 offering ``protocols``; returns the session and the protocol the server chose."""
    target = parse_url(url)
    reader, writer = await _connect(target, tls, timeout)
    try:
        conn = h11.Connection(h11.CLIENT)
        headers = [
            ("Host", target.authority),
            ("Connection", "Upgrade"),
            ("Upgrade", rc.SPDY_UPGRADE),
            *((rc.HEADER_PROTOCOL_VERSION, p) for p in protocols),
            ("Content-Length", "0"),
        ]
        writer.write(conn.send(h11.Request(method="POST", target=target.path, headers=headers)) or b"")
        writer.write(conn.send(h11.EndOfMessage()) or b"")
        await writer.drain()
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout)
        except asyncio.LimitOverrunError:
            raise errdefs.InvalidArgument(f"{url}: response head larger than {MAX_RESPONSE_HEAD} bytes") from None
        except asyncio.IncompleteReadError:
            raise errdefs.Unavailable(f"{url}: the streaming server closed the connection") from None
        except TimeoutError:
            raise errdefs.DeadlineExceeded(f"{url}: no answer to the upgrade request") from None
        conn.receive_data(head)
        try:
            ev = conn.next_event()
        except h11.RemoteProtocolError as exc:
            raise errdefs.InvalidArgument(f"{url}: bad HTTP response: {exc}") from exc
        if isinstance(ev, h11.Response) or (isinstance(ev, h11.InformationalResponse) and ev.status_code != 101):
            raise _http_error(ev.status_code, await _read_error_body(conn, reader), "spdy upgrade")
        if not isinstance(ev, h11.InformationalResponse):
            raise errdefs.InvalidArgument(f"{url}: unexpected answer to the upgrade request: {ev!r}")
        chosen = ""
        for name, value in ev.headers:
            if name.decode().lower() == rc.HEADER_PROTOCOL_VERSION.lower():
                chosen = value.decode()
        if protocols and chosen and chosen not in protocols:
            raise errdefs.InvalidArgument(f"{url}: the server chose protocol {chosen!r}, which we did not offer")
    except BaseException:
        writer.close()
        raise
    return spdyio.SpdySession(reader, writer, client=True), chosen


class WebSocketChannels:
    """A client WebSocket connection that carries Kubernetes channel messages."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, ws: wsproto.WSConnection,
                 protocol: str) -> None:
        self._reader = reader
        self._writer = writer
        self._ws = ws
        self.protocol = protocol
        self.base64 = rc.is_base64_protocol(protocol)
        self._partial_bytes = bytearray()
        self._partial_text: list[str] = []
        self._pending: list[tuple[int, bytes]] = []
        self._closed = False
        self._lock = asyncio.Lock()

    async def send(self, channel: int, data: bytes) -> None:
        if self._closed:
            raise errdefs.Unavailable("websocket closed")
        frame = rc.encode_channel_frame(channel, data, base64_variant=self.base64)
        if isinstance(frame, str):
            out = self._ws.send(wse.TextMessage(data=frame))
        else:
            out = self._ws.send(wse.BytesMessage(data=frame))
        await self._write(out)

    async def send_raw(self, data: bytes) -> None:
        """A raw binary message (v5's close-channel message)."""
        await self._write(self._ws.send(wse.BytesMessage(data=data)))

    async def _write(self, out: bytes) -> None:
        async with self._lock:
            self._writer.write(out)
            try:
                await self._writer.drain()
            except (ConnectionError, OSError) as exc:
                self._closed = True
                raise errdefs.Unavailable(f"websocket write failed: {exc}") from exc

    async def receive(self) -> tuple[int, bytes] | None:
        """The next (channel, payload); None once the connection closed."""
        while not self._pending:
            if self._closed:
                return None
            try:
                data = await self._reader.read(_CHUNK)
            except (ConnectionError, OSError):
                data = b""
            if not data:
                self._closed = True
                return None
            self._ws.receive_data(data)
            await self.handle_events(list(self._ws.events()))
        return self._pending.pop(0)

    async def handle_events(self, events: list[wse.Event]) -> None:
        """Queue the channel messages among ``events``; answer pings and the peer's close."""
        for event in events:
            if isinstance(event, wse.BytesMessage):
                self._partial_bytes += event.data
                if event.message_finished:
                    raw, self._partial_bytes = bytes(self._partial_bytes), bytearray()
                    if raw:
                        self._pending.append(rc.decode_channel_frame(raw))
            elif isinstance(event, wse.TextMessage):
                self._partial_text.append(event.data)
                if event.message_finished:
                    text, self._partial_text = "".join(self._partial_text), []
                    if text:
                        self._pending.append(rc.decode_channel_frame(text))
            elif isinstance(event, wse.Ping):
                await self._write(self._ws.send(event.response()))
            elif isinstance(event, wse.CloseConnection):
                with contextlib.suppress(Exception):
                    await self._write(self._ws.send(event.response()))
                self._closed = True

    async def aclose(self) -> None:
        if not self._closed:
            self._closed = True
            with contextlib.suppress(Exception):
                await self._write(self._ws.send(wse.CloseConnection(code=1000)))
        self._writer.close()
        with contextlib.suppress(Exception):
            await self._writer.wait_closed()


async def open_websocket(
    url: str,
    protocols: tuple[str, ...],
    *,
    tls: ssl.SSLContext | None = None,
    timeout: float = 10.0,  # noqa: ASYNC109
) -> WebSocketChannels:
    """A WebSocket handshake (GET) offering ``protocols``, most preferred first."""
    target = parse_url(url)
    reader, writer = await _connect(target, tls, timeout)
    ws = wsproto.WSConnection(wsproto.ConnectionType.CLIENT)
    try:
        writer.write(ws.send(wse.Request(host=target.authority, target=target.path, subprotocols=list(protocols))))
        await writer.drain()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        body = bytearray()
        status = 0
        while True:
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise errdefs.DeadlineExceeded(f"{url}: no answer to the WebSocket handshake")
            try:
                data = await asyncio.wait_for(reader.read(_CHUNK), remaining)
            except TimeoutError:
                raise errdefs.DeadlineExceeded(f"{url}: no answer to the WebSocket handshake") from None
            if not data:
                if status:
                    raise _http_error(status, bytes(body), "websocket handshake")
                raise errdefs.Unavailable(f"{url}: the streaming server closed the connection during the handshake")
            try:
                ws.receive_data(data)
                events = list(ws.events())
            except wsproto.utilities.RemoteProtocolError as exc:
                raise errdefs.InvalidArgument(f"{url}: bad WebSocket handshake answer: {exc}") from exc
            for i, event in enumerate(events):
                if isinstance(event, wse.AcceptConnection):
                    chans = WebSocketChannels(reader, writer, ws, event.subprotocol or "")
                    await chans.handle_events(events[i + 1 :])  # messages that came with the 101
                    return chans
                if isinstance(event, wse.RejectConnection):
                    status = event.status_code
                    if not event.has_body:
                        raise _http_error(status, b"", "websocket handshake")
                elif isinstance(event, wse.RejectData):
                    body += event.data[: MAX_ERROR_BODY - len(body)]
                    if event.body_finished:
                        raise _http_error(status, bytes(body), "websocket handshake")
    except BaseException:
        writer.close()
        raise


# --- remotecommand ------------------------------------------------------------------------------


def _outcome(raw: bytes, protocol: str) -> ExecResult:
    outcome = rc.parse_status(raw, protocol)
    if outcome.exit_code is None:
        raise errdefs.Unknown(outcome.message or "the command failed")
    return ExecResult(outcome.exit_code, outcome.message, protocol)


async def stream_remotecommand(
    url: str,
    streams: ExecStreams,
    *,
    transport: str = TRANSPORT_SPDY,
    tls: ssl.SSLContext | None = None,
    timeout: float = 10.0,  # noqa: ASYNC109
) -> ExecResult:
    """Run an exec or attach whose URL came from the CRI; returns the command's exit code."""
    if transport == TRANSPORT_SPDY:
        return await _remotecommand_spdy(url, streams, tls, timeout)
    if transport == TRANSPORT_WEBSOCKET:
        return await _remotecommand_ws(url, streams, tls, timeout)
    raise errdefs.InvalidArgument(f"unknown transport {transport!r} (one of {', '.join(TRANSPORTS)})")


async def _cancel(tasks: list[asyncio.Task[None]]) -> None:
    for task in tasks:
        task.cancel()
    for task in tasks:
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task


async def _remotecommand_spdy(
    url: str, streams: ExecStreams, tls: ssl.SSLContext | None, timeout: float  # noqa: ASYNC109
) -> ExecResult:
    session, protocol = await open_spdy(url, rc.SPDY_REMOTECOMMAND_PROTOCOLS, tls=tls, timeout=timeout)
    protocol = protocol or rc.STREAM_PROTOCOL_V1
    background: list[asyncio.Task[None]] = []
    try:

        async def open_(kind: str) -> spdyio.SpdyStream:
            return await asyncio.wait_for(session.open_stream({rc.HEADER_STREAM_TYPE: kind}), timeout)

        error = await open_(rc.STREAM_ERROR)
        stdin = await open_(rc.STREAM_STDIN) if streams.stdin is not None else None
        stdout = await open_(rc.STREAM_STDOUT) if streams.stdout is not None else None
        stderr = await open_(rc.STREAM_STDERR) if streams.stderr is not None else None
        resize = None
        if streams.tty and protocol not in (rc.STREAM_PROTOCOL_V1, rc.STREAM_PROTOCOL_V2):
            resize = await open_(rc.STREAM_RESIZE)

        async def read_error() -> bytes:
            raw = bytearray()
            while chunk := await error.read():
                raw += chunk
                if len(raw) > MAX_STATUS:
                    raise errdefs.InvalidArgument("error stream: status larger than 1 MiB")
            return bytes(raw)

        error_task = asyncio.get_running_loop().create_task(read_error())

        async def copy_in(src: Source, dst: spdyio.SpdyStream) -> None:
            with contextlib.suppress(errdefs.Unavailable, errdefs.FailedPrecondition):
                while data := await src():
                    await dst.write(data)
                await dst.close()

        async def copy_resize(sizes: AsyncIterator[tuple[int, int]], dst: spdyio.SpdyStream) -> None:
            with contextlib.suppress(errdefs.Unavailable, errdefs.FailedPrecondition):
                async for width, height in sizes:
                    await dst.write(rc.encode_resize(width, height))

        async def copy_out(src: spdyio.SpdyStream, sink: Sink) -> None:
            while data := await src.read():
                await sink(data)

        if stdin is not None and streams.stdin is not None:
            background.append(asyncio.get_running_loop().create_task(copy_in(streams.stdin, stdin)))
        if resize is not None and streams.resize is not None:
            background.append(asyncio.get_running_loop().create_task(copy_resize(streams.resize, resize)))
        outs = []
        if stdout is not None and streams.stdout is not None:
            outs.append(copy_out(stdout, streams.stdout))
        if stderr is not None and streams.stderr is not None:
            outs.append(copy_out(stderr, streams.stderr))
        try:
            await asyncio.gather(*outs)
        except errdefs.Unavailable:
            if not error_task.done():
                raise
        raw = await error_task
        return _outcome(raw, protocol)
    finally:
        await _cancel(background)
        await session.aclose()


async def _remotecommand_ws(
    url: str, streams: ExecStreams, tls: ssl.SSLContext | None, timeout: float  # noqa: ASYNC109
) -> ExecResult:
    chans = await open_websocket(url, rc.WS_REMOTECOMMAND_PROTOCOLS, tls=tls, timeout=timeout)
    protocol = chans.protocol or rc.WS_CHANNEL
    background: list[asyncio.Task[None]] = []
    try:

        async def copy_in(src: Source) -> None:
            with contextlib.suppress(errdefs.Unavailable):
                while data := await src():
                    await chans.send(rc.CHANNEL_STDIN, data)
                if rc.ws_supports_close(protocol):
                    await chans.send_raw(rc.encode_close_channel(rc.CHANNEL_STDIN))

        async def copy_resize(sizes: AsyncIterator[tuple[int, int]]) -> None:
            with contextlib.suppress(errdefs.Unavailable):
                async for width, height in sizes:
                    await chans.send(rc.CHANNEL_RESIZE, rc.encode_resize(width, height))

        if streams.stdin is not None:
            background.append(asyncio.get_running_loop().create_task(copy_in(streams.stdin)))
        if streams.tty and streams.resize is not None:
            background.append(asyncio.get_running_loop().create_task(copy_resize(streams.resize)))
        raw = bytearray()
        while (msg := await chans.receive()) is not None:
            channel, data = msg
            if channel == rc.CHANNEL_STDOUT and streams.stdout is not None and data:
                await streams.stdout(data)
            elif channel == rc.CHANNEL_STDERR and streams.stderr is not None and data:
                await streams.stderr(data)
            elif channel == rc.CHANNEL_ERROR:
                raw += data
                if len(raw) > MAX_STATUS:
                    raise errdefs.InvalidArgument("error channel: status larger than 1 MiB")
        return _outcome(bytes(raw), protocol)
    finally:
        await _cancel(background)
        await chans.aclose()


# --- port-forward ---------------------------------------------------------------------------------


async def _pipe_local_to_stream(reader: asyncio.StreamReader, write: Callable[[bytes], Awaitable[None]],
                                close: Callable[[], Awaitable[None]]) -> None:
    with contextlib.suppress(ConnectionError, OSError, errdefs.Unavailable, errdefs.FailedPrecondition):
        while data := await reader.read(_CHUNK):
            await write(data)
    with contextlib.suppress(Exception):
        await close()


class SpdyPortForward:
    """One SPDY port-forward session: each local connection becomes an error + data stream pair."""

    def __init__(self, session: spdyio.SpdySession) -> None:
        self.session = session
        self._request_id = 0

    @classmethod
    async def connect(cls, url: str, *, tls: ssl.SSLContext | None = None,
                      timeout: float = 10.0) -> SpdyPortForward:  # noqa: ASYNC109
        session, _ = await open_spdy(url, rc.SPDY_PORT_FORWARD_PROTOCOLS, tls=tls, timeout=timeout)
        return cls(session)

    async def forward(self, port: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> str:
        """Carry one local connection to ``port`` in the pod; returns the server's error text ("" if none)."""
        request_id = str(self._request_id)
        self._request_id += 1
        headers = {rc.HEADER_PORT: str(port), rc.HEADER_REQUEST_ID: request_id}
        error = await self.session.open_stream({rc.HEADER_STREAM_TYPE: rc.STREAM_ERROR, **headers})
        await error.close()  # we never write on it (client-go closes it at once too)
        data = await self.session.open_stream({rc.HEADER_STREAM_TYPE: rc.STREAM_DATA, **headers})

        async def read_error() -> bytes:
            raw = bytearray()
            with contextlib.suppress(errdefs.Unavailable):
                while chunk := await error.read():
                    raw += chunk[: MAX_ERROR_BODY - len(raw)]
            return bytes(raw)

        error_task = asyncio.get_running_loop().create_task(read_error())
        upload = asyncio.get_running_loop().create_task(_pipe_local_to_stream(reader, data.write, data.close))
        try:
            with contextlib.suppress(errdefs.Unavailable):
                while chunk := await data.read():
                    writer.write(chunk)
                    await writer.drain()
            with contextlib.suppress(OSError):
                if writer.can_write_eof():
                    writer.write_eof()
            await upload
        except (ConnectionError, OSError):
            data.reset()
        finally:
            upload.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await upload
        try:
            raw = await asyncio.wait_for(error_task, 5)
        except TimeoutError:
            raw = b""
        return raw.decode("utf-8", errors="replace")

    async def aclose(self) -> None:
        await self.session.aclose()


async def websocket_port_forward(url: str, port: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *,
                                 tls: ssl.SSLContext | None = None, timeout: float = 10.0) -> str:  # noqa: ASYNC109
    """Carry one local connection over a WebSocket port-forward (the URL is single-use: one per connection).

    Channels 0 (data) and 1 (error); each starts with the port, little-endian.  Returns the
    server's error text ("" if none).
    """
    if "port=" not in urllib.parse.urlsplit(url).query:
        url += ("&" if "?" in url else "?") + f"port={port}"
    chans = await open_websocket(url, rc.WS_PORT_FORWARD_PROTOCOLS, tls=tls, timeout=timeout)
    seen_prefix = {rc.PORT_FORWARD_DATA_CHANNEL: False, rc.PORT_FORWARD_ERROR_CHANNEL: False}
    error = bytearray()

    async def upload() -> None:
        async def send(data: bytes) -> None:
            await chans.send(rc.PORT_FORWARD_DATA_CHANNEL, data)

        async def done() -> None:
            return None  # a channel cannot be half-closed before v5; the server sees EOF at close

        await _pipe_local_to_stream(reader, send, done)

    up = asyncio.get_running_loop().create_task(upload())
    try:
        while (msg := await chans.receive()) is not None:
            channel, data = msg
            if channel in seen_prefix and not seen_prefix[channel]:
                _, data = rc.decode_port_prefix(data)
                seen_prefix[channel] = True
            if channel == rc.PORT_FORWARD_DATA_CHANNEL and data:
                writer.write(data)
                await writer.drain()
            elif channel == rc.PORT_FORWARD_ERROR_CHANNEL:
                error += data[: MAX_ERROR_BODY - len(error)]
        with contextlib.suppress(OSError):
            if writer.can_write_eof():
                writer.write_eof()
    except (ConnectionError, OSError):
        pass
    finally:
        up.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await up
        await chans.aclose()
    return error.decode("utf-8", errors="replace")
