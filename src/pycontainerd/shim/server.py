"""The shim's socket plumbing on its own loop: a listening socket (``Listening``), its
connections with buffered non-blocking writes (``Connection``; the protocol spoken on them is
a subclass's, ``ttrpc_loop.TtrpcConnection``), and ``bind_listener``.
"""

from __future__ import annotations

import os
import socket

from pycontainerd import errdefs, fsmodes
from pycontainerd.shim.loop import Loop


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
        """Bytes from the peer: what they mean is the subclass's protocol."""
        raise NotImplementedError

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
    parent = os.path.dirname(path)
    if not os.path.isdir(parent):  # there after the first shim: spare the pathlib walk
        fsmodes.private_dir(parent, chmod=False)
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
