"""Tasks service: the containerd Tasks API over the task manager (``ctr tasks``, ``ctr run``).

Translation only: runtime options (``containerd.runc.v1.Options``) and metrics
(``io.containerd.cgroups.v1|v2.Metrics``) are protobuf here and plain values in the manager;
specs, process specs and resources are JSON in Anys, handed down as dicts.
"""

from __future__ import annotations

import functools
import json
import logging
from typing import TYPE_CHECKING, Any

from .. import errdefs
from ..metadata.containers import TypedValue
from ..plugin import InitContext, Registration, types
from ..rpc import Server
from ..runtime import bundle as bundlemod
from ..runtime.task_manager import TaskManager
from ..runtime.task_types import Exit, ProcessStatus, RootfsMount, RuncOptions, TaskIO
from .common import DeferredModule, add_servicer, namespace_of, ts_from_ns

if TYPE_CHECKING:
    from google.protobuf import any_pb2, empty_pb2

    from ..api.cgroups.v1 import metrics_pb2 as metrics_v1
    from ..api.cgroups.v2 import metrics_pb2 as metrics_v2
    from ..api.runtime.v2.runc.options import oci_pb2
    from ..api.services.tasks.v1 import tasks_pb2 as pb
    from ..api.types import metrics_pb2
    from ..api.types.task import task_pb2
else:  # imported at the service's first call (W6, idle PSS)
    metrics_v1 = DeferredModule(globals(), "metrics_v1", "..api.cgroups.v1.metrics_pb2")
    metrics_v2 = DeferredModule(globals(), "metrics_v2", "..api.cgroups.v2.metrics_pb2")
    oci_pb2 = DeferredModule(globals(), "oci_pb2", "..api.runtime.v2.runc.options.oci_pb2")
    pb = DeferredModule(globals(), "pb", "..api.services.tasks.v1.tasks_pb2", package="containerd.services.tasks.v1")
    metrics_pb2 = DeferredModule(globals(), "metrics_pb2", "..api.types.metrics_pb2")
    task_pb2 = DeferredModule(globals(), "task_pb2", "..api.types.task.task_pb2")
    any_pb2 = DeferredModule(globals(), "any_pb2", "google.protobuf.any_pb2")
    empty_pb2 = DeferredModule(globals(), "empty_pb2", "google.protobuf.empty_pb2")

log = logging.getLogger("pycontainerd.services.tasks")

RUNC_OPTIONS = "containerd.runc.v1.Options"
PROCESS_DETAILS = "containerd.runc.v1.ProcessDetails"
METRICS_V1 = "io.containerd.cgroups.v1.Metrics"
METRICS_V2 = "io.containerd.cgroups.v2.Metrics"

@functools.cache
def _statuses() -> dict[str, task_pb2.Status.ValueType]:
    return {
        "created": task_pb2.CREATED,
        "running": task_pb2.RUNNING,
        "stopped": task_pb2.STOPPED,
        "paused": task_pb2.PAUSED,
        "pausing": task_pb2.PAUSING,
    }


def _type_name(type_url: str) -> str:
    return type_url.rsplit("/", 1)[-1]


def runc_options(value: TypedValue | any_pb2.Any | None) -> RuncOptions | None:
    """Decode runtime options; None when unset or of a type we do not use."""
    if value is None or not value.type_url:
        return None
    name = _type_name(value.type_url)
    if name != RUNC_OPTIONS:
        log.info("ignoring runtime options of type %s", value.type_url)
        return None
    opts = oci_pb2.Options()
    try:
        opts.ParseFromString(value.value)
    except Exception as exc:
        raise errdefs.InvalidArgument(f"invalid runtime options {value.type_url}: {exc}") from exc
    for name, why in (
        ("shim_cgroup", "the shim cannot be placed in a cgroup"),
        ("criu_path", "checkpoint/restore (criu) is not implemented"),
        ("criu_image_path", "checkpoint/restore (criu) is not implemented"),
        ("criu_work_path", "checkpoint/restore (criu) is not implemented"),
    ):
        if getattr(opts, name):
            raise errdefs.Unimplemented(f"runtime option {name} is not supported: {why}")
    return RuncOptions(
        binary_name=opts.binary_name,
        root=opts.root,
        systemd_cgroup=opts.systemd_cgroup,
        no_pivot_root=opts.no_pivot_root,
        no_new_keyring=opts.no_new_keyring,
        io_uid=opts.io_uid,
        io_gid=opts.io_gid,
    )


def merge_options(container: RuncOptions | None, task: RuncOptions | None) -> RuncOptions | None:
    """Task create options win field by field over the container's runtime options."""
    if container is None:
        return task
    if task is None:
        return container
    return RuncOptions(
        binary_name=task.binary_name or container.binary_name,
        root=task.root or container.root,
        systemd_cgroup=task.systemd_cgroup or container.systemd_cgroup,
        no_pivot_root=task.no_pivot_root or container.no_pivot_root,
        no_new_keyring=task.no_new_keyring or container.no_new_keyring,
        io_uid=task.io_uid or container.io_uid,
        io_gid=task.io_gid or container.io_gid,
    )


def json_any(a: any_pb2.Any, want: str, what: str) -> dict[str, Any]:
    if a.type_url and _type_name(a.type_url) != want:
        raise errdefs.InvalidArgument(f"{what} has type {a.type_url!r}, want .../runtime-spec/1/{want}")
    return bundlemod.parse_spec(a.value, what)


def process_pb(p: ProcessStatus) -> task_pb2.Process:
    return task_pb2.Process(
        container_id=p.container_id,
        id=p.id,
        pid=p.pid,
        status=_statuses().get(p.status, task_pb2.UNKNOWN),
        stdin=p.stdin,
        stdout=p.stdout,
        stderr=p.stderr,
        terminal=p.terminal,
        exit_status=p.exit_status,
        exited_at=ts_from_ns(p.exited_at_ns) if p.exited_at_ns else None,
    )


def _delete_pb(e: Exit, id_: str = "") -> pb.DeleteResponse:
    return pb.DeleteResponse(id=id_, pid=e.pid, exit_status=e.exit_status, exited_at=ts_from_ns(e.exited_at_ns))


def metrics_any(version: str, data: dict[str, Any]) -> any_pb2.Any:
    from google.protobuf import json_format  # loaded on first use, not at start-up (W6, idle PSS)

    if version == "v2":
        m2 = json_format.ParseDict(data, metrics_v2.Metrics(), ignore_unknown_fields=True)
        return any_pb2.Any(type_url=METRICS_V2, value=m2.SerializeToString())
    m1 = json_format.ParseDict(data, metrics_v1.Metrics(), ignore_unknown_fields=True)
    return any_pb2.Any(type_url=METRICS_V1, value=m1.SerializeToString())


class TasksService:
    def __init__(self, manager: TaskManager) -> None:
        self.manager = manager

    async def Create(self, request: pb.CreateTaskRequest, context: Any) -> pb.CreateTaskResponse:
        ns = namespace_of(context)
        # an empty id is simply a container that does not exist (NotFound, as containerd answers)
        if request.HasField("checkpoint") and request.checkpoint.digest:
            raise errdefs.Unimplemented("restoring a task from a checkpoint is not supported (criu is not installed)")
        container = await self.manager.containers.get(ns, request.container_id)
        opts = merge_options(
            runc_options(container.runtime_options),
            runc_options(request.options) if request.HasField("options") else None,
        )
        pid = await self.manager.create(
            ns,
            request.container_id,
            rootfs=[RootfsMount(m.type, m.source, m.target, tuple(m.options)) for m in request.rootfs],
            io=TaskIO(request.stdin, request.stdout, request.stderr, request.terminal),
            options=opts,
            runtime_path=request.runtime_path,
            task_options=TypedValue(request.options.type_url, request.options.value)
            if request.HasField("options")
            else None,
        )
        return pb.CreateTaskResponse(container_id=request.container_id, pid=pid)

    async def Start(self, request: pb.StartRequest, context: Any) -> pb.StartResponse:
        pid = await self.manager.start_process(namespace_of(context), request.container_id, request.exec_id)
        return pb.StartResponse(pid=pid)

    async def Delete(self, request: pb.DeleteTaskRequest, context: Any) -> pb.DeleteResponse:
        return _delete_pb(await self.manager.delete(namespace_of(context), request.container_id))

    async def DeleteProcess(self, request: pb.DeleteProcessRequest, context: Any) -> pb.DeleteResponse:
        e = await self.manager.delete_process(namespace_of(context), request.container_id, request.exec_id)
        return _delete_pb(e, request.exec_id)

    async def Get(self, request: pb.GetRequest, context: Any) -> pb.GetResponse:
        p = await self.manager.get(namespace_of(context), request.container_id, request.exec_id)
        return pb.GetResponse(process=process_pb(p))

    async def List(self, request: pb.ListTasksRequest, context: Any) -> pb.ListTasksResponse:
        return pb.ListTasksResponse(tasks=[process_pb(p) for p in await self.manager.list_tasks(namespace_of(context))])

    async def Kill(self, request: pb.KillRequest, context: Any) -> empty_pb2.Empty:
        await self.manager.kill(
            namespace_of(context),
            request.container_id,
            request.signal,
            exec_id=request.exec_id,
            all=request.all,
        )
        return empty_pb2.Empty()

    async def Exec(self, request: pb.ExecProcessRequest, context: Any) -> empty_pb2.Empty:
        ns = namespace_of(context)
        if not request.exec_id:
            raise errdefs.InvalidArgument("exec id cannot be empty")
        self.manager.require_task(ns, request.container_id)
        if not request.HasField("spec"):
            raise errdefs.InvalidArgument(f"exec {request.exec_id}: process spec must be set")
        spec = json_any(request.spec, "Process", f"exec {request.exec_id} process spec")
        await self.manager.exec(
            ns,
            request.container_id,
            request.exec_id,
            spec,
            TaskIO(request.stdin, request.stdout, request.stderr, request.terminal),
        )
        return empty_pb2.Empty()

    async def ResizePty(self, request: pb.ResizePtyRequest, context: Any) -> empty_pb2.Empty:
        await self.manager.resize_pty(
            namespace_of(context), request.container_id, request.exec_id, request.width, request.height
        )
        return empty_pb2.Empty()

    async def CloseIO(self, request: pb.CloseIORequest, context: Any) -> empty_pb2.Empty:
        await self.manager.close_io(namespace_of(context), request.container_id, request.exec_id, request.stdin)
        return empty_pb2.Empty()

    async def Pause(self, request: pb.PauseTaskRequest, context: Any) -> empty_pb2.Empty:
        await self.manager.pause(namespace_of(context), request.container_id)
        return empty_pb2.Empty()

    async def Resume(self, request: pb.ResumeTaskRequest, context: Any) -> empty_pb2.Empty:
        await self.manager.resume(namespace_of(context), request.container_id)
        return empty_pb2.Empty()

    async def ListPids(self, request: pb.ListPidsRequest, context: Any) -> pb.ListPidsResponse:
        out = []
        for p in await self.manager.pids(namespace_of(context), request.container_id):
            info = task_pb2.ProcessInfo(pid=p.pid)
            if p.exec_id:
                details = oci_pb2.ProcessDetails(exec_id=p.exec_id)
                info.info.CopyFrom(any_pb2.Any(type_url=PROCESS_DETAILS, value=details.SerializeToString()))
            out.append(info)
        return pb.ListPidsResponse(processes=out)

    async def Checkpoint(self, request: pb.CheckpointTaskRequest, context: Any) -> pb.CheckpointTaskResponse:
        await self.manager.checkpoint(namespace_of(context), request.container_id)
        return pb.CheckpointTaskResponse()

    async def Update(self, request: pb.UpdateTaskRequest, context: Any) -> empty_pb2.Empty:
        ns = namespace_of(context)
        resources = None
        if request.HasField("resources"):
            resources = json_any(request.resources, "LinuxResources", "task resources")
        await self.manager.update(ns, request.container_id, resources, dict(request.annotations))
        return empty_pb2.Empty()

    async def Metrics(self, request: pb.MetricsRequest, context: Any) -> pb.MetricsResponse:
        from google.protobuf import json_format

        out = []
        for m in await self.manager.metrics(namespace_of(context), list(request.filters)):
            try:
                data = metrics_any(m.cgroup_version, m.data)
            except json_format.ParseError as exc:
                log.warning("metrics of %s: %s (%s)", m.id, exc, json.dumps(m.data)[:200])
                continue
            out.append(metrics_pb2.Metric(timestamp=ts_from_ns(m.collected_at_ns), id=m.id, data=data))
        return pb.MetricsResponse(metrics=out)

    async def Wait(self, request: pb.WaitRequest, context: Any) -> pb.WaitResponse:
        e = await self.manager.wait(namespace_of(context), request.container_id, request.exec_id)
        return pb.WaitResponse(exit_status=e.exit_status, exited_at=ts_from_ns(e.exited_at_ns))

    def add_to_server(self, server: Server) -> None:
        add_servicer(server, self, pb, "Tasks")


class TasksLocal:
    """The ``tasks-service`` plugin: the task manager as the service layer sees it."""

    def __init__(self, manager: TaskManager) -> None:
        self.manager = manager


async def _init_local(ctx: InitContext) -> TasksLocal:
    return TasksLocal(ctx.get(types.RUNTIME_V2, "task"))


async def _init_grpc(ctx: InitContext) -> TasksService:
    local: TasksLocal = ctx.get(types.SERVICE, "tasks-service")
    return TasksService(local.manager)


REGISTRATIONS = [
    Registration(
        type=types.SERVICE,
        id="tasks-service",
        init=_init_local,
        requires=(types.RUNTIME_V1, types.RUNTIME_V2, types.METADATA),
    ),
    Registration(type=types.GRPC, id="tasks", init=_init_grpc, requires=(types.SERVICE,)),
]
