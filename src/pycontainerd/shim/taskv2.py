"""``containerd.task.v2.Task`` (runtime v2 shim API) over the shim's domain logic.

Translation only: each RPC turns its protobuf request into the params of the same ``Service``
method the JSON protocol calls (``service``), and the result back into the response message.
One shim process serves every container of its group (containerd's runc v2 grouping), so
requests are routed by their container ``id``; Create for a new id adds a ``Service``.

Runtime options: ``containerd.runc.v1.Options`` in CreateTaskRequest.options.  NoPivotRoot,
NoNewKeyring, IoUid, IoGid, BinaryName, Root, SystemdCgroup reach runc (``--no-pivot``,
``--no-new-keyring``, pipe ownership, the binary, ``--root <Root>/<ns>``,
``--systemd-cgroup``); ShimCgroup is applied by ``start`` (the shim process joins it, as
containerd's shims do); CriuPath, CriuImagePath and CriuWorkPath are refused: this shim has
no checkpoint/restore.

Events go to containerd's ``Events.Forward`` (``ttrpc_loop.Forwarder``) as
``containerd.events.*`` messages — also TaskCreate, TaskStart and TaskDelete, which a runtime
v2 shim publishes itself (with the JSON protocol the daemon publishes those).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from typing import Any

from google.protobuf import any_pb2, empty_pb2, json_format, timestamp_pb2
from google.protobuf.message import DecodeError, Message

from pycontainerd import __version__, cgroups, errdefs, timestamps
from pycontainerd.api.cgroups.v1 import metrics_pb2 as metrics_v1
from pycontainerd.api.cgroups.v2 import metrics_pb2 as metrics_v2
from pycontainerd.api.events import task_pb2 as events
from pycontainerd.api.runtime.v2.runc.options import oci_pb2
from pycontainerd.api.runtime.v2.task import shim_pb2 as pb
from pycontainerd.api.services.ttrpc.events.v1 import events_pb2
from pycontainerd.api.types.task import task_pb2
from pycontainerd.shim import process as ps
from pycontainerd.shim import protocol
from pycontainerd.shim.loop import Future, Loop
from pycontainerd.shim.reaper import Reaper
from pycontainerd.shim.service import Service, ShimConfig, write_atomic
from pycontainerd.shim.ttrpc_loop import Forwarder, Method
from pycontainerd.shim.v2layout import DEFAULT_RUNC_ROOT, OPTIONS_FILE

TASK = "containerd.task.v2.Task"
RUNC_OPTIONS = "containerd.runc.v1.Options"
PROCESS_DETAILS = "containerd.runc.v1.ProcessDetails"
REFUSED_OPTIONS = {
    "criu_path": "CriuPath",
    "criu_image_path": "CriuImagePath",
    "criu_work_path": "CriuWorkPath",
}

_STATUS = {
    ps.CREATED: task_pb2.CREATED,
    ps.RUNNING: task_pb2.RUNNING,
    ps.STOPPED: task_pb2.STOPPED,
    ps.PAUSED: task_pb2.PAUSED,
    ps.PAUSING: task_pb2.PAUSING,
}

EVENT_TYPES: dict[str, type[Message]] = {
    protocol.TASK_EXIT: events.TaskExit,
    protocol.TASK_OOM: events.TaskOOM,
    protocol.TASK_EXEC_ADDED: events.TaskExecAdded,
    protocol.TASK_EXEC_STARTED: events.TaskExecStarted,
    protocol.TASK_PAUSED: events.TaskPaused,
    protocol.TASK_RESUMED: events.TaskResumed,
    "/tasks/create": events.TaskCreate,
    "/tasks/start": events.TaskStart,
    "/tasks/delete": events.TaskDelete,
}


# -- pure helpers -------------------------------------------------------------------------------


def decode_options(value: any_pb2.Any | None) -> dict[str, Any]:
    """The runc options of a Create (or ``start``'s stdin) as the service's ``options`` dict.

    Unknown option types and the checkpoint options are InvalidArgument naming them."""
    if value is None or not value.type_url:
        return {}
    name = value.type_url.rsplit("/", 1)[-1]
    if name != RUNC_OPTIONS:
        raise errdefs.InvalidArgument(
            f"runtime options of type {value.type_url!r} are not supported: want {RUNC_OPTIONS}"
        )
    opts = oci_pb2.Options()
    try:
        opts.ParseFromString(value.value)
    except DecodeError as exc:
        raise errdefs.InvalidArgument(f"malformed {RUNC_OPTIONS}: {exc}") from exc
    for field, go_name in REFUSED_OPTIONS.items():
        if getattr(opts, field):
            raise errdefs.InvalidArgument(
                f"runtime option {go_name} ({getattr(opts, field)!r}) is not supported: "
                "the pyrunc shim has no checkpoint/restore (criu)"
            )
    out: dict[str, Any] = {
        "no_pivot_root": opts.no_pivot_root,
        "no_new_keyring": opts.no_new_keyring,
        "systemd_cgroup": opts.systemd_cgroup,
        "binary_name": opts.binary_name,
        "root": opts.root,
        "shim_cgroup": opts.shim_cgroup,
    }
    if opts.io_uid:
        out["io_uid"] = opts.io_uid
    if opts.io_gid:
        out["io_gid"] = opts.io_gid
    return out


def join_cgroup(path: str, pid: int, sys_root: str = "/sys/fs/cgroup") -> None:
    """Move ``pid`` into the cgroup ``path`` (the ShimCgroup option): on cgroup v2 the one
    directory, on v1 every hierarchy that has it (at least one must)."""
    rel = path.strip("/")
    if not rel:
        return
    if os.path.exists(os.path.join(sys_root, "cgroup.controllers")):
        targets = [os.path.join(sys_root, rel)]
    else:
        targets = [
            os.path.join(sys_root, d, rel)
            for d in sorted(os.listdir(sys_root))
            if not os.path.islink(os.path.join(sys_root, d)) and os.path.isdir(os.path.join(sys_root, d, rel))
        ]
    if not targets:
        raise errdefs.InvalidArgument(f"runtime option ShimCgroup {path!r}: no such cgroup under {sys_root}")
    for target in targets:
        try:
            with open(os.path.join(target, "cgroup.procs"), "w") as f:
                f.write(str(pid))
        except OSError as exc:
            raise errdefs.InvalidArgument(f"runtime option ShimCgroup {path!r}: cannot join {target}: {exc}") from exc


def metrics_any(mode: str, data: dict[str, Any]) -> any_pb2.Any:
    """cgroup statistics (``pycontainerd.cgroups``) as the Metrics Any containerd's Stats returns."""
    msg: Message = metrics_v2.Metrics() if mode == "v2" else metrics_v1.Metrics()
    json_format.ParseDict(data, msg, ignore_unknown_fields=True)
    return any_pb2.Any(type_url=msg.DESCRIPTOR.full_name, value=msg.SerializeToString())


def _ts(ns: int) -> timestamp_pb2.Timestamp | None:
    if not ns:
        return None
    ts = timestamp_pb2.Timestamp()
    ts.FromNanoseconds(ns)
    return ts


def _event(cls: type[Message], payload: dict[str, Any]) -> Message:
    """The event message of ``payload`` (its fields by name; nested messages as dicts,
    timestamps as RFC 3339 strings; other keys ignored), built by the message's constructor:
    ``json_format.ParseDict`` would run a few hundred lines of Python, and every object it
    touches costs a forked shim a page of its launcher's memory."""
    fields = cls.DESCRIPTOR.fields_by_name
    kwargs: dict[str, Any] = {}
    for name, value in payload.items():
        field = fields.get(name)
        if field is None:
            continue
        if isinstance(value, str) and field.message_type is timestamp_pb2.Timestamp.DESCRIPTOR:
            ts = timestamp_pb2.Timestamp()
            ts.FromJsonString(value)
            value = ts
        kwargs[name] = value
    return cls(**kwargs)


def envelope(namespace: str, topic: str, payload: dict[str, Any]) -> events_pb2.ForwardRequest | None:
    """The Forward request carrying one service event (None for a topic we do not know)."""
    cls = EVENT_TYPES.get(topic)
    if cls is None:
        return None
    msg = _event(cls, payload)
    env = events_pb2.Envelope(
        namespace=namespace,
        topic=topic,
        event=any_pb2.Any(type_url=cls.DESCRIPTOR.full_name, value=msg.SerializeToString()),
    )
    env.timestamp.FromNanoseconds(time.time_ns())
    return events_pb2.ForwardRequest(envelope=env)


def _json_any(value: any_pb2.Any, what: str) -> dict[str, Any]:
    try:
        out = json.loads(value.value or b"null")
    except ValueError as exc:
        raise errdefs.InvalidArgument(f"{what} is not JSON: {exc}") from exc
    if not isinstance(out, dict):
        raise errdefs.InvalidArgument(f"{what} must be a JSON object")
    return out


# -- the service --------------------------------------------------------------------------------


class TaskV2:
    """The Task service of one shim process: a ``Service`` per container of its group."""

    def __init__(
        self,
        loop: Loop,
        reaper: Reaper,
        *,
        namespace: str,
        socket_path: str,
        forwarder: Forwarder | None,
        debug: bool = False,
    ) -> None:
        self.loop = loop
        self.reaper = reaper
        self.namespace = namespace
        self.socket_path = socket_path
        self.forwarder = forwarder
        self.debug = debug
        self.services: dict[str, Service] = {}
        self.teardowns: list[Future[None]] = []
        self.exiting = False
        self._seq = 0

    def methods(self) -> dict[str, Method]:
        def m(name: str, req: type[Message], fn: Callable[[Any], Any]) -> tuple[str, Method]:
            return f"{TASK}/{name}", Method(req, fn)

        return dict(
            [
                m("State", pb.StateRequest, self.state),
                m("Create", pb.CreateTaskRequest, self.create),
                m("Start", pb.StartRequest, self.start),
                m("Delete", pb.DeleteRequest, self.delete),
                m("Pids", pb.PidsRequest, self.pids),
                m("Pause", pb.PauseRequest, self.pause),
                m("Resume", pb.ResumeRequest, self.resume),
                m("Checkpoint", pb.CheckpointTaskRequest, self.checkpoint),
                m("Kill", pb.KillRequest, self.kill),
                m("Exec", pb.ExecProcessRequest, self.exec),
                m("ResizePty", pb.ResizePtyRequest, self.resize_pty),
                m("CloseIO", pb.CloseIORequest, self.close_io),
                m("Update", pb.UpdateTaskRequest, self.update),
                m("Wait", pb.WaitRequest, self.wait),
                m("Stats", pb.StatsRequest, self.stats),
                m("Connect", pb.ConnectRequest, self.connect),
                m("Shutdown", pb.ShutdownRequest, self.shutdown),
            ]
        )

    def _svc(self, container_id: str) -> Service:
        svc = self.services.get(container_id)
        if svc is None:
            raise errdefs.NotFound(f"container {container_id!r} not found in this shim")
        return svc

    def publish(self, topic: str, payload: dict[str, Any]) -> None:
        if self.forwarder is None:
            return
        req = envelope(self.namespace, topic, payload)
        if req is not None:
            self.forwarder.forward(req)

    def live(self) -> bool:
        return any(s.init is not None and s.init.rec.state != ps.DELETED for s in self.services.values())

    # -- RPCs -----------------------------------------------------------------------------------
    async def create(self, req: pb.CreateTaskRequest) -> pb.CreateTaskResponse:
        if req.checkpoint or req.parent_checkpoint:
            raise errdefs.Unimplemented("restore from a checkpoint is not supported by the pyrunc shim (no criu)")
        if not req.id or "/" in req.id:
            raise errdefs.InvalidArgument(f"invalid container id {req.id!r}")
        opts = decode_options(req.options if req.HasField("options") else None)
        old = self.services.get(req.id)
        if old is not None and old.init is not None and old.init.rec.state != ps.DELETED:
            raise errdefs.AlreadyExists(f"task {req.id}: already exists")
        self._seq += 1
        config = ShimConfig(
            namespace=self.namespace,
            container_id=req.id,
            bundle=req.bundle,
            # per container: its console sockets are "<socket_path>.c<n>"
            socket_path=f"{self.socket_path}.{self._seq}",
            # Root: runc's state under <Root>/<namespace>, as containerd's runc shim keeps it
            runtime_root=os.path.join(str(opts.get("root") or DEFAULT_RUNC_ROOT), self.namespace),
            debug=self.debug,
        )
        svc = Service(self.loop, self.reaper, config)
        svc.event_sink = self.publish
        self.services[req.id] = svc
        rootfs = [
            {"type": m.type, "source": m.source, "target": m.target, "options": list(m.options)} for m in req.rootfs
        ]
        try:
            write_atomic(
                os.path.join(req.bundle, OPTIONS_FILE),
                json.dumps({k: opts[k] for k in ("binary_name", "root", "systemd_cgroup") if opts.get(k)}).encode(),
            )
            result = await svc.create(
                {
                    "rootfs": rootfs,
                    "stdin": req.stdin,
                    "stdout": req.stdout,
                    "stderr": req.stderr,
                    "terminal": req.terminal,
                    "options": protocol.CreateOptions.from_wire(
                        {k: v for k, v in opts.items() if k not in ("root", "shim_cgroup")}
                    ).to_wire(),
                }
            )
        except BaseException:
            if self.services.get(req.id) is svc:
                del self.services[req.id]
            raise
        self.publish(
            "/tasks/create",
            {
                "container_id": req.id,
                "bundle": req.bundle,
                "rootfs": [{k: v for k, v in m.items() if k != "target"} for m in rootfs],
                "io": {"stdin": req.stdin, "stdout": req.stdout, "stderr": req.stderr, "terminal": req.terminal},
                "pid": result["pid"],
            },
        )
        return pb.CreateTaskResponse(pid=result["pid"])

    async def start(self, req: pb.StartRequest) -> pb.StartResponse:
        result = await self._svc(req.id).start({"exec_id": req.exec_id})
        if not req.exec_id:
            self.publish("/tasks/start", {"container_id": req.id, "pid": result["pid"]})
        return pb.StartResponse(pid=result["pid"])

    async def delete(self, req: pb.DeleteRequest) -> pb.DeleteResponse:
        svc = self._svc(req.id)
        result = await svc.delete({"exec_id": req.exec_id})
        if not req.exec_id:
            if svc.teardown is not None:
                self.teardowns.append(svc.teardown)
            if self.services.get(req.id) is svc:
                del self.services[req.id]
            self.publish(
                "/tasks/delete",
                {
                    "container_id": req.id,
                    "id": req.id,
                    "pid": result["pid"],
                    "exit_status": result["exit_status"],
                    "exited_at": timestamps.format_ns(result["exited_at_ns"]),
                },
            )
        return pb.DeleteResponse(
            pid=result["pid"], exit_status=result["exit_status"], exited_at=_ts(result["exited_at_ns"])
        )

    async def state(self, req: pb.StateRequest) -> pb.StateResponse:
        r = await self._svc(req.id).state({"exec_id": req.exec_id})
        return pb.StateResponse(
            id=r["id"],
            exec_id=r["exec_id"],
            bundle=r["bundle"],
            pid=r["pid"],
            status=_STATUS.get(r["status"], task_pb2.UNKNOWN),
            stdin=r["stdin"],
            stdout=r["stdout"],
            stderr=r["stderr"],
            terminal=r["terminal"],
            exit_status=r["exit_status"],
            exited_at=_ts(r["exited_at_ns"]),
        )

    async def pids(self, req: pb.PidsRequest) -> pb.PidsResponse:
        r = await self._svc(req.id).pids({})
        out = pb.PidsResponse()
        for p in r["processes"]:
            info = out.processes.add(pid=p["pid"])
            if p["exec_id"]:
                details = oci_pb2.ProcessDetails(exec_id=p["exec_id"])
                info.info.CopyFrom(any_pb2.Any(type_url=PROCESS_DETAILS, value=details.SerializeToString()))
        return out

    async def pause(self, req: pb.PauseRequest) -> empty_pb2.Empty:
        await self._svc(req.id).pause({})
        return empty_pb2.Empty()

    async def resume(self, req: pb.ResumeRequest) -> empty_pb2.Empty:
        await self._svc(req.id).resume({})
        return empty_pb2.Empty()

    async def checkpoint(self, req: pb.CheckpointTaskRequest) -> empty_pb2.Empty:
        self._svc(req.id)
        raise errdefs.Unimplemented(f"checkpoint of {req.id}: the pyrunc shim has no checkpoint/restore (criu)")

    async def kill(self, req: pb.KillRequest) -> empty_pb2.Empty:
        await self._svc(req.id).kill({"exec_id": req.exec_id, "signal": req.signal, "all": req.all})
        return empty_pb2.Empty()

    async def exec(self, req: pb.ExecProcessRequest) -> empty_pb2.Empty:
        spec = _json_any(req.spec, "exec process spec")
        params = {
            "exec_id": req.exec_id,
            "spec": spec,
            "stdin": req.stdin,
            "stdout": req.stdout,
            "stderr": req.stderr,
            "terminal": req.terminal,
        }
        await self._svc(req.id).exec(params)
        return empty_pb2.Empty()

    async def resize_pty(self, req: pb.ResizePtyRequest) -> empty_pb2.Empty:
        await self._svc(req.id).resize_pty({"exec_id": req.exec_id, "width": req.width, "height": req.height})
        return empty_pb2.Empty()

    async def close_io(self, req: pb.CloseIORequest) -> empty_pb2.Empty:
        await self._svc(req.id).close_io({"exec_id": req.exec_id, "stdin": req.stdin})
        return empty_pb2.Empty()

    async def update(self, req: pb.UpdateTaskRequest) -> empty_pb2.Empty:
        await self._svc(req.id).update({"resources": _json_any(req.resources, "update resources")})
        return empty_pb2.Empty()

    async def wait(self, req: pb.WaitRequest) -> pb.WaitResponse:
        r = await self._svc(req.id).wait({"exec_id": req.exec_id})
        return pb.WaitResponse(exit_status=r["exit_status"], exited_at=_ts(r["exited_at_ns"]))

    async def stats(self, req: pb.StatsRequest) -> pb.StatsResponse:
        svc = self._svc(req.id)
        pid = (await svc.state({}))["pid"]  # NotFound when not created or deleted
        try:
            with open(os.path.join(svc.config.bundle, "config.json"), "rb") as f:  # noqa: ASYNC230 - small local file
                spec = json.load(f)
        except (OSError, ValueError):
            spec = {}
        cgroups_path = str((spec.get("linux") or {}).get("cgroupsPath") or "")
        # a few small sysfs reads; the shim loop has nothing else to serve meanwhile
        mode, data = cgroups.read_task_metrics(
            cgroups.CgroupReader(), pid=pid, cgroups_path=cgroups_path, systemd=svc.runc.systemd_cgroup
        )
        return pb.StatsResponse(stats=metrics_any(mode, data))

    async def connect(self, req: pb.ConnectRequest) -> pb.ConnectResponse:
        svc = self.services.get(req.id)
        task_pid = svc.init.rec.pid if svc is not None and svc.init is not None else 0
        return pb.ConnectResponse(shim_pid=os.getpid(), task_pid=task_pid, version=__version__)

    async def shutdown(self, req: pb.ShutdownRequest) -> empty_pb2.Empty:
        if self.live() and not req.now:
            return empty_pb2.Empty()  # other containers of the group still need this shim
        for fut in self.teardowns:
            await fut  # never raises: failures are logged
        self.exiting = True
        return empty_pb2.Empty()
