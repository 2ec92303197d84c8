"""Tasks over gRPC: create/start/wait/kill/delete a container's process, exec more processes.

The call order ctr uses (and ``client.run`` follows) for a foreground run::

    pid = await tasks.create(cid, rootfs, io)        # the shim opens the stdio FIFOs here
    waiter = asyncio.create_task(tasks.wait(cid))    # Wait before Start: never miss the exit
    await tasks.start(cid)
    status = await waiter                            # exit code + time
    await tasks.delete(cid)

Exec processes are the same with an ``exec_id``: ``exec`` → ``wait`` → ``start`` →
``delete_process``.  Statuses are lower-case strings (``created``, ``running``, ``stopped``,
``paused``, ``pausing``, ``unknown``), like ctr prints them in upper case.
"""

from __future__ import annotations

import builtins
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from google.protobuf import any_pb2, timestamp_pb2

from ..api.runtime.v2.runc.options import oci_pb2
from ..api.services.tasks.v1 import tasks_pb2, tasks_pb2_grpc
from ..api.types.task import task_pb2
from ..mount import Mount
from ..oci.spec import PROCESS_TYPE_URL, RESOURCES_TYPE_URL
from .cio import IOConfig
from .snapshots import mounts_to_pb

if TYPE_CHECKING:
    from .core import Client

UNKNOWN_EXIT_STATUS = 255
STATUS_NAMES = {0: "unknown", 1: "created", 2: "running", 3: "stopped", 4: "paused", 5: "pausing"}

__all__ = ["ExitStatus", "Metric", "Process", "ProcessInfo", "Tasks", "decode_metric"]


def _dt(ts: timestamp_pb2.Timestamp) -> datetime | None:
    if not ts.seconds and not ts.nanos:
        return None
    return datetime.fromtimestamp(ts.seconds + ts.nanos / 1e9, UTC)


@dataclass
class ExitStatus:
    code: int
    exited_at: datetime | None = None
    pid: int = 0


@dataclass
class Process:
    container_id: str
    id: str  # exec id, or the container id for the init process
    pid: int
    status: str
    stdin: str = ""
    stdout: str = ""
    stderr: str = ""
    terminal: bool = False
    exit_status: int = 0
    exited_at: datetime | None = None

    @classmethod
    def from_pb(cls, p: task_pb2.Process) -> Process:
        return cls(container_id=p.container_id, id=p.id, pid=int(p.pid), status=STATUS_NAMES.get(int(p.status),
                   "unknown"), stdin=p.stdin, stdout=p.stdout, stderr=p.stderr, terminal=p.terminal,
                   exit_status=int(p.exit_status), exited_at=_dt(p.exited_at))


@dataclass
class ProcessInfo:
    pid: int
    exec_id: str = ""


@dataclass
class Metric:
    id: str
    timestamp: datetime | None
    type_url: str
    data: Any  # io.containerd.cgroups.v1/v2 Metrics message, or None if the type is unknown


def decode_metric(a: any_pb2.Any) -> Any:
    """Decode a Metrics Any (cgroups v1 or v2), None for a type we do not know."""
    name = a.type_url.rsplit("/", 1)[-1]
    if name == "io.containerd.cgroups.v1.Metrics":
        from ..api.cgroups.v1 import metrics_pb2 as v1

        m1 = v1.Metrics()
        m1.ParseFromString(a.value)
        return m1
    if name == "io.containerd.cgroups.v2.Metrics":
        from ..api.cgroups.v2 import metrics_pb2 as v2

        m2 = v2.Metrics()
        m2.ParseFromString(a.value)
        return m2
    return None


def json_any(obj: Any, type_url: str) -> any_pb2.Any:
    return any_pb2.Any(type_url=type_url, value=json.dumps(obj, separators=(",", ":")).encode())


class Tasks:
    stub_cls: Any = tasks_pb2_grpc.TasksStub
    pb = tasks_pb2

    def __init__(self, client: Client) -> None:
        self.client = client
        self.raw = self.stub_cls(client.channel)

    async def create(self, container_id: str, rootfs: Sequence[Mount] = (), io: IOConfig | None = None,
                     options: any_pb2.Any | None = None, runtime_path: str = "") -> int:
        """Create the task (the container's init process, not yet started); returns its pid."""
        io = io or IOConfig()
        req = tasks_pb2.CreateTaskRequest(container_id=container_id, rootfs=mounts_to_pb(rootfs), stdin=io.stdin,
                                          stdout=io.stdout, stderr=io.stderr, terminal=io.terminal,
                                          runtime_path=runtime_path)
        if options is not None:
            req.options.CopyFrom(options)
        resp = await self.client.unary(self.raw.Create, req)
        return int(resp.pid)

    async def start(self, container_id: str, exec_id: str = "") -> int:
        resp = await self.client.unary(self.raw.Start, tasks_pb2.StartRequest(container_id=container_id,
                                                                              exec_id=exec_id))
        return int(resp.pid)

    async def delete(self, container_id: str) -> ExitStatus:
        resp = await self.client.unary(self.raw.Delete, tasks_pb2.DeleteTaskRequest(container_id=container_id))
        return ExitStatus(int(resp.exit_status), _dt(resp.exited_at), int(resp.pid))

    async def delete_process(self, container_id: str, exec_id: str) -> ExitStatus:
        req = tasks_pb2.DeleteProcessRequest(container_id=container_id, exec_id=exec_id)
        resp = await self.client.unary(self.raw.DeleteProcess, req)
        return ExitStatus(int(resp.exit_status), _dt(resp.exited_at), int(resp.pid))

    async def get(self, container_id: str, exec_id: str = "") -> Process:
        resp = await self.client.unary(self.raw.Get, tasks_pb2.GetRequest(container_id=container_id, exec_id=exec_id))
        return Process.from_pb(resp.process)

    async def list(self, filter: str = "") -> builtins.list[Process]:
        resp = await self.client.unary(self.raw.List, tasks_pb2.ListTasksRequest(filter=filter))
        return [Process.from_pb(p) for p in resp.tasks]

    async def kill(self, container_id: str, signal: int, *, all: bool = False,
                   exec_id: str = "") -> None:
        req = tasks_pb2.KillRequest(container_id=container_id, exec_id=exec_id, signal=signal, all=all)
        await self.client.unary(self.raw.Kill, req)

    async def exec(self, container_id: str, exec_id: str, process: Mapping[str, Any], io: IOConfig | None = None
                   ) -> None:
        """Add a process (OCI process spec ``process``) to a running task; start it with ``start(exec_id=...)``."""
        io = io or IOConfig()
        req = tasks_pb2.ExecProcessRequest(container_id=container_id, exec_id=exec_id, stdin=io.stdin,
                                           stdout=io.stdout, stderr=io.stderr, terminal=io.terminal,
                                           spec=json_any(process, PROCESS_TYPE_URL))
        await self.client.unary(self.raw.Exec, req)

    async def resize_pty(self, container_id: str, width: int, height: int, exec_id: str = "") -> None:
        req = tasks_pb2.ResizePtyRequest(container_id=container_id, exec_id=exec_id, width=width, height=height)
        await self.client.unary(self.raw.ResizePty, req)

    async def close_io(self, container_id: str, exec_id: str = "", stdin: bool = True) -> None:
        req = tasks_pb2.CloseIORequest(container_id=container_id, exec_id=exec_id, stdin=stdin)
        await self.client.unary(self.raw.CloseIO, req)

    async def pause(self, container_id: str) -> None:
        await self.client.unary(self.raw.Pause, tasks_pb2.PauseTaskRequest(container_id=container_id))

    async def resume(self, container_id: str) -> None:
        await self.client.unary(self.raw.Resume, tasks_pb2.ResumeTaskRequest(container_id=container_id))

    async def list_pids(self, container_id: str) -> builtins.list[ProcessInfo]:
        resp = await self.client.unary(self.raw.ListPids, tasks_pb2.ListPidsRequest(container_id=container_id))
        out = []
        for p in resp.processes:
            exec_id = ""
            if p.HasField("info") and p.info.type_url.endswith("containerd.runc.v1.ProcessDetails"):
                details = oci_pb2.ProcessDetails()
                details.ParseFromString(p.info.value)
                exec_id = details.exec_id
            out.append(ProcessInfo(int(p.pid), exec_id))
        return out

    async def metrics(self, filters: Sequence[str] = ()) -> builtins.list[Metric]:
        resp = await self.client.unary(self.raw.Metrics, tasks_pb2.MetricsRequest(filters=list(filters)))
        return [Metric(m.id, _dt(m.timestamp), m.data.type_url, decode_metric(m.data)) for m in resp.metrics]

    async def wait(self, container_id: str, exec_id: str = "") -> ExitStatus:
        """Block until the process exits (returns at once if it already has)."""
        req = tasks_pb2.WaitRequest(container_id=container_id, exec_id=exec_id)
        resp = await self.client.unary(self.raw.Wait, req)
        return ExitStatus(int(resp.exit_status), _dt(resp.exited_at))

    async def update(self, container_id: str, resources: Mapping[str, Any] | None = None,
                     annotations: Mapping[str, str] | None = None) -> None:
        req = tasks_pb2.UpdateTaskRequest(container_id=container_id, annotations=dict(annotations or {}))
        if resources is not None:
            req.resources.CopyFrom(json_any(resources, RESOURCES_TYPE_URL))
        await self.client.unary(self.raw.Update, req)
