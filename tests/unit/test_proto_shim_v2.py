"""Pin the wire facts of the runtime v2 shim API and the ttrpc envelope protos.

The tables were checked against the file descriptors compiled into Debian's
containerd 1.6.20 `containerd-shim-runc-v2`; `test_matches_shim_binary` repeats that check
whenever the binary is installed (Go protobuf registers each .proto as a gzipped
FileDescriptorProto in the binary).
"""

from __future__ import annotations

import zlib
from pathlib import Path

import pytest
from google.protobuf import descriptor_pb2
from google.protobuf.descriptor import FieldDescriptor

from pycontainerd.api.runtime.v2.task import shim_pb2
from pycontainerd.api.services.ttrpc.events.v1 import events_pb2 as ttrpc_events_pb2
from pycontainerd.api.ttrpc import request_pb2

T = FieldDescriptor
STR, BOOL, U32, I64, BYTES, MSG, ENUM = (
    T.TYPE_STRING,
    T.TYPE_BOOL,
    T.TYPE_UINT32,
    T.TYPE_INT64,
    T.TYPE_BYTES,
    T.TYPE_MESSAGE,
    T.TYPE_ENUM,
)
REP, MAP = "rep", "map"
TS, ANY, EMPTY = "google.protobuf.Timestamp", "google.protobuf.Any", "google.protobuf.Empty"
V2 = "containerd.task.v2."

TASK_METHODS = {
    "State": ("StateRequest", "StateResponse"),
    "Create": ("CreateTaskRequest", "CreateTaskResponse"),
    "Start": ("StartRequest", "StartResponse"),
    "Delete": ("DeleteRequest", "DeleteResponse"),
    "Pids": ("PidsRequest", "PidsResponse"),
    "Pause": ("PauseRequest", EMPTY),
    "Resume": ("ResumeRequest", EMPTY),
    "Checkpoint": ("CheckpointTaskRequest", EMPTY),
    "Kill": ("KillRequest", EMPTY),
    "Exec": ("ExecProcessRequest", EMPTY),
    "ResizePty": ("ResizePtyRequest", EMPTY),
    "CloseIO": ("CloseIORequest", EMPTY),
    "Update": ("UpdateTaskRequest", EMPTY),
    "Wait": ("WaitRequest", "WaitResponse"),
    "Stats": ("StatsRequest", "StatsResponse"),
    "Connect": ("ConnectRequest", "ConnectResponse"),
    "Shutdown": ("ShutdownRequest", EMPTY),
}


def _full(name: str) -> str:
    return name if name.startswith("google.") else V2 + name


def test_task_service() -> None:
    svc = shim_pb2.DESCRIPTOR.services_by_name["Task"]
    assert svc.full_name == "containerd.task.v2.Task"
    got = {m.name: (m.input_type.full_name, m.output_type.full_name) for m in svc.methods}
    assert list(got) == list(TASK_METHODS)  # declaration order, like upstream
    assert got == {k: (_full(i), _full(o)) for k, (i, o) in TASK_METHODS.items()}
    assert not any(m.client_streaming or m.server_streaming for m in svc.methods)


def test_events_forward_service() -> None:
    svc = ttrpc_events_pb2.DESCRIPTOR.services_by_name["Events"]
    assert svc.full_name == "containerd.services.events.ttrpc.v1.Events"
    assert [(m.name, m.input_type.full_name, m.output_type.full_name) for m in svc.methods] == [
        ("Forward", "containerd.services.events.ttrpc.v1.ForwardRequest", EMPTY)
    ]


def _shape(f: FieldDescriptor) -> tuple[object, ...]:
    if f.message_type is not None and f.message_type.GetOptions().map_entry:
        return (MAP,)
    ty: tuple[object, ...] = (f.type,)
    if f.message_type is not None:
        ty += (f.message_type.full_name,)
    elif f.enum_type is not None:
        ty += (f.enum_type.full_name,)
    if f.is_repeated:
        ty = (REP, *ty)
    return ty


ID_EXEC: dict[str, tuple[object, ...]] = {"id": (1, STR), "exec_id": (2, STR)}
FIELDS: dict[object, dict[str, tuple[object, ...]]] = {
    shim_pb2.CreateTaskRequest: {
        "id": (1, STR),
        "bundle": (2, STR),
        "rootfs": (3, REP, MSG, "containerd.types.Mount"),
        "terminal": (4, BOOL),
        "stdin": (5, STR),
        "stdout": (6, STR),
        "stderr": (7, STR),
        "checkpoint": (8, STR),
        "parent_checkpoint": (9, STR),
        "options": (10, MSG, ANY),
    },
    shim_pb2.CreateTaskResponse: {"pid": (1, U32)},
    shim_pb2.DeleteRequest: ID_EXEC,
    shim_pb2.DeleteResponse: {"pid": (1, U32), "exit_status": (2, U32), "exited_at": (3, MSG, TS)},
    shim_pb2.ExecProcessRequest: {
        **ID_EXEC,
        "terminal": (3, BOOL),
        "stdin": (4, STR),
        "stdout": (5, STR),
        "stderr": (6, STR),
        "spec": (7, MSG, ANY),
    },
    shim_pb2.ExecProcessResponse: {},
    shim_pb2.ResizePtyRequest: {**ID_EXEC, "width": (3, U32), "height": (4, U32)},
    shim_pb2.StateRequest: ID_EXEC,
    shim_pb2.StateResponse: {
        "id": (1, STR),
        "bundle": (2, STR),
        "pid": (3, U32),
        "status": (4, ENUM, "containerd.v1.types.Status"),
        "stdin": (5, STR),
        "stdout": (6, STR),
        "stderr": (7, STR),
        "terminal": (8, BOOL),
        "exit_status": (9, U32),
        "exited_at": (10, MSG, TS),
        "exec_id": (11, STR),
    },
    shim_pb2.KillRequest: {**ID_EXEC, "signal": (3, U32), "all": (4, BOOL)},
    shim_pb2.CloseIORequest: {**ID_EXEC, "stdin": (3, BOOL)},
    shim_pb2.PidsRequest: {"id": (1, STR)},
    shim_pb2.PidsResponse: {"processes": (1, REP, MSG, "containerd.v1.types.ProcessInfo")},
    shim_pb2.CheckpointTaskRequest: {"id": (1, STR), "path": (2, STR), "options": (3, MSG, ANY)},
    shim_pb2.UpdateTaskRequest: {"id": (1, STR), "resources": (2, MSG, ANY), "annotations": (3, MAP)},
    shim_pb2.StartRequest: ID_EXEC,
    shim_pb2.StartResponse: {"pid": (1, U32)},
    shim_pb2.WaitRequest: ID_EXEC,
    shim_pb2.WaitResponse: {"exit_status": (1, U32), "exited_at": (2, MSG, TS)},
    shim_pb2.StatsRequest: {"id": (1, STR)},
    shim_pb2.StatsResponse: {"stats": (1, MSG, ANY)},
    shim_pb2.ConnectRequest: {"id": (1, STR)},
    shim_pb2.ConnectResponse: {"shim_pid": (1, U32), "task_pid": (2, U32), "version": (3, STR)},
    shim_pb2.ShutdownRequest: {"id": (1, STR), "now": (2, BOOL)},
    shim_pb2.PauseRequest: {"id": (1, STR)},
    shim_pb2.ResumeRequest: {"id": (1, STR)},
    ttrpc_events_pb2.ForwardRequest: {"envelope": (1, MSG, "containerd.services.events.ttrpc.v1.Envelope")},
    # github.com/containerd/ttrpc request.proto
    request_pb2.Request: {
        "service": (1, STR),
        "method": (2, STR),
        "payload": (3, BYTES),
        "timeout_nano": (4, I64),
        "metadata": (5, REP, MSG, "ttrpc.KeyValue"),
    },
    request_pb2.Response: {"status": (1, MSG, "google.rpc.Status"), "payload": (2, BYTES)},
    request_pb2.StringList: {"list": (1, REP, STR)},
    request_pb2.KeyValue: {"key": (1, STR), "value": (2, STR)},
}


@pytest.mark.parametrize(
    ("msg", "fields"),
    list(FIELDS.items()),
    ids=[m.DESCRIPTOR.full_name for m in FIELDS],  # type: ignore[attr-defined]
)
def test_message_fields(msg: object, fields: dict[str, tuple[object, ...]]) -> None:
    desc = msg.DESCRIPTOR  # type: ignore[attr-defined]
    assert {f.name: (f.number, *_shape(f)) for f in desc.fields} == fields


def test_every_task_v2_message_is_pinned() -> None:
    pinned = {m.DESCRIPTOR.full_name for m in FIELDS}  # type: ignore[attr-defined]
    declared = {d.full_name for d in shim_pb2.DESCRIPTOR.message_types_by_name.values()}
    assert declared <= pinned


def test_full_names() -> None:
    # Any type URLs and ttrpc service names are built from these
    assert shim_pb2.CreateTaskRequest.DESCRIPTOR.full_name == "containerd.task.v2.CreateTaskRequest"
    assert request_pb2.Request.DESCRIPTOR.full_name == "ttrpc.Request"
    assert request_pb2.Response.DESCRIPTOR.full_name == "ttrpc.Response"


# --- cross-check against a real Go shim binary -------------------------------------------

SHIM_BINARY = Path("/usr/bin/containerd-shim-runc-v2")


def _go_descriptors(binary: Path) -> dict[str, descriptor_pb2.FileDescriptorProto]:
    """Every gzipped FileDescriptorProto embedded in a Go binary, by proto package."""
    data = binary.read_bytes()
    found: dict[str, descriptor_pb2.FileDescriptorProto] = {}
    at = data.find(b"\x1f\x8b\x08")
    while at >= 0:
        try:
            raw = zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(data[at : at + (1 << 20)])
            fd = descriptor_pb2.FileDescriptorProto.FromString(raw)
        except Exception:  # most gzip magic bytes in the binary start no descriptor
            fd = None
        if fd is not None and fd.name.endswith(".proto"):
            found[fd.package] = fd
        at = data.find(b"\x1f\x8b\x08", at + 3)
    return found


def _summary(fd: descriptor_pb2.FileDescriptorProto) -> dict[str, object]:
    out: dict[str, object] = {}
    for svc in fd.service:
        out["service " + svc.name] = [(m.name, m.input_type, m.output_type) for m in svc.method]

    def walk(prefix: str, msgs: object) -> None:
        for m in msgs:  # type: ignore[attr-defined]
            out[prefix + m.name] = sorted((f.number, f.name, f.label, f.type, f.type_name) for f in m.field)
            walk(prefix + m.name + ".", m.nested_type)

    walk("", fd.message_type)
    return out


@pytest.mark.skipif(not SHIM_BINARY.exists(), reason="containerd-shim-runc-v2 is not installed")
@pytest.mark.parametrize(
    ("package", "ours"),
    [
        ("containerd.task.v2", shim_pb2.DESCRIPTOR),
        ("containerd.services.events.ttrpc.v1", ttrpc_events_pb2.DESCRIPTOR),
    ],
)
def test_matches_shim_binary(package: str, ours: object) -> None:
    theirs = _go_descriptors(SHIM_BINARY)
    assert package in theirs
    mine = descriptor_pb2.FileDescriptorProto()
    ours.CopyToProto(mine)  # type: ignore[attr-defined]
    assert _summary(mine) == _summary(theirs[package])
