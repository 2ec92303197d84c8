"""Pin the wire-level facts of our containerd API protos.

The values below were checked against the descriptors compiled into containerd
1.6.20's `ctr`; a failure here means a proto edit changed something a real
containerd client depends on (package, service/method name, field number/type).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from google.protobuf.descriptor import FieldDescriptor

from pycontainerd.api.cgroups.v1 import metrics_pb2 as cg1_pb2
from pycontainerd.api.cgroups.v2 import metrics_pb2 as cg2_pb2
from pycontainerd.api.events import container_pb2 as ev_container_pb2
from pycontainerd.api.events import content_pb2 as ev_content_pb2
from pycontainerd.api.events import image_pb2 as ev_image_pb2
from pycontainerd.api.events import namespace_pb2 as ev_namespace_pb2
from pycontainerd.api.events import snapshot_pb2 as ev_snapshot_pb2
from pycontainerd.api.events import task_pb2 as ev_task_pb2
from pycontainerd.api.runtime.v2.runc.options import oci_pb2
from pycontainerd.api.services.containers.v1 import containers_pb2, containers_pb2_grpc
from pycontainerd.api.services.content.v1 import content_pb2, content_pb2_grpc
from pycontainerd.api.services.diff.v1 import diff_pb2, diff_pb2_grpc
from pycontainerd.api.services.events.v1 import events_pb2, events_pb2_grpc
from pycontainerd.api.services.images.v1 import images_pb2, images_pb2_grpc
from pycontainerd.api.services.introspection.v1 import introspection_pb2, introspection_pb2_grpc
from pycontainerd.api.services.leases.v1 import leases_pb2, leases_pb2_grpc
from pycontainerd.api.services.namespaces.v1 import namespaces_pb2, namespaces_pb2_grpc
from pycontainerd.api.services.snapshots.v1 import snapshots_pb2, snapshots_pb2_grpc
from pycontainerd.api.services.tasks.v1 import tasks_pb2, tasks_pb2_grpc
from pycontainerd.api.services.ttrpc.events.v1 import events_pb2 as ttrpc_events_pb2
from pycontainerd.api.services.version.v1 import version_pb2, version_pb2_grpc
from pycontainerd.api.types import descriptor_pb2, mount_pb2, platform_pb2
from pycontainerd.api.types.task import task_pb2

ROOT = Path(__file__).resolve().parents[2]

# grpc modules are imported so that a broken *_pb2_grpc fails collection
_GRPC_MODULES = (
    containers_pb2_grpc,
    content_pb2_grpc,
    diff_pb2_grpc,
    events_pb2_grpc,
    images_pb2_grpc,
    introspection_pb2_grpc,
    leases_pb2_grpc,
    namespaces_pb2_grpc,
    snapshots_pb2_grpc,
    tasks_pb2_grpc,
    version_pb2_grpc,
)

# method name -> (input full name, output full name, client streaming, server streaming)
# "*" prefix = server-stream, "**" = bidi
EMPTY = "google.protobuf.Empty"
SERVICES: dict[tuple[object, str], list[str]] = {
    (containers_pb2, "containerd.services.containers.v1.Containers"): [
        "Get",
        "List",
        "*ListStream",
        "Create",
        "Update",
        "Delete",
    ],
    (content_pb2, "containerd.services.content.v1.Content"): [
        "Info",
        "Update",
        "*List",
        "Delete",
        "*Read",
        "Status",
        "ListStatuses",
        "**Write",
        "Abort",
    ],
    (diff_pb2, "containerd.services.diff.v1.Diff"): ["Apply", "Diff"],
    (events_pb2, "containerd.services.events.v1.Events"): ["Publish", "Forward", "*Subscribe"],
    (images_pb2, "containerd.services.images.v1.Images"): ["Get", "List", "Create", "Update", "Delete"],
    (introspection_pb2, "containerd.services.introspection.v1.Introspection"): [
        "Plugins",
        "Server",
        "PluginInfo",
    ],
    (leases_pb2, "containerd.services.leases.v1.Leases"): [
        "Create",
        "Delete",
        "List",
        "AddResource",
        "DeleteResource",
        "ListResources",
    ],
    (namespaces_pb2, "containerd.services.namespaces.v1.Namespaces"): [
        "Get",
        "List",
        "Create",
        "Update",
        "Delete",
    ],
    (snapshots_pb2, "containerd.services.snapshots.v1.Snapshots"): [
        "Prepare",
        "View",
        "Mounts",
        "Commit",
        "Remove",
        "Stat",
        "Update",
        "*List",
        "Usage",
        "Cleanup",
    ],
    (tasks_pb2, "containerd.services.tasks.v1.Tasks"): [
        "Create",
        "Start",
        "Delete",
        "DeleteProcess",
        "Get",
        "List",
        "Kill",
        "Exec",
        "ResizePty",
        "CloseIO",
        "Pause",
        "Resume",
        "ListPids",
        "Checkpoint",
        "Update",
        "Metrics",
        "Wait",
    ],
    (version_pb2, "containerd.services.version.v1.Version"): ["Version"],
}


@pytest.mark.parametrize(("key", "methods"), list(SERVICES.items()), ids=[k[1] for k in SERVICES])
def test_service_names_and_methods(key: tuple[object, str], methods: list[str]) -> None:
    module, full_name = key
    short = full_name.rsplit(".", 1)[1]
    svc = module.DESCRIPTOR.services_by_name[short]  # type: ignore[attr-defined]
    assert svc.full_name == full_name
    got = []
    for m in svc.methods:
        prefix = "**" if m.client_streaming and m.server_streaming else "*" if m.server_streaming else ""
        assert not (m.client_streaming and not m.server_streaming)
        got.append(prefix + m.name)
    assert got == methods


# (service, method) -> (input, output) full names, for the rpcs whose types are easy to get wrong
METHOD_TYPES = {
    (tasks_pb2, "Tasks", "Delete"): (
        "containerd.services.tasks.v1.DeleteTaskRequest",
        "containerd.services.tasks.v1.DeleteResponse",
    ),
    (tasks_pb2, "Tasks", "DeleteProcess"): (
        "containerd.services.tasks.v1.DeleteProcessRequest",
        "containerd.services.tasks.v1.DeleteResponse",
    ),
    (tasks_pb2, "Tasks", "Exec"): ("containerd.services.tasks.v1.ExecProcessRequest", EMPTY),
    (tasks_pb2, "Tasks", "Kill"): ("containerd.services.tasks.v1.KillRequest", EMPTY),
    (tasks_pb2, "Tasks", "Update"): ("containerd.services.tasks.v1.UpdateTaskRequest", EMPTY),
    (containers_pb2, "Containers", "ListStream"): (
        "containerd.services.containers.v1.ListContainersRequest",
        "containerd.services.containers.v1.ListContainerMessage",
    ),
    (containers_pb2, "Containers", "Delete"): (
        "containerd.services.containers.v1.DeleteContainerRequest",
        EMPTY,
    ),
    (content_pb2, "Content", "Write"): (
        "containerd.services.content.v1.WriteContentRequest",
        "containerd.services.content.v1.WriteContentResponse",
    ),
    (snapshots_pb2, "Snapshots", "Commit"): ("containerd.services.snapshots.v1.CommitSnapshotRequest", EMPTY),
    (events_pb2, "Events", "Subscribe"): (
        "containerd.services.events.v1.SubscribeRequest",
        "containerd.services.events.v1.Envelope",
    ),
    (introspection_pb2, "Introspection", "Server"): (
        EMPTY,
        "containerd.services.introspection.v1.ServerResponse",
    ),
    (version_pb2, "Version", "Version"): (EMPTY, "containerd.services.version.v1.VersionResponse"),
    (leases_pb2, "Leases", "Delete"): ("containerd.services.leases.v1.DeleteRequest", EMPTY),
    (images_pb2, "Images", "Delete"): ("containerd.services.images.v1.DeleteImageRequest", EMPTY),
    (namespaces_pb2, "Namespaces", "Delete"): (
        "containerd.services.namespaces.v1.DeleteNamespaceRequest",
        EMPTY,
    ),
}


@pytest.mark.parametrize(
    ("key", "types"), list(METHOD_TYPES.items()), ids=[f"{k[1]}.{k[2]}" for k in METHOD_TYPES]
)
def test_method_types(key: tuple[object, str, str], types: tuple[str, str]) -> None:
    module, svc, method = key
    m = module.DESCRIPTOR.services_by_name[svc].methods_by_name[method]  # type: ignore[attr-defined]
    assert (m.input_type.full_name, m.output_type.full_name) == types


T = FieldDescriptor
STR, BOOL, U32, U64, I64, BYTES, MSG, ENUM = (
    T.TYPE_STRING,
    T.TYPE_BOOL,
    T.TYPE_UINT32,
    T.TYPE_UINT64,
    T.TYPE_INT64,
    T.TYPE_BYTES,
    T.TYPE_MESSAGE,
    T.TYPE_ENUM,
)
MAP = "map"  # repeated map-entry message
REP = "rep"  # marker: repeated


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


TS = "google.protobuf.Timestamp"
ANY = "google.protobuf.Any"
MOUNT = "containerd.types.Mount"
DESC = "containerd.types.Descriptor"

# message -> {field name: (number, *shape)}
FIELDS: dict[object, dict[str, tuple[object, ...]]] = {
    mount_pb2.Mount: {"type": (1, STR), "source": (2, STR), "target": (3, STR), "options": (4, REP, STR)},
    descriptor_pb2.Descriptor: {
        "media_type": (1, STR),
        "digest": (2, STR),
        "size": (3, I64),
        "annotations": (5, MAP),
    },
    platform_pb2.Platform: {"os": (1, STR), "architecture": (2, STR), "variant": (3, STR)},
    task_pb2.Process: {
        "container_id": (1, STR),
        "id": (2, STR),
        "pid": (3, U32),
        "status": (4, ENUM, "containerd.v1.types.Status"),
        "stdin": (5, STR),
        "stdout": (6, STR),
        "stderr": (7, STR),
        "terminal": (8, BOOL),
        "exit_status": (9, U32),
        "exited_at": (10, MSG, TS),
    },
    task_pb2.ProcessInfo: {"pid": (1, U32), "info": (2, MSG, ANY)},
    containers_pb2.Container: {
        "id": (1, STR),
        "labels": (2, MAP),
        "image": (3, STR),
        "runtime": (4, MSG, "containerd.services.containers.v1.Container.Runtime"),
        "spec": (5, MSG, ANY),
        "snapshotter": (6, STR),
        "snapshot_key": (7, STR),
        "created_at": (8, MSG, TS),
        "updated_at": (9, MSG, TS),
        "extensions": (10, MAP),
        "sandbox": (11, STR),
    },
    containers_pb2.Container.Runtime: {"name": (1, STR), "options": (2, MSG, ANY)},
    containers_pb2.UpdateContainerRequest: {
        "container": (1, MSG, "containerd.services.containers.v1.Container"),
        "update_mask": (2, MSG, "google.protobuf.FieldMask"),
    },
    images_pb2.Image: {
        "name": (1, STR),
        "labels": (2, MAP),
        "target": (3, MSG, DESC),
        "created_at": (7, MSG, TS),
        "updated_at": (8, MSG, TS),
    },
    images_pb2.DeleteImageRequest: {"name": (1, STR), "sync": (2, BOOL)},
    content_pb2.Info: {
        "digest": (1, STR),
        "size": (2, I64),
        "created_at": (3, MSG, TS),
        "updated_at": (4, MSG, TS),
        "labels": (5, MAP),
    },
    content_pb2.ReadContentRequest: {"digest": (1, STR), "offset": (2, I64), "size": (3, I64)},
    content_pb2.ReadContentResponse: {"offset": (1, I64), "data": (2, BYTES)},
    content_pb2.Status: {
        "started_at": (1, MSG, TS),
        "updated_at": (2, MSG, TS),
        "ref": (3, STR),
        "offset": (4, I64),
        "total": (5, I64),
        "expected": (6, STR),
    },
    content_pb2.WriteContentRequest: {
        "action": (1, ENUM, "containerd.services.content.v1.WriteAction"),
        "ref": (2, STR),
        "total": (3, I64),
        "expected": (4, STR),
        "offset": (5, I64),
        "data": (6, BYTES),
        "labels": (7, MAP),
    },
    content_pb2.WriteContentResponse: {
        "action": (1, ENUM, "containerd.services.content.v1.WriteAction"),
        "started_at": (2, MSG, TS),
        "updated_at": (3, MSG, TS),
        "offset": (4, I64),
        "total": (5, I64),
        "digest": (6, STR),
    },
    diff_pb2.ApplyRequest: {"diff": (1, MSG, DESC), "mounts": (2, REP, MSG, MOUNT), "payloads": (3, MAP)},
    diff_pb2.ApplyResponse: {"applied": (1, MSG, DESC)},
    diff_pb2.DiffResponse: {"diff": (3, MSG, DESC)},
    events_pb2.Envelope: {
        "timestamp": (1, MSG, TS),
        "namespace": (2, STR),
        "topic": (3, STR),
        "event": (4, MSG, ANY),
    },
    events_pb2.PublishRequest: {"topic": (1, STR), "event": (2, MSG, ANY)},
    ttrpc_events_pb2.Envelope: {
        "timestamp": (1, MSG, TS),
        "namespace": (2, STR),
        "topic": (3, STR),
        "event": (4, MSG, ANY),
    },
    introspection_pb2.Plugin: {
        "type": (1, STR),
        "id": (2, STR),
        "requires": (3, REP, STR),
        "platforms": (4, REP, MSG, "containerd.types.Platform"),
        "exports": (5, MAP),
        "capabilities": (6, REP, STR),
        "init_err": (7, MSG, "google.rpc.Status"),
    },
    introspection_pb2.ServerResponse: {
        "uuid": (1, STR),
        "pid": (2, U64),
        "pidns": (3, U64),
        "deprecations": (4, REP, MSG, "containerd.services.introspection.v1.DeprecationWarning"),
    },
    introspection_pb2.DeprecationWarning: {
        "id": (1, STR),
        "message": (2, STR),
        "last_occurrence": (3, MSG, TS),
    },
    leases_pb2.Lease: {"id": (1, STR), "created_at": (2, MSG, TS), "labels": (3, MAP)},
    leases_pb2.CreateRequest: {"id": (1, STR), "labels": (3, MAP)},
    leases_pb2.DeleteRequest: {"id": (1, STR), "sync": (2, BOOL)},
    leases_pb2.Resource: {"id": (1, STR), "type": (2, STR)},
    namespaces_pb2.Namespace: {"name": (1, STR), "labels": (2, MAP)},
    namespaces_pb2.ListNamespacesRequest: {"filter": (1, STR)},
    snapshots_pb2.PrepareSnapshotRequest: {
        "snapshotter": (1, STR),
        "key": (2, STR),
        "parent": (3, STR),
        "labels": (4, MAP),
    },
    snapshots_pb2.CommitSnapshotRequest: {
        "snapshotter": (1, STR),
        "name": (2, STR),
        "key": (3, STR),
        "labels": (4, MAP),
    },
    snapshots_pb2.Info: {
        "name": (1, STR),
        "parent": (2, STR),
        "kind": (3, ENUM, "containerd.services.snapshots.v1.Kind"),
        "created_at": (4, MSG, TS),
        "updated_at": (5, MSG, TS),
        "labels": (6, MAP),
    },
    snapshots_pb2.UpdateSnapshotRequest: {
        "snapshotter": (1, STR),
        "info": (2, MSG, "containerd.services.snapshots.v1.Info"),
        "update_mask": (3, MSG, "google.protobuf.FieldMask"),
    },
    snapshots_pb2.ListSnapshotsRequest: {"snapshotter": (1, STR), "filters": (2, REP, STR)},
    snapshots_pb2.UsageResponse: {"size": (1, I64), "inodes": (2, I64)},
    tasks_pb2.CreateTaskRequest: {
        "container_id": (1, STR),
        "rootfs": (3, REP, MSG, MOUNT),
        "stdin": (4, STR),
        "stdout": (5, STR),
        "stderr": (6, STR),
        "terminal": (7, BOOL),
        "checkpoint": (8, MSG, DESC),
        "options": (9, MSG, ANY),
        "runtime_path": (10, STR),
    },
    tasks_pb2.CreateTaskResponse: {"container_id": (1, STR), "pid": (2, U32)},
    tasks_pb2.DeleteResponse: {
        "id": (1, STR),
        "pid": (2, U32),
        "exit_status": (3, U32),
        "exited_at": (4, MSG, TS),
    },
    tasks_pb2.KillRequest: {
        "container_id": (1, STR),
        "exec_id": (2, STR),
        "signal": (3, U32),
        "all": (4, BOOL),
    },
    tasks_pb2.ExecProcessRequest: {
        "container_id": (1, STR),
        "stdin": (2, STR),
        "stdout": (3, STR),
        "stderr": (4, STR),
        "terminal": (5, BOOL),
        "spec": (6, MSG, ANY),
        "exec_id": (7, STR),
    },
    tasks_pb2.ResizePtyRequest: {
        "container_id": (1, STR),
        "exec_id": (2, STR),
        "width": (3, U32),
        "height": (4, U32),
    },
    tasks_pb2.CloseIORequest: {"container_id": (1, STR), "exec_id": (2, STR), "stdin": (3, BOOL)},
    tasks_pb2.ListTasksRequest: {"filter": (1, STR)},
    tasks_pb2.WaitResponse: {"exit_status": (1, U32), "exited_at": (2, MSG, TS)},
    tasks_pb2.MetricsResponse: {"metrics": (1, REP, MSG, "containerd.types.Metric")},
    version_pb2.VersionResponse: {"version": (1, STR), "revision": (2, STR)},
    ev_task_pb2.TaskCreate: {
        "container_id": (1, STR),
        "bundle": (2, STR),
        "rootfs": (3, REP, MSG, MOUNT),
        "io": (4, MSG, "containerd.events.TaskIO"),
        "checkpoint": (5, STR),
        "pid": (6, U32),
    },
    ev_task_pb2.TaskExit: {
        "container_id": (1, STR),
        "id": (2, STR),
        "pid": (3, U32),
        "exit_status": (4, U32),
        "exited_at": (5, MSG, TS),
    },
    ev_task_pb2.TaskDelete: {
        "container_id": (1, STR),
        "pid": (2, U32),
        "exit_status": (3, U32),
        "exited_at": (4, MSG, TS),
        "id": (5, STR),
    },
    ev_task_pb2.TaskExecStarted: {"container_id": (1, STR), "exec_id": (2, STR), "pid": (3, U32)},
    ev_container_pb2.ContainerCreate: {
        "id": (1, STR),
        "image": (2, STR),
        "runtime": (3, MSG, "containerd.events.ContainerCreate.Runtime"),
    },
    ev_container_pb2.ContainerUpdate: {
        "id": (1, STR),
        "image": (2, STR),
        "labels": (3, MAP),
        "snapshot_key": (4, STR),
    },
    ev_snapshot_pb2.SnapshotCommit: {"key": (1, STR), "name": (2, STR)},
    oci_pb2.Options: {
        "no_pivot_root": (1, BOOL),
        "no_new_keyring": (2, BOOL),
        "shim_cgroup": (3, STR),
        "io_uid": (4, U32),
        "io_gid": (5, U32),
        "binary_name": (6, STR),
        "root": (7, STR),
        "criu_path": (8, STR),
        "systemd_cgroup": (9, BOOL),
        "criu_image_path": (10, STR),
        "criu_work_path": (11, STR),
    },
    cg1_pb2.Metrics: {
        "hugetlb": (1, REP, MSG, "io.containerd.cgroups.v1.HugetlbStat"),
        "pids": (2, MSG, "io.containerd.cgroups.v1.PidsStat"),
        "cpu": (3, MSG, "io.containerd.cgroups.v1.CPUStat"),
        "memory": (4, MSG, "io.containerd.cgroups.v1.MemoryStat"),
        "blkio": (5, MSG, "io.containerd.cgroups.v1.BlkIOStat"),
        "rdma": (6, MSG, "io.containerd.cgroups.v1.RdmaStat"),
        "network": (7, REP, MSG, "io.containerd.cgroups.v1.NetworkStat"),
        "cgroup_stats": (8, MSG, "io.containerd.cgroups.v1.CgroupStats"),
        "memory_oom_control": (9, MSG, "io.containerd.cgroups.v1.MemoryOomControl"),
    },
    cg2_pb2.Metrics: {
        "pids": (1, MSG, "io.containerd.cgroups.v2.PidsStat"),
        "cpu": (2, MSG, "io.containerd.cgroups.v2.CPUStat"),
        "memory": (4, MSG, "io.containerd.cgroups.v2.MemoryStat"),
        "rdma": (5, MSG, "io.containerd.cgroups.v2.RdmaStat"),
        "io": (6, MSG, "io.containerd.cgroups.v2.IOStat"),
        "hugetlb": (7, REP, MSG, "io.containerd.cgroups.v2.HugeTlbStat"),
        "memory_events": (8, MSG, "io.containerd.cgroups.v2.MemoryEvents"),
    },
}


_FIELD_IDS = [m.DESCRIPTOR.full_name for m in FIELDS]  # type: ignore[attr-defined]


@pytest.mark.parametrize(("msg", "fields"), list(FIELDS.items()), ids=_FIELD_IDS)
def test_message_fields(msg: object, fields: dict[str, tuple[object, ...]]) -> None:
    desc = msg.DESCRIPTOR  # type: ignore[attr-defined]
    got = {f.name: (f.number, *_shape(f)) for f in desc.fields}
    assert got == fields


def test_status_enum() -> None:
    assert dict(task_pb2.Status.items()) == {
        "UNKNOWN": 0,
        "CREATED": 1,
        "RUNNING": 2,
        "STOPPED": 3,
        "PAUSED": 4,
        "PAUSING": 5,
    }
    assert task_pb2.DESCRIPTOR.enum_types_by_name["Status"].full_name == "containerd.v1.types.Status"


def test_other_enums() -> None:
    assert dict(content_pb2.WriteAction.items()) == {"STAT": 0, "WRITE": 1, "COMMIT": 2}
    assert dict(snapshots_pb2.Kind.items()) == {"UNKNOWN": 0, "VIEW": 1, "ACTIVE": 2, "COMMITTED": 3}


# Any type URLs are derived from these full names, so they must not drift.
FULL_NAMES = {
    tasks_pb2.CreateTaskRequest: "containerd.services.tasks.v1.CreateTaskRequest",
    oci_pb2.Options: "containerd.runc.v1.Options",
    oci_pb2.CheckpointOptions: "containerd.runc.v1.CheckpointOptions",
    oci_pb2.ProcessDetails: "containerd.runc.v1.ProcessDetails",
    cg1_pb2.Metrics: "io.containerd.cgroups.v1.Metrics",
    cg2_pb2.Metrics: "io.containerd.cgroups.v2.Metrics",
    mount_pb2.Mount: "containerd.types.Mount",
    task_pb2.Process: "containerd.v1.types.Process",
    events_pb2.Envelope: "containerd.services.events.v1.Envelope",
    ttrpc_events_pb2.Envelope: "containerd.services.events.ttrpc.v1.Envelope",
    # upstream quirk: image events are not in containerd.events
    ev_image_pb2.ImageCreate: "containerd.services.images.v1.ImageCreate",
    ev_image_pb2.ImageUpdate: "containerd.services.images.v1.ImageUpdate",
    ev_image_pb2.ImageDelete: "containerd.services.images.v1.ImageDelete",
    ev_content_pb2.ContentDelete: "containerd.events.ContentDelete",
    ev_container_pb2.ContainerCreate.Runtime: "containerd.events.ContainerCreate.Runtime",
}


@pytest.mark.parametrize(("msg", "name"), list(FULL_NAMES.items()), ids=list(FULL_NAMES.values()))
def test_full_names(msg: object, name: str) -> None:
    assert msg.DESCRIPTOR.full_name == name  # type: ignore[attr-defined]


EVENTS = {
    ev_task_pb2: [
        "TaskCreate",
        "TaskStart",
        "TaskDelete",
        "TaskIO",
        "TaskExit",
        "TaskOOM",
        "TaskExecAdded",
        "TaskExecStarted",
        "TaskPaused",
        "TaskResumed",
        "TaskCheckpointed",
    ],
    ev_container_pb2: ["ContainerCreate", "ContainerUpdate", "ContainerDelete"],
    ev_namespace_pb2: ["NamespaceCreate", "NamespaceUpdate", "NamespaceDelete"],
    ev_snapshot_pb2: ["SnapshotPrepare", "SnapshotCommit", "SnapshotRemove"],
    ev_content_pb2: ["ContentDelete"],
}


@pytest.mark.parametrize(("module", "names"), list(EVENTS.items()), ids=[m.__name__ for m in EVENTS])
def test_event_messages(module: object, names: list[str]) -> None:
    fd = module.DESCRIPTOR  # type: ignore[attr-defined]
    assert fd.package == "containerd.events"
    assert list(fd.message_types_by_name) == names


def test_genproto_check() -> None:
    r = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "genproto.py"), "--check"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert r.returncode == 0, r.stdout + r.stderr
