"""Quick calls that must not pay for importing grpc: reachability probes and tiny unary calls.

``probe(address)`` connects to the daemon's unix socket once and says at once, in words, why
it cannot (no such socket, connection refused, permission denied), instead of letting a
gRPC channel retry until its deadline.

``unary(address, path, request)`` makes one or more unary gRPC calls over a single plain
HTTP/2 connection written by hand (prior knowledge, no TLS): the preface, a SETTINGS frame, a
HEADERS frame per call (``http2.hpack.encode_block``: static-table indexes or literals, never
Huffman-coded, no encoder state)
and a DATA frame with the length-prefixed message.  It reads frames until every stream ended
and returns each call's message bytes, or ``None`` for a call that ended without one (an
error status): the caller then asks again through the full client, which decodes the status.
It exists for ``pyctr version`` and similar one-shot commands, where importing grpc and
starting its event engine costs far more than the call itself.  Nothing here imports grpc.
"""

from __future__ import annotations

# the C module: socket.py turns every constant into an enum on import, which costs more than
# the whole `pyctr version` conversation
import _socket
import errno
import struct
from collections.abc import Sequence
from typing import TYPE_CHECKING

from .. import errdefs
from ..http2.frames import (
    ACK,
    DATA,
    END_HEADERS,
    END_STREAM,
    GOAWAY,
    HEADERS,
    PADDED,
    PING,
    PREFACE,
    RST_STREAM,
    SETTINGS,
)
from ..http2.frames import frame as _frame
from ..http2.hpack import encode_block

if TYPE_CHECKING:
    from socket import socket

START_HINT = ("start it (`pycontainerd &` as root, or `systemctl start pycontainerd`), "
              "or point pyctr at its socket with -a or CONTAINERD_ADDRESS")


class DaemonUnreachable(errdefs.Unavailable):
    """Nothing answers at the address: no socket, connection refused, no permission, timed out."""


def unix_path(address: str) -> str | None:
    """The socket path of a unix address (``/path``, ``unix:///path``, ``unix:/path``), else None."""
    if address.startswith("unix://"):
        return address[len("unix://"):]
    if address.startswith("unix:"):
        return address[len("unix:"):]
    if "://" in address or address.startswith(("dns:", "ipv4:", "ipv6:")):
        return None
    return address


_REASONS = {
    errno.ENOENT: "no such socket (the daemon is not running, or listens elsewhere)",
    errno.ECONNREFUSED: "connection refused (the daemon is not running)",
    errno.EACCES: "permission denied (run as root)",
    errno.EPERM: "permission denied (run as root)",
    errno.ENOTSOCK: "not a socket",
    errno.ENOTDIR: "no such socket (a parent is not a directory)",
}


def connect(address: str, timeout: float) -> socket:
    """A connected unix socket to the daemon, or DaemonUnreachable saying why not and what to do."""
    path = unix_path(address)
    if path is None:
        raise errdefs.InvalidArgument(f"address {address!r} is not a unix socket")
    sock: socket = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)  # type: ignore[assignment]
    sock.settimeout(timeout if timeout > 0 else None)
    try:
        sock.connect(path)
    except TimeoutError:
        sock.close()
        raise DaemonUnreachable(f"cannot reach the daemon at {address}: no answer in {timeout:g}s "
                                "(is it stuck? raise --connect-timeout)") from None
    except OSError as exc:
        sock.close()
        reason = _REASONS.get(exc.errno or 0, exc.strerror or str(exc))
        raise DaemonUnreachable(f"cannot reach the daemon at {address}: {reason}; {START_HINT}") from None
    return sock


def probe(address: str, timeout: float = 2.0) -> None:
    """Fail at once, in words, when nothing listens on a unix address (other addresses pass)."""
    if unix_path(address) is None:
        return
    connect(address, timeout).close()


# -- HTTP/2 + HPACK, the little a unary call needs --------------------------------------------------
def _recv_exact(sock: socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("the daemon closed the connection")
        buf += chunk
    return bytes(buf)


def unary(address: str, calls: Sequence[tuple[str, bytes]], *, namespace: str = "default",
          timeout: float = 10.0) -> list[bytes | None]:
    """Make unary calls ``(path, request bytes)`` on one connection; each answer's bytes, or None.

    Raises DaemonUnreachable when the socket cannot be reached; ConnectionError/TimeoutError when
    the conversation breaks (the caller may retry through the full client).
    """
    sock = connect(address, timeout)
    try:
        out = bytearray(PREFACE + _frame(SETTINGS, 0, 0))
        streams: dict[int, bytearray] = {}
        for i, (path, request) in enumerate(calls):
            sid = 1 + 2 * i
            headers = encode_block((
                (":method", "POST"), (":scheme", "http"), (":path", path), (":authority", "localhost"),
                ("content-type", "application/grpc"), ("te", "trailers"), ("containerd-namespace", namespace)))
            out += _frame(HEADERS, END_HEADERS, sid, headers)
            out += _frame(DATA, END_STREAM, sid, b"\x00" + struct.pack(">I", len(request)) + request)
            streams[sid] = bytearray()
        sock.sendall(out)
        open_streams = set(streams)
        while open_streams:
            head = _recv_exact(sock, 9)
            length = int.from_bytes(head[:3], "big")
            ftype, flags = head[3], head[4]
            sid = int.from_bytes(head[5:9], "big") & 0x7FFFFFFF
            payload = _recv_exact(sock, length) if length else b""
            if ftype == SETTINGS and not flags & ACK:
                sock.sendall(_frame(SETTINGS, ACK, 0))
            elif ftype == PING and not flags & ACK:
                sock.sendall(_frame(PING, ACK, 0, payload))
            elif ftype == GOAWAY:
                raise ConnectionError("the daemon sent GOAWAY")
            elif ftype == RST_STREAM and sid in open_streams:
                open_streams.discard(sid)
                streams[sid].clear()
            elif ftype == DATA and sid in streams:
                if flags & PADDED and payload:
                    payload = payload[1:len(payload) - payload[0]]
                streams[sid] += payload
            if ftype in (DATA, HEADERS) and flags & END_STREAM:
                open_streams.discard(sid)
        results: list[bytes | None] = []
        for sid in sorted(streams):
            body = bytes(streams[sid])
            if len(body) >= 5 and body[0] == 0 and int.from_bytes(body[1:5], "big") == len(body) - 5:
                results.append(body[5:])
            else:
                results.append(None)
        return results
    finally:
        sock.close()


def proto_fields(data: bytes) -> dict[int, list[bytes | int]]:
    """Top-level fields of a protobuf message: number → values (bytes for length-delimited)."""
    fields: dict[int, list[bytes | int]] = {}
    i = 0

    def varint() -> int:
        nonlocal i
        shift = result = 0
        while True:
            b = data[i]
            i += 1
            result |= (b & 0x7F) << shift
            if not b & 0x80:
                return result
            shift += 7

    while i < len(data):
        key = varint()
        num, wire = key >> 3, key & 7
        value: bytes | int
        if wire == 0:
            value = varint()
        elif wire == 1:
            value, i = data[i:i + 8], i + 8
        elif wire == 2:
            n = varint()
            value, i = data[i:i + n], i + n
        elif wire == 5:
            value, i = data[i:i + 4], i + 4
        else:
            raise ValueError(f"unsupported protobuf wire type {wire}")
        fields.setdefault(num, []).append(value)
    return fields


def proto_string(fields: dict[int, list[bytes | int]], num: int) -> str:
    values = fields.get(num) or [b""]
    v = values[-1]
    return v.decode(errors="replace") if isinstance(v, bytes) else str(v)


VERSION_PATH = "/containerd.services.version.v1.Version/Version"
SERVER_PATH = "/containerd.services.introspection.v1.Introspection/Server"


def version_and_uuid(address: str, namespace: str = "default", timeout: float = 10.0
                     ) -> tuple[str, str, str] | None:
    """(version, revision, uuid) in one connection, or None when the daemon answered with an error."""
    answers = unary(address, [(VERSION_PATH, b""), (SERVER_PATH, b"")], namespace=namespace, timeout=timeout)
    if answers[0] is None:
        return None
    v = proto_fields(answers[0])
    uuid = proto_string(proto_fields(answers[1]), 1) if answers[1] is not None else ""
    return proto_string(v, 1), proto_string(v, 2), uuid
