"""Bad RuntimeService inputs, differentially: the same raw CRI request to our daemon and to containerd 1.6's
CRI (Debian's containerd, same CRI config, images and CNI as tests/integration/test_cri_pods.py), compared
by status code; our message must be one line naming what is wrong; and after every failing call nothing is
half-created on either engine: no new ``k8s.io`` container records, snapshots or tasks (``ctr``), no new
per-object dirs (64-hex names) under the engine's root and state (pod dirs, bundles, io dirs), no pod IP
still held in the engine's host-local store, no veth left on its bridge, no new unused ``cni-*`` network
namespace (judged at the end: other tests' pods come and go in /var/run/netns), and nothing left in the
failing pod's cgroup parent.  The whole module runs in about 30 s.

Found by it and fixed (ours now matches containerd): a mount whose host path cannot be stat'ed failed only
at StartContainer, and a missing one was not made (create-bad-mount-source, create-missing-mount-source);
UpdateContainerResources of an exited container was refused (update-exited).

Each engine gets the same starting state (``_prepare``): a ready pod, a running container, a created one,
an exited one, a not-ready (stopped) pod, and enough containers and host-network pods that two ids share a
first hex digit (the ambiguous-prefix cases).

Missing ids match containerd 1.6 (as test_cri_pods.py measured): StopContainer, StopPodSandbox and the
status/stats/exec/update/reopen calls answer NotFound; RemoveContainer and RemovePodSandbox answer OK (the
kubelet reads NotFound from a stop as done).  List calls filtered by a missing id answer an empty list.

Deliberate differences (``Case.ours``; the test fails if containerd starts agreeing, so the note goes):

- containerd answers UNKNOWN where its own message says what kind of error it is (its CRI returns plain
  Go errors): missing metadata, an empty or ambiguous id, a duplicate container name, a container not in
  the state the call needs (start of a running/exited one, exec/reopen in an exited one, port-forward to
  a stopped pod), an empty exec command, an unknown runtime handler.  Ours answers the kind
  (INVALID_ARGUMENT, ALREADY_EXISTS, FAILED_PRECONDITION, NOT_FOUND), which clients can act on.
- RunPodSandbox with an empty metadata.name: containerd runs the pod; ours refuses it (the pod's unique
  name, and the kubelet's, is built from it).
- CreateContainer in a stopped pod: containerd says NOT_FOUND (of the pod's task); the pod is there, it
  is not ready: FAILED_PRECONDITION.
- RunPodSandbox when a CNI plugin of the chain fails (here: not installed, after bridge made the veth and
  took an IP): containerd 1.6 answers UNKNOWN and keeps the pod, NOTREADY, with its record, snapshot,
  netns, veth and IP until the kubelet stops and removes it; ours answers FAILED_PRECONDITION naming the
  plugin and the network, and has undone it all (CNI DEL, netns, snapshot, record) when it answers.
- Exec with no command: containerd hands out a streaming URL for an exec that fails when the client
  connects; ours refuses the call.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import re
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import grpc
import pytest

from pycontainerd.api.cri.runtime.v1 import api_pb2 as pb
from pycontainerd.api.cri.runtime.v1 import api_pb2_grpc as pb_grpc
from tests.fixtures.containerd import CriOptions, running_containerd
from tests.fixtures.procs import wait_for

from .test_cri_pods import Engine, Setup, _ours
from .test_cri_pods import setup as setup  # the module fixture: registry, pause and busybox images

pytestmark = pytest.mark.root

C = grpc.StatusCode
MISSING = "f" * 64
HEX64 = re.compile(r"[0-9a-f]{64}")
NETNS_DIR = Path("/var/run/netns")
CGROUP = Path("/sys/fs/cgroup")


@contextlib.contextmanager
def _theirs(s: Setup) -> Iterator[Engine]:
    if not Path("/usr/bin/containerd").exists():
        pytest.skip("needs containerd (apt-get install containerd)")
    opts = CriOptions(sandbox_image=s.pause_ref, insecure_registries=[s.registry.host])
    with running_containerd(cri=opts) as c:
        e = Engine("containerd", c.address, c.log, c.cri or opts, daemon=c)  # daemon: its root and state dirs
        try:
            yield e
        finally:
            e.remove_all_pods()


@pytest.fixture(scope="module")
def ours(setup: Setup) -> Iterator[Engine]:
    with _ours(setup) as e:
        yield e


@pytest.fixture(scope="module")
def theirs(setup: Setup) -> Iterator[Engine]:
    with _theirs(setup) as e:
        yield e


@dataclasses.dataclass
class State:
    """One engine's objects the cases refer to."""

    pod: str = ""
    pod_cfg: Any = None
    stopped_pod: str = ""
    running: str = ""
    created: str = ""
    created_cfg: Any = None
    exited: str = ""
    ambiguous_ctr: str = ""
    ambiguous_pod: str = ""
    cgroup_parent: str = ""
    scratch: str = ""  # a host directory of this engine's, for mount sources


def _call(e: Engine, name: str, req: Any, timeout: float = 60) -> tuple[grpc.StatusCode, Any]:
    with grpc.insecure_channel(f"unix:{e.address}") as ch:
        try:
            return C.OK, getattr(pb_grpc.RuntimeServiceStub(ch), name)(req, timeout=timeout)
        except grpc.RpcError as exc:
            return exc.code(), exc.details() or ""


def _ok(e: Engine, name: str, req: Any) -> Any:
    code, resp = _call(e, name, req)
    assert code == C.OK, f"[{e.name}] {name}: {code} {resp}"
    return resp


def _pod_config(tag: str, log_dir: Path, *, host_network: bool = False, cgroup_parent: str = "",
                **extra: Any) -> pb.PodSandboxConfig:
    cfg = pb.PodSandboxConfig(
        metadata=pb.PodSandboxMetadata(name=f"codes-{tag}", namespace="pycd-codes", uid=uuid.uuid4().hex),
        log_directory=str(log_dir), **extra)
    if not host_network:
        cfg.hostname = f"codes-{tag}"
    cfg.linux.security_context.namespace_options.network = pb.NODE if host_network else pb.POD
    if cgroup_parent:
        cfg.linux.cgroup_parent = cgroup_parent
    return cfg


def _ctr_config(name: str, image: str, *args: str, **extra: Any) -> pb.ContainerConfig:
    return pb.ContainerConfig(metadata=pb.ContainerMetadata(name=name), image=pb.ImageSpec(image=image),
                              command=["sh", "-c", " ".join(args) or "sleep 1000"], log_path=f"{name}.log", **extra)


def _create(e: Engine, pod: str, pod_cfg: pb.PodSandboxConfig, cfg: pb.ContainerConfig) -> str:
    return str(_ok(e, "CreateContainer", pb.CreateContainerRequest(
        pod_sandbox_id=pod, config=cfg, sandbox_config=pod_cfg)).container_id)


def _shared_prefix(ids: list[str]) -> str:
    """A one-digit prefix two of ``ids`` share, or ''."""
    seen: set[str] = set()
    for i in ids:
        if i[0] in seen:
            return i[0]
        seen.add(i[0])
    return ""


def _prepare(e: Engine, busybox: str, log_dir: Path) -> State:
    s = State()
    e.crictl("pull", busybox)
    s.pod_cfg = _pod_config("main", log_dir)
    s.pod = str(_ok(e, "RunPodSandbox", pb.RunPodSandboxRequest(config=s.pod_cfg)).pod_sandbox_id)
    s.running = _create(e, s.pod, s.pod_cfg, _ctr_config("running", busybox))
    _ok(e, "StartContainer", pb.StartContainerRequest(container_id=s.running))
    s.created_cfg = _ctr_config("created", busybox)
    s.created = _create(e, s.pod, s.pod_cfg, s.created_cfg)
    s.exited = _create(e, s.pod, s.pod_cfg, _ctr_config("exited", busybox, "true"))
    _ok(e, "StartContainer", pb.StartContainerRequest(container_id=s.exited))
    wait_for(lambda: _ok(e, "ContainerStatus", pb.ContainerStatusRequest(container_id=s.exited)).status.state
             == pb.CONTAINER_EXITED, 30, f"[{e.name}] the exited container's exit", interval=0.05)
    ids = [s.running, s.created, s.exited]
    n = 0
    while not (prefix := _shared_prefix(ids)):  # 17 ids share a digit at the latest
        n += 1
        ids.append(_create(e, s.pod, s.pod_cfg, _ctr_config(f"pad{n}", busybox)))
    s.ambiguous_ctr = prefix
    stopped_cfg = _pod_config("stopped", log_dir, host_network=True)
    s.stopped_pod = str(_ok(e, "RunPodSandbox", pb.RunPodSandboxRequest(config=stopped_cfg)).pod_sandbox_id)
    _ok(e, "StopPodSandbox", pb.StopPodSandboxRequest(pod_sandbox_id=s.stopped_pod))
    pods = [s.pod, s.stopped_pod]
    while not (prefix := _shared_prefix(pods)):
        pods.append(str(_ok(e, "RunPodSandbox", pb.RunPodSandboxRequest(
            config=_pod_config(f"pad{len(pods)}", log_dir, host_network=True))).pod_sandbox_id))
    s.ambiguous_pod = prefix
    s.cgroup_parent = f"/pycd-codes-{uuid.uuid4().hex[:12]}"
    s.scratch = str(log_dir.parent / f"mnt-{e.name}")
    return s


# -- what an engine holds, to see that a failed call left nothing ------------------------------------------------
def _netns_unused() -> set[str]:
    """cni-* namespaces under /var/run/netns no process is in (a live pod's infra process holds its own)."""
    used: set[int] = set()
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            with contextlib.suppress(OSError):
                used.add(os.stat(d / "ns" / "net").st_ino)
    out = set()
    with contextlib.suppress(OSError):
        for p in NETNS_DIR.iterdir():
            with contextlib.suppress(OSError):
                if p.name.startswith("cni-") and os.stat(p).st_ino not in used:
                    out.add(p.name)
    return out


def _id_dirs(top: Path, depth: int = 4) -> set[str]:
    out: set[str] = set()
    for dirpath, dirnames, _ in os.walk(top):
        rel = Path(dirpath).relative_to(top)
        if len(rel.parts) >= depth or "snapshots" in rel.parts or "content" in rel.parts:
            dirnames[:] = []
            continue
        out.update(f"{rel}/{d}" for d in dirnames if HEX64.fullmatch(d))
    return out


def _holdings(e: Engine) -> dict[str, set[str]]:
    d = e.daemon
    return {
        "containers": set(e.ctr("containers", "ls", "-q").split()),
        "snapshots": {line.split()[0] for line in e.ctr("snapshots", "ls").splitlines()[1:] if line.strip()},
        "tasks": {line.split()[0] for line in e.ctr("tasks", "ls").splitlines()[1:] if line.strip()},
        "dirs": _id_dirs(Path(d.root)) | _id_dirs(Path(d.state)),
        "pod IPs": _ipam_ips(e),
        "bridge ports": _bridge_ports(e),
    }


def _ipam_ips(e: Engine) -> set[str]:
    """The IPs host-local holds for the engine's network (its dataDir is the engine's own)."""
    conflist = json.loads(_main_conflist(e).read_text())
    data_dir = Path(conflist["plugins"][0]["ipam"]["dataDir"]) / conflist["name"]
    with contextlib.suppress(OSError):
        return {p.name for p in data_dir.iterdir() if p.name[0].isdigit() and not p.name.startswith("last")}
    return set()


def _main_conflist(e: Engine) -> Path:
    return next(p for p in sorted(_conf_dir(e).glob("*.conflist")) if p.name != FAILING_CONFLIST)


def _bridge_ports(e: Engine) -> set[str]:
    """The veths on the engine's own bridge (a pod's host side)."""
    out = subprocess.run(["ip", "-o", "link", "show", "master", e.opts.bridge], capture_output=True, text=True,
                         check=False, timeout=30).stdout
    return {line.split(":")[1].strip().split("@")[0] for line in out.splitlines() if ":" in line}


def _conf_dir(e: Engine) -> Path:
    m = re.search(r'conf_dir = "([^"]+)"', Path(e.daemon.config).read_text())
    assert m, f"[{e.name}] no cni conf_dir in its config"
    return Path(m.group(1))


def _cgroup_children(parent: str) -> list[str]:
    out = []
    for ctl in CGROUP.iterdir():
        p = ctl / parent.strip("/")
        if p.is_dir():
            out += [f"{ctl.name}/{c.name}" for c in p.iterdir() if c.is_dir()]
    return out


def _remove_cgroup(parent: str) -> None:
    for ctl in CGROUP.iterdir():
        with contextlib.suppress(OSError):
            (ctl / parent.strip("/")).rmdir()


# -- the cases ------------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Case:
    id: str
    call: str
    request: Callable[[State, str], Any]  # (the engine's state, the busybox ref) -> request
    names: Callable[[State], str] = lambda s: ""  # what our message must name (case-insensitive)
    ours: grpc.StatusCode | None = None  # a deliberate difference (see the module docstring / the comment)
    timeout: float = 60
    around: Callable[[Engine], contextlib.AbstractContextManager[None]] | None = None  # the engine set up for it
    containerd_leaves: str = ""  # containerd 1.6 leaves this half-made (measured): what; cleaned after the case


FAILING_CONFLIST = "00-pycd-fail.conflist"  # sorts first: with max_conf_num = 1 the pod network is this one
MISSING_PLUGIN = "pycd-no-such-plugin"


def _cni_seen(e: Engine, plugin: str) -> bool:
    """Whether the engine's loaded CNI config names ``plugin`` (containerd reloads conf_dir on change; ours
    reads it on every call)."""
    if e.name == "pycontainerd":
        return True
    return plugin in str(_ok(e, "Status", pb.StatusRequest(verbose=True)).info.get("cniconfig", ""))


@contextlib.contextmanager
def failing_plugin(e: Engine) -> Iterator[None]:
    """The engine's own network with a plugin after bridge that is not installed: bridge ADD runs (a veth,
    an IP from host-local), then the chain fails; the engine must undo what bridge did."""
    conf = _conf_dir(e)
    net = json.loads(_main_conflist(e).read_text())
    net["plugins"].append({"type": MISSING_PLUGIN})
    path = conf / FAILING_CONFLIST
    path.write_text(json.dumps(net))
    try:
        wait_for(lambda: _cni_seen(e, MISSING_PLUGIN), 30, f"[{e.name}] the failing CNI config loaded",
                 interval=0.05)
        yield
    finally:
        path.unlink()
        wait_for(lambda: e.name == "pycontainerd" or not _cni_seen(e, MISSING_PLUGIN), 30,
                 f"[{e.name}] the failing CNI config unloaded", interval=0.05)


def _pod(s: State, **kw: Any) -> pb.PodSandboxConfig:
    cfg = pb.PodSandboxConfig()
    cfg.CopyFrom(s.pod_cfg)
    cfg.metadata.uid = uuid.uuid4().hex
    cfg.metadata.name = f"codes-bad-{uuid.uuid4().hex[:6]}"
    for k, v in kw.items():
        if k == "sysctls":
            cfg.linux.sysctls.update(v)
        elif k == "cgroup_parent":
            cfg.linux.cgroup_parent = v
        elif k == "no_metadata":
            cfg.ClearField("metadata")
        elif k == "name":
            cfg.metadata.name = v
    return cfg


def _ctr(s: State, ref: str, name: str = "", **kw: Any) -> pb.CreateContainerRequest:
    cfg = _ctr_config(name or f"bad-{uuid.uuid4().hex[:6]}", ref)
    for k, v in kw.items():
        if k == "no_metadata":
            cfg.ClearField("metadata")
        elif k == "mounts":
            cfg.mounts.extend(v)
        elif k == "image":
            cfg.image.image = v
    return pb.CreateContainerRequest(pod_sandbox_id=kw.get("pod", s.pod), config=cfg, sandbox_config=s.pod_cfg)


CASES: list[Case] = [
    # RunPodSandbox
    Case("runp-no-metadata", "RunPodSandbox", lambda s, b: pb.RunPodSandboxRequest(config=_pod(s, no_metadata=True)),
         lambda s: "metadata", ours=C.INVALID_ARGUMENT),
    # containerd 1.6 runs a pod without a name (it checks only that metadata is there)
    Case("runp-empty-name", "RunPodSandbox", lambda s, b: pb.RunPodSandboxRequest(config=_pod(s, name="")),
         lambda s: "name", ours=C.INVALID_ARGUMENT),
    Case("runp-bad-handler", "RunPodSandbox",
         lambda s, b: pb.RunPodSandboxRequest(config=_pod(s), runtime_handler="pycd-no-such-handler"),
         lambda s: "pycd-no-such-handler", ours=C.NOT_FOUND),
    Case("runp-bad-sysctl", "RunPodSandbox",
         lambda s, b: pb.RunPodSandboxRequest(config=_pod(s, sysctls={"pycd.no.such": "1"},
                                                          cgroup_parent=s.cgroup_parent)),
         lambda s: "pycd.no.such"),
    # a parent below a file: runc cannot make the pod's cgroup
    Case("runp-bad-cgroup-parent", "RunPodSandbox",
         lambda s, b: pb.RunPodSandboxRequest(config=_pod(s, cgroup_parent="/cgroup.procs")),
         lambda s: "cgroup.procs"),
    Case("runp-no-config", "RunPodSandbox", lambda s, b: pb.RunPodSandboxRequest(), lambda s: "metadata",
         ours=C.INVALID_ARGUMENT),
    Case("runp-cni-plugin-fails", "RunPodSandbox", lambda s, b: pb.RunPodSandboxRequest(config=_pod(s)),
         lambda s: MISSING_PLUGIN, ours=C.FAILED_PRECONDITION, around=failing_plugin,
         containerd_leaves="a NOTREADY pod: its record, snapshot, netns, veth and pod IP"),
    # CreateContainer
    Case("create-missing-pod", "CreateContainer", lambda s, b: _ctr(s, b, pod=MISSING), lambda s: MISSING),
    Case("create-empty-pod-id", "CreateContainer", lambda s, b: _ctr(s, b, pod=""), lambda s: "sandbox id",
         ours=C.INVALID_ARGUMENT),
    # containerd: NotFound for the pod's task ("no running task found"), though the pod is there
    Case("create-not-ready-pod", "CreateContainer", lambda s, b: _ctr(s, b, pod=s.stopped_pod),
         lambda s: s.stopped_pod, ours=C.FAILED_PRECONDITION),
    Case("create-no-metadata", "CreateContainer", lambda s, b: _ctr(s, b, no_metadata=True), lambda s: "metadata",
         ours=C.INVALID_ARGUMENT),
    Case("create-missing-image", "CreateContainer", lambda s, b: _ctr(s, b, image="docker.io/library/pycd-absent:1"),
         lambda s: "pycd-absent"),
    Case("create-empty-image", "CreateContainer", lambda s, b: _ctr(s, b, image=""), lambda s: "image",
         ours=C.INVALID_ARGUMENT),
    # a host path below a regular file: neither engine can make it (containerd creates missing ones)
    Case("create-bad-mount-source", "CreateContainer",
         lambda s, b: _ctr(s, b, mounts=[pb.Mount(container_path="/data", host_path="/etc/hostname/pycd")]),
         lambda s: "/etc/hostname/pycd"),
    # a host path that does not exist is made (both engines: a hostPath volume without a type)
    Case("create-missing-mount-source", "CreateContainer",
         lambda s, b: _ctr(s, b, mounts=[pb.Mount(container_path="/data", host_path=f"{s.scratch}/new/dir")])),
    Case("create-duplicate-name", "CreateContainer", lambda s, b: _ctr(s, b, name="created"), lambda s: "created",
         ours=C.ALREADY_EXISTS),
    # StartContainer
    Case("start-missing", "StartContainer", lambda s, b: pb.StartContainerRequest(container_id=MISSING),
         lambda s: MISSING),
    Case("start-running", "StartContainer", lambda s, b: pb.StartContainerRequest(container_id=s.running),
         lambda s: s.running, ours=C.FAILED_PRECONDITION),
    Case("start-exited", "StartContainer", lambda s, b: pb.StartContainerRequest(container_id=s.exited),
         lambda s: s.exited, ours=C.FAILED_PRECONDITION),
    # stop / remove of missing ids
    Case("stop-missing", "StopContainer", lambda s, b: pb.StopContainerRequest(container_id=MISSING),
         lambda s: MISSING),
    # stopping what is stopped: OK (the CRI's idempotence)
    Case("stop-exited", "StopContainer", lambda s, b: pb.StopContainerRequest(container_id=s.exited)),
    Case("stopp-stopped", "StopPodSandbox", lambda s, b: pb.StopPodSandboxRequest(pod_sandbox_id=s.stopped_pod)),
    Case("rm-missing", "RemoveContainer", lambda s, b: pb.RemoveContainerRequest(container_id=MISSING)),
    Case("stopp-missing", "StopPodSandbox", lambda s, b: pb.StopPodSandboxRequest(pod_sandbox_id=MISSING),
         lambda s: MISSING),
    Case("rmp-missing", "RemovePodSandbox", lambda s, b: pb.RemovePodSandboxRequest(pod_sandbox_id=MISSING)),
    # status
    Case("status-missing", "ContainerStatus", lambda s, b: pb.ContainerStatusRequest(container_id=MISSING),
         lambda s: MISSING),
    Case("status-empty-id", "ContainerStatus", lambda s, b: pb.ContainerStatusRequest(container_id=""),
         lambda s: "id", ours=C.INVALID_ARGUMENT),
    Case("status-ambiguous", "ContainerStatus",
         lambda s, b: pb.ContainerStatusRequest(container_id=s.ambiguous_ctr), lambda s: "ambiguous",
         ours=C.INVALID_ARGUMENT),
    Case("podstatus-missing", "PodSandboxStatus", lambda s, b: pb.PodSandboxStatusRequest(pod_sandbox_id=MISSING),
         lambda s: MISSING),
    Case("podstatus-empty-id", "PodSandboxStatus", lambda s, b: pb.PodSandboxStatusRequest(pod_sandbox_id=""),
         lambda s: "id", ours=C.INVALID_ARGUMENT),
    Case("podstatus-ambiguous", "PodSandboxStatus",
         lambda s, b: pb.PodSandboxStatusRequest(pod_sandbox_id=s.ambiguous_pod), lambda s: "ambiguous",
         ours=C.INVALID_ARGUMENT),
    Case("stats-missing", "ContainerStats", lambda s, b: pb.ContainerStatsRequest(container_id=MISSING),
         lambda s: MISSING),
    Case("podstats-missing", "PodSandboxStats", lambda s, b: pb.PodSandboxStatsRequest(pod_sandbox_id=MISSING),
         lambda s: MISSING),
    # ExecSync
    Case("execsync-exited", "ExecSync", lambda s, b: pb.ExecSyncRequest(container_id=s.exited, cmd=["true"]),
         lambda s: s.exited, ours=C.FAILED_PRECONDITION),
    Case("execsync-missing", "ExecSync", lambda s, b: pb.ExecSyncRequest(container_id=MISSING, cmd=["true"]),
         lambda s: MISSING),
    Case("execsync-empty-cmd", "ExecSync", lambda s, b: pb.ExecSyncRequest(container_id=s.running, cmd=[]),
         lambda s: "command", ours=C.INVALID_ARGUMENT),
    Case("execsync-timeout", "ExecSync",
         lambda s, b: pb.ExecSyncRequest(container_id=s.running, cmd=["sleep", "30"], timeout=1),
         lambda s: "timed out"),
    # UpdateContainerResources, ReopenContainerLog
    Case("update-missing", "UpdateContainerResources",
         lambda s, b: pb.UpdateContainerResourcesRequest(container_id=MISSING, linux=pb.LinuxContainerResources(
             memory_limit_in_bytes=64 << 20)), lambda s: MISSING),
    # the spec is updated, OK (ours refused it, FAILED_PRECONDITION, before this suite)
    Case("update-exited", "UpdateContainerResources",
         lambda s, b: pb.UpdateContainerResourcesRequest(container_id=s.exited, linux=pb.LinuxContainerResources(
             memory_limit_in_bytes=64 << 20)), lambda s: s.exited),
    Case("reopen-exited", "ReopenContainerLog", lambda s, b: pb.ReopenContainerLogRequest(container_id=s.exited),
         lambda s: s.exited, ours=C.FAILED_PRECONDITION),
    Case("reopen-missing", "ReopenContainerLog", lambda s, b: pb.ReopenContainerLogRequest(container_id=MISSING),
         lambda s: MISSING),
    # streaming: the RPCs' checks (no stream is opened)
    Case("exec-tty-stderr", "Exec",
         lambda s, b: pb.ExecRequest(container_id=s.running, cmd=["sh"], tty=True, stdout=True, stderr=True),
         lambda s: "stderr"),
    Case("exec-no-streams", "Exec", lambda s, b: pb.ExecRequest(container_id=s.running, cmd=["sh"]),
         lambda s: "stdin"),
    Case("exec-missing", "Exec", lambda s, b: pb.ExecRequest(container_id=MISSING, cmd=["sh"], stdout=True),
         lambda s: MISSING),
    Case("exec-exited", "Exec", lambda s, b: pb.ExecRequest(container_id=s.exited, cmd=["sh"], stdout=True),
         lambda s: s.exited, ours=C.FAILED_PRECONDITION),
    # containerd hands out a URL for an exec that can never run (runc refuses empty args when it connects)
    Case("exec-empty-cmd", "Exec", lambda s, b: pb.ExecRequest(container_id=s.running, stdout=True),
         lambda s: "command", ours=C.INVALID_ARGUMENT),
    Case("attach-tty-stderr", "Attach",
         lambda s, b: pb.AttachRequest(container_id=s.running, tty=True, stdout=True, stderr=True),
         lambda s: "stderr"),
    Case("attach-no-streams", "Attach", lambda s, b: pb.AttachRequest(container_id=s.running), lambda s: "stdin"),
    Case("attach-missing", "Attach", lambda s, b: pb.AttachRequest(container_id=MISSING, stdout=True),
         lambda s: MISSING),
    Case("portforward-missing", "PortForward", lambda s, b: pb.PortForwardRequest(pod_sandbox_id=MISSING, port=[80]),
         lambda s: MISSING),
    Case("portforward-not-ready", "PortForward",
         lambda s, b: pb.PortForwardRequest(pod_sandbox_id=s.stopped_pod, port=[80]), lambda s: s.stopped_pod,
         ours=C.FAILED_PRECONDITION),
    # lists filtered by ids that do not exist: an empty answer
    Case("ps-missing-id", "ListContainers",
         lambda s, b: pb.ListContainersRequest(filter=pb.ContainerFilter(id=MISSING))),
    Case("ps-missing-pod", "ListContainers",
         lambda s, b: pb.ListContainersRequest(filter=pb.ContainerFilter(pod_sandbox_id=MISSING))),
    Case("pods-missing-id", "ListPodSandbox",
         lambda s, b: pb.ListPodSandboxRequest(filter=pb.PodSandboxFilter(id=MISSING))),
    Case("stats-list-missing-id", "ListContainerStats",
         lambda s, b: pb.ListContainerStatsRequest(filter=pb.ContainerStatsFilter(id=MISSING))),
]

EMPTY_LISTS = {"ListContainers": "containers", "ListPodSandbox": "items", "ListContainerStats": "stats"}


def _cleanup_success(e: Engine, case: Case, resp: Any) -> None:
    """A create that unexpectedly succeeded: take it away again so the next cases start clean."""
    if case.call == "RunPodSandbox":
        _call(e, "StopPodSandbox", pb.StopPodSandboxRequest(pod_sandbox_id=resp.pod_sandbox_id))
        _call(e, "RemovePodSandbox", pb.RemovePodSandboxRequest(pod_sandbox_id=resp.pod_sandbox_id))
    elif case.call == "CreateContainer":
        _call(e, "RemoveContainer", pb.RemoveContainerRequest(container_id=resp.container_id))


def _remove_new_pods(e: Engine, known: set[str]) -> None:
    for pod in _ok(e, "ListPodSandbox", pb.ListPodSandboxRequest()).items:
        if pod.id not in known:
            _ok(e, "StopPodSandbox", pb.StopPodSandboxRequest(pod_sandbox_id=pod.id))
            _ok(e, "RemovePodSandbox", pb.RemovePodSandboxRequest(pod_sandbox_id=pod.id))


def test_cases_are_unique() -> None:
    assert len({c.id for c in CASES}) == len(CASES)


def test_runtime_status_codes_match_containerd(ours: Engine, theirs: Engine, busybox: str,
                                              tmp_path: Path) -> None:
    started = time.monotonic()
    (tmp_path / "logs").mkdir()
    with ThreadPoolExecutor(2) as pool:
        fo = pool.submit(_prepare, ours, busybox, tmp_path / "logs")
        ft = pool.submit(_prepare, theirs, busybox, tmp_path / "logs")
        states = {"pycontainerd": fo.result(), "containerd": ft.result()}
    engines = (ours, theirs)
    try:
        base = {e.name: _holdings(e) for e in engines}
        for e in engines:  # the checks see what the engine holds (else they would prove nothing)
            s, held = states[e.name], base[e.name]
            assert s.pod in held["containers"] and s.running in held["tasks"] and s.created in held["snapshots"]
            assert any(d.endswith(s.pod) for d in held["dirs"]) and held["pod IPs"], (e.name, held)
        problems: list[str] = []
        suspects: set[tuple[str, str]] = set()  # (netns, the case that may have left it)
        table: list[str] = []  # the matrix, printed (pytest -s shows it)
        for case in CASES:
            outcomes: dict[str, tuple[grpc.StatusCode, Any]] = {}
            for e in engines:
                s = states[e.name]
                netns_before = _netns_unused() if case.call == "RunPodSandbox" else set()
                with case.around(e) if case.around else contextlib.nullcontext():
                    code, resp = _call(e, case.call, case.request(s, busybox), case.timeout)
                outcomes[e.name] = (code, resp)
                if code == C.OK:
                    if case.call in EMPTY_LISTS and len(getattr(resp, EMPTY_LISTS[case.call])):
                        problems.append(f"{case.id} [{e.name}]: listed {resp}")
                    _cleanup_success(e, case, resp)
                    continue
                now = _holdings(e)
                if e.name == "containerd" and case.containerd_leaves:
                    if all(v <= base[e.name][k] for k, v in now.items()):
                        problems.append(f"{case.id}: containerd no longer leaves {case.containerd_leaves}: "
                                        "drop the note")
                    _remove_new_pods(e, base[e.name]["containers"])
                    now = _holdings(e)
                for k, v in now.items():
                    if v - base[e.name][k]:
                        problems.append(f"{case.id} [{e.name}]: left {k} {sorted(v - base[e.name][k])}")
                if case.call == "RunPodSandbox":  # judged at the end: another test's pod may be starting now
                    suspects.update((n, f"{case.id} [{e.name}]") for n in _netns_unused() - netns_before)
                if left := _cgroup_children(s.cgroup_parent):
                    problems.append(f"{case.id} [{e.name}]: left cgroups {left}")
            (oc, om), (tc, tm) = outcomes["pycontainerd"], outcomes["containerd"]
            table.append(f"{case.id:28} ours {oc.name:19} containerd {tc.name:19} {_short(om)[:90]}")
            want = case.ours or tc
            if oc != want:
                problems.append(f"{case.id}: ours {oc.name} {_short(om)}; containerd {tc.name} {_short(tm)}")
            elif case.ours is not None and tc == case.ours:
                problems.append(f"{case.id}: containerd now answers {tc.name} too: drop the deviation")
            if oc != C.OK:
                msg = str(om)
                names = case.names(states["pycontainerd"])
                if not msg or "\n" in msg.strip() or names.lower() not in msg.lower():
                    problems.append(f"{case.id}: our message {msg!r} is not one line naming {names!r}")
        print("\n".join(table))
        unused = _netns_unused()
        problems += [f"{where}: left network namespace {n}" for n, where in sorted(suspects) if n in unused]
        problems += [f"create-missing-mount-source [{n}]: no host dir made" for n, s in states.items()
                     if not Path(s.scratch, "new", "dir").is_dir()]
        for e in engines:  # update-exited: the stored spec took the new limit
            info = _ok(e, "ContainerStatus", pb.ContainerStatusRequest(container_id=states[e.name].exited,
                                                                      verbose=True)).info
            mem = json.loads(info["info"])["runtimeSpec"]["linux"]["resources"].get("memory") or {}
            if mem.get("limit") != 64 << 20:
                problems.append(f"update-exited [{e.name}]: the spec's memory is {mem}")
        assert not problems, "\n".join(problems)
        assert time.monotonic() - started < 90
    finally:
        for e in engines:
            e.remove_all_pods()
            _remove_cgroup(states[e.name].cgroup_parent)


def _short(x: Any) -> str:
    return repr(str(x)[:300])


@pytest.fixture(scope="module")
def busybox(setup: Setup) -> str:
    return setup.busybox_ref

