"""A minimal HTTP/1.1 server on asyncio for the debug and metrics endpoints.

Only what ``ctr pprof``, ``go tool pprof``, Prometheus and curl need: ``GET``/``HEAD``,
one request per connection (``Connection: close``), a body of known length.  Bounded so a
misbehaving client cannot hurt the daemon: the request head may be at most
``MAX_HEAD`` bytes (431 past it), must arrive within ``HEAD_TIMEOUT`` seconds (the
connection is then closed), requests with a body are refused (the endpoints take none),
at most ``MAX_CONNECTIONS`` are served at once (503 past it), and a handler's exception
becomes a 500 that is logged, never a crash.  Handlers get the path and the query and
return a ``Response``; long work inside them goes to threads.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from urllib.parse import parse_qs, unquote, urlsplit

log = logging.getLogger("pycontainerd.http")

MAX_HEAD = 16 << 10
HEAD_TIMEOUT = 10.0
WRITE_TIMEOUT = 60.0
MAX_CONNECTIONS = 32

_REASONS = {200: "OK", 400: "Bad Request", 403: "Forbidden", 404: "Not Found", 405: "Method Not Allowed",
            408: "Request Timeout", 411: "Length Required", 413: "Payload Too Large",
            431: "Request Header Fields Too Large", 500: "Internal Server Error", 501: "Not Implemented",
            503: "Service Unavailable", 505: "HTTP Version Not Supported"}


@dataclass
class Response:
    status: int = 200
    body: bytes = b""
    content_type: str = "text/plain; charset=utf-8"
    headers: dict[str, str] = field(default_factory=dict)


def text(status: int, message: str) -> Response:
    return Response(status, (message.rstrip("\n") + "\n").encode())


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]

    def arg(self, name: str, default: str = "") -> str:
        vals = self.query.get(name)
        return vals[-1] if vals else default


Handler = Callable[[Request], Awaitable[Response]]


class BadRequest(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def parse_head(head: bytes) -> Request:
    """Parse a request head (up to and including the blank line)."""
    try:
        textual = head.decode("latin-1")
    except UnicodeDecodeError as exc:  # pragma: no cover - latin-1 decodes anything
        raise BadRequest(400, "request head is not text") from exc
    lines = textual.split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3:
        raise BadRequest(400, f"malformed request line {lines[0][:80]!r}")
    method, target, version = parts
    if not version.startswith("HTTP/1."):
        raise BadRequest(505, f"unsupported protocol {version[:20]!r}")
    if not method.isalpha() or not method.isupper():
        raise BadRequest(400, f"malformed method {method[:20]!r}")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if not line:
            continue
        name, sep, value = line.partition(":")
        if not sep or not name or name != name.strip() or any(c in name for c in " \t"):
            raise BadRequest(400, f"malformed header line {line[:80]!r}")
        headers[name.lower()] = value.strip()
    if not target.startswith("/"):
        if target.startswith(("http://", "https://")):
            target = urlsplit(target).path or "/"
        else:
            raise BadRequest(400, f"malformed request target {target[:80]!r}")
    url = urlsplit(target)
    return Request(method, unquote(url.path), parse_qs(url.query, keep_blank_values=True), headers)


class HTTPServer:
    """Serves ``routes`` (exact paths; a key ending in ``/`` also matches what lies below)."""

    def __init__(self, routes: dict[str, Handler], *, name: str) -> None:
        self.routes = routes
        self.name = name
        self._server: asyncio.AbstractServer | None = None
        self._active = 0
        self._conns: set[asyncio.Task[None]] = set()
        self.requests = 0
        self.rejected = 0

    async def start_unix(self, path: str | None = None, *, sock: socket.socket | None = None) -> None:
        self._server = await asyncio.start_unix_server(self._accept, path=path, sock=sock, limit=MAX_HEAD)

    async def start_tcp(self, host: str, port: int) -> list[tuple[str, int]]:
        self._server = await asyncio.start_server(self._accept, host=host, port=port, limit=MAX_HEAD,
                                                  reuse_address=True)
        return [s.getsockname()[:2] for s in self._server.sockets]

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            for t in list(self._conns):
                t.cancel()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2)
            self._server = None

    def _route(self, path: str) -> Handler | None:
        h = self.routes.get(path)
        if h is not None:
            return h
        for prefix, handler in self.routes.items():
            if prefix.endswith("/") and path.startswith(prefix):
                return handler
        return None

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._conns.add(task)
        self._active += 1
        try:
            if self._active > MAX_CONNECTIONS:
                self.rejected += 1
                await self._send(writer, text(503, f"{self.name}: too many connections"), head_only=False)
                return
            await self._serve_one(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        except asyncio.CancelledError:
            # only ``close()`` cancels these tasks; asyncio's stream callback would log a
            # cancelled connection task as an error, so it ends quietly instead
            return
        except Exception:
            log.exception("%s: error serving a request", self.name)
        finally:
            self._active -= 1
            if task is not None:
                self._conns.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(writer.wait_closed(), 1)

    async def _serve_one(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), HEAD_TIMEOUT)
        except TimeoutError:
            self.rejected += 1
            await self._send(writer, text(408, "request head not received in time"), head_only=False)
            return
        except asyncio.LimitOverrunError:
            self.rejected += 1
            await self._send(writer, text(431, f"request head larger than {MAX_HEAD} bytes"), head_only=False)
            return
        except asyncio.IncompleteReadError:
            return  # the client went away (or sent a truncated head)
        try:
            req = parse_head(head)
        except BadRequest as exc:
            self.rejected += 1
            await self._send(writer, text(exc.status, str(exc)), head_only=False)
            return
        self.requests += 1
        if req.headers.get("transfer-encoding") or req.headers.get("content-length", "0") not in ("", "0"):
            await self._send(writer, text(413, "these endpoints take no request body"), head_only=False)
            return
        if req.method not in ("GET", "HEAD"):
            resp = text(405, f"method {req.method} not allowed: use GET")
            resp.headers["Allow"] = "GET, HEAD"
            await self._send(writer, resp, head_only=False)
            return
        handler = self._route(req.path)
        if handler is None:
            await self._send(writer, text(404, f"{req.path}: not found"), head_only=False)
            return
        try:
            resp = await handler(req)
        except BadRequest as exc:
            resp = text(exc.status, str(exc))
        except Exception as exc:
            log.exception("%s: %s failed", self.name, req.path)
            resp = text(500, f"{req.path}: {type(exc).__name__}: {exc}")
        await self._send(writer, resp, head_only=req.method == "HEAD")

    async def _send(self, writer: asyncio.StreamWriter, resp: Response, *, head_only: bool) -> None:
        reason = _REASONS.get(resp.status, "Status")
        lines = [f"HTTP/1.1 {resp.status} {reason}", f"Content-Type: {resp.content_type}",
                 f"Content-Length: {len(resp.body)}", "Connection: close", "X-Content-Type-Options: nosniff"]
        lines += [f"{k}: {v}" for k, v in resp.headers.items()]
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
        if not head_only:
            writer.write(resp.body)
        await asyncio.wait_for(writer.drain(), WRITE_TIMEOUT)
