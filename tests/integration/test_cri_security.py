"""CRI security contexts checked from inside the containers, on our daemon and containerd 1.6's CRI:
seccomp (RuntimeDefault, Unconfined, Localhost, the deprecated strings, a bad profile file), AppArmor
on a host without it, users and groups, no_new_privs, masked/read-only paths, privileged, and the
pid namespace modes POD / CONTAINER / TARGET / NODE (in pods with and without host pid).

Uses the engines, registry and CNI set-up of ``test_cri_pods`` (module fixtures re-imported here,
so this module starts its own daemon, containerd and registry).
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import json_format

from pycontainerd.api.cri.runtime.v1 import api_pb2 as pb
from tests.fixtures.procs import unmount_all

from .test_cri_pods import Engine, busybox, engine, ours, pod_config, setup, theirs

__all__ = ["busybox", "engine", "ours", "setup", "theirs"]  # fixtures, used by name

pytestmark = pytest.mark.root

SP = pb.SecurityProfile


class Pod:
    """One pod on an engine, with CreateContainer/StartContainer/ExecSync over gRPC (all fields reachable)."""

    def __init__(self, engine: Engine, busybox: str, config: pb.PodSandboxConfig, runtime_handler: str = "") -> None:
        self.engine, self.busybox, self.config = engine, busybox, config
        code, resp = engine.call("RunPodSandbox", pb.RunPodSandboxRequest(config=config,
                                                                          runtime_handler=runtime_handler))
        assert code == grpc.StatusCode.OK, f"[{engine.name}] RunPodSandbox: {resp}"
        self.id = resp.pod_sandbox_id

    def create(self, sc: pb.LinuxContainerSecurityContext, script: str = "sleep 1000", *, name: str = "",
               **extra: Any) -> tuple[grpc.StatusCode, Any]:
        cfg = pb.ContainerConfig(metadata=pb.ContainerMetadata(name=name or f"c-{uuid.uuid4().hex[:6]}"),
                                 image=pb.ImageSpec(image=self.busybox), command=["sh", "-c", script],
                                 linux=pb.LinuxContainerConfig(security_context=sc), **extra)
        return self.engine.call("CreateContainer", pb.CreateContainerRequest(
            pod_sandbox_id=self.id, config=cfg, sandbox_config=self.config))

    def run(self, sc: pb.LinuxContainerSecurityContext, script: str = "sleep 1000", **kw: Any) -> str:
        code, resp = self.create(sc, script, **kw)
        assert code == grpc.StatusCode.OK, f"[{self.engine.name}] CreateContainer: {resp}"
        cid: str = resp.container_id
        code, msg = self.engine.call("StartContainer", pb.StartContainerRequest(container_id=cid))
        assert code == grpc.StatusCode.OK, f"[{self.engine.name}] StartContainer: {msg}"
        return cid

    def sh(self, cid: str, cmd: str) -> tuple[int, str]:
        code, resp = self.engine.call("ExecSync", pb.ExecSyncRequest(container_id=cid, cmd=["sh", "-c", cmd],
                                                                     timeout=30))
        assert code == grpc.StatusCode.OK, f"[{self.engine.name}] ExecSync {cmd!r}: {resp}"
        return resp.exit_code, (resp.stdout + resp.stderr).decode()

    def status_field(self, cid: str, name: str) -> str:
        """A line of the container's /proc/self/status, e.g. ``Seccomp`` -> "2"."""
        _, out = self.sh(cid, f"grep '^{name}:' /proc/self/status")
        return out.split(":", 1)[1].strip()


@contextlib.contextmanager
def _pod(engine: Engine, busybox: str, tmp_path: Path, *, runtime_handler: str = "",
         **sandbox_sc: Any) -> Iterator[Pod]:
    cfg = pb.PodSandboxConfig()
    json_format.ParseDict(json.loads(pod_config(tmp_path).read_text()), cfg)
    cfg.linux.security_context.MergeFrom(pb.LinuxSandboxSecurityContext(**sandbox_sc))
    engine.crictl("pull", busybox)
    pod = Pod(engine, busybox, cfg, runtime_handler)
    try:
        yield pod
    finally:
        engine.crictl("stopp", pod.id, check=False)
        engine.crictl("rmp", pod.id, check=False)


def _sc(**kw: Any) -> pb.LinuxContainerSecurityContext:
    return pb.LinuxContainerSecurityContext(**kw)


def test_seccomp_profiles(engine: Engine, busybox: str, tmp_path: Path) -> None:
    """RuntimeDefault filters (Seccomp: 2), Unconfined and not-asked do not (0), the deprecated strings
    mean the same, a Localhost profile is loaded from its path and a bad one refused at create."""
    local = tmp_path / "no-mkdir.json"
    local.write_text(json.dumps({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
        {"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO"}]}))
    bad = tmp_path / "bad.json"
    bad.write_text("{ not json")
    with _pod(engine, busybox, tmp_path) as pod:
        cases = {
            "runtime-default": (_sc(seccomp=SP(profile_type=SP.RuntimeDefault)), "2"),
            "unconfined": (_sc(seccomp=SP(profile_type=SP.Unconfined)), "0"),
            "unset": (_sc(), "0"),
            "path-runtime-default": (_sc(seccomp_profile_path="runtime/default"), "2"),
            "path-docker-default": (_sc(seccomp_profile_path="docker/default"), "2"),
            "path-unconfined": (_sc(seccomp_profile_path="unconfined"), "0"),
            "localhost": (_sc(seccomp=SP(profile_type=SP.Localhost, localhost_ref=str(local))), "2"),
            "path-localhost": (_sc(seccomp_profile_path=f"localhost/{local}"), "2"),
        }
        got = {}
        for name, (sc, _) in cases.items():
            cid = pod.run(sc, name=name)
            got[name] = pod.status_field(cid, "Seccomp")
        assert got == {name: want for name, (_, want) in cases.items()}, f"[{engine.name}]"
        # the default profile refuses what needs CAP_SYS_ADMIN; the local one refuses mkdir only
        cid = pod.run(_sc(seccomp=SP(profile_type=SP.RuntimeDefault)), name="dflt-unshare")
        assert pod.sh(cid, "unshare -U true")[0] != 0
        cid = pod.run(_sc(seccomp=SP(profile_type=SP.Localhost, localhost_ref=str(local))), name="local-mkdir")
        assert pod.sh(cid, "mkdir /tmp/d")[0] != 0
        assert pod.sh(cid, "touch /tmp/f")[0] == 0
        # a profile that cannot be used is refused by CreateContainer, not found later by runc
        for sc in (_sc(seccomp=SP(profile_type=SP.Localhost, localhost_ref=str(bad))),
                   _sc(seccomp=SP(profile_type=SP.Localhost, localhost_ref=str(tmp_path / "missing.json"))),
                   _sc(seccomp_profile_path="not-a-profile")):
            code, msg = pod.create(sc)
            assert code != grpc.StatusCode.OK, f"[{engine.name}] {sc} was accepted"
            if engine.name == "pycontainerd":
                assert "seccomp" in msg, msg


def test_apparmor_on_a_host_without_it(engine: Engine, busybox: str, tmp_path: Path) -> None:
    """Not asked or Unconfined: runs on both.  RuntimeDefault: ours runs without a profile (there is
    none to apply; what later containerd releases do), containerd 1.6 refuses ("apparmor is not
    supported").  Localhost: refused by both."""
    if Path("/sys/module/apparmor/parameters/enabled").exists():
        pytest.skip("AppArmor is enabled on this host: the case is a host without it")
    with _pod(engine, busybox, tmp_path) as pod:
        for sc in (_sc(apparmor=SP(profile_type=SP.Unconfined)), _sc(apparmor_profile="unconfined"), _sc()):
            cid = pod.run(sc)
            assert pod.sh(cid, "true")[0] == 0
        for sc in (_sc(apparmor=SP(profile_type=SP.RuntimeDefault)), _sc(apparmor_profile="runtime/default")):
            if engine.name == "pycontainerd":
                cid = pod.run(sc)
                assert pod.sh(cid, "true")[0] == 0
            else:
                code, msg = pod.create(sc)
                assert code != grpc.StatusCode.OK and "apparmor is not supported" in msg, msg
        for sc in (_sc(apparmor=SP(profile_type=SP.Localhost, localhost_ref="some-profile")),
                   _sc(apparmor_profile="localhost/some-profile")):
            code, msg = pod.create(sc)
            assert code != grpc.StatusCode.OK, f"[{engine.name}] {sc} was accepted"
            assert "apparmor" in msg.lower(), msg


def test_users_groups_and_flags(engine: Engine, busybox: str, tmp_path: Path) -> None:
    with _pod(engine, busybox, tmp_path) as pod:
        cid = pod.run(_sc(run_as_user=pb.Int64Value(value=1000), run_as_group=pb.Int64Value(value=3000),
                          supplemental_groups=[4000, 4001], no_new_privs=True, readonly_rootfs=True,
                          masked_paths=["/proc/cpuinfo"], readonly_paths=["/tmp"]))
        assert pod.sh(cid, "id -u")[1].strip() == "1000"
        assert pod.sh(cid, "id -g")[1].strip() == "3000"
        assert sorted(pod.sh(cid, "id -G")[1].split()) == ["3000", "4000", "4001"]
        code, resp = engine.call("ContainerStatus", pb.ContainerStatusRequest(container_id=cid))
        assert code == grpc.StatusCode.OK, resp
        if engine.name == "pycontainerd":  # ContainerUser is 1.31's: containerd 1.6 leaves it out
            assert resp.status.user.linux == pb.LinuxContainerUser(uid=1000, gid=3000,
                                                                   supplemental_groups=[3000, 4000, 4001])
        else:
            assert not resp.status.HasField("user")
        assert pod.status_field(cid, "NoNewPrivs") == "1"
        assert pod.sh(cid, "wc -c < /proc/cpuinfo")[1].strip() == "0"  # masked: /dev/null over it
        assert pod.sh(cid, "grep ' /tmp ' /proc/self/mounts")[1].split()[3].split(",")[0] == "ro"
        # the defaults: root with root's groups; no masked paths unless asked (containerd 1.6: the
        # kubelet always sends its list)
        cid = pod.run(_sc())
        assert pod.sh(cid, "id -u; id -G")[1].split() == ["0", "0"]
        assert pod.sh(cid, "grep ' /proc/keys ' /proc/self/mounts")[0] != 0
        cid = pod.run(_sc(masked_paths=["/proc/keys"]))
        assert pod.sh(cid, "grep ' /proc/keys ' /proc/self/mounts")[0] == 0
        # a group needs a user
        code, msg = pod.create(_sc(run_as_group=pb.Int64Value(value=3000)))
        assert code != grpc.StatusCode.OK
        assert "without user" in msg, msg
        # privileged needs a privileged pod
        code, msg = pod.create(_sc(privileged=True))
        assert code != grpc.StatusCode.OK
        assert "privileged" in msg, msg


def _host_has_rro() -> bool:
    """What containerd 2.x would decide here: runc lists ``rro`` in ``runc features`` and the kernel is 5.12+."""
    p = subprocess.run(["runc", "features"], capture_output=True, text=True, check=False, timeout=30)
    listed = p.returncode == 0 and "rro" in (json.loads(p.stdout).get("mountOptions") or [])
    major, minor = (int(x) for x in os.uname().release.split(".")[:2])
    return listed and (major, minor) >= (5, 12)


def test_status_features(engine: Engine) -> None:
    """1.30's runtime handlers and features in Status: ours lists its handlers, with recursive read-only
    mounts exactly when runc and the kernel have them (it said no before although it honours them;
    on this host runc 1.1.5 lists ``rro`` and the kernel is 6.x, so yes), none with user namespaces,
    and says it honours the Strict supplemental groups policy.  containerd 1.6 reports no handlers
    and no features at all."""
    code, resp = engine.call("Status", pb.StatusRequest())
    assert code == grpc.StatusCode.OK, resp
    if engine.name == "containerd":
        assert not resp.runtime_handlers and not resp.HasField("features")
        return
    assert [h.name for h in resp.runtime_handlers] == ["", "runc"]
    rro = _host_has_rro()
    assert [h.features.recursive_read_only_mounts for h in resp.runtime_handlers] == [rro, rro]
    assert not any(h.features.user_namespaces for h in resp.runtime_handlers)
    assert resp.features.supplemental_groups_policy


def test_no_new_privs_default(engine: Engine, busybox: str, tmp_path: Path) -> None:
    """What a container gets when no_new_privs is false: the engines' default spec decides."""
    with _pod(engine, busybox, tmp_path) as pod:
        cid = pod.run(_sc())
        assert pod.status_field(cid, "NoNewPrivs") == "0", f"[{engine.name}]"


def test_privileged_container(engine: Engine, busybox: str, tmp_path: Path) -> None:
    with _pod(engine, busybox, tmp_path, privileged=True) as pod:
        cid = pod.run(_sc(privileged=True, seccomp=SP(profile_type=SP.RuntimeDefault),
                          capabilities=pb.Capability(drop_capabilities=["SYS_ADMIN"])))
        assert pod.status_field(cid, "Seccomp") == "0"
        cap_eff = int(pod.status_field(cid, "CapEff"), 16)
        assert cap_eff & (1 << 21), "CAP_SYS_ADMIN: privileged means every capability"
        host_devs = {p.name for p in Path("/dev").iterdir() if p.is_block_device()}
        assert host_devs, "the host has no block device to look for"
        seen = set(pod.sh(cid, "ls /dev")[1].split())
        assert host_devs <= seen, f"[{engine.name}] missing host devices {sorted(host_devs - seen)}"
        assert pod.sh(cid, "grep ' /proc/keys ' /proc/self/mounts")[0] != 0  # nothing masked


def test_pid_namespaces(engine: Engine, busybox: str, tmp_path: Path) -> None:
    """CONTAINER: its own; TARGET: the target's (sees its processes); POD: the infra process's."""
    with _pod(engine, busybox, tmp_path) as pod:
        own = _sc(namespace_options=pb.NamespaceOption(pid=pb.CONTAINER))
        target = pod.run(own, "sleep 1001", name="target")
        assert pod.sh(target, "cat /proc/1/cmdline | tr '\\0' ' '")[1].strip() == "sleep 1001"
        joiner = pod.run(_sc(namespace_options=pb.NamespaceOption(pid=pb.TARGET, target_id=target)), "sleep 1002",
                         name="joiner")
        procs = pod.sh(joiner, "cat /proc/[0-9]*/cmdline | tr '\\0' ' '")[1]
        assert "sleep 1001" in procs and "sleep 1002" in procs, procs
        # a target that is not in the pod, or missing, is refused
        code, _ = pod.create(_sc(namespace_options=pb.NamespaceOption(pid=pb.TARGET, target_id="f" * 64)))
        assert code != grpc.StatusCode.OK
        alone = pod.run(own, "sleep 1003", name="alone")
        assert "sleep 1001" not in pod.sh(alone, "cat /proc/[0-9]*/cmdline | tr '\\0' ' '")[1]
        # POD: the pod's pid namespace, where the infra process is
        shared = pod.run(_sc(namespace_options=pb.NamespaceOption(pid=pb.POD)), "sleep 1004", name="shared")
        assert "sleep 2147483647" in pod.sh(shared, "cat /proc/[0-9]*/cmdline | tr '\\0' ' '")[1]


def test_seccomp_of_the_sandbox(engine: Engine, busybox: str, tmp_path: Path) -> None:
    """The infra process gets the pod's seccomp profile (a pod with a bad profile file is refused)."""
    with _pod(engine, busybox, tmp_path, seccomp=SP(profile_type=SP.RuntimeDefault)) as pod:
        code, resp = engine.call("PodSandboxStatus", pb.PodSandboxStatusRequest(pod_sandbox_id=pod.id, verbose=True))
        assert code == grpc.StatusCode.OK, resp
        info = json.loads(resp.info["info"])
        assert info["runtimeSpec"]["linux"]["seccomp"]["defaultAction"] == "SCMP_ACT_ERRNO"
        status = dict(line.split(":", 1) for line in Path(f"/proc/{info['pid']}/status").read_text().splitlines())
        assert (status["Seccomp"].strip(), status["NoNewPrivs"].strip()) == ("2", "1"), f"[{engine.name}]"
    bad = tmp_path / "bad.json"
    bad.write_text("[]")
    cfg = pb.PodSandboxConfig()
    json_format.ParseDict(json.loads(pod_config(tmp_path).read_text()), cfg)
    cfg.linux.security_context.seccomp.CopyFrom(SP(profile_type=SP.Localhost, localhost_ref=str(bad)))
    before = set(engine.crictl("pods", "-q").stdout.split())
    code, msg = engine.call("RunPodSandbox", pb.RunPodSandboxRequest(config=cfg))
    assert code != grpc.StatusCode.OK, msg
    assert set(engine.crictl("pods", "-q").stdout.split()) == before


def test_stop_signal(engine: Engine, busybox: str, tmp_path: Path) -> None:
    """ContainerConfig.stop_signal (1.33): StopContainer sends it first; containerd 1.6 predates the field
    and sends the image's (none here: SIGTERM)."""
    with _pod(engine, busybox, tmp_path) as pod:
        script = "trap 'exit 10' USR1; trap 'exit 15' TERM; while true; do sleep 0.1; done"
        cid = pod.run(_sc(), script, stop_signal=pb.SIGUSR1)
        code, msg = engine.call("StopContainer", pb.StopContainerRequest(container_id=cid, timeout=10))
        assert code == grpc.StatusCode.OK, msg
        code, resp = engine.call("ContainerStatus", pb.ContainerStatusRequest(container_id=cid))
        assert code == grpc.StatusCode.OK, resp
        if engine.name == "pycontainerd":
            assert (resp.status.exit_code, resp.status.stop_signal) == (10, pb.SIGUSR1)
        else:
            assert (resp.status.exit_code, resp.status.stop_signal) == (15, pb.RUNTIME_DEFAULT)


def test_recursive_read_only_mount(engine: Engine, busybox: str, tmp_path: Path) -> None:
    """Mount.recursive_read_only (1.30): a submount of a read-only volume is read-only too on ours (runc's
    "rro"); containerd 1.6 predates the field: plain "ro" leaves the submount writable."""
    vol = tmp_path / "vol"
    (vol / "sub").mkdir(parents=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "pycd-rro", str(vol / "sub")], check=True)
    try:
        with _pod(engine, busybox, tmp_path) as pod:
            def writable(rro: bool) -> bool:
                m = pb.Mount(container_path="/vol", host_path=str(vol), readonly=True, recursive_read_only=rro)
                code, resp = pod.create(_sc(), mounts=[m])
                assert code == grpc.StatusCode.OK, resp
                cid = resp.container_id
                code, msg = engine.call("StartContainer", pb.StartContainerRequest(container_id=cid))
                assert code == grpc.StatusCode.OK, msg
                assert pod.sh(cid, "touch /vol/x")[0] != 0
                return pod.sh(cid, "touch /vol/sub/x")[0] == 0

            assert writable(False)
            assert writable(True) == (engine.name == "containerd")
            code, msg = pod.create(_sc(), mounts=[pb.Mount(container_path="/vol", host_path=str(vol),
                                                           recursive_read_only=True)])
            if engine.name == "pycontainerd":
                assert code == grpc.StatusCode.INVALID_ARGUMENT and "needs readonly" in msg, msg
    finally:
        unmount_all(str(vol))


def test_devices(engine: Engine, busybox: str, tmp_path: Path) -> None:
    """ContainerConfig.devices: the host device appears at container_path with the cgroup access asked."""
    with _pod(engine, busybox, tmp_path) as pod:
        cid = pod.run(_sc(), devices=[pb.Device(container_path="/dev/mynull", host_path="/dev/null",
                                                permissions="rw")])
        rc, out = pod.sh(cid, "ls -l /dev/mynull; echo hi > /dev/mynull && echo wrote")
        assert rc == 0 and "wrote" in out, out
        assert out.split()[0].startswith("c") and out.split()[4:6] == ["1,", "3"], out
        # a path that is no device is refused at create
        (tmp_path / "plain").write_text("x")
        code, msg = pod.create(_sc(), devices=[pb.Device(container_path="/dev/x", host_path=str(tmp_path / "plain"),
                                                         permissions="rw")])
        assert code != grpc.StatusCode.OK, f"[{engine.name}] a plain file was taken as a device: {msg}"


def _task_pid(engine: Engine, cid: str) -> int:
    """The pid of a pod's infra process or a container's, from ``ctr -n k8s.io task ls``."""
    for line in engine.ctr("task", "ls").splitlines()[1:]:
        fields = line.split()
        if fields and fields[0] == cid:
            return int(fields[1])
    raise AssertionError(f"[{engine.name}] no task {cid}")


def _ids_of(pid: int) -> tuple[str, str, list[str]]:
    """(uid, gid, sorted supplementary groups) of a host process, from /proc/<pid>/status."""
    lines = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    return lines["Uid"].split()[0], lines["Gid"].split()[0], sorted(lines["Groups"].split())


def test_primary_group_from_the_image_passwd(engine: Engine, busybox: str, tmp_path: Path) -> None:
    """run_as_user without run_as_group: the primary group is the user's in the image's /etc/passwd
    (both test images list nobody as 65534:65534), for the infra process as for containers; a uid
    /etc/passwd does not list gets group 0.  Measured on containerd 1.6 (oci.WithUserID on the
    sandbox image's rootfs); ours gave the pod's infra process group 0."""
    with _pod(engine, busybox, tmp_path, run_as_user=pb.Int64Value(value=65534)) as pod:
        assert _ids_of(_task_pid(engine, pod.id)) == ("65534", "65534", ["65534"]), f"[{engine.name}]"
        cid = pod.run(_sc(run_as_user=pb.Int64Value(value=65534)), name="nobody")
        assert pod.sh(cid, "id -u; id -g; id -G")[1].split() == ["65534", "65534", "65534"], f"[{engine.name}]"
        cid = pod.run(_sc(run_as_user=pb.Int64Value(value=1234)), name="unlisted")
        assert pod.sh(cid, "id -u; id -g")[1].split() == ["1234", "0"], f"[{engine.name}]"
    with _pod(engine, busybox, tmp_path, run_as_user=pb.Int64Value(value=1234)) as pod:
        assert _ids_of(_task_pid(engine, pod.id)) == ("1234", "0", ["0"]), f"[{engine.name}]"
    with _pod(engine, busybox, tmp_path, run_as_user=pb.Int64Value(value=65534),
              run_as_group=pb.Int64Value(value=3000)) as pod:
        assert _ids_of(_task_pid(engine, pod.id)) == ("65534", "3000", ["3000"]), f"[{engine.name}]"


def _pid_ns(pid: int) -> str:
    return os.readlink(f"/proc/{pid}/ns/pid")


def test_container_pid_namespace_against_the_pods(engine: Engine, busybox: str, tmp_path: Path) -> None:
    """A container's pid namespace NODE in a pod without host pid, and CONTAINER in a host-pid pod
    (requests the kubelet does not make; containerd 1.6 takes them as measured here): NODE joins the
    pod's namespace (containerd's WithPodNamespaces joins the sandbox's for anything but CONTAINER) --
    ours ran it in the host's; CONTAINER gets a namespace of its own in either pod."""
    host = os.readlink("/proc/self/ns/pid")
    with _pod(engine, busybox, tmp_path) as pod:
        pod_ns = _pid_ns(_task_pid(engine, pod.id))
        assert pod_ns != host
        got = {}
        for mode in ("NODE", "CONTAINER", "POD"):
            cid = pod.run(_sc(namespace_options=pb.NamespaceOption(pid=getattr(pb, mode))), name=mode.lower())
            got[mode] = _pid_ns(_task_pid(engine, cid))
        assert got["NODE"] == pod_ns, f"[{engine.name}] NODE in a pod without host pid: {got} pod {pod_ns}"
        assert got["POD"] == pod_ns
        assert got["CONTAINER"] not in (pod_ns, host)
    with _pod(engine, busybox, tmp_path, namespace_options=pb.NamespaceOption(pid=pb.NODE)) as pod:
        assert _pid_ns(_task_pid(engine, pod.id)) == host
        got = {}
        for mode in ("NODE", "CONTAINER", "POD"):
            cid = pod.run(_sc(namespace_options=pb.NamespaceOption(pid=getattr(pb, mode))), name=mode.lower())
            got[mode] = _pid_ns(_task_pid(engine, cid))
        assert got["NODE"] == host and got["POD"] == host, f"[{engine.name}] {got}"
        assert got["CONTAINER"] != host, f"[{engine.name}] {got}"
