"""The daemon <-> shim wire protocol, without any I/O (sans-IO, like h11).

Transport: a unix *stream* socket bound to a filesystem path (mode 0600) under the daemon's
state directory — never an abstract socket (CVE-2020-15257: abstract sockets are reachable
from any container sharing the host network namespace).

Framing: every message is a frame ``4-byte big-endian length || UTF-8 JSON object``.  Frames
larger than ``MAX_FRAME`` are a protocol error (the connection is dropped).

Messages::

    request   {"id": <int>, "method": <str>, "params": {...}}          client -> shim
    reply     {"id": <int>, "result": <any>}                            shim -> client
    error     {"id": <int>, "error": {"code": "NOT_FOUND", "message": "..."}}
    event     {"event": {"topic": "/tasks/exit", "payload": {...}}}     shim -> subscribed client

Replies may arrive out of order (a ``wait`` request stays pending while later requests are
answered); the client matches them by ``id``.  ``code`` is an errdefs kind name
(``pycontainerd.errdefs.KINDS``), so the client raises the same error kind the shim raised.

Methods (params -> result):

    create   {rootfs, stdin, stdout, stderr, terminal, options}   -> {"pid"}
             (options: ``CreateOptions.to_wire()``)
    start    {exec_id}                                             -> {"pid"}
    delete   {exec_id}                                             -> {"pid", "exit_status", "exited_at_ns"}
    exec     {exec_id, spec, stdin, stdout, stderr, terminal}      -> {}
    kill     {exec_id, signal, all}                                -> {}
    state    {exec_id}                                             -> ProcessState fields
    pids     {}                                                    -> {"processes": [{"pid", "exec_id"}]}
    pause / resume {}                                              -> {}
    resize_pty {exec_id, width, height}                            -> {}
    close_io {exec_id, stdin}                                      -> {}
    update   {resources}                                           -> {}
    stats    {}                                                    -> runc ``events --stats`` JSON
    wait     {exec_id}                                             -> {"pid", "exit_status", "exited_at_ns"}
    subscribe {}                                                   -> {}  (then events are pushed)
    connect  {}                                                    -> {"pid", "id", "namespace", "bundle"}
    shutdown {}                                                    -> {"exiting": bool}

Events pushed by the shim (payload fields are those of the ``containerd.events`` messages,
timestamps as RFC 3339 strings): ``/tasks/exit`` (TaskExit: container_id, id, pid,
exit_status, exited_at), ``/tasks/oom`` (TaskOOM: container_id), ``/tasks/exec-added``
(TaskExecAdded: container_id, exec_id), ``/tasks/exec-started`` (TaskExecStarted:
container_id, exec_id, pid), ``/tasks/paused`` and ``/tasks/resumed`` (container_id).
``/tasks/create``, ``/tasks/start`` and ``/tasks/delete`` are published by the daemon, which
holds the data they carry (bundle, rootfs, io); the shim never sends them.
"""

from __future__ import annotations

import json
import struct
from dataclasses import asdict, dataclass, fields
from typing import Any

from .. import errdefs

MAX_FRAME = 16 << 20
_HEADER = struct.Struct(">I")

# topics
TASK_EXIT = "/tasks/exit"
TASK_OOM = "/tasks/oom"
TASK_EXEC_ADDED = "/tasks/exec-added"
TASK_EXEC_STARTED = "/tasks/exec-started"
TASK_PAUSED = "/tasks/paused"
TASK_RESUMED = "/tasks/resumed"


class ProtocolError(Exception):
    """The peer sent something that is not a valid frame; drop the connection."""


def encode(message: dict[str, Any]) -> bytes:
    """One frame holding ``message``."""
    body = json.dumps(message, separators=(",", ":")).encode()
    if len(body) > MAX_FRAME:
        raise ProtocolError(f"frame of {len(body)} bytes exceeds the {MAX_FRAME} byte limit")
    return _HEADER.pack(len(body)) + body


def request(req_id: int, method: str, params: dict[str, Any]) -> bytes:
    return encode({"id": req_id, "method": method, "params": params})


def reply(req_id: int, result: Any) -> bytes:
    return encode({"id": req_id, "result": result})


def error(req_id: int, code: str, message: str) -> bytes:
    return encode({"id": req_id, "error": {"code": code, "message": message}})


def event(topic: str, payload: dict[str, Any]) -> bytes:
    return encode({"event": {"topic": topic, "payload": payload}})


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
        while len(buf) >= 4:
            (size,) = _HEADER.unpack_from(buf)
            if size > MAX_FRAME:
                raise ProtocolError(f"frame of {size} bytes exceeds the {MAX_FRAME} byte limit")
            if len(buf) < 4 + size:
                break
            body = bytes(buf[4 : 4 + size])
            del buf[: 4 + size]
            try:
                msg = json.loads(body)
            except ValueError as exc:
                raise ProtocolError(f"frame is not JSON: {exc}") from exc
            if not isinstance(msg, dict):
                raise ProtocolError("frame is not a JSON object")
            out.append(msg)
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
