"""CRI security contexts into OCI specs: seccomp/AppArmor profiles, users and groups, pid namespaces,
masked paths, privileged (containerd 1.6's rules; the integration suite checks them from inside)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from pycontainerd import errdefs
from pycontainerd.api.cri.runtime.v1 import api_pb2 as pb
from pycontainerd.config import CRIConfig, RuntimeConfig
from pycontainerd.cri import security
from pycontainerd.cri.containers import Containers, SecurityInputs, host_device_entries
from pycontainerd.cri.sandbox import Sandbox
from pycontainerd.oci.seccomp import load_profile, parse_profile
from pycontainerd.oci.spec import HostInfo, RootfsFiles, cri_default_spec

SP = pb.SecurityProfile


def test_deprecated_profile_strings() -> None:
    assert security.profile_from_string("", "seccomp") is None
    assert security.profile_from_string("runtime/default", "seccomp") == security.Profile(SP.RuntimeDefault)
    assert security.profile_from_string("docker/default", "seccomp") == security.Profile(SP.RuntimeDefault)
    assert security.profile_from_string("unconfined", "seccomp") == security.Profile(SP.Unconfined)
    assert security.profile_from_string("localhost//etc/p.json", "seccomp") == security.Profile(SP.Localhost,
                                                                                             "/etc/p.json")
    with pytest.raises(errdefs.InvalidArgument, match="invalid seccomp profile 'default'"):
        security.profile_from_string("default", "seccomp")


def _sc(**kw: Any) -> pb.LinuxContainerSecurityContext:
    return pb.LinuxContainerSecurityContext(**kw)


def test_seccomp_request() -> None:
    assert security.seccomp_request(_sc()) is None  # not asked: no filter, as containerd 1.6
    assert security.seccomp_request(_sc(seccomp=SP(profile_type=SP.Unconfined))) is None
    assert security.seccomp_request(_sc(seccomp_profile_path="unconfined")) is None
    assert security.seccomp_request(_sc(seccomp=SP(profile_type=SP.RuntimeDefault))) == security.Profile(
        SP.RuntimeDefault)
    # the message wins over the deprecated string
    assert security.seccomp_request(_sc(seccomp=SP(profile_type=SP.Unconfined),
                                        seccomp_profile_path="runtime/default")) is None
    assert security.seccomp_request(_sc(seccomp_profile_path="localhost//p.json")) == security.Profile(
        SP.Localhost, "/p.json")
    assert security.seccomp_request(_sc(privileged=True, seccomp=SP(profile_type=SP.RuntimeDefault))) is None
    with pytest.raises(errdefs.InvalidArgument, match="absolute"):
        security.seccomp_request(_sc(seccomp=SP(profile_type=SP.Localhost, localhost_ref="p.json")))
    with pytest.raises(errdefs.InvalidArgument, match="needs localhost_ref"):
        security.seccomp_request(_sc(seccomp=SP(profile_type=SP.Localhost)))
    with pytest.raises(errdefs.InvalidArgument, match="only be set for a Localhost"):
        security.seccomp_request(_sc(seccomp=SP(profile_type=SP.RuntimeDefault, localhost_ref="/p.json")))


def test_apparmor_without_apparmor_on_the_host() -> None:
    off: dict[str, Any] = {"enabled": False, "loaded": frozenset()}
    assert security.apparmor_profile(_sc(), **off) == ""
    assert security.apparmor_profile(_sc(apparmor=SP(profile_type=SP.RuntimeDefault)), **off) == ""
    assert security.apparmor_profile(_sc(apparmor_profile="runtime/default"), **off) == ""
    assert security.apparmor_profile(_sc(apparmor=SP(profile_type=SP.Unconfined)), **off) == ""
    with pytest.raises(errdefs.FailedPrecondition, match="AppArmor is not enabled"):
        security.apparmor_profile(_sc(apparmor=SP(profile_type=SP.Localhost, localhost_ref="mine")), **off)
    with pytest.raises(errdefs.FailedPrecondition, match="AppArmor is not enabled"):
        security.apparmor_profile(_sc(apparmor_profile="localhost/mine"), **off)
    sandbox = pb.LinuxSandboxSecurityContext(apparmor=SP(profile_type=SP.Localhost, localhost_ref="mine"))
    with pytest.raises(errdefs.FailedPrecondition):
        security.apparmor_profile(sandbox, **off)


def test_apparmor_on_an_apparmor_host() -> None:
    on: dict[str, Any] = {"enabled": True, "loaded": frozenset({"mine"})}
    assert security.apparmor_profile(_sc(apparmor=SP(profile_type=SP.Localhost, localhost_ref="mine")), **on) == "mine"
    assert security.apparmor_profile(_sc(apparmor=SP(profile_type=SP.Unconfined)), **on) == ""
    assert security.apparmor_profile(_sc(privileged=True, apparmor=SP(profile_type=SP.RuntimeDefault)), **on) == ""
    with pytest.raises(errdefs.FailedPrecondition, match="not loaded"):
        security.apparmor_profile(_sc(apparmor=SP(profile_type=SP.Localhost, localhost_ref="other")), **on)
    with pytest.raises(errdefs.FailedPrecondition, match="RuntimeDefault AppArmor profile is not supported"):
        security.apparmor_profile(_sc(apparmor=SP(profile_type=SP.RuntimeDefault)), **on)


def test_user_string() -> None:
    v = pb.Int64Value
    assert security.user_string("", None, None) == ""
    assert security.user_string("", v(value=5), None) == "5"
    assert security.user_string("", v(value=5), v(value=6)) == "5:6"
    assert security.user_string("bob", v(value=5), v(value=6)) == "bob:6"  # the name wins, as containerd
    assert security.user_string("", v(value=0), None) == "0"
    with pytest.raises(errdefs.InvalidArgument, match="without user"):
        security.user_string("", None, v(value=6))


def test_parse_seccomp_profile(tmp_path: Path) -> None:
    good = {"defaultAction": "SCMP_ACT_ALLOW", "architectures": ["SCMP_ARCH_X86_64"], "comment": "dropped",
            "syscalls": [{"names": ["mkdir"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1}]}
    assert parse_profile(json.dumps(good), "p") == {k: v for k, v in good.items() if k != "comment"}
    for bad, why in (("{", "not JSON"), ("[]", "JSON object"), ("{}", "defaultAction"),
                     ('{"defaultAction": "ALLOW"}', "defaultAction"),
                     ('{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": {}}', "syscalls must be a list"),
                     ('{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": "x"}]}', r"syscalls\[0\]"),
                     ('{"defaultAction": "SCMP_ACT_ALLOW", "architectures": [1]}', "architectures")):
        with pytest.raises(errdefs.InvalidArgument, match=why):
            parse_profile(bad, "p")
    with pytest.raises(errdefs.NotFound, match="cannot load seccomp profile"):
        load_profile(str(tmp_path / "missing.json"))
    (tmp_path / "p.json").write_text(json.dumps(good))
    assert load_profile(str(tmp_path / "p.json"))["defaultAction"] == "SCMP_ACT_ALLOW"


# -- the container spec ----------------------------------------------------------------------------
class _Pods:
    """What ``Containers._spec`` asks of the pods: their directory, the OOM score rule, the cgroup driver."""

    def __init__(self, root: Path, runtimes: dict[str, RuntimeConfig] | None = None,
                 config: CRIConfig | None = None) -> None:
        self.root = root
        self.runtimes = runtimes or {}
        self.config = config or CRIConfig()

    def sandbox_dir(self, sid: str) -> Path:
        return self.root / sid

    def _oom(self, adj: int) -> int:
        return adj

    def systemd_cgroup(self, handler: str) -> bool:
        return False

    def runtime(self, handler: str = "") -> RuntimeConfig:
        return self.runtimes.get(handler, RuntimeConfig())

    def container_spec_base(self, handler: str, cid: str) -> dict[str, Any]:
        return cri_default_spec("k8s.io", cid)


PASSWD = "root:x:0:0:root:/root:/bin/sh\nbob:x:1000:1000::/home/bob:/bin/sh\n"
GROUP = "root:x:0:\nwheel:x:10:root\nstaff:x:50:bob\nbob:x:1000:\n"


def _spec(tmp_path: Path, sc: dict[str, Any], *, pod_sc: dict[str, Any] | None = None,
          sec: SecurityInputs | None = None, host: HostInfo | None = None,
          mounts: list[pb.Mount] | None = None, runtime: RuntimeConfig | None = None,
          config: CRIConfig | None = None, hugetlb: bool = False, pod_extra: dict[str, Any] | None = None,
          linux_resources: pb.LinuxContainerResources | None = None, **cfg_extra: Any) -> dict[str, Any]:
    c = Containers.__new__(Containers)
    c.pods = _Pods(tmp_path, {"h": runtime} if runtime else None, config)  # type: ignore[assignment]
    c.swap_accounting = False
    c.hugetlb = hugetlb
    sb = Sandbox(id="s" * 64, config=pb.PodSandboxConfig(
        metadata=pb.PodSandboxMetadata(name="p", namespace="n", uid="u"),
        linux=pb.LinuxPodSandboxConfig(security_context=pb.LinuxSandboxSecurityContext(**(pod_sc or {}))),
        **(pod_extra or {})),
        created_at_ns=1, netns="/run/netns/x", ip="", additional_ips=[], ready=True, pid=4242,
        runtime_handler="h" if runtime else "")
    cfg = pb.ContainerConfig(metadata=pb.ContainerMetadata(name="c"), image=pb.ImageSpec(image="busybox"),
                             command=["sh"], mounts=mounts or [], **cfg_extra, linux=pb.LinuxContainerConfig(
                                 security_context=pb.LinuxContainerSecurityContext(**sc)))
    if linux_resources is not None:
        cfg.linux.resources.CopyFrom(linux_resources)
    return c._spec("c" * 64, sb, cfg, {"config": {}}, RootfsFiles(PASSWD, GROUP), host, sec)


def _pid_ns(spec: dict[str, Any]) -> dict[str, Any] | None:
    return next((n for n in spec["linux"]["namespaces"] if n["type"] == "pid"), None)


def test_spec_seccomp(tmp_path: Path) -> None:
    assert "seccomp" not in _spec(tmp_path, {})["linux"]
    assert "seccomp" not in _spec(tmp_path, {"seccomp": SP(profile_type=SP.Unconfined)})["linux"]
    dflt = _spec(tmp_path, {"seccomp": SP(profile_type=SP.RuntimeDefault)})["linux"]["seccomp"]
    assert dflt["defaultAction"] == "SCMP_ACT_ERRNO" and dflt["syscalls"]
    assert _spec(tmp_path, {"seccomp_profile_path": "runtime/default"})["linux"]["seccomp"] == dflt
    mine = {"defaultAction": "SCMP_ACT_ALLOW"}
    got = _spec(tmp_path, {"seccomp": SP(profile_type=SP.Localhost, localhost_ref="/p.json")},
                sec=SecurityInputs(seccomp_profile=mine))
    assert got["linux"]["seccomp"] == mine
    with pytest.raises(errdefs.FailedPrecondition, match="not loaded"):
        _spec(tmp_path, {"seccomp": SP(profile_type=SP.Localhost, localhost_ref="/p.json")})


def test_spec_users_and_groups(tmp_path: Path) -> None:
    user = _spec(tmp_path, {})["process"]["user"]
    assert user == {"uid": 0, "gid": 0, "additionalGids": [0, 10]}  # root's /etc/group memberships
    user = _spec(tmp_path, {"run_as_user": pb.Int64Value(value=1000), "run_as_group": pb.Int64Value(value=7),
                            "supplemental_groups": [300, 10]})["process"]["user"]
    assert user == {"uid": 1000, "gid": 7, "additionalGids": [7, 10, 50, 300]}  # staff lists bob
    user = _spec(tmp_path, {"run_as_user": pb.Int64Value(value=1000), "supplemental_groups": [300],
                            "supplemental_groups_policy": pb.Strict})["process"]["user"]
    assert user == {"uid": 1000, "gid": 1000, "additionalGids": [300, 1000]}
    with pytest.raises(errdefs.InvalidArgument, match="without user"):
        _spec(tmp_path, {"run_as_group": pb.Int64Value(value=7)})


def test_spec_paths_privileges_and_flags(tmp_path: Path) -> None:
    spec = _spec(tmp_path, {"masked_paths": ["/proc/x"], "readonly_paths": ["/proc/y"], "no_new_privs": True,
                            "readonly_rootfs": True})
    assert spec["linux"]["maskedPaths"] == ["/proc/x"] and spec["linux"]["readonlyPaths"] == ["/proc/y"]
    assert spec["process"]["noNewPrivileges"] is True and spec["root"]["readonly"] is True
    assert "maskedPaths" not in _spec(tmp_path, {})["linux"]  # the request's lists only, as containerd 1.6
    assert "readonlyPaths" not in _spec(tmp_path, {})["linux"]
    assert "noNewPrivileges" not in _spec(tmp_path, {})["process"]  # only when asked, as containerd
    host = HostInfo(capabilities=["CAP_CHOWN", "CAP_SYS_ADMIN"],
                    devices=[{"path": "/dev/loop0", "type": "b", "major": 7, "minor": 0}], hostname="h")
    with pytest.raises(errdefs.InvalidArgument, match="non-privileged sandbox"):
        _spec(tmp_path, {"privileged": True}, host=host)
    priv = _spec(tmp_path, {"privileged": True, "masked_paths": ["/proc/x"],
                            "seccomp": SP(profile_type=SP.RuntimeDefault),
                            "capabilities": pb.Capability(drop_capabilities=["SYS_ADMIN"])},
                 pod_sc={"privileged": True}, host=host)
    assert priv["process"]["capabilities"]["bounding"] == ["CAP_CHOWN", "CAP_SYS_ADMIN"]  # drop ignored
    assert "maskedPaths" not in priv["linux"] and "readonlyPaths" not in priv["linux"]
    assert "seccomp" not in priv["linux"]
    assert priv["linux"]["devices"] == host.devices
    assert priv["linux"]["resources"]["devices"] == [{"allow": True, "access": "rwm"}]
    # the pod's handler says privileged_without_host_devices: no host device, the default cgroup rule
    # (or every device allowed with ..._all_devices_allowed), as containerd
    no_dev = RuntimeConfig(privileged_without_host_devices=True)
    priv = _spec(tmp_path, {"privileged": True}, pod_sc={"privileged": True}, host=host, runtime=no_dev)
    assert "devices" not in priv["linux"] or priv["linux"]["devices"] == []
    assert priv["linux"]["resources"]["devices"] == [{"allow": False, "access": "rwm"}]
    assert priv["process"]["capabilities"]["bounding"] == ["CAP_CHOWN", "CAP_SYS_ADMIN"]
    all_dev = RuntimeConfig(privileged_without_host_devices=True,
                            privileged_without_host_devices_all_devices_allowed=True)
    priv = _spec(tmp_path, {"privileged": True}, pod_sc={"privileged": True}, host=host, runtime=all_dev)
    assert not priv["linux"].get("devices")
    assert priv["linux"]["resources"]["devices"] == [{"allow": True, "access": "rwm"}]


def test_spec_pid_namespaces(tmp_path: Path) -> None:
    def pid(mode: pb.NamespaceMode.ValueType, **kw: Any) -> dict[str, Any] | None:
        return _pid_ns(_spec(tmp_path, {"namespace_options": pb.NamespaceOption(pid=mode)}, **kw))

    assert pid(pb.POD) == {"type": "pid", "path": "/proc/4242/ns/pid"}
    assert pid(pb.CONTAINER) == {"type": "pid"}
    # NODE in a pod without host pid: the pod's namespace, as containerd 1.6 (measured in
    # tests/integration/test_cri_security.py); it was left out of the spec (the host's) before
    assert pid(pb.NODE) == {"type": "pid", "path": "/proc/4242/ns/pid"}
    assert pid(pb.TARGET, sec=SecurityInputs(target_pid=777)) == {"type": "pid", "path": "/proc/777/ns/pid"}
    with pytest.raises(errdefs.InvalidArgument, match="TARGET"):
        pid(pb.TARGET)


def test_spec_mounts_recursive_read_only_and_image_volumes(tmp_path: Path) -> None:
    def opts(m: pb.Mount, rro: bool = True) -> list[str]:  # rro: the pod's handler supports it
        spec = _spec(tmp_path, {}, mounts=[m], sec=SecurityInputs(rro=rro))
        return next(x["options"] for x in spec["mounts"] if x["destination"] == "/data")

    assert opts(pb.Mount(container_path="/data", host_path="/srv", readonly=True)) == ["rbind", "rprivate", "ro"]
    assert opts(pb.Mount(container_path="/data", host_path="/srv", readonly=True,
                         recursive_read_only=True)) == ["rbind", "rprivate", "rro"]
    for bad, why in ((pb.Mount(container_path="/data", host_path="/srv", recursive_read_only=True),
                      "recursive_read_only needs readonly"),
                     (pb.Mount(container_path="/data", host_path="/srv", readonly=True, recursive_read_only=True,
                               propagation=pb.PROPAGATION_HOST_TO_CONTAINER), "needs private propagation")):
        with pytest.raises(errdefs.InvalidArgument, match=why):
            opts(bad)
    with pytest.raises(errdefs.InvalidArgument, match="RROUnsupported"):  # a handler without rro
        opts(pb.Mount(container_path="/data", host_path="/srv", readonly=True, recursive_read_only=True), rro=False)
    with pytest.raises(errdefs.InvalidArgument, match="image volumes"):
        opts(pb.Mount(container_path="/data", image=pb.ImageSpec(image="busybox")))


def test_devices(tmp_path: Path) -> None:
    (entry, rule), = host_device_entries([pb.Device(container_path="/dev/mynull", host_path="/dev/null",
                                                    permissions="rw")])
    assert (entry["path"], entry["type"], entry["major"], entry["minor"]) == ("/dev/mynull", "c", 1, 3)
    assert rule == {"allow": True, "type": "c", "major": 1, "minor": 3, "access": "rw"}
    spec = _spec(tmp_path, {}, sec=SecurityInputs(devices=[(entry, rule)]))
    assert spec["linux"]["devices"] == [entry]
    assert spec["linux"]["resources"]["devices"][-1] == rule
    (tmp_path / "file").write_text("x")
    with pytest.raises(errdefs.InvalidArgument, match="not a device"):
        host_device_entries([pb.Device(container_path="/dev/x", host_path=str(tmp_path / "file"))])
    with pytest.raises(errdefs.InvalidArgument, match="permissions"):
        host_device_entries([pb.Device(container_path="/dev/x", host_path="/dev/null", permissions="rwx")])
    with pytest.raises(errdefs.NotFound):
        host_device_entries([pb.Device(container_path="/dev/x", host_path=str(tmp_path / "missing"))])


def test_unsupported_fields_are_refused(tmp_path: Path) -> None:
    with pytest.raises(errdefs.InvalidArgument, match="CDI devices"):
        _spec(tmp_path, {}, CDI_devices=[pb.CDIDevice(name="vendor.com/gpu=0")])
    with pytest.raises(errdefs.InvalidArgument, match="user namespaces"):
        _spec(tmp_path, {"namespace_options": pb.NamespaceOption(userns_options=pb.UserNamespace(
            mode=pb.POD, uids=[pb.IDMapping(host_id=100000, container_id=0, length=65536)]))})
    # NODE, what the kubelet sends for hostUsers: true, is the host's: fine
    _spec(tmp_path, {"namespace_options": pb.NamespaceOption(userns_options=pb.UserNamespace(mode=pb.NODE))})
    with pytest.raises(errdefs.InvalidArgument, match="id-mapped"):
        _spec(tmp_path, {}, mounts=[pb.Mount(container_path="/data", host_path="/srv",
                                             uidMappings=[pb.IDMapping(host_id=1, container_id=0, length=1)])])
