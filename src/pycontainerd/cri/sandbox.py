"""Pod sandboxes: RunPodSandbox, StopPodSandbox, RemovePodSandbox, PodSandboxStatus, ListPodSandbox.

A sandbox is, like in containerd 1.6, a container record in namespace ``k8s.io`` labelled
``io.cri-containerd.kind=sandbox`` whose task (the *infra* process, from ``sandbox_image``)
holds the pod's namespaces.  What CRI needs to answer later (the PodSandboxConfig, the netns
path, the pod IPs) is the record's extension ``io.cri-containerd.sandbox.metadata`` (JSON),
so a restarted daemon lists its pods and ``ctr -n k8s.io containers ls`` shows them.  The
state is not stored: a sandbox is READY while its infra task runs, NOTREADY otherwise.

Networking: unless the pod asks for the host's network (``NamespaceOption.network=NODE``) a
network namespace is made with :mod:`pycontainerd.netns` and CNI ADD runs in it (Kubernetes
args, port mappings as the ``portMappings`` capability); stop runs CNI DEL and removes it.
Per-pod files (``hostname``, ``resolv.conf`` from the DNSConfig, ``hosts``) are written under
``<cri state>/sandboxes/<id>/`` for the pod's containers to mount, and, unless the pod's IPC
namespace is the host's, its ``shm`` there: a 64 MiB tmpfs the infra process and every container
of the pod bind-mount on /dev/shm (containerd's sandbox shm), unmounted when the pod is stopped
or removed.  With IPC ``NODE`` they all bind-mount the host's /dev/shm.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import json
import logging
import os
import secrets
import shutil
import signal
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from google.protobuf import json_format

from .. import cgroups, errdefs, netns
from ..api.cri.runtime.v1 import api_pb2 as pb
from ..cni import CNI, CapabilityArgs, PodNetwork, PortMapping
from ..config import CRIConfig, RuntimeConfig
from ..fsmodes import private_dir
from ..metadata.containers import Container, ContainerStore, TypedValue
from ..mount.core import Mount as MountRecord
from ..mount.core import mount_all, unmount_all
from ..oci.seccomp import default_profile, load_profile
from ..oci.spec import SPEC_TYPE_URL, RootfsFiles, canonical, cri_default_spec, replace_or_append_env, with_user
from ..runtime.bundle import own_oom_score_adj
from ..runtime.task_manager import TaskManager
from ..runtime.task_types import RootfsMount, RuncOptions, TaskIO
from . import configopts, gojson, handlers
from .imagestore import NAMESPACE, CriImageStore
from .phases import Phases
from .security import (
    LOCALHOST,
    apparmor_profile,
    read_apparmor,
    refuse_user_namespace,
    seccomp_request,
    user_string,
)

log = logging.getLogger("pycontainerd.cri")

KIND_LABEL = "io.cri-containerd.kind"
KIND_SANDBOX = "sandbox"
KIND_CONTAINER = "container"
SANDBOX_EXT = "io.cri-containerd.sandbox.metadata"
CONTAINER_EXT = "io.cri-containerd.container.metadata"
METADATA_TYPE_URL = "pycontainerd.io/cri/Metadata.v1"
RUNTIME_NAME = "io.containerd.runc.v2"
SANDBOX_OOM_SCORE_ADJ = -998
STOP_WAIT = 10.0

ANN_CONTAINER_TYPE = "io.kubernetes.cri.container-type"
ANN_SANDBOX_ID = "io.kubernetes.cri.sandbox-id"
ANN_SANDBOX_NAME = "io.kubernetes.cri.sandbox-name"
ANN_SANDBOX_NAMESPACE = "io.kubernetes.cri.sandbox-namespace"
ANN_SANDBOX_UID = "io.kubernetes.cri.sandbox-uid"
ANN_SANDBOX_LOG_DIR = "io.kubernetes.cri.sandbox-log-directory"
DEV_SHM = "/dev/shm"
SANDBOX_SHM_SIZE = 64 << 20  # containerd's defaultShmSize

_PROTOCOLS = {pb.TCP: "tcp", pb.UDP: "udp", pb.SCTP: "sctp"}


def new_id() -> str:
    return secrets.token_hex(32)


def pod_name(m: pb.PodSandboxMetadata) -> str:
    """containerd's unique name of a pod: ``name_namespace_uid_attempt``."""
    return f"{m.name}_{m.namespace}_{m.uid}_{m.attempt}"


def ext_value(data: dict[str, Any]) -> TypedValue:
    return TypedValue(METADATA_TYPE_URL, json.dumps(data, sort_keys=True).encode())


def ext_data(c: Container, key: str) -> dict[str, Any] | None:
    tv = c.extensions.get(key)
    if tv is None or tv.type_url != METADATA_TYPE_URL:
        return None
    try:
        out = json.loads(tv.value)
    except ValueError:
        return None
    return out if isinstance(out, dict) else None


def resolv_conf(dns: pb.DNSConfig) -> str | None:
    if not (dns.servers or dns.searches or dns.options):
        return None
    lines = [f"search {' '.join(dns.searches)}"] if dns.searches else []
    lines += [f"nameserver {s}" for s in dns.servers]
    if dns.options:
        lines.append(f"options {' '.join(dns.options)}")
    return "\n".join(lines) + "\n"


def shm_source(sdir: Path, cfg: pb.PodSandboxConfig) -> str:
    """What the pod's /dev/shm is: the host's with IPC NODE, else the pod's own tmpfs under its directory."""
    if cfg.linux.security_context.namespace_options.ipc == pb.NODE:
        return DEV_SHM
    return str(sdir / "shm")


def host_network(cfg: pb.PodSandboxConfig) -> bool:
    return cfg.linux.security_context.namespace_options.network == pb.NODE


DEFAULT_INTERFACE = "eth0"


@dataclass(frozen=True)
class InterfaceUsage:
    name: str
    rx_bytes: int
    rx_errors: int
    tx_bytes: int
    tx_errors: int


def parse_net_dev(text: str) -> list[InterfaceUsage]:
    """The interfaces of ``/proc/<pid>/net/dev`` (two header lines, then ``name: rx... tx...``)."""
    out = []
    for line in text.splitlines()[2:]:
        name, sep, rest = line.partition(":")
        fields = rest.split()
        if not sep or len(fields) < 11:
            continue
        out.append(InterfaceUsage(name.strip(), int(fields[0]), int(fields[2]), int(fields[8]), int(fields[10])))
    return out


SYSTEMD_PREFIX = "cri-containerd"


def cgroups_path(parent: str, cid: str, systemd: bool = False) -> str:
    """The OCI ``linux.cgroupsPath`` of a pod's or container's process under the pod's cgroup parent.

    cgroupfs driver: ``<parent>/<id>`` (``/k8s.io/<id>`` without a parent).  systemd driver (the
    runtime's ``SystemdCgroup``, which also makes runc use systemd): runc's ``slice:prefix:name``,
    as containerd makes it -- ``<the parent's last slice>:cri-containerd:<id>``, the scope
    ``cri-containerd-<id>.scope`` in that slice (``system.slice`` without a parent).  A parent that
    is no slice cannot be used with systemd: refused, rather than handed to runc to fail on."""
    if not systemd:
        return f"{parent.rstrip('/')}/{cid}" if parent else f"/{NAMESPACE}/{cid}"
    base = parent.rstrip("/").rsplit("/", 1)[-1] or "system.slice"
    if not base.endswith(".slice"):
        raise errdefs.InvalidArgument(
            f"cgroup parent {parent!r} is not a systemd slice, and the runtime uses the systemd cgroup driver "
            "(SystemdCgroup = true): give a slice such as kubepods-besteffort-pod<uid>.slice, or use cgroupfs")
    return f"{base}:{SYSTEMD_PREFIX}:{cid}"


def parent_cgroup(parent: str, systemd: bool) -> str:
    """The cgroupfs path (below the hierarchy's root) of a pod's cgroup parent; with systemd a slice
    name such as ``kubepods-besteffort-pod1.slice`` lives at ``/kubepods.slice/kubepods-besteffort.slice/...``."""
    base = parent.rstrip("/").rsplit("/", 1)[-1]
    if systemd and base.endswith(".slice"):
        return cgroups.systemd_path(f"{base}:x:y").rsplit("/", 1)[0]
    return parent


def rootfs_files(mounts: builtins.list[Any]) -> RootfsFiles:
    """/etc/passwd and /etc/group of an overlay (or bind) rootfs, read from its layers without mounting."""
    dirs: list[str] = []
    for m in mounts:
        if m.type == "overlay":
            opts = dict(o.split("=", 1) for o in m.options if "=" in o)
            if "upperdir" in opts:
                dirs.append(opts["upperdir"])
            dirs += opts.get("lowerdir", "").split(":")
        elif m.type == "bind":
            dirs.append(m.source)

    def read(rel: str) -> str | None:
        for d in dirs:
            p = Path(d) / rel
            if p.is_file() and not p.is_symlink():
                return p.read_text(errors="replace")
        return None

    return RootfsFiles(read("etc/passwd"), read("etc/group"))


def _numeric_user(user: str) -> bool:
    """``uid:gid``: a user string that needs no /etc/passwd or /etc/group to resolve."""
    uid, sep, gid = user.partition(":")
    return bool(sep) and uid.isdigit() and gid.isdigit()


async def together(undo: list[Any], *steps: tuple[Awaitable[Any], Callable[[], Awaitable[Any]] | None]) -> list[Any]:
    """Independent steps run at once, their results in order.  The undo of each step that
    succeeded goes onto ``undo`` (in the steps' order) whatever happens to the others, then the
    first step's error, if any, is raised; when the caller is cancelled, the steps are cancelled
    and waited for first, so that what they made is undone with the rest."""
    tasks = [asyncio.ensure_future(aw) for aw, _ in steps]
    try:
        await asyncio.wait(tasks)
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for t, (_, step_undo) in zip(tasks, steps, strict=True):
            if step_undo is not None and not t.cancelled() and t.exception() is None:
                undo.append(step_undo)
    for t in tasks:
        exc = t.exception()
        if exc is not None:
            raise exc
    return [t.result() for t in tasks]


# the infra task's statuses of a ready pod
_LIVE = frozenset({"running", "paused", "pausing"})


@dataclass
class Sandbox:
    """One pod as stored: its record and metadata, plus whether its infra task runs."""

    id: str
    config: pb.PodSandboxConfig
    created_at_ns: int
    netns: str
    ip: str
    additional_ips: list[str]
    ready: bool
    pid: int
    labels: dict[str, str] = field(default_factory=dict)
    spec: dict[str, Any] = field(default_factory=dict)
    image: str = ""
    runtime_handler: str = ""
    runtime_type: str = RUNTIME_NAME
    snapshotter: str = ""  # the record's (its handler's when it names one)
    snapshot_key: str = ""
    runtime_options: TypedValue | None = None  # the record's
    cni_result: dict[str, Any] | None = None  # go-cni's Result of its CNI ADD (gojson.cni_result)
    # its task's status as containerd's verbose info says it: the task's own (running, created,
    # paused, ...), "unknown" when its shim does not answer, "deleted" with no task or an exited one
    process_status: str = "deleted"

    @property
    def name(self) -> str:
        return pod_name(self.config.metadata)


class Sandboxes:
    """The pod lifecycle over the daemon's container store, snapshots, task manager, CNI and netns."""

    def __init__(self, *, config: CRIConfig, images: CriImageStore, containers: ContainerStore,
                 tasks: TaskManager, state_dir: Path, cni: CNI | None,
                 handler_cnis: Mapping[str, CNI] | None = None,
                 base_specs: Mapping[str, dict[str, Any]] | None = None) -> None:
        self.config = config
        self.images = images
        self.containers = containers
        self.tasks = tasks
        self.state_dir = state_dir
        self.cni = cni
        # the handlers with a cni_conf_dir: their own CNI load; the others use ``cni``
        self.handler_cnis = dict(handler_cnis or {})
        # the handlers with a base_runtime_spec: the spec read from it when the plugin started
        self.base_specs = dict(base_specs or {})
        self._names: set[str] = set()  # pod names being created right now
        self._locks: dict[str, asyncio.Lock] = {}
        self._net_down: set[str] = set()  # pods whose network this daemon tore down (CNI DEL done)
        # pods as get(known=True) read them, for their containers' create and start: what those
        # use of a pod (its id, config but resources, runtime handler) never changes, its
        # readiness comes from the task manager; dropped when the pod is removed or updated
        self._known: dict[str, Sandbox] = {}

    def lock(self, sid: str) -> asyncio.Lock:
        return self._locks.setdefault(sid, asyncio.Lock())

    def sandbox_dir(self, sid: str) -> Path:
        return self.state_dir / "sandboxes" / sid

    # -- reading ----------------------------------------------------------------------------------
    async def _status_of(self, c: Container, *, known: bool = False) -> Sandbox | None:
        data = ext_data(c, SANDBOX_EXT)
        if data is None:
            return None
        cfg = pb.PodSandboxConfig()
        with contextlib.suppress(json_format.ParseError):
            json_format.ParseDict(data.get("config") or {}, cfg, ignore_unknown_fields=True)
        ready, pid, process_status = False, 0, "deleted"
        if known and (pid := self.tasks.running_pid(NAMESPACE, c.id)):
            # the task manager saw it start and no exit since: no round trip to the shim
            ready, process_status = True, "running"
        elif self.tasks.has_task(NAMESPACE, c.id):
            try:
                st = await self.tasks.get(NAMESPACE, c.id)
            except errdefs.ContainerdError:
                process_status = "unknown"
            else:
                # ready while its infra process lives, paused or not: containerd's CRI reports its
                # own pod state (ready from the start until the infra's exit or a stop), never the
                # task's status (a paused pod, ``ctr tasks pause``, stays SANDBOX_READY there)
                ready, pid, process_status = st.status in _LIVE, st.pid, st.status
                if st.status == "stopped":
                    # containerd's CRI deletes a sandbox's task when its infra process exits (ours
                    # keeps it for StopPodSandbox's cleanup): what it reports then is "deleted"
                    process_status = "deleted"
        spec: dict[str, Any] = {}
        if c.spec is not None:
            with contextlib.suppress(ValueError):
                spec = json.loads(c.spec.value)
        return Sandbox(id=c.id, config=cfg, created_at_ns=c.created_at_ns, netns=str(data.get("netns") or ""),
                       ip=str(data.get("ip") or ""), additional_ips=list(data.get("additional_ips") or []),
                       ready=ready, pid=pid, labels=dict(c.labels), spec=spec, image=c.image,
                       runtime_handler=str(data.get("runtime_handler") or ""),
                       runtime_type=c.runtime_name or RUNTIME_NAME, snapshotter=c.snapshotter,
                       snapshot_key=c.snapshot_key, runtime_options=c.runtime_options,
                       cni_result=data.get("cni_result") if isinstance(data.get("cni_result"), dict) else None,
                       process_status=process_status)

    async def names(self) -> set[str]:
        """The names of the stored pods, from their records alone (no task states asked)."""
        out = set()
        for c in await self.containers.list(NAMESPACE, [f"labels.\"{KIND_LABEL}\"=={KIND_SANDBOX}"]):
            data = ext_data(c, SANDBOX_EXT)
            if data is None:
                continue
            name = data.get("name")
            if not isinstance(name, str) or not name:
                cfg = pb.PodSandboxConfig()
                with contextlib.suppress(json_format.ParseError):
                    json_format.ParseDict(data.get("config") or {}, cfg, ignore_unknown_fields=True)
                name = pod_name(cfg.metadata)
            out.add(name)
        return out

    async def list(self) -> list[Sandbox]:
        out = []
        for c in await self.containers.list(NAMESPACE, [f"labels.\"{KIND_LABEL}\"=={KIND_SANDBOX}"]):
            sb = await self._status_of(c)
            if sb is not None:
                out.append(sb)
        return out

    async def get(self, sid: str, *, known: bool = False) -> Sandbox:
        """The sandbox of an id or a unique id prefix; NotFound otherwise.  ``known``: a full id's
        readiness as the task manager knows it when it does (``TaskManager.running_pid``: the
        container calls' check, as containerd's CRI reads its sandbox store), else from its shim."""
        if not sid:
            raise errdefs.InvalidArgument("sandbox id must not be empty")
        if known and (seen := self._known.get(sid)) is not None and (pid := self.tasks.running_pid(NAMESPACE, sid)):
            return replace(seen, ready=True, pid=pid, process_status="running")  # no record read, no shim call
        # a full id: one record and its task's state, not a listing with every pod's
        with contextlib.suppress(errdefs.NotFound):
            rec = await self.containers.get(NAMESPACE, sid)
            if rec.labels.get(KIND_LABEL) == KIND_SANDBOX:
                one = await self._status_of(rec, known=known)
                if one is not None:
                    if known and one.ready:
                        self._known[sid] = one
                    return one
        found = [s for s in await self.list() if s.id.startswith(sid)]
        exact = [s for s in found if s.id == sid]
        if exact:
            return exact[0]
        if not found:
            raise errdefs.NotFound(f"an error occurred when try to find sandbox {sid!r}: not found")
        if len(found) > 1:
            raise errdefs.InvalidArgument(f"sandbox id prefix {sid!r} is ambiguous")
        return found[0]

    async def update_resources(self, sid: str, overhead: pb.LinuxContainerResources | None,
                               resources: pb.LinuxContainerResources | None) -> None:
        """UpdatePodSandboxResources: the pod's new overhead and resources (each only when given) into
        its stored config, which PodSandboxStatus shows and a restart keeps.  Nothing else changes:
        the pod-level cgroup (``cgroup_parent``) is the kubelet's, resized before it calls this (the
        CRI's contract), and the daemon holds no pod cgroup of its own (the infra process's cgroup
        holds only it, its containers' are siblings)."""
        sb = await self.get(sid)
        self._known.pop(sb.id, None)  # its config changes (not what containers use of it: kept simple)
        if overhead is None and resources is None:
            return
        async with self.lock(sb.id):
            record = await self.containers.get(NAMESPACE, sb.id)
            meta = ext_data(record, SANDBOX_EXT)
            if meta is None:
                raise errdefs.NotFound(f"sandbox {sb.id} has no CRI metadata")
            cfg = pb.PodSandboxConfig()
            json_format.ParseDict(meta.get("config") or {}, cfg, ignore_unknown_fields=True)
            if overhead is not None:
                cfg.linux.overhead.CopyFrom(overhead)
            if resources is not None:
                cfg.linux.resources.CopyFrom(resources)
            meta["config"] = json_format.MessageToDict(cfg)
            record.extensions = {**record.extensions, SANDBOX_EXT: ext_value(meta)}
            await self.containers.update(NAMESPACE, record, ["extensions"])

    # -- runtimes -------------------------------------------------------------------------------
    def runtime(self, handler: str = "") -> RuntimeConfig:
        """The runtime of a pod's handler (RuntimeClass); the default one for ``""``."""
        if not handler:
            return self.config.default_runtime
        try:
            return self.config.containerd.runtimes[handler]
        except KeyError:
            raise errdefs.NotFound(f"no runtime for {handler!r} is configured") from None

    def cni_for(self, handler: str = "") -> CNI | None:
        """The CNI a handler's pods are networked with: its ``cni_conf_dir``'s, else the default."""
        return self.handler_cnis.get(handler, self.cni)

    def snapshotter(self, handler: str = "") -> str:
        """The snapshotter of a handler's pods and containers: its ``snapshotter``, else the CRI's."""
        return handlers.snapshotter_of(self.runtime(handler), self.config.containerd.snapshotter)

    def container_spec_base(self, handler: str, cid: str) -> dict[str, Any]:
        """What a container's spec starts from: its handler's base spec, else the CRI default."""
        base = self.base_specs.get(handler or self.config.containerd.default_runtime_name)
        return cri_default_spec(NAMESPACE, cid) if base is None else handlers.from_base(base, NAMESPACE, cid)

    def systemd_cgroup(self, handler: str = "") -> bool:
        """Whether the pods of this handler use the systemd cgroup driver (its runc ``SystemdCgroup``)."""
        return self.runtime(handler).options.systemd_cgroup

    def run_options(self, handler: str = "") -> RuncOptions:
        """The runc options the handler's runtime configures, for its pods' and containers' tasks."""
        o = self.runtime(handler).options
        return RuncOptions(binary_name=o.binary_name, root=o.root, systemd_cgroup=o.systemd_cgroup,
                           no_pivot_root=o.no_pivot_root, no_new_keyring=o.no_new_keyring, io_uid=o.io_uid,
                           io_gid=o.io_gid)

    # -- stats ------------------------------------------------------------------------------------
    async def cgroup_stats(self, sb: Sandbox) -> tuple[str, dict[str, Any]]:
        """(mode, metrics) of the pod's cgroup: its config's ``cgroup_parent``, as containerd reads it."""
        parent = sb.config.linux.cgroup_parent
        if not parent:
            raise errdefs.FailedPrecondition(
                f"failed to get cgroup metrics for sandbox {sb.id}: its config names no cgroup_parent")

        path = parent_cgroup(parent, self.systemd_cgroup(sb.runtime_handler))

        def read() -> tuple[str, dict[str, Any]]:
            reader = cgroups.CgroupReader()
            return reader.mode, reader.stats(reader.paths_of_spec(path))

        return await asyncio.to_thread(read)

    async def interfaces(self, sb: Sandbox) -> builtins.list[InterfaceUsage] | None:
        """The pod's network interfaces as its infra process sees them; None for host-network pods."""
        if not sb.netns or sb.pid <= 0:
            return None
        try:
            text = await asyncio.to_thread(Path(f"/proc/{sb.pid}/net/dev").read_text)
        except OSError:
            return None
        return parse_net_dev(text)

    # -- run --------------------------------------------------------------------------------------
    async def run(self, cfg: pb.PodSandboxConfig, runtime_handler: str = "") -> str:
        if runtime_handler and runtime_handler not in self.config.containerd.runtimes:
            # containerd 1.6 says the same with UNKNOWN; the handler is what is not found
            raise errdefs.NotFound(f'failed to get sandbox runtime: no runtime for "{runtime_handler}" is configured')
        m = cfg.metadata
        if not m.name or not m.namespace:
            raise errdefs.InvalidArgument("sandbox config must include metadata.name and metadata.namespace")
        name = pod_name(m)
        if name in self._names or name in await self.names():
            raise errdefs.AlreadyExists(f"failed to reserve sandbox name {name!r}: name is reserved")
        self._names.add(name)
        try:
            return await self._run(cfg, name, runtime_handler)
        finally:
            self._names.discard(name)

    async def _image(self, ref: str) -> Any:
        try:
            return await self.images.resolve(ref)
        except errdefs.NotFound:
            await self.images.pull(ref)
            return await self.images.resolve(ref)

    async def _run(self, cfg: pb.PodSandboxConfig, name: str, handler: str = "") -> str:
        """netns, then CNI ADD in it *while* the record, the snapshot and the infra task are made
        (runc only needs the netns to exist; the pod's interfaces may come meanwhile), then the
        pod's IPs into the record and the infra process started: CNI ADD and runc create are each
        about a third of the call, and neither waits for the other (containerd runs them one after
        the other).  On failure everything is undone in reverse, CNI DEL only once ADD is over."""
        phases = Phases("RunPodSandbox")
        image = await self._image(self.config.sandbox_image)
        phases.mark("image")
        # the security context's files before anything is made: a bad profile leaves nothing behind
        sc = cfg.linux.security_context
        refuse_user_namespace(sc.namespace_options)
        wanted = seccomp_request(sc, self.config.unset_seccomp_profile)
        local_seccomp = (await asyncio.to_thread(load_profile, wanted.ref)
                         if wanted is not None and wanted.type == LOCALHOST else None)
        apparmor = await asyncio.to_thread(read_apparmor)
        phases.mark("security files")
        sid = new_id()
        undo: list[Any] = []
        cni_add: asyncio.Task[Any] | None = None
        try:
            sdir = self.sandbox_dir(sid)
            await asyncio.to_thread(self._write_files, sdir, cfg)
            undo.append(lambda: asyncio.to_thread(shutil.rmtree, sdir, True))
            await asyncio.to_thread(self._mount_shm, shm_source(self.sandbox_dir(sid), cfg))
            undo.append(lambda: asyncio.to_thread(self._unmount_shm, sid))
            phases.mark("pod files")
            path = ""
            if not host_network(cfg):
                path = await netns.create(netns.netns_dir(self.state_dir,
                                                          under_state_dir=self.config.netns_mounts_under_state_dir))
                undo.append(lambda p=path: netns.remove(p))
                phases.mark("netns")
                cni = self.cni_for(handler)
                if cni is None:
                    raise errdefs.FailedPrecondition("cni plugin not initialized: no CNI network for the pod")
                pod = self._pod_network(sid, path, cfg)
                undo.append(lambda n=pod: self._teardown(n, handler))
                cni_add = asyncio.create_task(cni.setup(pod), name=f"cni-add-{sid[:12]}")
            rt = self.runtime(handler)
            snapshotter = self.snapshotter(handler)

            def build(files: RootfsFiles | None) -> dict[str, Any]:
                spec = self._spec(sid, cfg, image.config, path, self.systemd_cgroup(handler),
                                  local_seccomp=local_seccomp, apparmor=apparmor, files=files)
                spec["annotations"] = {**handlers.passthrough(cfg.annotations, rt.pod_annotations),
                                       **spec["annotations"]}
                return spec

            # a user to look up in the image's /etc/passwd and /etc/group: the spec is completed
            # once the snapshot (which the record must name first) is there to read them from
            user = self._user(cfg, image.config)
            needs_files = bool(user) and not _numeric_user(user)
            spec = build(None)
            labels = {**dict(cfg.labels), KIND_LABEL: KIND_SANDBOX}
            meta = {"config": json_format.MessageToDict(cfg), "netns": path, "ip": "", "additional_ips": [],
                    "name": name, "runtime_handler": handler}
            record = Container(
                id=sid, runtime_name=rt.runtime_type, runtime_options=handlers.runtime_options(rt),
                spec=TypedValue(SPEC_TYPE_URL, json.dumps(spec).encode()),
                labels=labels, image=image.references[0] if image.references else image.id,
                snapshotter=snapshotter, snapshot_key=sid, extensions={SANDBOX_EXT: ext_value(meta)})
            phases.mark("spec")
            made = await self.containers.create(NAMESPACE, record)
            undo.append(lambda: self.containers.delete(NAMESPACE, sid))
            phases.mark("record")
            # after the record that names it: the garbage collector never sees it unreferenced
            sn = self.images.snapshots.namespaced(snapshotter, NAMESPACE)
            mounts = await self.images.prepare(sn, sid, image, snapshotter)
            undo.append(lambda: sn.remove(sid))
            phases.mark("snapshot")
            if needs_files:
                spec = build(await asyncio.to_thread(rootfs_files, mounts))
                record.spec = TypedValue(SPEC_TYPE_URL, json.dumps(spec).encode())
                await self.containers.update(NAMESPACE, record, ["spec"])
                phases.mark("user from passwd")
            await self.tasks.create(NAMESPACE, sid, rootfs=[RootfsMount(mt.type, mt.source, mt.target,
                                                                        tuple(mt.options)) for mt in mounts],
                                    io=TaskIO(), options=self.run_options(handler), runtime_path=rt.runtime_path)
            undo.append(lambda: self._delete_task(sid))
            phases.mark("task create")
            if cni_add is None:
                await self.tasks.start_process(NAMESPACE, sid)
            else:
                res = await cni_add
                phases.mark("cni add (rest)")
                meta.update(ip=res.pod_ip, additional_ips=list(res.additional_ips),
                            cni_result=gojson.cni_result((a.ifname, a.result) for a in res.attachments))
                # the pod's IPs into its record while its infra process starts: both are over
                # (or undone) before the answer
                await together(undo, (self._record_ips(sid, meta), None),
                               (self.tasks.start_process(NAMESPACE, sid), lambda: self.kill_task(sid, 0)))
            phases.mark("ips + task start")
        except BaseException:
            if cni_add is not None and not cni_add.done():
                await asyncio.wait([cni_add])  # CNI DEL (in the undo) only after ADD is over
            if cni_add is not None and cni_add.done() and not cni_add.cancelled():
                cni_add.exception()  # retrieved: the error that matters is the one raised below
            for step in reversed(undo):
                try:
                    await step()
                except Exception as exc:  # undo what can be undone, report the first failure
                    log.warning("sandbox %s: cleanup after a failed run: %s", sid, exc)
            raise
        # the pod as get(known=True) would read it back, for its containers' create and start
        known_cfg = pb.PodSandboxConfig()
        known_cfg.CopyFrom(cfg)
        self._known[sid] = Sandbox(
            id=sid, config=known_cfg, created_at_ns=made.created_at_ns, netns=path, ip=str(meta["ip"]),
            additional_ips=list(meta["additional_ips"]), ready=True, pid=0, labels=labels, spec=spec,
            image=record.image, runtime_handler=handler, runtime_type=rt.runtime_type, snapshotter=snapshotter)
        phases.done(sid)
        return sid

    async def _record_ips(self, sid: str, meta: dict[str, Any]) -> None:
        record = await self.containers.get(NAMESPACE, sid)
        record.extensions = {**record.extensions, SANDBOX_EXT: ext_value(meta)}
        await self.containers.update(NAMESPACE, record, ["extensions"])

    def _pod_network(self, sid: str, path: str, cfg: pb.PodSandboxConfig) -> PodNetwork:
        ports = tuple(PortMapping(host_port=p.host_port, container_port=p.container_port,
                                  protocol=_PROTOCOLS.get(p.protocol, "tcp"), host_ip=p.host_ip)
                      for p in cfg.port_mappings if p.host_port > 0)
        m = cfg.metadata
        return PodNetwork(sandbox_id=sid, netns=path, namespace=m.namespace, name=m.name, uid=m.uid,
                          capabilities=CapabilityArgs(port_mappings=ports))

    async def _teardown(self, pod: PodNetwork, handler: str = "") -> None:
        cni = self.cni_for(handler)
        if cni is not None:
            await cni.teardown(pod)

    @staticmethod
    def _write_files(sdir: Path, cfg: pb.PodSandboxConfig) -> None:
        private_dir(sdir)  # runc (root) bind-mounts the files below into the pod's containers
        resolv = resolv_conf(cfg.dns_config)
        if resolv is None:
            try:
                resolv = Path("/etc/resolv.conf").read_text()
            except OSError:
                resolv = ""
        (sdir / "resolv.conf").write_text(resolv)
        try:
            hosts = Path("/etc/hosts").read_text()
        except OSError:
            hosts = "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n"
        (sdir / "hosts").write_text(hosts)
        hostname = cfg.hostname or os.uname().nodename
        (sdir / "hostname").write_text(hostname + "\n")
        for f in ("resolv.conf", "hosts", "hostname"):
            (sdir / f).chmod(0o644)

    @staticmethod
    def _mount_shm(source: str) -> None:
        """The pod's /dev/shm (containerd's sandbox shm: a tmpfs, nosuid, nodev, noexec, mode 1777,
        64 MiB); with IPC NODE the host's must exist."""
        if source == DEV_SHM:
            if not os.path.isdir(DEV_SHM):
                raise errdefs.FailedPrecondition(f"host {DEV_SHM} is not available for a pod with host IPC")
            return
        os.makedirs(source, mode=0o700, exist_ok=True)
        mount_all([MountRecord("tmpfs", "shm", ["nosuid", "nodev", "noexec", "mode=1777",
                                                f"size={SANDBOX_SHM_SIZE}"])], source)

    def _unmount_shm(self, sid: str) -> None:
        shm = self.sandbox_dir(sid) / "shm"
        if shm.is_dir():  # none with IPC NODE; unmounting what is not a mount point is fine
            unmount_all(shm)

    def _oom(self, adj: int) -> int:
        if self.config.restrict_oom_score_adj:
            return max(adj, own_oom_score_adj())
        return adj

    @staticmethod
    def _user(cfg: pb.PodSandboxConfig, image_config: dict[str, Any]) -> str:
        """The infra process's user string: run_as_user[:run_as_group], else the image's ``User``
        (a group without a user is refused)."""
        sc = cfg.linux.security_context
        return user_string("", sc.run_as_user if sc.HasField("run_as_user") else None,
                           sc.run_as_group if sc.HasField("run_as_group") else None
                           ) or str((image_config.get("config") or {}).get("User") or "")

    def _spec(self, sid: str, cfg: pb.PodSandboxConfig, image_config: dict[str, Any], path: str,
              systemd: bool = False, *, local_seccomp: dict[str, Any] | None = None,
              apparmor: tuple[bool, frozenset[str]] = (False, frozenset()),
              files: RootfsFiles | None = None) -> dict[str, Any]:
        spec = cri_default_spec(NAMESPACE, sid)
        ic = image_config.get("config") or {}
        args = [*(ic.get("Entrypoint") or []), *(ic.get("Cmd") or [])]
        if not args:
            raise errdefs.InvalidArgument(f"sandbox image {self.config.sandbox_image!r} has no entrypoint or command")
        proc = spec["process"]
        proc["args"] = args
        proc["env"] = replace_or_append_env(proc.get("env") or [], ic.get("Env") or [])
        proc["cwd"] = ic.get("WorkingDir") or "/"
        proc["oomScoreAdj"] = self._oom(SANDBOX_OOM_SCORE_ADJ)
        sc = cfg.linux.security_context
        # as containerd's: run_as_user (with run_as_group), else the image's user, resolved in the
        # image's /etc/passwd (a uid without a group takes its passwd group, else 0); files=None
        # leaves a user that needs them at root until the caller has them
        user = self._user(cfg, image_config)
        if user and (files is not None or _numeric_user(user)):
            with_user(spec, user, files or RootfsFiles(None, None))
        if sc.supplemental_groups:
            proc["user"]["additionalGids"] = sorted({*proc["user"].get("additionalGids", []),
                                                      *sc.supplemental_groups})
        profile = apparmor_profile(sc, enabled=apparmor[0] and not self.config.disable_apparmor, loaded=apparmor[1])
        if profile:
            proc["apparmorProfile"] = profile
        wanted = seccomp_request(sc, self.config.unset_seccomp_profile)
        if wanted is not None and wanted.type == LOCALHOST:
            if local_seccomp is None:  # _run loads it; never fall back to another profile
                raise errdefs.FailedPrecondition(f"seccomp profile {wanted.ref!r} was not loaded")
            spec["linux"]["seccomp"] = local_seccomp
        elif wanted is not None:
            spec["linux"]["seccomp"] = default_profile(proc["capabilities"]["bounding"])
        if not host_network(cfg):  # the host's UTS namespace keeps the host's name
            spec["hostname"] = cfg.hostname or os.uname().nodename
        spec["root"]["readonly"] = True
        linux = spec["linux"]
        ns_opts = sc.namespace_options
        namespaces = [n for n in linux["namespaces"] if n["type"] not in ("network", "ipc", "pid", "uts")]
        if not host_network(cfg):
            namespaces.append({"type": "network", "path": path})
            namespaces.append({"type": "uts"})
        if ns_opts.ipc != pb.NODE:
            namespaces.append({"type": "ipc"})
        if ns_opts.pid != pb.NODE:
            namespaces.append({"type": "pid"})
        linux["namespaces"] = namespaces
        sysctls = configopts.sandbox_sysctls(self.config, cfg.linux.sysctls, host_network=host_network(cfg))
        if sysctls:
            linux["sysctl"] = sysctls
        if self.config.disable_cgroup:  # as containerd: no cgroup path, no default shares
            linux["cgroupsPath"] = ""
        else:
            linux["cgroupsPath"] = cgroups_path(cfg.linux.cgroup_parent, sid, systemd)
            linux.setdefault("resources", {}).setdefault("cpu", {})["shares"] = 2
        # as containerd: the pod's shm and resolv.conf, read-only, after the default mounts (whose
        # /dev/shm tmpfs stays below the bind)
        sdir = self.sandbox_dir(sid)
        spec["mounts"] += [{"destination": DEV_SHM, "type": "bind", "source": shm_source(sdir, cfg),
                            "options": ["rbind", "ro"]},
                           {"destination": "/etc/resolv.conf", "type": "bind", "source": str(sdir / "resolv.conf"),
                            "options": ["rbind", "ro"]}]
        spec["annotations"] = {
            ANN_CONTAINER_TYPE: KIND_SANDBOX,
            ANN_SANDBOX_ID: sid,
            ANN_SANDBOX_NAME: cfg.metadata.name,
            ANN_SANDBOX_NAMESPACE: cfg.metadata.namespace,
            ANN_SANDBOX_UID: cfg.metadata.uid,
            ANN_SANDBOX_LOG_DIR: cfg.log_directory,
        }
        return canonical(spec)

    # -- stop / remove ----------------------------------------------------------------------------
    async def _delete_task(self, cid: str) -> None:
        with contextlib.suppress(errdefs.NotFound):
            await self.tasks.delete(NAMESPACE, cid)

    async def kill_task(self, cid: str, grace: float, sig: int = signal.SIGKILL) -> None:
        """Signal the task (SIGKILL after ``grace`` seconds when ``sig`` is gentler), wait, delete it."""
        if not self.tasks.has_task(NAMESPACE, cid):
            return
        try:
            st = await self.tasks.get(NAMESPACE, cid)
        except errdefs.NotFound:
            return
        if st.status in ("running", "paused", "created"):
            with contextlib.suppress(errdefs.NotFound):
                await self.tasks.kill(NAMESPACE, cid, sig, all=sig == signal.SIGKILL)
            if sig != signal.SIGKILL:
                try:
                    await asyncio.wait_for(self.tasks.wait(NAMESPACE, cid), grace)
                except TimeoutError:
                    with contextlib.suppress(errdefs.NotFound):
                        await self.tasks.kill(NAMESPACE, cid, signal.SIGKILL, all=True)
            with contextlib.suppress(errdefs.NotFound):
                await asyncio.wait_for(self.tasks.wait(NAMESPACE, cid), STOP_WAIT)

    async def stop(self, sid: str, stop_containers: Any = None) -> None:
        """The pod's containers, then its infra process, stopped; its network torn down meanwhile
        (CNI DEL and the netns do not wait for the processes, nor they for it).  A later stop or the
        remove skips CNI DEL when this daemon already did it; after a restart it runs once more
        (idempotent: it releases what a stop interrupted by a crash or reboot left)."""
        sb = await self.get(sid)
        async with self.lock(sb.id):
            net = (asyncio.create_task(self._network_down(sb), name=f"cni-del-{sb.id[:12]}")
                   if sb.netns and sb.id not in self._net_down else None)
            try:
                if stop_containers is not None:
                    await stop_containers(sb.id)
                await self.kill_task(sb.id, 0)
                await self._delete_task(sb.id)
                # as containerd's StopPodSandbox: the pod's shm goes with its processes
                await asyncio.to_thread(self._unmount_shm, sb.id)
            finally:
                if net is not None:
                    await asyncio.wait([net])
            if net is not None:
                net.result()  # its error, if any

    async def _network_down(self, sb: Sandbox) -> None:
        pod = self._pod_network(sb.id, sb.netns, sb.config)
        await self._teardown(pod, sb.runtime_handler)
        if await netns.exists(sb.netns):
            await netns.remove(sb.netns)
        self._net_down.add(sb.id)

    async def remove(self, sid: str, remove_containers: Any = None) -> None:
        try:
            sb = await self.get(sid)
        except errdefs.NotFound:
            return  # CRI: removing a missing sandbox is success
        await self.stop(sb.id, remove_containers)
        self._known.pop(sb.id, None)
        async with self.lock(sb.id):
            sn = self.images.snapshots.namespaced(sb.snapshotter or self.images.snapshotter, NAMESPACE)
            with contextlib.suppress(errdefs.NotFound):
                await sn.remove(sb.id)
            with contextlib.suppress(errdefs.NotFound):
                await self.containers.delete(NAMESPACE, sb.id)
            await asyncio.to_thread(self._unmount_shm, sb.id)  # never rmtree into a mounted tmpfs
            await asyncio.to_thread(shutil.rmtree, self.sandbox_dir(sb.id), True)
        self._locks.pop(sb.id, None)
        self._net_down.discard(sb.id)
