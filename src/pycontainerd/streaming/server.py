"""The streaming server: kubelet's ``/exec``, ``/attach`` and ``/portforward`` endpoints, inside the daemon.

Theory of operation.  The CRI's Exec, Attach and PortForward RPCs store their request in a
one-time token cache (``tokens.py``) and answer a URL, ``http(s)://<address>:<port>/<kind>/<token>``.
The client (crictl, kubelet on kubectl's behalf) connects there; the server

1. reads one HTTP/1.1 request head (h11; at most ``max_head`` bytes within ``head_timeout``),
2. consumes the token (unknown, used or expired: 404, as kubelet; a token of another
   kind: 404),
3. upgrades the connection: WebSocket (``Upgrade: websocket``; the sub-protocol from
   ``Sec-WebSocket-Protocol``, see ``websocket.py``) or SPDY/3.1 (``Upgrade: SPDY/3.1``; the
   sub-protocol from ``X-Stream-Protocol-Version``, answered in the 101 with ``Connection:
   Upgrade``, ``Upgrade: SPDY/3.1`` and ``X-Stream-Protocol-Version``; see ``spdyserve.py``),
4. hands the streams to the runtime (``runtime.StreamRuntime``) and reports the result.

Anything else gets a plain-text 4xx and the connection closes: no keep-alive, one request a
connection.  A session with no byte either way for ``idle_timeout`` seconds is cancelled, as
is one whose client goes away: the runtime's cancellation path removes the exec process and
its FIFOs (see ``runtime.py``).  With ``tls`` the listener speaks TLS (``tls.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import re
import socket
import ssl
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from urllib.parse import parse_qs

import h11

from .. import errdefs
from . import remotecommand as rc
from . import spdyserve
from . import websocket as wsmod
from .runtime import AttachRequest, ExecRequest, PortForwardRequest, StreamRequest, StreamRuntime
from .spdyio import SpdySession
from .streams import Activity
from .tls import server_context
from .tokens import DEFAULT_MAX_SIZE, DEFAULT_TTL, TokenCache

log = logging.getLogger("pycontainerd.streaming")

LINGER = 1.0
_PATH = re.compile(r"/(exec|attach|portforward)/([A-Za-z0-9_-]{1,64})")
_KINDS: dict[str, type] = {"exec": ExecRequest, "attach": AttachRequest, "portforward": PortForwardRequest}


@dataclass(frozen=True)
class ServerConfig:
    address: str = "127.0.0.1"
    port: int = 0  # 0: a free port, chosen at start
    tls: bool = False
    cert_file: str = ""
    key_file: str = ""
    idle_timeout: float = 4 * 3600.0  # 0: never
    token_ttl: float = DEFAULT_TTL
    max_tokens: int = DEFAULT_MAX_SIZE
    max_head: int = 16 * 1024
    head_timeout: float = 30.0
    stream_creation_timeout: float = 30.0


@dataclass(frozen=True)
class HttpRequest:
    method: str
    target: str
    headers: list[tuple[str, str]]  # names lower-case

    def header(self, name: str) -> str | None:
        for k, v in self.headers:
            if k == name:
                return v
        return None

    def header_values(self, name: str) -> list[str]:
        """Every value of a header, comma-separated lists split."""
        return [p.strip() for k, v in self.headers if k == name for p in v.split(",") if p.strip()]

    def head_bytes(self) -> bytes:
        lines = [f"{self.method} {self.target} HTTP/1.1"] + [f"{k}: {v}" for k, v in self.headers]
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


class HttpError(Exception):
    def __init__(self, status: int, message: str, headers: Sequence[tuple[str, str]] = ()) -> None:
        super().__init__(message)
        self.status = status
        self.headers = list(headers)


def _is_upgrade(req: HttpRequest, proto: str) -> bool:
    return ("upgrade" in (v.lower() for v in req.header_values("connection"))
            and proto in (v.lower() for v in req.header_values("upgrade")))


def negotiate_spdy(offered: Sequence[str], supported: Sequence[str]) -> str:
    """kubelet's ``httpstream.Handshake``: the first offered protocol we support."""
    if not offered:
        raise HttpError(400, "unable to upgrade: X-Stream-Protocol-Version is required")
    for p in offered:
        if p in supported:
            return p
    raise HttpError(403, f"unable to upgrade: unable to negotiate protocol: client supports {list(offered)}, "
                         f"server accepts {list(supported)}",
                    [("X-Accepted-Stream-Protocol-Versions", p) for p in supported])


class StreamServer:
    """The HTTP(S) listener; ``url(request)`` makes the URL an RPC answers."""

    def __init__(self, config: ServerConfig, runtime: StreamRuntime,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.config = config
        self.runtime = runtime
        self.tokens: TokenCache[StreamRequest] = TokenCache(config.token_ttl, config.max_tokens, clock)
        self.certificate: bytes | None = None  # PEM of the generated certificate, if one was
        self._server: asyncio.Server | None = None
        self._sessions: set[asyncio.Task[None]] = set()
        self.port = 0
        self.host = config.address

    # -- lifecycle --------------------------------------------------------------------------------
    async def start(self) -> None:
        ctx: ssl.SSLContext | None = None
        if self.config.tls:
            ctx, self.certificate = await asyncio.to_thread(
                server_context, self.config.cert_file, self.config.key_file, self.config.address)
        host = self.config.address or None
        try:
            self._server = await asyncio.start_server(self._serve, host, self.config.port, ssl=ctx,
                                                      reuse_address=True)
        except OSError as exc:
            raise errdefs.from_oserror(
                exc, f"streaming server cannot listen on {self.config.address}:{self.config.port}") from exc
        self.port = self._server.sockets[0].getsockname()[1]
        if not self.config.address or self.config.address in ("0.0.0.0", "::"):
            self.host = _outward_address()
        log.info("streaming server listening at %s", self.base_url)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for t in list(self._sessions):
            t.cancel()
        if self._sessions:
            await asyncio.gather(*self._sessions, return_exceptions=True)
        if self._server is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._server.wait_closed(), 5.0)
            self._server = None

    @property
    def base_url(self) -> str:
        scheme = "https" if self.config.tls else "http"
        host = self.host
        with contextlib.suppress(ValueError):
            if ipaddress.ip_address(host).version == 6:
                host = f"[{host}]"
        return f"{scheme}://{host}:{self.port}"

    def url(self, request: StreamRequest) -> str:
        kind = next(k for k, cls in _KINDS.items() if isinstance(request, cls))
        return f"{self.base_url}/{kind}/{self.tokens.insert(request)}"

    # -- one connection ---------------------------------------------------------------------------
    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._sessions.add(task)
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=self.config.max_head)
        try:
            try:
                async with asyncio.timeout(self.config.head_timeout):
                    req, trailing = await self._read_head(reader, conn)
                await self._route(req, trailing, reader, writer, conn)
            except HttpError as exc:
                await self._respond(reader, writer, conn, exc.status, str(exc), exc.headers)
            except errdefs.ContainerdError as exc:
                await self._respond(reader, writer, conn, 500, str(exc))
        except (ConnectionError, ssl.SSLError, TimeoutError, asyncio.IncompleteReadError) as exc:
            log.debug("streaming connection ended: %r", exc)
        except asyncio.CancelledError:
            pass
        except Exception:
            log.exception("streaming connection failed")
        finally:
            self._sessions.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(writer.wait_closed(), 2.0)

    async def _read_head(self, reader: asyncio.StreamReader, conn: h11.Connection) -> tuple[HttpRequest, bytes]:
        request: HttpRequest | None = None
        received = body = 0
        while True:
            try:
                ev = conn.next_event()
            except h11.RemoteProtocolError as exc:
                raise HttpError(exc.error_status_hint, f"bad request: {exc}") from None
            if ev is h11.NEED_DATA:
                data = await reader.read(65536)
                if not data:
                    raise ConnectionResetError("client closed the connection before its request was complete")
                received += len(data)
                conn.receive_data(data)
                continue
            if isinstance(ev, h11.Request):
                # h11 bounds a head that arrives in pieces only: one that came whole is measured here
                if received - len(conn.trailing_data[0]) > self.config.max_head:
                    raise HttpError(431, "request header fields too large")
                request = HttpRequest(ev.method.decode("latin-1"), ev.target.decode("latin-1"),
                                      [(k.decode("latin-1").lower(), v.decode("latin-1")) for k, v in ev.headers])
            elif isinstance(ev, h11.Data):
                body += len(ev.data)
                if body > self.config.max_head:
                    raise HttpError(413, "request body too large")
            elif isinstance(ev, h11.EndOfMessage) or ev is h11.PAUSED:
                # what follows the request is the upgraded protocol's (nothing, for a plain request)
                assert request is not None
                return request, bytes(conn.trailing_data[0])
            else:  # ConnectionClosed
                raise ConnectionResetError("client closed the connection")

    async def _respond(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, conn: h11.Connection,
                       status: int, message: str, headers: Sequence[tuple[str, str]] = ()) -> None:
        body = (message + "\n").encode()
        try:
            out = conn.send(h11.Response(status_code=status, headers=[
                ("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", str(len(body))),
                ("Connection", "close"), ("X-Content-Type-Options", "nosniff"), *headers]))
            out = (out or b"") + (conn.send(h11.Data(data=body)) or b"") + (conn.send(h11.EndOfMessage()) or b"")
        except h11.LocalProtocolError:  # h11 gave up on the request (bad head): answer by hand
            out = (f"HTTP/1.1 {status} \r\nContent-Type: text/plain; charset=utf-8\r\n"
                   f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode() + body
        writer.write(out)
        with contextlib.suppress(ConnectionError):
            await writer.drain()
            # lingering close: unread request bytes would make the kernel reset the connection,
            # and a reset can destroy the answer before the client read it
            if writer.can_write_eof():
                writer.write_eof()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(LINGER):
                    while await reader.read(65536):
                        pass

    async def _route(self, req: HttpRequest, trailing: bytes, reader: asyncio.StreamReader,
                     writer: asyncio.StreamWriter, conn: h11.Connection) -> None:
        path, _, query = req.target.partition("?")
        m = _PATH.fullmatch(path)
        if m is None:
            raise HttpError(404, "404 page not found")
        if req.method not in ("GET", "POST"):
            raise HttpError(405, f"method {req.method} not allowed")
        kind, token = m.groups()
        request = self.tokens.consume(token)
        if request is None or not isinstance(request, _KINDS[kind]):
            raise HttpError(404, "404 page not found")
        activity = Activity()
        if trailing:
            _unread(reader, trailing)  # what the client sent right after the head
        if _is_upgrade(req, "websocket"):
            await self._websocket(req, query, request, reader, writer, activity)
        elif _is_upgrade(req, rc.SPDY_UPGRADE.lower()):
            await self._spdy(req, request, reader, writer, conn, activity)
        else:
            raise HttpError(400, "unable to upgrade: missing upgrade headers in request")

    def _watch(self, activity: Activity) -> asyncio.Task[None]:
        task = asyncio.current_task()
        assert task is not None
        return asyncio.create_task(activity.watch(self.config.idle_timeout, task), name="stream-idle")

    async def _websocket(self, req: HttpRequest, query: str, request: StreamRequest, reader: asyncio.StreamReader,
                         writer: asyncio.StreamWriter, activity: Activity) -> None:
        pf = isinstance(request, PortForwardRequest)
        supported = rc.WS_PORT_FORWARD_PROTOCOLS if pf else rc.WS_REMOTECOMMAND_PROTOCOLS
        try:
            ws, protocol, out = wsmod.handshake(req.head_bytes(), supported)
        except Exception as exc:  # wsproto refuses a malformed handshake
            raise HttpError(400, f"bad WebSocket handshake: {exc}") from None
        writer.write(out)
        await writer.drain()
        if protocol is None:
            return
        chans = wsmod.WebSocketChannels(reader, writer, ws, activity, b64=rc.is_base64_protocol(protocol),
                                        stream_close=rc.ws_supports_close(protocol))
        watch = self._watch(activity)
        try:
            if isinstance(request, PortForwardRequest):
                try:
                    ports = [int(p) for p in parse_qs(query).get("port", [])] or list(request.ports)
                    if not ports or any(not 0 < p < 65536 for p in ports):
                        raise ValueError(f"{ports or 'none'}")
                except ValueError as exc:
                    await chans.close(1008, f"bad or missing port query parameter: {exc}"[:120])
                    return
                await wsmod.serve_portforward(chans, self.runtime, request, ports)
            else:
                await wsmod.serve_command(chans, protocol, self.runtime, request)
        except errdefs.ContainerdError as exc:  # upgraded already: no HTTP answer any more
            log.debug("websocket session failed: %s", exc)
            await chans.close(1011, str(exc)[:120])
        finally:
            watch.cancel()

    async def _spdy(self, req: HttpRequest, request: StreamRequest, reader: asyncio.StreamReader,
                    writer: asyncio.StreamWriter, conn: h11.Connection, activity: Activity) -> None:
        pf = isinstance(request, PortForwardRequest)
        supported = rc.SPDY_PORT_FORWARD_PROTOCOLS if pf else rc.SPDY_REMOTECOMMAND_PROTOCOLS
        protocol = negotiate_spdy(req.header_values(rc.HEADER_PROTOCOL_VERSION.lower()), supported)
        # kubelet's 101: the upgrade and the protocol picked
        writer.write((f"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: {rc.SPDY_UPGRADE}\r\n"
                      f"{rc.HEADER_PROTOCOL_VERSION}: {protocol}\r\n\r\n").encode())
        await writer.drain()
        session = SpdySession(reader, writer, client=False)
        session.on_event = lambda _event: activity.touch()
        watch = self._watch(activity)
        try:
            if isinstance(request, PortForwardRequest):
                await spdyserve.serve_portforward(session, self.runtime, request, activity)
            else:
                await spdyserve.serve_command(session, protocol, self.runtime, request, activity,
                                              self.config.stream_creation_timeout)
        except errdefs.ContainerdError as exc:  # upgraded already: no HTTP answer any more
            log.debug("spdy session failed: %s", exc)
        finally:
            watch.cancel()
            await session.aclose()


def _unread(reader: asyncio.StreamReader, data: bytes) -> None:
    """Put bytes h11 read past the request head back in front of the reader's buffer.

    StreamReader has no public unread; ``feed_data`` would append them after whatever else
    is buffered already (a client that did not wait for the 101).  Its buffer is a bytearray
    in every CPython 3.11+; anything else falls back to appending.
    """
    buf = getattr(reader, "_buffer", None)
    if isinstance(buf, bytearray):
        buf[:0] = data
    else:  # pragma: no cover - another StreamReader implementation
        reader.feed_data(data)


def _outward_address() -> str:
    """The address clients elsewhere use for a wildcard listener: the host's, else loopback."""
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.connect(("192.0.2.1", 9))  # no packet is sent: this only picks the route's source address
            return str(s.getsockname()[0])
    except OSError:
        return "127.0.0.1"
