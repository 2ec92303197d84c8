"""CRI containers in pods: create, start, stop, remove, status, list, exec-sync, stats, log reopen.

A container is a record in ``k8s.io`` labelled ``io.cri-containerd.kind=container`` whose
extension ``io.cri-containerd.container.metadata`` (JSON) holds the ContainerConfig, the
sandbox id, the log path and the status times (started, finished, exit code, reason) — so a
restarted daemon still answers for it.  Like containerd, CreateContainer makes the record,
the spec and the rootfs snapshot; StartContainer makes and starts the task, with stdout and
stderr going through FIFOs into the CRI log (``crilog``).  The container joins the pod's
network, IPC and UTS namespaces through ``/proc/<infra pid>/ns/*``.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import json
import logging
import os
import shutil
import signal
import stat
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from google.protobuf import json_format

from .. import cgroups, errdefs
from ..api.cri.runtime.v1 import api_pb2 as pb
from ..events.exchange import Exchange
from ..fsmodes import private_dir
from ..metadata.containers import Container, ContainerStore, TypedValue
from ..oci.seccomp import default_profile, load_profile
from ..oci.spec import (
    SPEC_TYPE_URL,
    HostInfo,
    RootfsFiles,
    canonical,
    host_devices,
    mount_depth,
    replace_or_append_env,
    with_additional_gids,
    with_privileged,
    with_user,
)
from ..runtime.task_manager import TaskManager
from ..runtime.task_types import RootfsMount, TaskIO
from . import configopts, handlers, volumes
from .crilog import FifoLogger
from .execio import ExecFifos
from .features import HandlerFeatures
from .imagestore import LEASE_EXPIRE, NAMESPACE, CriImageStore, rfc3339
from .phases import Phases
from .sandbox import (
    ANN_CONTAINER_TYPE,
    ANN_SANDBOX_ID,
    ANN_SANDBOX_NAME,
    ANN_SANDBOX_NAMESPACE,
    ANN_SANDBOX_UID,
    CONTAINER_EXT,
    DEV_SHM,
    KIND_CONTAINER,
    KIND_LABEL,
    Sandbox,
    Sandboxes,
    cgroups_path,
    ext_data,
    ext_value,
    new_id,
    rootfs_files,
    shm_source,
)
from .security import (
    LOCALHOST,
    apparmor_profile,
    read_apparmor,
    refuse_user_namespace,
    seccomp_request,
    user_string,
)

log = logging.getLogger("pycontainerd.cri")

ANN_CONTAINER_NAME = "io.kubernetes.cri.container-name"
ANN_IMAGE_NAME = "io.kubernetes.cri.image-name"
KILL_WAIT = 10.0
ROOTFS_FILES_CACHE = 32  # images whose /etc/passwd and /etc/group are kept
ROOTFS_FILES_MAX = 256 * 1024  # larger ones are read again at each create


def container_name(m: pb.ContainerMetadata, s: pb.PodSandboxMetadata) -> str:
    return f"{m.name}_{s.name}_{s.namespace}_{s.uid}_{m.attempt}"


@dataclass
class CriContainer:
    id: str
    sandbox_id: str
    config: pb.ContainerConfig
    meta: dict[str, Any]
    created_at_ns: int
    image: str
    labels: dict[str, str]
    spec: dict[str, Any]
    state: pb.ContainerState.ValueType = pb.CONTAINER_CREATED
    pid: int = 0
    exit_code: int = 0
    started_at_ns: int = 0
    removing: bool = False  # a RemoveContainer is removing it (containerd's Status.Removing)
    finished_at_ns: int = 0
    reason: str = ""
    runtime_type: str = "io.containerd.runc.v2"  # the record's runtime (its pod's handler's runtime_type)
    snapshotter: str = ""  # the record's (its pod's handler's, else the CRI's)
    snapshot_key: str = ""
    runtime_options: TypedValue | None = None  # the record's


def _reason(code: int, oom: bool = False) -> str:
    if oom and code != 0:
        return "OOMKilled"
    return "Completed" if code == 0 else "Error"


def stop_signal_name(cfg: pb.ContainerConfig, image_config: dict[str, Any]) -> str:
    """The signal StopContainer sends first: ContainerConfig.stop_signal (1.33+), else the image's
    StopSignal, else SIGTERM (containerd's order)."""
    if cfg.stop_signal != pb.RUNTIME_DEFAULT:
        name = pb.Signal.Name(cfg.stop_signal)
        if name.startswith("SIGRTMINPLUS"):
            return f"SIGRTMIN+{name.removeprefix('SIGRTMINPLUS')}"
        if name.startswith("SIGRTMAXMINUS"):
            return f"SIGRTMAX-{name.removeprefix('SIGRTMAXMINUS')}"
        return name
    return str((image_config.get("config") or {}).get("StopSignal") or "SIGTERM")


def parse_signal(value: str) -> int:
    """A signal as images and CRI name it: ``SIGUSR1``, ``USR1``, ``SIGRTMIN+3``, ``SIGRTMAX-1`` or a number."""
    v = value.strip().upper()
    if v.isdigit():
        return int(v)
    v = v if v.startswith("SIG") else f"SIG{v}"
    try:
        if v.startswith("SIGRTMIN+"):
            return int(signal.SIGRTMIN) + int(v.removeprefix("SIGRTMIN+"))
        if v.startswith("SIGRTMAX-"):
            return int(signal.SIGRTMAX) - int(v.removeprefix("SIGRTMAX-"))
    except ValueError:
        pass
    sig = getattr(signal, v, None)
    if isinstance(sig, signal.Signals):
        return int(sig)
    raise errdefs.InvalidArgument(f"unknown signal {value!r}")


def signal_enum(name: str) -> pb.Signal.ValueType:
    """ContainerStatus.stop_signal for a stored signal name (RUNTIME_DEFAULT when CRI has no name for it)."""
    v = name.strip().upper()
    v = v.replace("SIGRTMIN+", "SIGRTMINPLUS").replace("SIGRTMAX-", "SIGRTMAXMINUS")
    return pb.Signal.Value(v) if v in pb.Signal.DESCRIPTOR.values_by_name else pb.RUNTIME_DEFAULT


def oci_resources(res: pb.LinuxContainerResources, *, swap_accounting: bool = False) -> dict[str, Any]:
    """The OCI ``linux.resources`` a CRI LinuxContainerResources asks for, as containerd builds them.

    Memory swap follows containerd 1.6: with swap accounting on the host, the swap limit is the
    one asked for, or the memory limit itself (no swap by default); without it (cgroup v1 with
    no ``memory.memsw.*``, the default on Debian) there is nothing to limit and none is set.
    Hugepage limits are the request's; what becomes of them is the CRI config's hugetlb keys'
    (``configopts.hugepage_limits``: by default, as containerd's, they are not set).  Cgroup v2
    ``unified`` keys go to runc as asked: a cgroup v1 host fails the start with runc's error naming
    them (never silently dropped)."""
    out: dict[str, Any] = {}
    cpu: dict[str, Any] = {}
    if res.cpu_shares:
        cpu["shares"] = res.cpu_shares
    if res.cpu_quota:
        cpu["quota"] = res.cpu_quota
    if res.cpu_period:
        cpu["period"] = res.cpu_period
    if res.cpuset_cpus:
        cpu["cpus"] = res.cpuset_cpus
    if res.cpuset_mems:
        cpu["mems"] = res.cpuset_mems
    if cpu:
        out["cpu"] = cpu
    if res.memory_limit_in_bytes:
        out["memory"] = {"limit": res.memory_limit_in_bytes}
        if swap_accounting:
            out["memory"]["swap"] = res.memory_swap_limit_in_bytes or res.memory_limit_in_bytes
    elif res.memory_swap_limit_in_bytes and swap_accounting:
        out["memory"] = {"swap": res.memory_swap_limit_in_bytes}
    if res.hugepage_limits:
        out["hugepageLimits"] = [{"pageSize": h.page_size, "limit": h.limit} for h in res.hugepage_limits]
    if res.unified:
        out["unified"] = dict(res.unified)
    return out


def merge_resources(current: dict[str, Any], want: dict[str, Any]) -> dict[str, Any]:
    """``want`` over ``current``: sections (cpu, memory, unified) key by key, lists (hugepage limits) replaced."""
    out = dict(current)
    for k, v in want.items():
        out[k] = {**(current.get(k) or {}), **v} if isinstance(v, dict) else v
    return out


@dataclass
class SecurityInputs:
    """What ``_spec`` needs read from the host first: the Localhost seccomp profile, AppArmor's state,
    the pid of the container whose pid namespace a TARGET container joins."""

    seccomp_profile: dict[str, Any] | None = None
    apparmor: tuple[bool, frozenset[str]] = (False, frozenset())
    target_pid: int = 0
    devices: list[tuple[dict[str, Any], dict[str, Any]]] = field(default_factory=list)  # (device, cgroup rule)
    volumes: list[tuple[str, str]] = field(default_factory=list)  # the image's volumes: (container path, host dir)
    rro: bool = False  # the pod's runtime handler supports recursive read-only mounts (features.py)


def refuse_recursive_read_only(m: pb.Mount, handler: str, *, supported: bool) -> None:
    """InvalidArgument naming the mount unless its ``recursive_read_only`` can be honoured: as containerd
    2.x (``WithMounts``) checks, in its order, the mount must be read-only, the pod's runtime handler must
    support it (its error is crierrors' ``RROUnsupported``) and its propagation must be private."""
    where = f"mount {m.container_path!r} (hostPath={m.host_path!r})"
    if not m.readonly:
        raise errdefs.InvalidArgument(f"{where}: recursive read-only mount conflicts with RW mount "
                                      "(recursive_read_only needs readonly = true)")
    if not supported:
        name = f"runtime handler {handler!r}" if handler else "the default runtime handler"
        raise errdefs.InvalidArgument(
            f"{where}: RROUnsupported: {name} does not support recursive read-only mounts (recursive_read_only "
            "needs a runtime listing \"rro\" in its features and kernel 5.12+; Status lists the handlers that do)")
    if m.propagation != pb.PROPAGATION_PRIVATE:
        raise errdefs.InvalidArgument(f"{where}: recursive read-only mount needs private propagation, got "
                                      f"{pb.MountPropagation.Name(m.propagation)}")


def host_device_entries(devices: list[pb.Device]) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """ContainerConfig.devices as OCI ``linux.devices`` entries and device cgroup rules (containerd's
    WithDevices: a directory brings every device below it).  Blocking (stat): run it in a thread."""
    out: list[tuple[dict[str, Any], dict[str, Any]]] = []
    for d in devices:
        access = d.permissions or "rwm"
        if not d.host_path or not d.container_path or set(access) - set("rwm"):
            raise errdefs.InvalidArgument(f"device {d.host_path!r} -> {d.container_path!r}: needs host_path, "
                                          f"container_path and permissions from 'rwm' (got {d.permissions!r})")
        try:
            st = os.stat(d.host_path)
        except OSError as exc:
            raise errdefs.from_oserror(exc, f"device {d.host_path!r}") from exc
        if stat.S_ISDIR(st.st_mode):
            found = [(dev, d.container_path.rstrip("/") + dev["path"][len(d.host_path.rstrip("/")):])
                     for dev in host_devices(d.host_path)]
        elif stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
            found = [({"type": "c" if stat.S_ISCHR(st.st_mode) else "b", "major": os.major(st.st_rdev),
                       "minor": os.minor(st.st_rdev), "fileMode": stat.S_IMODE(st.st_mode), "uid": st.st_uid,
                       "gid": st.st_gid}, d.container_path)]
        else:
            raise errdefs.InvalidArgument(f"device {d.host_path!r} is not a device node or a directory of them")
        for dev, path in found:
            entry = {"path": path, "type": dev["type"], "major": dev["major"], "minor": dev["minor"],
                     "fileMode": dev["fileMode"], "uid": dev["uid"], "gid": dev["gid"]}
            out.append((entry, {"allow": True, "type": dev["type"], "major": dev["major"], "minor": dev["minor"],
                                "access": access}))
    return out


def _make_fifos(d: Path, tty: bool, stdin: bool) -> None:
    """The container's stdio FIFOs (``crilog.FifoLogger``'s names) in its private IO directory.
    Blocking: run it in a thread."""
    private_dir(d)
    for name in ("stdout", *(() if tty else ("stderr",)), *(("stdin",) if stdin else ())):
        with contextlib.suppress(FileExistsError):
            os.mkfifo(d / name, 0o600)


def _copy(cfg: pb.ContainerConfig) -> pb.ContainerConfig:
    out = pb.ContainerConfig()
    out.CopyFrom(cfg)
    return out


def make_mount_sources(mounts: list[pb.Mount]) -> None:
    """The host paths of ContainerConfig.mounts, as containerd's CRI checks them at CreateContainer: one
    that does not exist is made (a directory, 0755: a hostPath volume without a type); one that cannot
    be stat'ed (a path below a regular file, say) fails the create naming it, rather than the start.
    Blocking (stat, mkdir): run it in a thread."""
    for m in mounts:
        if not m.host_path:
            continue  # refused by name when the spec is built
        try:
            os.stat(m.host_path)
        except FileNotFoundError:
            try:
                os.makedirs(m.host_path, 0o755, exist_ok=True)
            except OSError as exc:
                raise errdefs.from_oserror(exc, f"mount {m.container_path!r}: cannot make its host path") from exc
        except OSError as exc:
            raise errdefs.from_oserror(exc, f"mount {m.container_path!r}: cannot stat its host path") from exc


class Containers:
    def __init__(self, *, pods: Sandboxes, images: CriImageStore, containers: ContainerStore, tasks: TaskManager,
                 state_dir: Path, max_log_line: int, exchange: Exchange | None = None,
                 root_dir: Path | None = None, drain_exec_io_timeout: float = 0.0,
                 features: HandlerFeatures | None = None) -> None:
        self.exchange = exchange
        # what each runtime handler supports (recursive read-only mounts), shared with Status
        self.features = features or HandlerFeatures.for_config(pods.config)
        # drain_exec_sync_io_timeout: how long ExecSync waits for the output after the process
        # exited (a child it left may hold the pipes); 0: until the pipes close, as containerd
        self.drain_exec_io_timeout = drain_exec_io_timeout
        self._watcher: asyncio.Task[None] | None = None
        self.pods = pods
        self.images = images
        self.store = containers
        self.tasks = tasks
        self.state_dir = state_dir
        self.root_dir = root_dir or state_dir  # the plugin's root: the image volumes' directories
        self.max_log_line = max_log_line
        self._names: set[str] = set()  # names being reserved by a create right now
        self._stored_names: set[str] | None = None  # the stored containers' (_name_taken)
        self._names_version = 0
        self._loggers: dict[str, FifoLogger] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._exec_seq = 0
        self._apparmor: tuple[bool, frozenset[str]] | None = None  # read once, on the first create
        # what a create learnt that its start needs (the container as created, its rootfs
        # mounts, its record): taken by the start, dropped by a remove or an update
        self._created: dict[str, tuple[CriContainer, builtins.list[Any], Container]] = {}
        # containers in StartContainer: their record may say started before their task exists
        # (containerd's CRI keeps a Starting flag the same way)
        self._starting: set[str] = set()
        # containers a RemoveContainer is removing (their task stopped): containerd's Removing flag
        self._removing: set[str] = set()
        # /etc/passwd and /etc/group of an image's layers, per (snapshotter, chain id): they never change
        self._rootfs_files: OrderedDict[tuple[str, str], RootfsFiles] = OrderedDict()
        self.swap_accounting = cgroups.swap_accounting()  # a host fact (kernel command line): read once
        self.hugetlb = cgroups.hugetlb_controller()  # so is the hugetlb controller
        self._exit_handlers: set[asyncio.Task[None]] = set()
        # the RuntimeService's GetContainerEvents feed: (container id, sandbox id, created|started|stopped|deleted)
        self.on_event: Callable[[str, str, str], Awaitable[None]] | None = None

    async def _emit(self, cid: str, sandbox_id: str, kind: str) -> None:
        if self.on_event is None:
            return
        try:
            await self.on_event(cid, sandbox_id, kind)
        except Exception as exc:  # an event lost is not a lifecycle step failed
            log.warning("container %s: %s event not sent: %s", cid, kind, exc)

    def _remember_files(self, key: tuple[str, str], files: RootfsFiles) -> None:
        if not key[1] or sum(len(f or "") for f in files) > ROOTFS_FILES_MAX:
            return
        self._rootfs_files[key] = files
        self._rootfs_files.move_to_end(key)
        while len(self._rootfs_files) > ROOTFS_FILES_CACHE:
            self._rootfs_files.popitem(last=False)

    def lock(self, cid: str) -> asyncio.Lock:
        return self._locks.setdefault(cid, asyncio.Lock())

    def io_dir(self, cid: str) -> Path:
        return self.state_dir / "containers" / cid

    def logger(self, cid: str) -> FifoLogger | None:
        """The daemon's reader of a running container's output (and holder of its stdin), if any."""
        return self._loggers.get(cid)

    # -- reading ----------------------------------------------------------------------------------
    async def _of(self, c: Container) -> CriContainer | None:
        meta = ext_data(c, CONTAINER_EXT)
        if meta is None:
            return None
        cfg = pb.ContainerConfig()
        with contextlib.suppress(json_format.ParseError):
            json_format.ParseDict(meta.get("config") or {}, cfg, ignore_unknown_fields=True)
        spec: dict[str, Any] = {}
        if c.spec is not None:
            with contextlib.suppress(ValueError):
                spec = json.loads(c.spec.value)
        out = CriContainer(id=c.id, sandbox_id=str(meta.get("sandbox_id") or ""), config=cfg, meta=meta,
                           created_at_ns=c.created_at_ns, image=c.image, labels=dict(c.labels), spec=spec,
                           started_at_ns=int(meta.get("started_at") or 0),
                           finished_at_ns=int(meta.get("finished_at") or 0),
                           exit_code=int(meta.get("exit_code") or 0), reason=str(meta.get("reason") or ""),
                           runtime_type=c.runtime_name or "io.containerd.runc.v2", snapshotter=c.snapshotter,
                           snapshot_key=c.snapshot_key, runtime_options=c.runtime_options,
                           removing=c.id in self._removing)
        if out.finished_at_ns:
            out.state = pb.CONTAINER_EXITED
        elif self.tasks.has_task(NAMESPACE, c.id):
            try:
                st = await self.tasks.get(NAMESPACE, c.id)
            except errdefs.ContainerdError:
                out.state = pb.CONTAINER_UNKNOWN
            else:
                out.pid = st.pid
                # the start as the task manager saw it end, kept in the task's bundle across a
                # restart (the record holds when StartContainer began: a lower bound, for a task
                # whose bundle predates that)
                out.started_at_ns = self.tasks.started_at(NAMESPACE, c.id) or out.started_at_ns
                if st.status in ("running", "paused", "pausing"):
                    out.state = pb.CONTAINER_RUNNING
                elif st.status == "stopped":
                    out.state = pb.CONTAINER_EXITED
                    out.exit_code, out.finished_at_ns = st.exit_status, st.exited_at_ns
                    out.reason = _reason(st.exit_status, bool(meta.get("oom")))
        elif c.id in self._starting:  # created until its task exists: not started yet either
            out.started_at_ns = 0
        elif out.started_at_ns:  # started, its task gone (a restart lost it)
            out.state, out.reason = pb.CONTAINER_EXITED, out.reason or "Unknown"
        return out

    async def _names_stored(self) -> set[str]:
        """The names of the stored containers, from their records alone (no task states asked)."""
        out = set()
        for c in await self.store.list(NAMESPACE, [f"labels.\"{KIND_LABEL}\"=={KIND_CONTAINER}"]):
            meta = ext_data(c, CONTAINER_EXT)
            if meta is not None and isinstance(meta.get("name"), str):
                out.add(meta["name"])
        return out

    async def _name_taken(self, name: str) -> bool:
        """Whether a stored container has ``name``: from the names this daemon read once and kept
        through its creates and removes (containerd's CRI keeps its name index in memory too);
        a name found there is checked against the store (a record removed by other means, say
        ``ctr containers rm``, frees it)."""
        while self._stored_names is None:
            version = self._names_version
            names = await self._names_stored()
            if version == self._names_version:  # no create or remove of ours ended meanwhile
                self._stored_names = names
        if name not in self._stored_names:
            return False
        version = self._names_version
        names = await self._names_stored()
        if version == self._names_version:
            self._stored_names = names
        return name in names

    def _name_kept(self, name: str, stored: bool) -> None:
        self._names_version += 1
        if self._stored_names is not None and name:
            if stored:
                self._stored_names.add(name)
            else:
                self._stored_names.discard(name)

    async def list(self) -> list[CriContainer]:
        out = []
        for c in await self.store.list(NAMESPACE, [f"labels.\"{KIND_LABEL}\"=={KIND_CONTAINER}"]):
            cc = await self._of(c)
            if cc is not None:
                out.append(cc)
        return out

    async def get(self, cid: str) -> CriContainer:
        if not cid:
            raise errdefs.InvalidArgument("container id must not be empty")
        # a full id: one record, not a listing with every container's task state
        with contextlib.suppress(errdefs.NotFound):
            rec = await self.store.get(NAMESPACE, cid)
            if rec.labels.get(KIND_LABEL) == KIND_CONTAINER:
                one = await self._of(rec)
                if one is not None:
                    return one
        found = [c for c in await self.list() if c.id.startswith(cid)]
        exact = [c for c in found if c.id == cid]
        if exact:
            return exact[0]
        if not found:
            raise errdefs.NotFound(f"an error occurred when try to find container {cid!r}: not found")
        if len(found) > 1:
            raise errdefs.InvalidArgument(f"container id prefix {cid!r} is ambiguous")
        return found[0]

    async def _update_meta(self, cid: str, **changes: Any) -> None:
        c = await self.store.get(NAMESPACE, cid)
        meta = ext_data(c, CONTAINER_EXT) or {}
        meta.update(changes)
        c.extensions = {**c.extensions, CONTAINER_EXT: ext_value(meta)}
        await self.store.update(NAMESPACE, c, ["extensions"])

    # -- create -----------------------------------------------------------------------------------
    async def create(self, sandbox_id: str, cfg: pb.ContainerConfig) -> str:
        phases = Phases("CreateContainer")
        sb = await self.pods.get(sandbox_id, known=True)
        phases.mark("sandbox")
        if not sb.ready or not sb.pid:
            raise errdefs.FailedPrecondition(f"sandbox {sb.id} is not ready: cannot create containers in it")
        if not cfg.metadata.name:
            raise errdefs.InvalidArgument("container config must include metadata.name")
        if not cfg.image.image:
            raise errdefs.InvalidArgument("container config must include image.image")
        name = container_name(cfg.metadata, sb.config.metadata)
        if name in self._names or await self._name_taken(name):
            raise errdefs.AlreadyExists(f"failed to reserve container name {name!r}: name is reserved")
        self._names.add(name)
        phases.mark("name")
        try:
            cid = new_id()
            image = await self.images.resolve(cfg.image.image)
            snapshotter = self.pods.snapshotter(sb.runtime_handler)
            sn = self.images.snapshots.namespaced(snapshotter, NAMESPACE)
            phases.mark("image")
            wanted_volumes = volumes.wanted(image.config, [m.container_path for m in cfg.mounts],
                                            ignore=self.pods.config.ignore_image_defined_volumes)
            files_key = (snapshotter, image.chain_id)
            files = self._rootfs_files.get(files_key) if image.chain_id else None
            # The spec needs the rootfs only for /etc/passwd and /etc/group, read once per image
            # (its layers never change; a new snapshot's upper directory is empty), and for the
            # image's VOLUMEs, whose content is copied from it.  Without either, the snapshot and
            # the record that names it are made in one transaction (one commit, one sync; the
            # garbage collector never sees the snapshot unreferenced, so no lease); else, as
            # containerd, a lease keeps the snapshot until the record exists.
            at_once = files is not None and not wanted_volumes and getattr(sn, "store", None) is not None \
                and getattr(sn.store, "db", None) is self.store.db
            io_dir = self.io_dir(cid)
            lease_id = ""
            preparing: asyncio.Future[builtins.list[Any]] | None = None
            mounts: builtins.list[Any] | None = None
            recorded = False
            try:
                if not at_once:
                    lease_id = (await self.images.leases.create(NAMESPACE, labels={
                        "containerd.io/gc.expire": rfc3339(time.time() + LEASE_EXPIRE)})).id
                    leased = self.images.snapshots.namespaced(snapshotter, NAMESPACE, lease_id)
                    preparing = asyncio.ensure_future(self.images.prepare(leased, cid, image, snapshotter))
                    phases.mark("lease")
                    if files is None or wanted_volumes:
                        mounts = await preparing
                        phases.mark("snapshot")
                    if files is None:
                        assert mounts is not None
                        files = await asyncio.to_thread(rootfs_files, mounts)
                        self._remember_files(files_key, files)
                        phases.mark("passwd+group")
                sc = cfg.linux.security_context
                wants_all = "ALL" in {c.removeprefix("CAP_") for c in sc.capabilities.add_capabilities}
                host = await asyncio.to_thread(HostInfo.probe) if sc.privileged or wants_all else None
                sec = await self._security_inputs(sb, cfg)
                if wanted_volumes:
                    assert mounts is not None
                    sec.volumes = await asyncio.to_thread(volumes.fill, self.root_dir, cid, wanted_volumes, mounts)
                assert files is not None
                spec = self._spec(cid, sb, cfg, image.config, files, host, sec)
                log_path = ""
                if sb.config.log_directory and cfg.log_path:
                    log_path = os.path.join(sb.config.log_directory, cfg.log_path)
                stop_signal = stop_signal_name(cfg, image.config)
                parse_signal(stop_signal)  # refused now rather than at StopContainer
                meta = {"config": json_format.MessageToDict(cfg), "sandbox_id": sb.id, "name": name,
                        "log_path": log_path, "image_ref": cfg.image.image, "image_id": image.id,
                        "stop_signal": stop_signal}
                labels = {**dict(cfg.labels), KIND_LABEL: KIND_CONTAINER}
                rt = self.pods.runtime(sb.runtime_handler)
                spec["annotations"] = {**handlers.passthrough(sb.config.annotations, rt.pod_annotations),
                                       **handlers.passthrough(cfg.annotations, rt.container_annotations),
                                       **spec["annotations"]}
                record = Container(
                    id=cid, runtime_name=rt.runtime_type, runtime_options=handlers.runtime_options(rt),
                    spec=TypedValue(SPEC_TYPE_URL, json.dumps(spec).encode()), labels=labels,
                    image=image.references[0] if image.references else image.id,
                    snapshotter=snapshotter, snapshot_key=cid,
                    extensions={CONTAINER_EXT: ext_value(meta)})
                phases.mark("spec")
                # the stdio FIFOs the start needs are made meanwhile (containerd's CRI makes them
                # at create too)
                if at_once:
                    recorded = True  # from here on a failure removes the record (if it committed)
                    tx, created = self.store.create_in(NAMESPACE, record)
                    prepared, fifos = await asyncio.gather(
                        self.images.prepare(sn, cid, image, snapshotter, with_tx=tx),
                        asyncio.to_thread(_make_fifos, io_dir, cfg.tty, cfg.stdin), return_exceptions=True)
                    if isinstance(prepared, BaseException):
                        raise prepared
                    mounts, made = prepared, created()
                    if isinstance(fifos, BaseException):
                        raise fifos
                    phases.mark("snapshot + record + fifos")
                else:
                    assert preparing is not None
                    if mounts is None:
                        mounts = await preparing
                        phases.mark("snapshot")
                    # the record, and the lease's end in the same group commit (one transaction,
                    # one sync: the lease goes only with the record that keeps the snapshot)
                    stored, fifos, _ = await asyncio.gather(
                        self.store.create(NAMESPACE, record, batch=True),
                        asyncio.to_thread(_make_fifos, io_dir, cfg.tty, cfg.stdin),
                        self._drop_lease(lease_id, batch=True), return_exceptions=True)
                    if isinstance(stored, BaseException):
                        raise stored
                    recorded, made = True, stored
                    if isinstance(fifos, BaseException):
                        raise fifos
                    phases.mark("record + fifos")
                self._name_kept(name, True)
                self._created[cid] = (CriContainer(
                    id=cid, sandbox_id=sb.id, config=_copy(cfg), meta=meta, created_at_ns=made.created_at_ns,
                    image=record.image, labels=labels, spec=spec, runtime_type=record.runtime_name,
                    snapshotter=snapshotter), mounts, made)
            except BaseException:
                prepare_error: BaseException | None = None
                if preparing is not None:
                    await asyncio.wait([preparing])
                    prepare_error = None if preparing.cancelled() else preparing.exception()
                if recorded:  # (an at-once prepare whose backend failed after its commit leaves it)
                    with contextlib.suppress(errdefs.ContainerdError):
                        await self.store.delete(NAMESPACE, cid)
                await asyncio.to_thread(volumes.remove, self.root_dir, cid)
                await asyncio.to_thread(shutil.rmtree, io_dir, True)
                if prepare_error is None:
                    with contextlib.suppress(errdefs.ContainerdError):
                        await sn.remove(cid)
                if lease_id:
                    await self._drop_lease(lease_id)  # unless the record's commit dropped it already
                if prepare_error is not None:  # its error first, as when the spec came after it
                    raise prepare_error from None
                raise
        finally:
            self._names.discard(name)
        await self._emit(cid, sb.id, "created")
        phases.mark("event")
        phases.done(cid)
        return cid

    async def _drop_lease(self, lease_id: str, *, batch: bool = False) -> None:
        try:
            await self.images.leases.delete(NAMESPACE, lease_id, batch=batch)
        except errdefs.NotFound:
            pass  # dropped already
        except errdefs.ContainerdError as exc:  # it expires on its own
            log.warning("container create: could not delete lease %s: %s", lease_id, exc)

    async def _security_inputs(self, sb: Sandbox, cfg: pb.ContainerConfig) -> SecurityInputs:
        sc = cfg.linux.security_context
        out = SecurityInputs()
        wanted = seccomp_request(sc, self.pods.config.unset_seccomp_profile)
        if wanted is not None and wanted.type == LOCALHOST:
            out.seccomp_profile = await asyncio.to_thread(load_profile, wanted.ref)
        out.apparmor = self._apparmor if self._apparmor is not None else await asyncio.to_thread(read_apparmor)
        self._apparmor = out.apparmor
        if cfg.devices:
            out.devices = await asyncio.to_thread(host_device_entries, list(cfg.devices))
        if cfg.mounts:
            await asyncio.to_thread(make_mount_sources, list(cfg.mounts))
        if any(m.recursive_read_only for m in cfg.mounts):
            out.rro = await self.features.recursive_read_only(sb.runtime_handler)
        opts = sc.namespace_options
        if opts.pid == pb.TARGET:
            out.target_pid = await self._pid_target(sb.id, opts.target_id)
        elif opts.target_id:
            raise errdefs.InvalidArgument(f"namespace target_id {opts.target_id!r} is set but no namespace is TARGET")
        return out

    async def _pid_target(self, sandbox_id: str, target_id: str) -> int:
        """The pid of a TARGET container (containerd 1.6's rules: same pod, running)."""
        if not target_id:
            raise errdefs.InvalidArgument("pid namespace TARGET needs namespace_options.target_id")
        try:
            target = await self.get(target_id)
        except errdefs.NotFound as exc:
            raise errdefs.NotFound(f"pid namespace target container {target_id!r} does not exist") from exc
        if target.sandbox_id != sandbox_id:
            raise errdefs.InvalidArgument(f"pid namespace target container {target.id} (sandbox {target.sandbox_id}) "
                                          f"does not belong to sandbox {sandbox_id}")
        if target.state != pb.CONTAINER_RUNNING or not target.pid:
            raise errdefs.FailedPrecondition(f"pid namespace target container {target.id} is not running")
        return target.pid

    def _spec(self, cid: str, sb: Sandbox, cfg: pb.ContainerConfig, image_config: dict[str, Any],
              files: RootfsFiles, host: HostInfo | None, sec: SecurityInputs | None = None) -> dict[str, Any]:
        sec = sec or SecurityInputs()
        spec = self.pods.container_spec_base(sb.runtime_handler, cid)
        ic = image_config.get("config") or {}
        command, args = list(cfg.command), list(cfg.args)
        if not command and not args:
            args = list(ic.get("Cmd") or [])
        if not command:
            command = list(ic.get("Entrypoint") or [])
        argv = command + args
        if not argv:
            raise errdefs.InvalidArgument(f"no command specified for container {cfg.metadata.name!r}")
        proc = spec["process"]
        proc["args"] = argv
        # as containerd: the default PATH, HOSTNAME (the pod's, else the node's), the image's, the config's
        env = replace_or_append_env(proc.get("env") or [], [f"HOSTNAME={sb.config.hostname or os.uname().nodename}"])
        proc["env"] = replace_or_append_env(replace_or_append_env(env, ic.get("Env") or []),
                                            [f"{kv.key}={kv.value}" for kv in cfg.envs])
        proc["cwd"] = cfg.working_dir or ic.get("WorkingDir") or "/"
        if cfg.tty:  # containerd's oci.WithTTY
            proc["terminal"] = True
            if not any(e.startswith("TERM=") for e in proc["env"]):
                proc["env"].append("TERM=xterm")
        sc = cfg.linux.security_context
        if cfg.CDI_devices:
            raise errdefs.InvalidArgument(f"CDI devices ({', '.join(d.name for d in cfg.CDI_devices)}) are not "
                                          "supported by pycontainerd (it has no CDI spec registry)")
        refuse_user_namespace(sc.namespace_options)
        # the user: run_as_username, else run_as_user (with run_as_group), else the image's
        user = user_string(sc.run_as_username, sc.run_as_user if sc.HasField("run_as_user") else None,
                           sc.run_as_group if sc.HasField("run_as_group") else None) or str(ic.get("User") or "")
        if user:
            with_user(spec, user, files)
        # its groups: as containerd, those /etc/group lists the asked-for user (uid 0 when none) in,
        # unless the policy is Strict; then the supplemental groups asked for
        before = list(proc["user"].get("additionalGids") or [])
        if sc.supplemental_groups_policy == pb.Strict:
            proc["user"]["additionalGids"] = sorted({proc["user"]["gid"], *before})
        else:
            with_additional_gids(spec, sc.run_as_username or str(sc.run_as_user.value), files)
            proc["user"]["additionalGids"] = sorted({*proc["user"]["additionalGids"], *before})
        if sc.supplemental_groups:
            proc["user"]["additionalGids"] = sorted({*proc["user"]["additionalGids"], *sc.supplemental_groups})
        # as containerd's CRI: no_new_privileges only when asked (the ctr default spec has it on)
        if sc.no_new_privs:
            proc["noNewPrivileges"] = True
        else:
            proc.pop("noNewPrivileges", None)
        linux = spec["linux"]
        config = self.pods.config
        # masked and read-only paths are the request's alone, as containerd 1.6's CRI has them (measured:
        # none when the lists are empty; the kubelet always sends them), unless disable_proc_mount;
        # privileged drops both below
        configopts.proc_paths(config, linux, list(sc.masked_paths), list(sc.readonly_paths))
        if sc.privileged:
            if not sb.config.linux.security_context.privileged:
                raise errdefs.InvalidArgument("no privileged container allowed in a non-privileged sandbox")
            assert host is not None
            rt = self.pods.runtime(sb.runtime_handler)
            cgroup_devices = list(linux.get("resources", {}).get("devices", []))
            # the handler's privileged_without_host_devices: no host devices (and, unless its
            # ..._all_devices_allowed, the default device cgroup rules), as containerd
            with_privileged(spec, host._replace(devices=()) if rt.privileged_without_host_devices else host)
            if rt.privileged_without_host_devices and not rt.privileged_without_host_devices_all_devices_allowed:
                linux.setdefault("resources", {})["devices"] = cgroup_devices
        else:
            caps = proc["capabilities"]
            add = [c if c.startswith("CAP_") else f"CAP_{c}" for c in sc.capabilities.add_capabilities]
            drop = [c if c.startswith("CAP_") else f"CAP_{c}" for c in sc.capabilities.drop_capabilities]
            for key in ("bounding", "effective", "permitted"):
                cur = caps.get(key, [])
                if "CAP_ALL" in add:
                    assert host is not None
                    cur = list(host.capabilities)
                cur = [*cur, *(c for c in add if c != "CAP_ALL" and c not in cur)]
                caps[key] = [] if "CAP_ALL" in drop else [c for c in cur if c not in drop]
        # the config's devices (after privileged's host devices, as containerd)
        have = {d["path"] for d in linux.get("devices") or []}
        for entry, rule in configopts.device_ownership(config, sec.devices, sc.run_as_user.value,
                                                       sc.run_as_group.value):
            if entry["path"] not in have:
                linux.setdefault("devices", []).append(entry)
                have.add(entry["path"])
            linux.setdefault("resources", {}).setdefault("devices", []).append(rule)
        profile = apparmor_profile(sc, enabled=sec.apparmor[0] and not config.disable_apparmor, loaded=sec.apparmor[1])
        if profile:
            proc["apparmorProfile"] = profile
        wanted = seccomp_request(sc, config.unset_seccomp_profile)
        if wanted is not None and wanted.type == LOCALHOST:
            if sec.seccomp_profile is None:  # create() loads it; never fall back to another profile
                raise errdefs.FailedPrecondition(f"seccomp profile {wanted.ref!r} was not loaded")
            linux["seccomp"] = sec.seccomp_profile
        elif wanted is not None:
            linux["seccomp"] = default_profile(proc["capabilities"]["bounding"])
        if sc.readonly_rootfs:
            spec["root"]["readonly"] = True
        res = cfg.linux.resources
        r = linux.setdefault("resources", {})
        if not config.disable_cgroup and cfg.linux.HasField("resources"):
            r.update(oci_resources(res, swap_accounting=self.swap_accounting))
            configopts.hugepage_limits(config, r, present=self.hugetlb)
        configopts.refuse_resource_classes(config, cfg.metadata.name, cfg.annotations, sb.config.annotations)
        if res.oom_score_adj:
            proc["oomScoreAdj"] = self.pods._oom(res.oom_score_adj)
        # the pod's namespaces, through its infra process
        pid = sb.pid
        opts = sc.namespace_options
        namespaces = [n for n in linux["namespaces"] if n["type"] not in ("network", "ipc", "uts", "pid")]
        # as containerd's WithPodNamespaces: the infra process's network, IPC and UTS namespaces,
        # always (they are the host's when the pod asked for the host's)
        for kind, name in (("network", "net"), ("ipc", "ipc"), ("uts", "uts")):
            namespaces.append({"type": kind, "path": f"/proc/{pid}/ns/{name}"})
        # pid, by the container's own option: CONTAINER gets its own, TARGET joins the target
        # container's, POD and NODE the infra process's, as containerd's WithPodNamespaces (measured
        # on 1.6: NODE in a pod without host pid runs in the pod's namespace, not the host's; in a
        # host-pid pod the infra process's is the host's)
        if opts.pid == pb.TARGET:
            if not sec.target_pid:
                raise errdefs.InvalidArgument("pid namespace TARGET without a running target container")
            namespaces.append({"type": "pid", "path": f"/proc/{sec.target_pid}/ns/pid"})
        elif opts.pid == pb.CONTAINER:
            namespaces.append({"type": "pid"})
        else:
            namespaces.append({"type": "pid", "path": f"/proc/{pid}/ns/pid"})
        linux["namespaces"] = namespaces
        linux["cgroupsPath"] = "" if config.disable_cgroup else cgroups_path(
            sb.config.linux.cgroup_parent, cid, self.pods.systemd_cgroup(sb.runtime_handler))
        # the pod's files, then the config's mounts (which win for the same destination)
        sdir = self.pods.sandbox_dir(sb.id)
        # CRI's containers see their cgroup (read-only unless privileged), as containerd mounts it
        mounts = [*spec["mounts"], {"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup",
                                    "options": ["nosuid", "noexec", "nodev", "relatime",
                                                "rw" if sc.privileged else "ro"]}]
        # as containerd 1.6's CRI (containerMounts + WithMounts): the pod's files and its /dev/shm
        # (the host's when the pod or the container asks for the host's IPC), unless the config
        # mounts the same destination; the config's mounts first, then those, ordered by depth
        pod_files: list[dict[str, Any]] = []
        for dest, name in (("/etc/hostname", "hostname"), ("/etc/hosts", "hosts"),
                           ("/etc/resolv.conf", "resolv.conf")):
            pod_files.append({"destination": dest, "type": "bind", "source": str(sdir / name),
                              "options": ["rbind", "rprivate", "ro" if sc.readonly_rootfs else "rw"]})
        shm = DEV_SHM if opts.ipc == pb.NODE else shm_source(sdir, sb.config)
        pod_files.append({"destination": DEV_SHM, "type": "bind", "source": shm,
                          "options": ["rbind", "rprivate", "rw"]})
        pod_files += volumes.bind_mounts(sec.volumes)  # the image's volumes (ignore_image_defined_volumes)
        extra: list[dict[str, Any]] = []
        for m in cfg.mounts:
            if m.HasField("image") or m.image_sub_path:
                raise errdefs.InvalidArgument(f"mount {m.container_path!r}: image volumes (Mount.image, KEP 4639) "
                                              "are not supported by pycontainerd")
            if not m.container_path or not m.host_path:
                raise errdefs.InvalidArgument("a mount needs container_path and host_path")
            if m.uidMappings or m.gidMappings:
                raise errdefs.InvalidArgument(f"mount {m.container_path!r}: id-mapped mounts (uidMappings/"
                                              "gidMappings) are not supported by pycontainerd")
            prop = {pb.PROPAGATION_PRIVATE: "rprivate", pb.PROPAGATION_HOST_TO_CONTAINER: "rslave",
                    pb.PROPAGATION_BIDIRECTIONAL: "rshared"}.get(m.propagation, "rprivate")
            mode = "ro" if m.readonly else "rw"
            if m.recursive_read_only:  # CRI 1.30: read-only all the way down (runc's "rro", kernel 5.12+)
                refuse_recursive_read_only(m, sb.runtime_handler, supported=sec.rro)
                mode = "rro"
            extra.append({"destination": m.container_path, "type": "bind", "source": m.host_path,
                          "options": ["rbind", prop, mode]})
        given = {os.path.normpath(m["destination"]) for m in extra}
        extra += [m for m in pod_files if m["destination"] not in given]
        extra.sort(key=lambda m: mount_depth(m["destination"]))  # stable: the order above within a depth
        dests = {os.path.normpath(m["destination"]) for m in extra}
        # the defaults a given mount replaces go, and all under /dev when /dev is given
        spec["mounts"] = [m for m in mounts if m["destination"] not in dests
                          and not ("/dev" in dests and m["destination"].startswith("/dev/"))] + extra
        spec["annotations"] = {
            **spec.get("annotations", {}),  # a base spec's (none in the CRI default)
            ANN_CONTAINER_TYPE: KIND_CONTAINER,
            ANN_SANDBOX_ID: sb.id,
            ANN_SANDBOX_NAME: sb.config.metadata.name,
            ANN_SANDBOX_NAMESPACE: sb.config.metadata.namespace,
            ANN_SANDBOX_UID: sb.config.metadata.uid,
            ANN_CONTAINER_NAME: cfg.metadata.name,
            ANN_IMAGE_NAME: cfg.image.image,
        }
        return canonical(spec)

    # -- start / stop / remove --------------------------------------------------------------------
    async def start(self, cid: str) -> None:
        phases = Phases("StartContainer", cid)
        # a container this daemon created (and nothing removed or changed since): as it was made
        created = self._created.pop(cid, None)
        c = created[0] if created is not None else await self.get(cid)
        phases.mark("record")
        async with self.lock(c.id):
            if c.state != pb.CONTAINER_CREATED or self.tasks.has_task(NAMESPACE, c.id):
                raise errdefs.FailedPrecondition(f"container {c.id} is not in created state")
            sb = await self.pods.get(c.sandbox_id, known=True)
            if not sb.ready:
                raise errdefs.FailedPrecondition(f"sandbox {sb.id} of container {c.id} is not ready")
            phases.mark("sandbox")
            if created is not None:
                mounts = created[1]
            else:
                sn = self.images.snapshots.namespaced(c.snapshotter or self.images.snapshotter, NAMESPACE)
                mounts = await sn.mounts(c.id)
            phases.mark("mounts")
            # stdio through FIFOs the daemon reads (and, with stdin, holds): the CRI log and
            # attached clients get the output; a terminal's output is logged as stdout.  The
            # create made them (a container from before a restart gets them here)
            log_path = str(c.meta.get("log_path") or "")
            d = self.io_dir(c.id)
            if created is None:
                await asyncio.to_thread(_make_fifos, d, c.config.tty, c.config.stdin)
            logger = FifoLogger(d, log_path, self.max_log_line, tty=c.config.tty, stdin=c.config.stdin)
            await logger.start()
            phases.mark("fifos")
            io = TaskIO(stdin=logger.stdin, stdout=logger.stdout, stderr=logger.stderr, terminal=c.config.tty)
            # the record says started (a lower bound of the time) while the task is made and
            # started (one call: the task manager records the create while the shim starts the
            # process), so no commit waits for the start; the time reported while the task lives
            # is the task manager's (taken once the shim's Start answered, as containerd stamps
            # StartedAt, and kept in the task's bundle: the same after a daemon restart), and the
            # exit's record write keeps it.  A failed start overwrites it below
            self._starting.add(c.id)  # created until the task exists, whatever the record says
            recording = asyncio.ensure_future(self._update_meta(c.id, started_at=time.time_ns()))
            try:
                try:
                    await self.tasks.create(NAMESPACE, c.id, io=io, rootfs=[
                        RootfsMount(m.type, m.source, m.target, tuple(m.options)) for m in mounts],
                        options=self.pods.run_options(sb.runtime_handler),
                        runtime_path=self.pods.runtime(sb.runtime_handler).runtime_path, start=True,
                        record=created[2] if created is not None else None)
                    phases.mark("task create + start")
                except BaseException:
                    await asyncio.gather(recording, return_exceptions=True)  # before the StartError write
                    if self.tasks.has_task(NAMESPACE, c.id):  # created, its start failed
                        await self._delete_task(c.id)
                    raise
                logger.release()
                self._loggers[c.id] = logger
            except BaseException as exc:
                await logger.close()
                self._loggers.pop(c.id, None)
                now = time.time_ns()
                await self._update_meta(c.id, started_at=now, finished_at=now, exit_code=128,
                                        reason="StartError", message=str(exc))
                raise
            finally:
                self._starting.discard(c.id)
            await recording
            phases.mark("record updated")
            await self._emit(c.id, c.sandbox_id, "started")  # under the lock: before an exit's "stopped"
            phases.mark("event")
        phases.done()

    async def _delete_task(self, cid: str) -> None:
        with contextlib.suppress(errdefs.NotFound):
            await self.tasks.delete(NAMESPACE, cid)

    async def _record_exit(self, cid: str) -> bool:
        """The exit into the record, the task deleted, the log copier finished; whether it had a task."""
        had_task = self.tasks.has_task(NAMESPACE, cid)
        if had_task:
            exit_code, exited = 255, time.time_ns()
            started = self.tasks.started_at(NAMESPACE, cid)  # before the delete forgets it
            with contextlib.suppress(errdefs.NotFound):
                st = await self.tasks.get(NAMESPACE, cid)
                if st.status == "stopped":
                    exit_code, exited = st.exit_status, st.exited_at_ns or exited
            await self._delete_task(cid)
            with contextlib.suppress(errdefs.NotFound):
                oom = bool((ext_data(await self.store.get(NAMESPACE, cid), CONTAINER_EXT) or {}).get("oom"))
                times = {"started_at": started} if started else {}
                await self._update_meta(cid, finished_at=exited, exit_code=exit_code, reason=_reason(exit_code, oom),
                                        **times)
        logger = self._loggers.pop(cid, None)
        if logger is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(logger.done.wait(), 2.0)
            await logger.close()
        return had_task

    async def stop(self, cid: str, grace_s: int) -> None:
        c = await self.get(cid)
        async with self.lock(c.id):
            if c.state == pb.CONTAINER_RUNNING:
                sig = int(signal.SIGTERM)
                with contextlib.suppress(errdefs.InvalidArgument):  # a record from before: SIGTERM
                    sig = parse_signal(str(c.meta.get("stop_signal") or "SIGTERM"))
                if grace_s > 0:
                    await self.pods.kill_task(c.id, float(grace_s), sig)
                else:
                    await self.pods.kill_task(c.id, 0)
            stopped = await self._record_exit(c.id)
        if stopped:
            await self._emit(c.id, c.sandbox_id, "stopped")

    async def remove(self, cid: str) -> None:
        try:
            c = await self.get(cid)
        except errdefs.NotFound:
            return  # CRI: removing a missing container is success
        self._created.pop(c.id, None)
        async with self.lock(c.id):
            await self.pods.kill_task(c.id, 0)
            stopped = await self._record_exit(c.id)
            # stopped, now removing (as containerd sets Removing once the container is not running)
            self._removing.add(c.id)
            try:
                sn = self.images.snapshots.namespaced(c.snapshotter or self.images.snapshotter, NAMESPACE)
                with contextlib.suppress(errdefs.NotFound):
                    await sn.remove(c.id)
                with contextlib.suppress(errdefs.NotFound):
                    await self.store.delete(NAMESPACE, c.id)
            finally:
                self._removing.discard(c.id)
            self._name_kept(str(c.meta.get("name") or ""), False)
            await asyncio.to_thread(shutil.rmtree, self.io_dir(c.id), True)
            await asyncio.to_thread(volumes.remove, self.root_dir, c.id)
        self._locks.pop(c.id, None)
        if stopped:
            await self._emit(c.id, c.sandbox_id, "stopped")
        await self._emit(c.id, c.sandbox_id, "deleted")

    async def stop_in_pod(self, sandbox_id: str) -> None:
        for c in await self.list():
            if c.sandbox_id == sandbox_id:
                await self.stop(c.id, 0)

    async def remove_in_pod(self, sandbox_id: str) -> None:
        for c in await self.list():
            if c.sandbox_id == sandbox_id:
                await self.remove(c.id)

    async def update_resources(self, cid: str, res: pb.LinuxContainerResources) -> None:
        """New cpu/memory limits: into the running task's cgroup, and the stored spec for a later start.
        A container that is not running (created, or exited: say it exited just before a resize) gets
        the spec only, and OK, as containerd 1.6 answers."""
        c = await self.get(cid)
        self._created.pop(c.id, None)  # its spec changes: a start reads the record again
        async with self.lock(c.id):
            want = oci_resources(res, swap_accounting=self.swap_accounting)
            configopts.hugepage_limits(self.pods.config, want, present=self.hugetlb)
            if c.state == pb.CONTAINER_RUNNING:
                current = dict((c.spec.get("linux") or {}).get("resources") or {})
                await self.tasks.update(NAMESPACE, c.id, merge_resources(current, want))
            rec = await self.store.get(NAMESPACE, c.id)
            spec = dict(c.spec)
            linux = spec.setdefault("linux", {})
            linux["resources"] = merge_resources(linux.get("resources") or {}, want)
            if res.oom_score_adj:
                spec.setdefault("process", {})["oomScoreAdj"] = self.pods._oom(res.oom_score_adj)
            rec.spec = TypedValue(SPEC_TYPE_URL, json.dumps(canonical(spec)).encode())
            await self.store.update(NAMESPACE, rec, ["spec"])

    def watch_oom(self) -> None:
        """Follow the shims' task events in ``k8s.io``, in their order: an OOM kill (``/tasks/oom``)
        makes the exit's reason OOMKilled; a container's init process that exits by itself
        (``/tasks/exit``, not through StopContainer) has its exit recorded and CONTAINER_STOPPED_EVENT
        sent, as containerd's CRI does on TaskExit."""
        if self.exchange is None or self._watcher is not None:
            return
        exchange = self.exchange
        topics = [f'namespace=={NAMESPACE},topic=="/tasks/oom"', f'namespace=={NAMESPACE},topic=="/tasks/exit"']

        async def watch() -> None:
            while True:  # a subscriber that fell behind is dropped (ResourceExhausted): subscribe again
                with contextlib.suppress(errdefs.ResourceExhausted):
                    async for env in exchange.subscribe(topics):
                        cid = str(env.payload.get("container_id") or "")
                        if env.topic == "/tasks/exit":
                            if str(env.payload.get("id") or cid) == cid:  # the init process, not an exec
                                self._exit_handlers.add(t := asyncio.create_task(self._exited(cid)))
                                t.add_done_callback(self._exit_handlers.discard)
                            continue
                        try:
                            c = await self.store.get(NAMESPACE, cid)
                            if c.labels.get(KIND_LABEL) == KIND_CONTAINER:
                                await self._update_meta(cid, oom=True)
                        except errdefs.ContainerdError as exc:
                            log.debug("oom of %s: %s", cid, exc)

        self._watcher = asyncio.create_task(watch(), name="cri-task-events")

    async def _exited(self, cid: str) -> None:
        """A container's process exited: record it (unless a stop or remove already did) and say so."""
        try:
            c = await self.store.get(NAMESPACE, cid)
            if c.labels.get(KIND_LABEL) != KIND_CONTAINER:
                return
            sandbox_id = str((ext_data(c, CONTAINER_EXT) or {}).get("sandbox_id") or "")
            async with self.lock(cid):  # after a start that is still running; stop/remove win otherwise
                if await self._record_exit(cid):
                    await self._emit(cid, sandbox_id, "stopped")
        except errdefs.NotFound:
            return  # removed meanwhile
        except Exception as exc:  # the status still reads the exit from the task
            log.warning("container %s: recording its exit failed: %s", cid, exc)

    async def restore(self) -> None:
        """After a daemon restart: record the exits that happened meanwhile; copy the logs of the
        running containers again.

        The shim holds their FIFOs (with a read end of its own, so the container's output
        waited in the pipe instead of failing): opening the read ends resumes the copy.
        """
        for c in await self.list():
            if (c.state == pb.CONTAINER_EXITED and not c.meta.get("finished_at")
                    and self.tasks.has_task(NAMESPACE, c.id)):
                await self._exited(c.id)  # it exited while the daemon was down: record it now
                continue
            log_path = str(c.meta.get("log_path") or "")
            d = self.io_dir(c.id)
            if c.state != pb.CONTAINER_RUNNING or c.id in self._loggers or not (d / "stdout").exists():
                continue
            stdin = c.config.stdin and (d / "stdin").exists()  # gone: closed for good (stdin_once)
            logger = FifoLogger(d, log_path, self.max_log_line, tty=c.config.tty, stdin=stdin)
            try:
                await logger.start()
            except OSError as exc:
                log.warning("container %s: cannot reopen its log FIFOs: %s", c.id, exc)
                continue
            logger.release()
            self._loggers[c.id] = logger

    # -- exec / logs / stats ----------------------------------------------------------------------
    async def exec_sync(self, cid: str, cmd: builtins.list[str], deadline_s: int) -> tuple[bytes, bytes, int]:
        c = await self.get(cid)
        if c.state != pb.CONTAINER_RUNNING:
            raise errdefs.FailedPrecondition(f"container {c.id} is not running")
        if not cmd:
            raise errdefs.InvalidArgument("exec needs a command")
        self._exec_seq += 1
        exec_id = f"exec-{os.getpid()}-{self._exec_seq}"
        fifos = await ExecFifos.create(self.io_dir(c.id) / exec_id, ("stdout", "stderr"))
        try:
            outs: dict[str, bytearray] = {"stdout": bytearray(), "stderr": bytearray()}
            readers = [asyncio.create_task(_drain(fifos.take_reader(n), outs[n])) for n in outs]
            proc = dict(c.spec.get("process") or {})
            proc.update(args=list(cmd), terminal=False)
            proc.pop("terminal")
            try:
                await self.tasks.exec(NAMESPACE, c.id, exec_id, proc, fifos.task_io())
                await self.tasks.start_process(NAMESPACE, c.id, exec_id)
            except BaseException:
                for t in readers:
                    t.cancel()
                with contextlib.suppress(errdefs.ContainerdError):
                    await self.tasks.delete_process(NAMESPACE, c.id, exec_id)
                raise
            finally:
                # the shim holds the write ends once the process started: EOF comes when it exits
                fifos.release_writers()
            try:
                try:
                    ex = await asyncio.wait_for(self.tasks.wait(NAMESPACE, c.id, exec_id),
                                                deadline_s if deadline_s > 0 else None)
                except TimeoutError:
                    with contextlib.suppress(errdefs.ContainerdError):
                        await self.tasks.kill(NAMESPACE, c.id, signal.SIGKILL, exec_id=exec_id)
                    raise errdefs.DeadlineExceeded(
                        f"command {cmd!r} timed out after {deadline_s}s in container {c.id}") from None
                await self._drain_exec_io(exec_id, readers)
                return bytes(outs["stdout"]), bytes(outs["stderr"]), ex.exit_status
            finally:
                with contextlib.suppress(errdefs.ContainerdError):
                    await self.tasks.delete_process(NAMESPACE, c.id, exec_id)
                for t in readers:
                    t.cancel()
        finally:
            await fifos.close()

    async def _drain_exec_io(self, exec_id: str, readers: builtins.list[asyncio.Task[None]]) -> None:
        """After the exec process exited: its output until the pipes close, at most
        ``drain_exec_io_timeout`` (0: no limit); past it the call fails (and the caller deletes
        the exec process, releasing its pipes), as containerd's ``drainExecSyncIO``."""
        limit = self.drain_exec_io_timeout
        try:
            await asyncio.wait_for(asyncio.gather(*readers), limit if limit > 0 else None)
        except TimeoutError:
            raise errdefs.Unknown(f"failed to drain exec process {exec_id!r} io in {limit:g}s because io is still "
                                  "held by other processes (drain_exec_sync_io_timeout)") from None

    async def reopen_log(self, cid: str) -> None:
        c = await self.get(cid)
        if c.state != pb.CONTAINER_RUNNING:
            raise errdefs.FailedPrecondition(f"container {c.id} is not running")
        logger = self._loggers.get(c.id)
        if logger is None:
            raise errdefs.FailedPrecondition(f"container {c.id} has no log copier in this daemon")
        await asyncio.to_thread(logger.reopen)

    async def stats(self, ids: builtins.list[str] | None = None) -> dict[str, dict[str, Any]]:
        exprs = [f"id=={i}" for i in ids] if ids is not None else []
        if ids is not None and not exprs:
            return {}
        out = {m.id: {"at": m.collected_at_ns, "data": m.data, "mode": m.cgroup_version}
               for m in await self.tasks.metrics(NAMESPACE, exprs)}
        # the CRI's snapshotter first, then those of handlers with their own
        sns = [(self.images.snapshots.namespaced(name, NAMESPACE), root)
               for name, root in self.images.snapshotter_roots.items()]
        for cid in ids or []:  # a container without a live task still has its writable layer
            out.setdefault(cid, {"at": time.time_ns(), "data": {}, "mode": ""})
        for cid, entry in out.items():
            for sn, root in sns:
                try:
                    u = await sn.usage(cid)
                except errdefs.ContainerdError:
                    continue
                entry["layer"] = {"used_bytes": u.size, "inodes_used": u.inodes, "mountpoint": root}
                break
        return out


async def _drain(fd: int, into: bytearray) -> None:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    proto = asyncio.StreamReaderProtocol(reader)
    transport, _ = await loop.connect_read_pipe(lambda: proto, os.fdopen(fd, "rb", buffering=0))
    try:
        while chunk := await reader.read(65536):
            into += chunk
    finally:
        transport.close()
