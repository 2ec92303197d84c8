"""One runtime v2 shim over ttrpc: ``containerd.task.v2.Task`` calls as the task manager's ``Shim``.

``TaskShim`` turns the manager's plain values into the task.v2 protobufs and back: the rootfs
mounts become ``containerd.types.Mount``, an exec's process spec and an update's resources
travel as OCI JSON in an ``Any`` (containerd's type URLs), runtime options as the ``Any`` the
container or the task request carried (``containerd.runc.v1.Options`` for runc shims).
Statuses come back as the manager's strings (``created``, ``running``...).  Every call names
the namespace in the ``containerd-namespace-ttrpc`` metadata, as containerd's client does.

Events do not come over this connection: the shim forwards them to the daemon's ttrpc Events
service (``TTRPC_ADDRESS``), and the shim manager routes the ones about this task to
``push_event``; ``events()`` yields them until the connection to the shim is gone, which the
task manager takes for the shim's death.

Quirks of containerd 1.6's Go shim that this papers over: ``State`` of an exec names the exec
in ``id`` and leaves ``exec_id`` empty; ``Wait`` answers no pid (the pid from ``Create`` or
``Start`` is kept here); ``Pids`` names exec processes in a ``containerd.runc.v1.ProcessDetails``.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import logging
import os
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from google.protobuf import any_pb2, empty_pb2, timestamp_pb2
from google.protobuf.message import DecodeError, Message

from ... import errdefs
from ...api.runtime.v2.runc.options import oci_pb2
from ...api.runtime.v2.task import shim_pb2
from ...api.types import mount_pb2
from ...api.types.task import task_pb2
from ...ttrpc import Client

log = logging.getLogger("pycontainerd.runtime.v2")

TASK_SERVICE = "containerd.task.v2.Task"
NAMESPACE_METADATA = "containerd-namespace-ttrpc"
PROCESS_TYPE_URL = "types.containerd.io/opencontainers/runtime-spec/1/Process"
RESOURCES_TYPE_URL = "types.containerd.io/opencontainers/runtime-spec/1/LinuxResources"
RUNC_OPTIONS = oci_pb2.Options.DESCRIPTOR.full_name  # containerd.runc.v1.Options
CALL_TIMEOUT = 60.0
SHUTDOWN_TIMEOUT = 3.0  # containerd's io.containerd.timeout.shim.shutdown
EVENT_QUEUE_LIMIT = 1024

_STATUS = {
    task_pb2.UNKNOWN: "unknown",
    task_pb2.CREATED: "created",
    task_pb2.RUNNING: "running",
    task_pb2.STOPPED: "stopped",
    task_pb2.PAUSED: "paused",
    task_pb2.PAUSING: "pausing",
}


@dataclass(frozen=True)
class ExitInfo:
    pid: int
    exit_status: int
    exited_at_ns: int


@dataclass(frozen=True)
class ProcessState:
    id: str
    pid: int
    status: str
    stdin: str
    stdout: str
    stderr: str
    terminal: bool
    exit_status: int
    exited_at_ns: int


@dataclass(frozen=True)
class ProcessInfo:
    pid: int
    exec_id: str


def _ns(ts: timestamp_pb2.Timestamp) -> int:
    return ts.seconds * 1_000_000_000 + ts.nanos


def runc_options(options: tuple[str, bytes] | None, defaults: dict[str, Any] | None = None) -> any_pb2.Any | None:
    """The options ``Any`` for Create (and ``start``'s stdin).

    ``options`` is the (type URL, bytes) the task request or the container carried: a
    ``containerd.runc.v1.Options`` gets every field it leaves unset from ``defaults`` (the
    daemon's runc settings, keyed by the Options field names); an Any of another type goes to
    the shim untouched, as containerd sends it.  With no options, the defaults make one."""
    defaults = {k: v for k, v in (defaults or {}).items() if k in oci_pb2.Options.DESCRIPTOR.fields_by_name}
    if options is not None and options[0] and options[0].rsplit("/", 1)[-1] != RUNC_OPTIONS:
        return any_pb2.Any(type_url=options[0], value=options[1])
    opts = oci_pb2.Options()
    if options is not None:
        try:
            opts.ParseFromString(options[1])
        except DecodeError as exc:
            raise errdefs.InvalidArgument(f"invalid runtime options {options[0]}: {exc}") from exc
    for name, value in defaults.items():
        if value and not getattr(opts, name):
            setattr(opts, name, value)
    if options is None and not defaults:
        return None
    return any_pb2.Any(type_url=options[0] if options and options[0] else RUNC_OPTIONS, value=opts.SerializeToString())


class LogDrain:
    """The shim's ``log`` FIFO in the bundle, read into our log (the shim blocks without a reader).

    We hold a write end too, so the reader never sees EOF between shim restarts of the pipe."""

    def __init__(self, path: Path, name: str) -> None:
        self.path = path
        self._log = logging.getLogger(f"pycontainerd.shim.{name}")
        self._buf = bytearray()
        self._loop = asyncio.get_running_loop()
        self._rfd = -1
        self._wfd = -1

    def open_fifo(self) -> None:
        """Create the FIFO and open both ends (file system work: call it in a worker thread)."""
        try:
            os.mkfifo(self.path, 0o600)
        except FileExistsError:
            pass
        rfd = os.open(self.path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        try:
            wfd = os.open(self.path, os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError:
            os.close(rfd)
            raise
        self._rfd, self._wfd = rfd, wfd

    async def open(self) -> None:
        """Open the FIFO and start copying it into our log (on the event loop's thread)."""
        await asyncio.to_thread(self.open_fifo)
        self.start_reading()

    def start_reading(self) -> None:
        """After ``open_fifo`` (done in a worker thread): copy the FIFO into our log."""
        self._loop.add_reader(self._rfd, self._read)

    def _read(self) -> None:
        try:
            chunk = os.read(self._rfd, 65536)
        except BlockingIOError:
            return
        except OSError as exc:
            if exc.errno != errno.EAGAIN:
                self.close()
            return
        self._buf += chunk
        *lines, rest = self._buf.split(b"\n")
        self._buf = bytearray(rest[-65536:])
        for line in lines:
            text = line.decode(errors="replace").strip()
            if not text:
                continue
            if "level=error" in text or "level=fatal" in text or "level=panic" in text:
                self._log.warning("%s", text)
            else:
                self._log.debug("%s", text)

    def close(self) -> None:
        if self._rfd >= 0:
            self._loop.remove_reader(self._rfd)
            os.close(self._rfd)
            self._rfd = -1
        if self._wfd >= 0:
            os.close(self._wfd)
            self._wfd = -1


class TaskShim:
    """A connected runtime v2 shim serving one task (``Shim`` of the task manager)."""

    def __init__(
        self,
        client: Client,
        *,
        namespace: str,
        container_id: str,
        bundle: Path,
        address: str,
        pid: int,
        options: any_pb2.Any | None = None,
        log_drain: LogDrain | None = None,
        shutdown_timeout: float = SHUTDOWN_TIMEOUT,
    ) -> None:
        self.client = client
        self.shutdown_timeout = shutdown_timeout  # [timeouts] io.containerd.timeout.shim.shutdown
        self.namespace = namespace
        self.id = container_id
        self.bundle = bundle
        self.address = address
        self.pid = pid
        self.options = options
        self.task_pid = 0
        self._exec_pids: dict[str, int] = {}
        self._log_drain = log_drain
        self._events: deque[tuple[str, dict[str, Any]]] = deque()
        self._event_signal = asyncio.Event()
        self._md = {NAMESPACE_METADATA: namespace}
        self._closed = False
        self.on_close: list[Any] = []  # callables run once by close()
        # whether another task we serve uses the same shim (its group): set by the shim manager
        self.shares_shim: Callable[[], bool] = lambda: False
        self.group = ""  # the shim group (runtime v2 grouping annotation), when the manager knows it

    @property
    def closed(self) -> bool:
        """Closed by us, or its connection to the shim is gone (the shim exited)."""
        return self._closed or self.client.closed

    # -- plumbing ------------------------------------------------------------------------------
    async def _call(
        self, method: str, request: Message, response_type: type[Any], deadline: float | None = CALL_TIMEOUT
    ) -> Any:
        """One Task call; ``deadline`` (seconds, None: none) goes to the shim as the call's timeout."""
        return await self.client.call(TASK_SERVICE, method, request, response_type, timeout=deadline, metadata=self._md)

    def push_event(self, topic: str, payload: dict[str, Any]) -> None:
        """An event the shim forwarded about this task (the shim manager routes it here)."""
        self._events.append((topic, payload))
        while len(self._events) > EVENT_QUEUE_LIMIT:
            self._events.popleft()
        self._event_signal.set()

    async def events(self) -> AsyncIterator[tuple[str, dict[str, Any]]]:
        """The task's events; ends once the connection to the shim is gone (and the queue is drained)."""
        closed = asyncio.ensure_future(self.client.wait_closed())
        try:
            while True:
                while self._events:
                    yield self._events.popleft()
                if closed.done():
                    return
                self._event_signal.clear()
                signal = asyncio.ensure_future(self._event_signal.wait())
                try:
                    await asyncio.wait({signal, closed}, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    signal.cancel()
                if closed.done():
                    # events the shim sent just before it went away may still be on their way
                    # over the events socket; a short grace lets the exit arrive first
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(0.5):
                            while not self._events:
                                self._event_signal.clear()
                                await self._event_signal.wait()
        finally:
            closed.cancel()

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for fn in self.on_close:
            with contextlib.suppress(Exception):
                fn()
        await self.client.close()
        if self._log_drain is not None:
            self._log_drain.close()

    # -- the Task API ----------------------------------------------------------------------------
    async def connect(self) -> shim_pb2.ConnectResponse:
        resp: shim_pb2.ConnectResponse = await self._call(
            "Connect", shim_pb2.ConnectRequest(id=self.id), shim_pb2.ConnectResponse
        )
        self.pid = resp.shim_pid or self.pid
        self.task_pid = resp.task_pid or self.task_pid
        return resp

    async def create(
        self,
        *,
        rootfs: list[dict[str, Any]],
        stdin: str,
        stdout: str,
        stderr: str,
        terminal: bool,
        options: dict[str, Any] | None = None,
    ) -> int:
        if options and (self.options is None or self.options.type_url.rsplit("/", 1)[-1] == RUNC_OPTIONS):
            # the manager's runc settings for this create fill what the launch's options leave unset
            current = (self.options.type_url, self.options.value) if self.options is not None else None
            self.options = runc_options(current, options)
        req = shim_pb2.CreateTaskRequest(
            id=self.id,
            bundle=str(self.bundle),
            rootfs=[
                mount_pb2.Mount(
                    type=m.get("type", ""),
                    source=m.get("source", ""),
                    target=m.get("target", ""),
                    options=list(m.get("options") or ()),
                )
                for m in rootfs
            ],
            terminal=terminal,
            stdin=stdin,
            stdout=stdout,
            stderr=stderr,
        )
        if self.options is not None:
            req.options.CopyFrom(self.options)
        resp = await self._call("Create", req, shim_pb2.CreateTaskResponse)
        self.task_pid = int(resp.pid)
        return self.task_pid

    async def start(self, exec_id: str = "") -> int:
        resp = await self._call("Start", shim_pb2.StartRequest(id=self.id, exec_id=exec_id), shim_pb2.StartResponse)
        pid = int(resp.pid)
        if exec_id:
            self._exec_pids[exec_id] = pid
        else:
            self.task_pid = pid
        return pid

    async def delete(self, exec_id: str = "") -> ExitInfo:
        resp = await self._call("Delete", shim_pb2.DeleteRequest(id=self.id, exec_id=exec_id), shim_pb2.DeleteResponse)
        if exec_id:
            self._exec_pids.pop(exec_id, None)
        return ExitInfo(int(resp.pid), int(resp.exit_status), _ns(resp.exited_at))

    async def exec(
        self, exec_id: str, spec: dict[str, Any], *, stdin: str, stdout: str, stderr: str, terminal: bool
    ) -> None:
        req = shim_pb2.ExecProcessRequest(
            id=self.id,
            exec_id=exec_id,
            terminal=terminal,
            stdin=stdin,
            stdout=stdout,
            stderr=stderr,
            spec=any_pb2.Any(type_url=PROCESS_TYPE_URL, value=json.dumps(spec).encode()),
        )
        await self._call("Exec", req, empty_pb2.Empty)

    async def kill(self, exec_id: str, signal: int, all: bool = False) -> None:
        req = shim_pb2.KillRequest(id=self.id, exec_id=exec_id, signal=int(signal), all=all)
        await self._call("Kill", req, empty_pb2.Empty)

    async def state(self, exec_id: str = "") -> ProcessState:
        r = await self._call("State", shim_pb2.StateRequest(id=self.id, exec_id=exec_id), shim_pb2.StateResponse)
        return ProcessState(
            id=exec_id or r.id or self.id,
            pid=int(r.pid),
            status=_STATUS.get(r.status, "unknown"),
            stdin=r.stdin,
            stdout=r.stdout,
            stderr=r.stderr,
            terminal=r.terminal,
            exit_status=int(r.exit_status),
            exited_at_ns=_ns(r.exited_at) if r.HasField("exited_at") else 0,
        )

    async def pids(self) -> list[ProcessInfo]:
        r = await self._call("Pids", shim_pb2.PidsRequest(id=self.id), shim_pb2.PidsResponse)
        out = []
        for p in r.processes:
            exec_id = ""
            if p.HasField("info") and p.info.type_url.rsplit("/", 1)[-1] == oci_pb2.ProcessDetails.DESCRIPTOR.full_name:
                with contextlib.suppress(DecodeError):
                    exec_id = oci_pb2.ProcessDetails.FromString(p.info.value).exec_id
            out.append(ProcessInfo(int(p.pid), exec_id))
        return out

    async def pause(self) -> None:
        await self._call("Pause", shim_pb2.PauseRequest(id=self.id), empty_pb2.Empty)

    async def resume(self) -> None:
        await self._call("Resume", shim_pb2.ResumeRequest(id=self.id), empty_pb2.Empty)

    async def resize_pty(self, exec_id: str, width: int, height: int) -> None:
        req = shim_pb2.ResizePtyRequest(id=self.id, exec_id=exec_id, width=width, height=height)
        await self._call("ResizePty", req, empty_pb2.Empty)

    async def close_io(self, exec_id: str, stdin: bool = True) -> None:
        await self._call("CloseIO", shim_pb2.CloseIORequest(id=self.id, exec_id=exec_id, stdin=stdin), empty_pb2.Empty)

    async def update(self, resources: dict[str, Any]) -> None:
        req = shim_pb2.UpdateTaskRequest(
            id=self.id, resources=any_pb2.Any(type_url=RESOURCES_TYPE_URL, value=json.dumps(resources).encode())
        )
        await self._call("Update", req, empty_pb2.Empty)

    async def stats(self) -> any_pb2.Any:
        """The shim's metrics for the task (``io.containerd.cgroups.v1|v2.Metrics`` in an Any)."""
        r = await self._call("Stats", shim_pb2.StatsRequest(id=self.id), shim_pb2.StatsResponse)
        stats: any_pb2.Any = r.stats
        return stats

    async def wait(self, exec_id: str = "") -> ExitInfo:
        # no deadline: a wait lasts as long as the process runs
        r = await self._call("Wait", shim_pb2.WaitRequest(id=self.id, exec_id=exec_id), shim_pb2.WaitResponse, None)
        pid = self._exec_pids.get(exec_id, 0) if exec_id else self.task_pid
        return ExitInfo(pid, int(r.exit_status), _ns(r.exited_at))

    async def shutdown(self) -> None:
        """Ask the shim to exit (it does once no task is left); its going away is no error."""
        try:
            await self._call("Shutdown", shim_pb2.ShutdownRequest(id=self.id), empty_pb2.Empty, self.shutdown_timeout)
        except errdefs.Unavailable:
            pass
        except errdefs.DeadlineExceeded as exc:
            # containerd logs it and goes on to close the connection and delete the bundle
            log.error("shutdown of the shim of %s/%s: %s (io.containerd.timeout.shim.shutdown is %gs)",
                      self.namespace, self.id, exc, self.shutdown_timeout)
            return
        if self.shares_shim():
            return  # other tasks of its group still use the shim: it stays
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(10):
                await self.client.wait_closed()
