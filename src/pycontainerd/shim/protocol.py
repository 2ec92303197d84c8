"""What the shim's parts share, without any I/O: the event topics, ``CreateOptions``, and the
framing of the daemon <-> fork server control channel (``shim.main`` launcher,
``runtime.shim_client.ShimLauncher``).  The shim API itself is containerd's task.v2 over
ttrpc (``taskv2``, ``ttrpc_loop``).

Control channel: a socketpair between the daemon and its fork server.  Every message is a
frame ``4-byte big-endian length || UTF-8 JSON object``; frames larger than ``MAX_FRAME`` are
a protocol error::

    request   {"id": <int>, "method": "start_v2", "params": {...}}     daemon -> launcher
    reply     {"id": <int>, "result": {"address", "pid", "forked"}}     launcher -> daemon
    error     {"id": <int>, "error": {"code": "NOT_FOUND", "message": "..."}}

``code`` is an errdefs kind name (``pycontainerd.errdefs.KINDS``), so the daemon raises the
kind the launcher raised.

``Service`` methods (params -> result, what ``taskv2`` calls): create {rootfs, stdin, stdout,
stderr, terminal, options (``CreateOptions.to_wire()``)} -> {"pid"}; start/delete/state/wait
{exec_id}; exec; kill; pids; pause/resume; resize_pty; close_io; update; stats; connect;
shutdown.  Events (payload fields are those of the ``containerd.events`` messages, timestamps
as RFC 3339 strings): ``/tasks/exit``, ``/tasks/oom``, ``/tasks/exec-added``,
``/tasks/exec-started``, ``/tasks/paused``, ``/tasks/resumed``.
"""

from __future__ import annotations

import json
import struct
from dataclasses import asdict, dataclass, fields
from typing import Any

from .. import errdefs

MAX_FRAME = 16 << 20
_HEADER = struct.Struct(">I")
HEADER_SIZE = _HEADER.size

# topics
TASK_EXIT = "/tasks/exit"
TASK_OOM = "/tasks/oom"
TASK_EXEC_ADDED = "/tasks/exec-added"
TASK_EXEC_STARTED = "/tasks/exec-started"
TASK_PAUSED = "/tasks/paused"
TASK_RESUMED = "/tasks/resumed"


class ProtocolError(Exception):
    """The peer sent something that is not a valid frame; drop the connection."""


_ENCODER = json.JSONEncoder(separators=(",", ":"))  # json.dumps would make one per call


def encode(message: dict[str, Any]) -> bytes:
    """One frame holding ``message``."""
    body = _ENCODER.encode(message).encode()
    if len(body) > MAX_FRAME:
        raise ProtocolError(f"frame of {len(body)} bytes exceeds the {MAX_FRAME} byte limit")
    return _HEADER.pack(len(body)) + body


def request(req_id: int, method: str, params: dict[str, Any]) -> bytes:
    return encode({"id": req_id, "method": method, "params": params})


def reply(req_id: int, result: Any) -> bytes:
    return encode({"id": req_id, "result": result})


def error(req_id: int, code: str, message: str) -> bytes:
    return encode({"id": req_id, "error": {"code": code, "message": message}})


def frame_size(header: bytes) -> int:
    """The body length a frame's ``HEADER_SIZE``-byte header announces."""
    (size,) = _HEADER.unpack(header)
    if size > MAX_FRAME:
        raise ProtocolError(f"frame of {size} bytes exceeds the {MAX_FRAME} byte limit")
    return int(size)


def decode_body(body: bytes) -> dict[str, Any]:
    """The message a frame's body holds."""
    try:
        msg = json.loads(body)
    except ValueError as exc:
        raise ProtocolError(f"frame is not JSON: {exc}") from exc
    if not isinstance(msg, dict):
        raise ProtocolError("frame is not a JSON object")
    return msg


class Decoder:
    """Accumulates bytes and returns the complete messages they finish.

    ``feed(frame[:3])`` returns ``[]``; ``feed(frame[3:])`` then returns ``[message]``.
    """

    __slots__ = ("_buf",)

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[dict[str, Any]]:
        self._buf += data
        out: list[dict[str, Any]] = []
        buf = self._buf
        while len(buf) >= HEADER_SIZE:
            size = frame_size(bytes(buf[:HEADER_SIZE]))
            if len(buf) < HEADER_SIZE + size:
                break
            body = bytes(buf[HEADER_SIZE : HEADER_SIZE + size])
            del buf[: HEADER_SIZE + size]
            out.append(decode_body(body))
        return out

    @property
    def pending(self) -> int:
        """Bytes buffered that do not yet form a whole frame."""
        return len(self._buf)




@dataclass(frozen=True)
class CreateOptions:
    """``create``'s ``options``: the runc options (``containerd.runc.v1.Options``) the shim honours.

    ``io_uid``/``io_gid``: owner of the pipes handed to the container as stdio (0 leaves them
    root's); the runc binary and cgroup driver are the ones the shim was launched with
    unless set here.
    """

    binary_name: str = ""
    systemd_cgroup: bool = False
    no_pivot_root: bool = False  # runc create --no-pivot
    no_new_keyring: bool = False  # runc create --no-new-keyring
    io_uid: int = 0
    io_gid: int = 0

    def to_wire(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_wire(cls, raw: Any) -> CreateOptions:
        """Decode the wire form; a value of the wrong type is a protocol error."""
        if raw is None:
            return cls()
        if not isinstance(raw, dict):
            raise errdefs.InvalidArgument(f"create options: expected an object, got {type(raw).__name__}")
        kwargs: dict[str, Any] = {}
        for f in fields(cls):
            if f.name not in raw:
                continue
            value = raw[f.name]
            want = type(f.default)
            if type(value) is not want:
                raise errdefs.InvalidArgument(f"create options: {f.name} must be {want.__name__}, got {value!r}")
            kwargs[f.name] = value
        return cls(**kwargs)
