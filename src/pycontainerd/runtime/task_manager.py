"""The task manager: containers' running processes, one shim per task (runtime v2).

Theory of operation
-------------------
A *task* is a container's init process plus the processes exec-ed into it.  For every task
the manager owns a bundle (``<state>/<namespace>/<id>/``, see ``bundle.py``) and a shim
process (``pycontainerd-shim-runc-v2``) that outlives the daemon and drives runc.  The
manager talks to the shim through the ``Shim`` protocol; it never runs runc itself except to clean
up after a shim that is gone (``task_recovery.py``).

Lifecycle of one task::

    create ─► CREATED ─start─► RUNNING ─(exit)─► STOPPED ─delete─► (gone)
                  │               ├─pause─► PAUSED ─resume─┘
                  └───────────────┴──────── delete refused unless CREATED/STOPPED

- ``create``: read the container record, check the runtime name, write the bundle
  (spec adjusted, see ``bundle.py``), launch the shim, ask it to create the container with
  the rootfs mounts and stdio paths, publish ``/tasks/create``.  Every step is undone when a
  later one fails.  Our own forked shims get no mounts: the manager mounts the rootfs on
  the bundle while the shim starts, and owns its unmount (bundle meta ``DAEMON_ROOTFS``).
- ``wait`` may be called before ``start`` and answers at once for an exited process.
- ``delete`` answers as soon as the task is gone for the API: the shim has recorded the
  exit and closed the IO, the rootfs is unmounted (by the shim, or here if this manager
  mounted it), and the bundle is renamed away.  The rest
  — the shim's ``runc delete`` (it runs after its reply when the container had its own pid
  namespace), its exit, removing the bundle's files — finishes in the background
  (``_finishing``; the work itself is ``TaskRecovery.finish_delete``); a ``create`` of the
  same id waits for it, and ``list_tasks`` settles it first, so a listing after a delete sees
  nothing left behind.
- Shim events (``/tasks/exit``, ``/tasks/oom``, exec added/started, paused/resumed) are
  forwarded to the daemon's exchange under the task's namespace; the manager publishes
  ``/tasks/create``, ``/tasks/start`` and ``/tasks/delete`` itself.
- A shim that disappears (killed, or gone while the daemon was down) leaves a *tombstone*:
  the bundle is cleaned up (``runc delete --force``, unmount, remove) and the task stays
  listed as STOPPED with its last known exit (255 when unknown) until ``delete``, so
  ``wait``/``delete`` still answer as they would have.
- On start-up ``restore`` scans the bundles, reconnects to live shims and tombstones the
  rest.  Shutting the daemon down only disconnects: shims and containers live on.

Where each part lives
---------------------
- This module: the ``TaskManager`` API (create/start, state, wait, delete, process control),
  its table of tasks, the shims' event pumps, kept logs, and ``check_runtime``.
- ``task_recovery.py`` (``TaskRecovery``, owned by the manager): dead shims and their
  tombstones, the bundle's move and the background tail of ``delete``, ``restore`` at
  start-up (and the sweep of kept logs of containers deleted meanwhile).  It reads the
  manager's public settings and reaches its task table, pumps and kept logs only through
  ``ManagerHooks`` (``_Hooks`` here).
- ``task_metrics.py`` (``TaskMetricsReader``): the cgroup statistics behind ``metrics``.
- ``task_record.py`` (``TaskRecord``): the record of one task these share.

The shim is reached through the ``Shim``/``ShimLauncher`` protocols (``shim_api.py``), so this
module carries no I/O details of its own; its value types are in ``task_types.py`` and its
plugin wiring (config defaults, launchers, registrations) in ``task_plugin.py``. The real
``Shim`` is ``runtime.v2.TaskShim``: the runtime v2 shim API (``containerd.task.v2.Task`` over
ttrpc). The daemon's own runc runtime uses ``runtime.v2.ForkLauncher``: our shim (``containerd-
shim-pyrunc-v2``) forked by the pre-imported fork server (``runtime.shim_client.ShimLauncher``)
instead of exec-ed, listening at containerd's socket path (``ctr shim --id`` reaches it), one
shim per container unless the ``io.containerd.runc.v2.group`` annotation groups them; events
come over the shim manager's ttrpc Events service, a dead shim is cleaned up by the binary's
``delete``.

Runtimes the daemon's own launcher does not serve go to ``ExternalShims`` (the real one is
``runtime.v2.ShimManager``): an absolute runtime path, any ``io.containerd.<name>.<version>``
with a ``containerd-shim-<name>-<version>`` binary, or the runc runtime when the config's
default runtime names a ``runtime_path``.  Such a task's bundle records the binary
(``meta.extra["shim_binary"]``), so a restart reconnects, and a dead shim is cleaned up,
through the same external binary.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import re
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import errdefs, fsmodes, identifiers, timestamps
from ..events import Exchange
from ..metadata.containers import Container, ContainerStore, TypedValue
from . import bundle as bundlemod
from . import signals
from .task_metrics import TaskMetricsReader
from .task_record import TaskRecord
from .task_recovery import TaskRecovery, cleanup_bundle_sync, discard_shim
from .task_types import (
    Exit,
    ProcessPid,
    ProcessStatus,
    RootfsMount,
    RuncOptions,
    RunningTask,
    RuntimeDefaults,
    TaskIO,
    TaskMetrics,
    Timeouts,
)

if TYPE_CHECKING:
    from .. import cgroups  # the cgroup readers load at the first metrics call (task_metrics: W6, idle PSS)
    from .shim_api import ExternalShims, Shim, ShimLauncher  # protocols, for annotations only (W6, idle PSS)

log = logging.getLogger("pycontainerd.runtime")

RUNTIME_V1_LINUX = "io.containerd.runtime.v1.linux"
RUNC_RUNTIMES = frozenset({"io.containerd.runc.v2", "io.containerd.runc.v1", RUNTIME_V1_LINUX})
SPEC_TYPE_URL = "types.containerd.io/opencontainers/runtime-spec/1/Spec"
PROCESS_TYPE_URL = "types.containerd.io/opencontainers/runtime-spec/1/Process"
TOMBSTONE_WAIT = 10.0  # calls on a task whose shim just died wait this long for its cleanup
SETTLE_TIMEOUT = 5.0  # list_tasks waits at most this long for deletions finishing in the background
_RUNTIME_NAME = re.compile(r"io\.containerd\.([a-z0-9_-]+)\.(v[0-9]+)")  # fullmatch: no trailing newline
# topics the manager publishes itself; copies from the shim are dropped
# the bundle meta's key (``BundleMeta.extra``) saying the rootfs was mounted by this manager
DAEMON_ROOTFS = "rootfs_mounted_by_daemon"
_OWN_TOPICS = frozenset({"/tasks/create", "/tasks/start", "/tasks/delete"})


def _now() -> int:
    return time.time_ns()


def check_runtime(name: str) -> None:
    """Only runc-based runtimes run here; any other name is refused as containerd would."""
    if name in RUNC_RUNTIMES:
        return
    if not name:
        raise errdefs.InvalidArgument("no runtime name: the container's runtime name is empty")
    m = _RUNTIME_NAME.fullmatch(name)
    if m is not None:
        binary = f"containerd-shim-{m.group(1)}-{m.group(2)}"
        raise errdefs.NotFound(
            f"failed to start shim: failed to resolve runtime path: runtime {name!r} binary not installed "
            f"{binary!r}: not found (this daemon runs {', '.join(sorted(RUNC_RUNTIMES))})"
        )
    if os.path.isabs(name):
        raise errdefs.NotFound(
            f"failed to start shim: runtime {name!r}: custom shim binaries are not supported: not found"
        )
    raise errdefs.InvalidArgument(
        f"invalid runtime name {name}, correct runtime name should be either format like "
        "`io.containerd.runc.v1` or a full path to the binary"
    )


# A container labelled KEEP_LOG_LABEL=daemon whose task is created without stdout/stderr
# (``pyctr run -d``) has its output kept by the daemon: the shim appends both streams to
# ``<log dir>/<namespace>/<id>.log`` (dirs 0700, file 0600, under the daemon's root, so it
# outlives the client, the task and a daemon restart); the file's URI goes in LOG_URI_LABEL
# (``pyctr logs`` reads it) and the file goes when the container record does.
KEEP_LOG_LABEL = "io.pycontainerd.log"
LOG_URI_LABEL = "io.pycontainerd.log-uri"


class TaskManager:
    def __init__(
        self,
        *,
        root: Path,
        containers: ContainerStore,
        exchange: Exchange,
        launcher: ShimLauncher,
        defaults: RuntimeDefaults | None = None,
        shim_state: Path | None = None,
        cgroup_reader: cgroups.CgroupReader | None = None,
        external: ExternalShims | None = None,
        log_dir: Path | None = None,
        timeouts: Timeouts | None = None,
    ) -> None:
        self.root = root
        self.timeouts = timeouts or Timeouts()  # task_state here; the shim ones are the shim manager's
        self.log_dir = log_dir
        self._log_removals: set[asyncio.Task[None]] = set()
        if log_dir is not None:
            exchange.observers.append(self._on_exchange_event)
        self.shim_state = shim_state or root
        self.containers = containers
        self.exchange = exchange
        self.launcher = launcher
        self.external = external
        self.defaults = defaults or RuntimeDefaults()
        self._metrics = TaskMetricsReader(cgroup_reader)
        self._tasks: dict[tuple[str, str], TaskRecord] = {}
        self._pending: set[tuple[str, str]] = set()
        self._finishing: dict[tuple[str, str], asyncio.Task[None]] = {}  # deletes finishing after their reply
        self._closing = False
        self._min_oom = bundlemod.own_oom_score_adj() if self.defaults.restrict_oom_score_adj else None
        self._recovery = TaskRecovery(self, _Hooks(self))

    # -- lookup --------------------------------------------------------------------------------
    def require_task(self, namespace: str, container_id: str) -> None:
        """NotFound unless the container has a task (for checks that containerd makes in this order)."""
        self._get(namespace, container_id)

    def _get(self, namespace: str, container_id: str) -> TaskRecord:
        t = self._tasks.get((namespace, container_id))
        if t is None:
            raise errdefs.NotFound(f"task {container_id} not found")
        return t

    def _shim(self, t: TaskRecord) -> Shim:
        if t.shim is None:
            if t.tombstone is None:  # TaskRecovery.shim_gone is cleaning up right now
                raise errdefs.Unavailable(f"task {t.id}: its shim is gone and the task is being cleaned up; retry")
            raise errdefs.NotFound(f"task {t.id}: process already finished: not found")
        return t.shim

    async def _tombstoned(self, t: TaskRecord) -> Exit | None:
        """The task's tombstone once ``TaskRecovery.shim_gone`` has left it (waits up to ``TOMBSTONE_WAIT``:
        the cleanup runs ``runc delete`` and unmounts); None if it does not come."""
        if t.tombstone is None and not self._closing:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(t.dead.wait(), TOMBSTONE_WAIT)
        return t.tombstone

    def _publish(self, t: TaskRecord, topic: str, payload: dict[str, Any]) -> None:
        self.exchange.publish(t.namespace, topic, payload)

    def has_task(self, namespace: str, container_id: str) -> bool:
        return (namespace, container_id) in self._tasks

    # -- kept logs ------------------------------------------------------------------------------
    def log_path(self, namespace: str, container_id: str) -> Path | None:
        if self.log_dir is None:
            return None
        return self.log_dir / namespace / f"{container_id}.log"

    async def _kept_log(self, namespace: str, container: Container, io: TaskIO) -> TaskIO:
        """stdout and stderr to the container's log file (made private here, appended by the shim)."""
        path = self.log_path(namespace, container.id)
        if path is None:
            raise errdefs.FailedPrecondition(f"container {container.id}: this daemon keeps no logs")

        def prepare() -> None:
            fsmodes.private_dir(path.parent)
            fsmodes.private_file(path)

        await asyncio.to_thread(prepare)
        uri = f"file://{path}"
        if container.labels.get(LOG_URI_LABEL) != uri:
            await self.containers.update(namespace, Container(id=container.id, labels={LOG_URI_LABEL: uri}),
                                         [f"labels.{LOG_URI_LABEL}"])
        return TaskIO(io.stdin, uri, uri, io.terminal)

    def _on_exchange_event(self, env: Any) -> None:
        if env.topic != "/containers/delete" or self.log_dir is None:
            return
        container_id = str(env.payload.get("id", ""))
        try:
            identifiers.validate(container_id)
            loop = asyncio.get_running_loop()
        except (errdefs.ContainerdError, RuntimeError):
            return
        task = loop.create_task(self._remove_log(env.namespace, container_id))
        self._log_removals.add(task)
        task.add_done_callback(self._log_removals.discard)

    async def _remove_log(self, namespace: str, container_id: str) -> None:
        """The kept log of a deleted container (not of one that exists: events can be forwarded)."""
        path = self.log_path(namespace, container_id)
        if path is None:
            return
        try:
            await self.containers.get(namespace, container_id)
            return
        except errdefs.NotFound:
            pass
        with contextlib.suppress(FileNotFoundError):
            await asyncio.to_thread(os.unlink, path)

    # -- create / start -------------------------------------------------------------------------
    async def create(
        self,
        namespace: str,
        container_id: str,
        *,
        rootfs: Sequence[RootfsMount] = (),
        io: TaskIO = TaskIO(),
        options: RuncOptions | None = None,
        runtime_path: str = "",
        task_options: TypedValue | None = None,
        start: bool = False,
        record: Container | None = None,
    ) -> int:
        """Create a task; ``task_options`` is the request's options Any as it came (an external
        shim gets it, else the container's runtime options, as containerd passes them).

        ``start``: its init started too (``start_process``) in the same call, for a caller that
        acknowledges both at once (the CRI's StartContainer): the bundle's record of the create
        is written once, after the start, with the start's time.  A failed start leaves the
        task created (the caller deletes it) and raises the start's error.

        ``record``: the container's record as the caller just wrote it (the CRI's create), used
        instead of reading it again; its spec, runtime and labels must be the stored ones."""
        identifiers.validate(namespace)
        if record is not None and record.id == container_id:
            container = record
        else:
            container = await self.containers.get(namespace, container_id)
        runtime_name = runtime_path or container.runtime_name
        shim_binary = self.external.resolve(runtime_name) if self.external is not None and runtime_name else None
        if shim_binary is None:
            check_runtime(runtime_name)
        if container.spec is None:
            raise errdefs.InvalidArgument(f"container {container_id}: spec must be set")
        if container.spec.type_url.rsplit("/", 1)[-1] != "Spec" or "runtime-spec" not in container.spec.type_url:
            raise errdefs.InvalidArgument(
                f"container {container_id}: spec has type {container.spec.type_url!r}, want {SPEC_TYPE_URL!r}"
            )
        parsed = bundlemod.parse_spec(container.spec.value, f"container {container_id} spec")
        spec = bundlemod.adjust_spec(parsed, min_oom_score_adj=self._min_oom)
        raw_spec = container.spec.value if spec is parsed else None  # unchanged: its bytes go to config.json
        if container.labels.get(KEEP_LOG_LABEL) == "daemon" and not io.stdout and not io.stderr:
            io = await self._kept_log(namespace, container, io)
        opts = options or RuncOptions()
        v1 = runtime_name == RUNTIME_V1_LINUX  # its runc binary and root are the v1 runtime plugin's
        v1_binary = self.defaults.v1_binary_name if v1 else ""
        v1_root = self.defaults.v1_root if v1 else ""
        binary = opts.binary_name or v1_binary or self.defaults.binary_name or "runc"
        systemd = opts.systemd_cgroup or self.defaults.systemd_cgroup
        # runc's state root for this namespace, as containerd lays it out (<root>/<namespace>)
        runc_root = opts.root or v1_root or self.defaults.root or str(self.shim_state / "runc")
        runtime_root = os.path.join(runc_root, namespace)
        mounts = [m.as_dict() for m in rootfs]

        key = (namespace, container_id)
        if key in self._tasks or key in self._pending:
            raise errdefs.AlreadyExists(f"task {container_id}: already exists")
        self._pending.add(key)
        try:
            finishing = self._finishing.get(key)
            if finishing is not None:
                # the previous task of this id is still being torn down (runc state, bundle)
                await asyncio.shield(finishing)
            meta = bundlemod.BundleMeta(
                namespace=namespace,
                id=container_id,
                runtime_name=runtime_name,
                binary_name=binary,
                runtime_root=runtime_root,
                systemd_cgroup=systemd,
                cgroups_path=bundlemod.cgroups_path_of(spec),
            )
            if shim_binary is not None:
                meta.extra["shim_binary"] = shim_binary
            # Our own shims: the rootfs is mounted here, in a worker thread while the fork
            # server starts the shim, and Create carries no mounts; this manager then owns the
            # unmount (at Delete, before the reply, where the shim would do it).  An external
            # shim gets the mounts in Create, as containerd sends them.
            premount = shim_binary is None and bool(mounts)
            if premount:
                meta.extra[DAEMON_ROOTFS] = True
            path = await asyncio.to_thread(self._make_bundle, mounts, namespace, container_id, spec, meta, raw_spec)
            shim: Shim | None = None
            mounting: asyncio.Task[None] | None = None
            started, started_ok, start_error, started_at = 0, False, None, 0
            try:
                if premount:
                    mounting = asyncio.create_task(asyncio.to_thread(bundlemod.mount_rootfs, path, mounts))
                if shim_binary is not None:
                    assert self.external is not None
                    raw = task_options if task_options is not None and task_options.type_url else None
                    raw = raw or container.runtime_options
                    shim = await self.external.launch(
                        namespace=namespace,
                        container_id=container_id,
                        bundle=path,
                        binary=shim_binary,
                        options=(raw.type_url, raw.value) if raw is not None and raw.type_url else None,
                        runc=self._runc_settings(opts, binary_name=binary, root=runc_root, systemd_cgroup=systemd),
                        debug=self.defaults.shim_debug,
                    )
                else:
                    shim = await self.launcher.launch(
                        namespace=namespace,
                        container_id=container_id,
                        bundle=path,
                        state_dir=self.shim_state,
                        runtime_binary=binary,
                        runtime_root=runtime_root,
                        systemd_cgroup=systemd,
                        debug=self.defaults.shim_debug,
                        group=bundlemod.shim_group(spec, container_id),
                    )
                if mounting is not None:
                    await mounting
                from ..shim.protocol import CreateOptions  # with the first task (W6, idle PSS)

                pid = await shim.create(
                    rootfs=[] if premount else mounts,
                    stdin=io.stdin,
                    stdout=io.stdout,
                    stderr=io.stderr,
                    terminal=io.terminal,
                    options=CreateOptions(
                        binary_name=binary,
                        systemd_cgroup=systemd,
                        no_pivot_root=opts.no_pivot_root or self.defaults.no_pivot_root,
                        no_new_keyring=opts.no_new_keyring or self.defaults.no_new_keyring,
                        io_uid=opts.io_uid or self.defaults.io_uid,
                        io_gid=opts.io_gid or self.defaults.io_gid,
                    ).to_wire(),
                )
                meta.pid = pid
                meta.shim_pid = shim.pid
                meta.shim_address = shim.address
                if start:
                    # the record of the create is written once the shim started the process, with
                    # the start's time (what ``started_at`` reports, before and after a restart):
                    # a daemon that dies before it is written finds no pid recorded (restore then
                    # removes the task), and neither call was acknowledged
                    try:
                        started = await shim.start("")
                    except BaseException as exc:  # the task stays (created): the caller deletes it
                        start_error = exc
                    else:
                        started_ok, started_at = True, time.time_ns()
                        meta.started_at_ns = started_at
                await asyncio.to_thread(bundlemod.write_meta, path, meta)
            except BaseException:
                if started_ok and shim is not None:  # the write failed: no task to leave running
                    with contextlib.suppress(Exception):
                        await shim.kill("", 9, True)
                if mounting is not None:
                    # the cleanup unmounts: only once the mount is done (or failed); wait
                    # does not cancel it
                    await asyncio.wait([mounting])
                    if not mounting.cancelled():
                        mounting.exception()  # retrieved: the failure that counts is being raised
                await self._discard_shim(shim)
                await asyncio.to_thread(self._cleanup_bundle_sync, path, meta)
                raise
            t = TaskRecord(namespace, container_id, path, meta, shim, io=io)
            self._tasks[key] = t
            t.pump = asyncio.create_task(self._pump(t), name=f"shim-events-{namespace}/{container_id}")
        finally:
            self._pending.discard(key)
        self._publish(
            t,
            "/tasks/create",
            {
                "container_id": container_id,
                "bundle": str(path),
                "rootfs": [
                    {"type": m["type"], "source": m["source"], "target": m["target"], "options": m["options"]}
                    for m in mounts
                ],
                "io": {"stdin": io.stdin, "stdout": io.stdout, "stderr": io.stderr, "terminal": io.terminal},
                "pid": pid,
            },
        )
        if start:
            if start_error is not None:
                raise start_error
            t.started, t.started_at_ns = True, started_at
            self._publish(t, "/tasks/start", {"container_id": container_id, "pid": started})
        return pid

    def _make_bundle(
        self,
        mounts: list[dict[str, Any]],
        namespace: str,
        container_id: str,
        spec: dict[str, Any],
        meta: bundlemod.BundleMeta,
        raw_spec: bytes | None = None,
    ) -> Path:
        """Check the rootfs mounts and write the bundle (one worker-thread hop for both)."""
        bundlemod.check_rootfs_mounts(mounts)
        return bundlemod.create(self.root, namespace, container_id, spec, meta, have_rootfs_mounts=bool(mounts),
                                raw_spec=raw_spec)

    async def _discard_shim(self, shim: Shim | None) -> None:
        await discard_shim(shim)

    async def start_process(self, namespace: str, container_id: str, exec_id: str = "") -> int:
        t = self._get(namespace, container_id)
        pid = await self._shim(t).start(exec_id)
        if not exec_id:
            t.started, t.started_at_ns = True, time.time_ns()
            t.meta.started_at_ns = t.started_at_ns
            try:  # the start's time, kept for a restarted daemon
                await asyncio.to_thread(bundlemod.write_meta, t.bundle, t.meta)
            except OSError as exc:  # the bundle went (a delete): nothing left to restore
                log.warning("task %s/%s: recording its start time: %s", namespace, container_id, exc)
            self._publish(t, "/tasks/start", {"container_id": container_id, "pid": pid})
        return pid

    # -- state ----------------------------------------------------------------------------------
    def started_at(self, namespace: str, container_id: str) -> int:
        """When the init of a task was started (its shim's Start answered, wall clock ns;
        containerd's CRI stamps StartedAt there), the same after a restart (the bundle's record
        keeps it); 0 when it does not know (no task, not started yet, or restored from a bundle
        written before the time was recorded)."""
        t = self._tasks.get((namespace, container_id))
        return t.started_at_ns if t is not None else 0

    def running_pid(self, namespace: str, container_id: str) -> int:
        """The init pid of a task known to run without asking its shim: one this manager started
        whose exit, pause, deletion or shim loss it has not seen (containerd's CRI reads a
        sandbox's state from its own store the same way, kept by the task events); 0 when it does
        not know (a task restored after a restart, say): then ask ``get``."""
        t = self._tasks.get((namespace, container_id))
        if (t is None or not t.started or t.paused or t.deleting or t.last_exit is not None
                or t.shim is None or t.tombstone is not None):
            return 0
        return t.meta.pid

    def _tombstone_status(self, t: TaskRecord) -> ProcessStatus:
        assert t.tombstone is not None
        return ProcessStatus(
            container_id=t.id,
            id=t.id,
            pid=t.tombstone.pid,
            status="stopped",
            exit_status=t.tombstone.exit_status,
            exited_at_ns=t.tombstone.exited_at_ns,
        )

    async def get(self, namespace: str, container_id: str, exec_id: str = "") -> ProcessStatus:
        t = self._get(namespace, container_id)
        shim = t.shim
        if shim is None:
            if exec_id:
                raise errdefs.NotFound(f"process {exec_id} of task {container_id}: not found")
            if await self._tombstoned(t) is None:
                raise errdefs.Unavailable(f"task {container_id}: its shim is gone and cleaning up takes long; retry")
            return self._tombstone_status(t)
        if not exec_id and t.last_exit is not None and t.io is not None:
            # once its init exited, a task stays stopped until deleted: the recorded exit is
            # its state (what the shim would answer), no round trip to the shim
            return ProcessStatus(
                container_id=container_id,
                id=container_id,
                pid=t.last_exit.pid,
                status="stopped",
                stdin=t.io.stdin,
                stdout=t.io.stdout,
                stderr=t.io.stderr,
                terminal=t.io.terminal,
                exit_status=t.last_exit.exit_status,
                exited_at_ns=t.last_exit.exited_at_ns,
            )
        try:
            # io.containerd.timeout.task.state: a shim that does not answer in time gives status
            # unknown (logged), as containerd's tasks service does
            async with asyncio.timeout(self.timeouts.task_state):
                st = await shim.state(exec_id)
        except TimeoutError:
            log.error("state of task %s/%s%s: the shim did not answer within %gs (io.containerd.timeout.task.state)",
                      namespace, container_id, f" process {exec_id}" if exec_id else "", self.timeouts.task_state)
            pid = 0 if exec_id else t.meta.pid
            return ProcessStatus(container_id=container_id, id=exec_id or container_id, pid=pid, status="unknown")
        except errdefs.NotFound:
            raise
        except errdefs.Unavailable:
            # the shim went away under us: the pump turns that into a tombstone
            if not exec_id and await self._tombstoned(t) is not None:
                return self._tombstone_status(t)
            raise
        except Exception:
            if t.tombstone is not None and not exec_id:
                return self._tombstone_status(t)
            raise
        return ProcessStatus(
            container_id=container_id,
            id=exec_id or container_id,
            pid=st.pid,
            status=st.status,
            stdin=st.stdin,
            stdout=st.stdout,
            stderr=st.stderr,
            terminal=st.terminal,
            exit_status=st.exit_status,
            exited_at_ns=st.exited_at_ns,
        )

    async def settle(self) -> None:
        """Until the deletions that answered already have finished (shims gone, bundles removed);
        at most ``SETTLE_TIMEOUT``."""
        if self._finishing:
            await asyncio.wait([asyncio.shield(t) for t in self._finishing.values()], timeout=SETTLE_TIMEOUT)

    async def list_tasks(self, namespace: str) -> list[ProcessStatus]:
        # a listing is a consistency point: what was deleted is gone from disk, too
        await self.settle()
        ids = [cid for (ns, cid) in self._tasks if ns == namespace]

        async def one(cid: str) -> ProcessStatus | None:
            try:
                return await self.get(namespace, cid)
            except errdefs.NotFound:
                return None
            except Exception as exc:
                log.warning("state of task %s/%s: %s", namespace, cid, exc)
                return (
                    ProcessStatus(
                        container_id=cid, id=cid, pid=self._tasks[(namespace, cid)].meta.pid, status="unknown"
                    )
                    if (namespace, cid) in self._tasks
                    else None
                )

        results = await asyncio.gather(*(one(c) for c in sorted(ids)))
        return [r for r in results if r is not None]

    async def wait(self, namespace: str, container_id: str, exec_id: str = "") -> Exit:
        t = self._get(namespace, container_id)
        shim = t.shim
        if shim is None:
            if exec_id:
                raise errdefs.NotFound(f"process {exec_id} of task {container_id}: not found")
            exit_ = await self._tombstoned(t)
            if exit_ is None:
                raise errdefs.Unavailable(f"task {container_id}: its shim is gone and cleaning up takes long; retry")
            return exit_
        try:
            e = await shim.wait(exec_id)
            exit_ = Exit(e.pid, e.exit_status, e.exited_at_ns)
            if not exec_id and t.last_exit is None and t.shim is shim:
                t.last_exit = exit_  # the /tasks/exit event may come later, on its own connection
            return exit_
        except errdefs.NotFound:
            raise
        except Exception:
            # the shim went away while we waited: the pump turns that into a tombstone
            if not exec_id:
                exit_ = await self._tombstoned(t)
                if exit_ is not None:
                    return exit_
            raise

    # -- delete -----------------------------------------------------------------------------------
    async def delete(self, namespace: str, container_id: str) -> Exit:
        t = self._get(namespace, container_id)
        async with t.lock:
            if self._tasks.get((namespace, container_id)) is not t:
                raise errdefs.NotFound(f"task {container_id} not found")
            if t.shim is None:
                assert t.tombstone is not None
                exit_ = t.tombstone
            else:
                if t.last_exit is None:  # once its init exited, a task stays stopped: no need to ask
                    st = await t.shim.state("")
                    if st.status not in ("stopped", "created"):
                        raise errdefs.FailedPrecondition(f"task must be stopped before deletion: {st.status}")
                e = await t.shim.delete("")
                exit_ = Exit(e.pid, e.exit_status, e.exited_at_ns)
                t.deleting = True
                # The task is gone for the API now.  The shim may still be finishing
                # (``runc delete`` runs after its reply) and the bundle must go: that happens
                # in the background; a Create of the same id waits for it (``_finishing``).
                key = (namespace, container_id)
                # a rootfs this manager mounted at Create is unmounted here, where the shim's
                # Delete would have, before the reply: the snapshot is free once it is out
                unmount = bool(t.meta.extra.get(DAEMON_ROOTFS))
                trash = await self._recovery.move_bundle(t.bundle, t.meta, unmount=unmount)
                task = asyncio.create_task(
                    self._recovery.finish_delete(t, trash), name=f"finish-delete-{namespace}/{container_id}"
                )
                self._finishing[key] = task
                task.add_done_callback(functools.partial(self._finished, key))
            del self._tasks[(namespace, container_id)]
        self._publish(
            t,
            "/tasks/delete",
            {
                "container_id": container_id,
                "pid": exit_.pid,
                "exit_status": exit_.exit_status,
                "exited_at": timestamps.format_ns(exit_.exited_at_ns),
                "id": container_id,
            },
        )
        return exit_

    async def delete_process(self, namespace: str, container_id: str, exec_id: str) -> Exit:
        if not exec_id:
            raise errdefs.InvalidArgument("exec id must be set to delete a process (use Delete for the task)")
        t = self._get(namespace, container_id)
        e = await self._shim(t).delete(exec_id)
        return Exit(e.pid, e.exit_status, e.exited_at_ns)

    # -- process control ---------------------------------------------------------------------------
    async def kill(
        self, namespace: str, container_id: str, signal: int, *, exec_id: str = "", all: bool = False
    ) -> None:
        t = self._get(namespace, container_id)  # a missing task is NotFound whatever the signal, like containerd
        signals.validate(signal)
        await self._shim(t).kill(exec_id, signal, all)

    async def exec(
        self, namespace: str, container_id: str, exec_id: str, spec: dict[str, Any], io: TaskIO = TaskIO()
    ) -> None:
        if not exec_id:
            raise errdefs.InvalidArgument("exec id cannot be empty")
        identifiers.validate(exec_id)
        if not isinstance(spec, dict) or not spec.get("args"):
            raise errdefs.InvalidArgument(f"exec {exec_id}: the process spec must have args")
        t = self._get(namespace, container_id)
        # the shim refuses a duplicate exec id itself (AlreadyExists): no state round trip first
        await self._shim(t).exec(
            exec_id, spec, stdin=io.stdin, stdout=io.stdout, stderr=io.stderr, terminal=io.terminal
        )

    async def resize_pty(self, namespace: str, container_id: str, exec_id: str, width: int, height: int) -> None:
        t = self._get(namespace, container_id)
        await self._shim(t).resize_pty(exec_id, width, height)

    async def close_io(self, namespace: str, container_id: str, exec_id: str = "", stdin: bool = True) -> None:
        t = self._get(namespace, container_id)
        if stdin:
            await self._shim(t).close_io(exec_id, stdin=True)

    async def pause(self, namespace: str, container_id: str) -> None:
        t = self._get(namespace, container_id)
        t.paused = True  # from now on (even if it fails) running_pid asks the shim
        await self._shim(t).pause()

    async def resume(self, namespace: str, container_id: str) -> None:
        t = self._get(namespace, container_id)
        await self._shim(t).resume()
        t.paused = False

    async def pids(self, namespace: str, container_id: str) -> list[ProcessPid]:
        t = self._get(namespace, container_id)
        return [ProcessPid(p.pid, p.exec_id) for p in await self._shim(t).pids()]

    async def update(
        self,
        namespace: str,
        container_id: str,
        resources: dict[str, Any] | None,
        annotations: dict[str, str] | None = None,
    ) -> None:
        t = self._get(namespace, container_id)
        shim = self._shim(t)
        if resources is not None:
            await shim.update(resources)
        elif annotations:
            log.info("task %s/%s: annotations update has no effect on runc tasks", namespace, container_id)

    async def checkpoint(self, namespace: str, container_id: str) -> None:
        self._get(namespace, container_id)
        import shutil  # at first use: shutil imports bz2 and lzma (W6, idle PSS)

        criu = shutil.which("criu")
        raise errdefs.Unimplemented(
            f"checkpoint of task {container_id} is not supported: "
            + ("criu is not installed" if criu is None else "checkpoint/restore is not implemented by this daemon")
        )

    # -- metrics -----------------------------------------------------------------------------------
    def running_tasks(self) -> list[RunningTask]:
        """Every task with a live shim, as plain values (for the metrics and debug endpoints)."""
        return [
            RunningTask(ns, cid, t.meta.pid, t.meta.shim_pid, t.meta.cgroups_path, t.meta.systemd_cgroup)
            for (ns, cid), t in list(self._tasks.items())
            if t.shim is not None
        ]

    async def metrics(self, namespace: str, filter_exprs: Sequence[str] = ()) -> list[TaskMetrics]:
        return await self._metrics.collect(namespace, [t for _, t in sorted(self._tasks.items())], filter_exprs)

    # -- shim events ---------------------------------------------------------------------------------
    async def _pump(self, t: TaskRecord) -> None:
        assert t.shim is not None
        try:
            async for topic, payload in t.shim.events():
                self._on_event(t, topic, payload)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            if not t.deleting and not self._closing:
                log.warning("event stream of shim for %s/%s failed: %s", t.namespace, t.id, exc)
        if not t.deleting and not self._closing:
            await self._recovery.shim_gone(t)

    def _on_event(self, t: TaskRecord, topic: str, payload: dict[str, Any]) -> None:
        if topic in _OWN_TOPICS:
            return
        if topic == "/tasks/exit" and payload.get("id", t.id) in ("", t.id):
            t.last_exit = Exit(
                int(payload.get("pid", 0) or 0),
                int(payload.get("exit_status", 0) or 0),
                _ns_of(payload.get("exited_at")) or _now(),
            )
        self.exchange.publish(t.namespace, topic, payload)

    async def _stop_pump(self, t: TaskRecord) -> None:
        pump, t.pump = t.pump, None
        if pump is None or pump is asyncio.current_task():
            return
        pump.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await pump

    _cleanup_bundle_sync = staticmethod(cleanup_bundle_sync)  # create's undo removes the bundle so too

    def _finished(self, key: tuple[str, str], task: asyncio.Task[None]) -> None:
        if self._finishing.get(key) is task:
            del self._finishing[key]

    async def restore(self) -> None:
        """Reconnect to the shims of tasks that survived a daemon restart (``task_recovery``)."""
        await self._recovery.restore()

    def _runc_settings(self, opts: RuncOptions, **chosen: Any) -> dict[str, Any]:
        """Every runc option the task or the daemon config sets, by ``containerd.runc.v1.Options``
        field name (``RuncOptions`` uses those names), with the values this create settled on."""
        out: dict[str, Any] = {}
        for name in RuncOptions.__dataclass_fields__:
            out[name] = getattr(opts, name) or getattr(self.defaults, name, None)
        out.update(chosen)
        return {k: v for k, v in out.items() if v}

    async def start(self) -> None:
        """Called by the daemon once every plugin is loaded: serve the shims' events.

        A failure (e.g. a socket path too long for ``<address>.ttrpc``) is logged, not fatal:
        the daemon's own shims do not need it, external shims then lose their events."""
        if self.external is not None:
            try:
                await self.external.start()
            except Exception as exc:
                log.error("cannot serve events for runtime v2 shims: %s", exc)

    async def close(self) -> None:
        """Disconnect from every shim; the shims and their containers keep running."""
        self._closing = True
        if self._finishing:
            await asyncio.wait(set(self._finishing.values()), timeout=10)
        for t in list(self._tasks.values()):
            await self._stop_pump(t)
            if t.shim is not None:
                with contextlib.suppress(Exception):
                    await t.shim.close()
        with contextlib.suppress(Exception):
            await self.launcher.close()
        if self.external is not None:
            with contextlib.suppress(Exception):
                await self.external.close()


class _Hooks:
    """The manager's side of ``task_recovery.ManagerHooks``: its task table, event pumps and
    kept logs, as its recovery may use them."""

    def __init__(self, manager: TaskManager) -> None:
        self._m = manager

    def is_listed(self, t: TaskRecord) -> bool:
        return self._m._tasks.get((t.namespace, t.id)) is t

    def add(self, t: TaskRecord, *, events: bool) -> None:
        self._m._tasks[(t.namespace, t.id)] = t
        if events:
            t.pump = asyncio.create_task(self._m._pump(t), name=f"shim-events-{t.namespace}/{t.id}")

    async def stop_events(self, t: TaskRecord) -> None:
        await self._m._stop_pump(t)

    async def remove_log(self, namespace: str, container_id: str) -> None:
        await self._m._remove_log(namespace, container_id)


def _ns_of(value: Any) -> int:
    """exited_at from an event payload: ns int, RFC 3339 string, or {seconds, nanos}."""
    if value is None or value == "":
        return 0
    if isinstance(value, int):
        return value
    if isinstance(value, dict):
        return int(value.get("seconds", 0)) * 1_000_000_000 + int(value.get("nanos", 0))
    if isinstance(value, str):
        try:
            return timestamps.parse_ns(value if value.endswith("Z") else value + "Z")
        except ValueError:
            return 0
    return 0

