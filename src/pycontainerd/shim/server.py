"""The shim's socket server: framed JSON requests in, replies and events out.

Each request runs as its own task on the shim loop, so a pending ``wait`` never blocks a
later ``kill`` on the same connection.  Error kinds raised by the service travel as their
errdefs code name; anything else is reported as UNKNOWN with its text.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from typing import Any

from pycontainerd import errdefs, fsmodes
from pycontainerd.shim import protocol
from pycontainerd.shim.loop import Future, Loop
from pycontainerd.shim.service import Service


def recv_some(sock: socket.socket) -> bytes | None:
    """What a non-blocking socket has: None if nothing yet, b"" at EOF or on an error."""
    try:
        return sock.recv(65536)
    except BlockingIOError:
        return None
    except OSError:
        return b""


class Connection:
    def __init__(self, server: Listening, sock: socket.socket) -> None:
        self.server = server
        self.loop = server.loop
        self.sock = sock
        self.fd = sock.fileno()
        self.decoder = protocol.Decoder()
        self.out = bytearray()
        self.closed = False
        sock.setblocking(False)
        self.loop.add_reader(self.fd, self._readable)

    def _readable(self) -> None:
        data = recv_some(self.sock)
        if data is None:
            return
        if not data:
            self.close()
            return
        self.on_data(data)

    def on_data(self, data: bytes) -> None:
        """Bytes from the peer (a subclass speaking another protocol overrides this)."""
        try:
            messages = self.decoder.feed(data)
        except protocol.ProtocolError as exc:
            self.loop.report("bad frame from client", exc)
            self.close()
            return
        server = self.server
        assert isinstance(server, Server)
        for msg in messages:
            server.dispatch(self, msg)

    def send(self, frame: bytes) -> None:
        if self.closed:
            return
        if self.out:
            self.out += frame
            return
        try:
            n = self.sock.send(frame)
        except BlockingIOError:
            n = 0
        except OSError:
            self.close()
            return
        if n < len(frame):
            self.out += frame[n:]
            self.loop.add_writer(self.fd, self._flush)

    def _flush(self) -> None:
        try:
            n = self.sock.send(self.out)
        except BlockingIOError:
            return
        except OSError:
            self.close()
            return
        del self.out[:n]
        if not self.out:
            self.loop.remove_writer(self.fd)

    def flush_blocking(self) -> None:
        """Before the shim exits: push out what is queued (replies to shutdown)."""
        if self.closed or not self.out:
            return
        try:
            self.sock.setblocking(True)
            self.sock.settimeout(1.0)
            self.sock.sendall(self.out)
        except OSError:
            pass
        self.out.clear()

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.loop.forget_fd(self.fd)
        self.sock.close()
        self.server.connections.discard(self)


class Listening:
    """A listener on the shim loop whose accepted sockets become ``connection_class``."""

    connection_class: type[Connection] = Connection

    def __init__(self, loop: Loop, listener: socket.socket) -> None:
        self.loop = loop
        self.listener = listener
        self.connections: set[Connection] = set()
        listener.setblocking(False)
        loop.add_reader(listener.fileno(), self._accept)

    def _accept(self) -> None:
        while True:
            try:
                sock, _ = self.listener.accept()
            except BlockingIOError:
                return
            except OSError as exc:
                self.loop.report("accept", exc)
                return
            self.connections.add(self.connection_class(self, sock))

    def close(self) -> None:
        self.loop.forget_fd(self.listener.fileno())
        self.listener.close()
        for conn in list(self.connections):
            conn.close()


class Server(Listening):
    """One container's socket: its ``Service`` behind a listener.

    ``on_stop`` runs once the service is done (after ``shutdown``): by default the whole
    loop stops (one shim process per container); a shim host serving several containers
    closes just this server instead (``pycontainerd.shim.main.Host``)."""

    def __init__(
        self,
        loop: Loop,
        listener: socket.socket,
        service: Service,
        on_stop: Callable[[Server], None] | None = None,
    ) -> None:
        super().__init__(loop, listener)
        self.service = service
        self.on_stop = on_stop
        self.stopped = False

    def dispatch(self, conn: Connection, msg: dict[str, Any]) -> None:
        req_id = msg.get("id")
        method = msg.get("method")
        params = msg.get("params") or {}
        if not isinstance(req_id, int) or not isinstance(method, str) or not isinstance(params, dict):
            conn.send(protocol.error(req_id if isinstance(req_id, int) else 0, "INVALID_ARGUMENT", "malformed request"))
            return
        if method == "subscribe":
            conn.send(protocol.reply(req_id, {}))
            self.service.subscribe(conn)
            return
        handler = self.service.methods.get(method)
        if handler is None:
            conn.send(protocol.error(req_id, "UNIMPLEMENTED", f"shim method {method!r} not implemented"))
            return
        task = self.loop.spawn(handler(params))

        def done(fut: Future[Any]) -> None:
            exc = fut.exception()
            if exc is None:
                conn.send(protocol.reply(req_id, fut.result()))
            else:
                kind = _as_kind(exc)
                if isinstance(kind, errdefs.Unknown) and not isinstance(exc, errdefs.ContainerdError):
                    self.loop.report(f"{method} failed", exc)
                conn.send(protocol.error(req_id, kind.code, str(kind)))
            if self.service.exiting:
                self.loop.call_soon(self.stop)

        task.add_done_callback(done)

    def stop(self) -> None:
        if self.stopped:
            return
        self.stopped = True
        for conn in list(self.connections):
            conn.flush_blocking()
        if self.on_stop is None:
            self.loop.stop()
        else:
            self.on_stop(self)


def _as_kind(exc: BaseException) -> errdefs.ContainerdError:
    if isinstance(exc, errdefs.ContainerdError):
        return exc
    if isinstance(exc, OSError):
        return errdefs.from_oserror(exc, "shim")
    return errdefs.Unknown(f"{type(exc).__name__}: {exc}")


def bind_listener(path: str) -> socket.socket:
    """Bind the shim socket at ``path`` (mode 0600, in a 0700 directory: only the daemon
    talks to shims); a stale socket file is replaced, a live one (another shim answering
    there) is AlreadyExists."""
    fsmodes.private_dir(os.path.dirname(path), chmod=False)
    if os.path.exists(path):
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            probe.connect(path)
        except OSError:
            os.unlink(path)
        else:
            raise errdefs.AlreadyExists(f"a shim is already listening on {path}")
        finally:
            probe.close()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        old = os.umask(0o177)
        try:
            sock.bind(path)
        finally:
            os.umask(old)
        os.chmod(path, 0o600)
        sock.listen(64)
    except BaseException:
        sock.close()
        raise
    return sock
