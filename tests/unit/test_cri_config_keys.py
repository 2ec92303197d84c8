"""The CRI plugin's own keys, from config.toml to their effect on the pod and container specs
(containerd 1.6's rules; ``cri/configopts.py``), or their refusal naming the key."""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path
from typing import Any

import pytest

from pycontainerd import cgroups, errdefs
from pycontainerd.api.cri.runtime.v1 import api_pb2 as pb
from pycontainerd.config import ConfigError, CRIConfig, parse_config
from pycontainerd.cri import configopts, volumes
from pycontainerd.cri.containers import SecurityInputs
from pycontainerd.cri.sandbox import Sandboxes
from pycontainerd.oci.spec import DEFAULT_MASKED_PATHS, DEFAULT_READONLY_PATHS

from .test_cri_security import _spec

SRC = "/etc/pycontainerd/config.toml"
CRI = 'plugins."io.containerd.grpc.v1.cri"'
SP = pb.SecurityProfile


def cri(body: str) -> CRIConfig:
    return parse_config(f"version = 2\n[{CRI}]\n{body}\n", SRC).cri


def pod_spec(tmp_path: Path, config: CRIConfig, *, host_network: bool = False, sysctls: dict[str, str] | None = None,
             **sc: Any) -> dict[str, Any]:
    pods = Sandboxes(config=config, images=None, containers=None, tasks=None,  # type: ignore[arg-type]
                     state_dir=tmp_path, cni=None)
    cfg = pb.PodSandboxConfig(metadata=pb.PodSandboxMetadata(name="p", namespace="n", uid="u"))
    cfg.linux.cgroup_parent = "/kubepods/pod1"
    cfg.linux.sysctls.update(sysctls or {})
    cfg.linux.security_context.MergeFrom(pb.LinuxSandboxSecurityContext(**sc))
    if host_network:
        cfg.linux.security_context.namespace_options.network = pb.NODE
    return pods._spec("s" * 64, cfg, {"config": {"Cmd": ["pause"]}}, "" if host_network else "/run/netns/x")


def test_the_defaults_are_containerd_1_6s() -> None:
    c = CRIConfig()
    assert (c.enable_unprivileged_ports, c.enable_unprivileged_icmp, c.disable_cgroup, c.disable_apparmor,
            c.disable_proc_mount, c.unset_seccomp_profile, c.device_ownership_from_security_context,
            c.ignore_image_defined_volumes, c.enable_selinux, c.selinux_category_range, c.enable_cdi,
            c.cdi_spec_dirs) == (False, False, False, False, False, "", False, False, False, 1024, False,
                                 ("/etc/cdi", "/var/run/cdi"))
    assert (c.tolerate_missing_hugetlb_controller, c.disable_hugetlb_controller) == (True, True)
    assert (c.containerd.ignore_rdt_not_enabled_errors, c.containerd.ignore_blockio_not_enabled_errors) == (False,
                                                                                                           False)


# -- enable_unprivileged_ports / enable_unprivileged_icmp -----------------------------------------------
def test_unprivileged_ports_and_icmp_are_sysctls_of_the_pod(tmp_path: Path) -> None:
    assert "sysctl" not in pod_spec(tmp_path, CRIConfig())["linux"]
    on = cri("enable_unprivileged_ports = true\nenable_unprivileged_icmp = true")
    assert pod_spec(tmp_path, on)["linux"]["sysctl"] == {"net.ipv4.ip_unprivileged_port_start": "0",
                                                         "net.ipv4.ping_group_range": "0 2147483647"}
    # the pod's own values win; a host-network pod gets none (they would be the host's)
    mine = {"net.ipv4.ping_group_range": "0 0", "net.ipv4.ip_unprivileged_port_start": "80"}
    assert pod_spec(tmp_path, on, sysctls=mine)["linux"]["sysctl"] == mine
    assert "sysctl" not in pod_spec(tmp_path, on, host_network=True)["linux"]
    only_ports = cri("enable_unprivileged_ports = true")
    assert pod_spec(tmp_path, only_ports)["linux"]["sysctl"] == {"net.ipv4.ip_unprivileged_port_start": "0"}
    # as containerd, no ICMP range from a daemon in a user namespace
    assert configopts.sandbox_sysctls(on, {}, host_network=False, in_user_namespace=True) == {
        "net.ipv4.ip_unprivileged_port_start": "0"}
    assert configopts.running_in_user_namespace("         0          0 4294967295\n") is False
    assert configopts.running_in_user_namespace("0 1000 1\n") is True


# -- disable_cgroup -------------------------------------------------------------------------------------
def test_disable_cgroup_leaves_cgroup_paths_and_resources_out(tmp_path: Path) -> None:
    res = pb.LinuxContainerResources(cpu_shares=512, memory_limit_in_bytes=64 << 20)
    pod = pod_spec(tmp_path, CRIConfig())["linux"]
    assert pod["cgroupsPath"] == f"/kubepods/pod1/{'s' * 64}" and pod["resources"]["cpu"] == {"shares": 2}
    ctr = _spec(tmp_path, {}, linux_resources=res)["linux"]
    assert ctr["resources"]["memory"] == {"limit": 64 << 20} and ctr["cgroupsPath"]
    off = cri("disable_cgroup = true")
    pod = pod_spec(tmp_path, off)["linux"]
    assert pod["cgroupsPath"] == "" and "cpu" not in pod["resources"]
    ctr = _spec(tmp_path, {}, config=off, linux_resources=res)["linux"]
    assert ctr["cgroupsPath"] == ""
    assert set(ctr["resources"]) == {"devices"}  # the default device rules stay, as containerd's
    assert ctr["resources"]["devices"] == [{"allow": False, "access": "rwm"}]


# -- hugetlb --------------------------------------------------------------------------------------------
HUGE = pb.LinuxContainerResources(hugepage_limits=[pb.HugepageLimit(page_size="2MB", limit=4 << 20)])


def test_hugepage_limits_follow_the_hugetlb_keys(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    # the default (disable_hugetlb_controller = true): never set, with or without the controller
    for present in (False, True):
        assert "hugepageLimits" not in _spec(tmp_path, {}, linux_resources=HUGE, hugetlb=present)["linux"]["resources"]
    enabled = cri("disable_hugetlb_controller = false")
    got = _spec(tmp_path, {}, config=enabled, linux_resources=HUGE, hugetlb=True)["linux"]["resources"]
    assert got["hugepageLimits"] == [{"pageSize": "2MB", "limit": 4 << 20}]
    # no controller: dropped with a warning (tolerate_missing_hugetlb_controller, the default) ...
    with caplog.at_level(logging.WARNING, "pycontainerd.cri"):
        got = _spec(tmp_path, {}, config=enabled, linux_resources=HUGE, hugetlb=False)["linux"]["resources"]
    assert "hugepageLimits" not in got and "hugetlb cgroup controller is absent" in caplog.text
    # ... or the create fails, as containerd's, for any container with resources
    strict = cri("disable_hugetlb_controller = false\ntolerate_missing_hugetlb_controller = false")
    for res in (HUGE, pb.LinuxContainerResources(cpu_shares=2)):
        with pytest.raises(errdefs.FailedPrecondition, match="tolerate_missing_hugetlb_controller"):
            _spec(tmp_path, {}, config=strict, linux_resources=res, hugetlb=False)
    # UpdateContainerResources applies the same rule to what it is asked
    want = {"hugepageLimits": [{"pageSize": "2MB", "limit": 1}]}
    configopts.hugepage_limits(CRIConfig(), want, present=True)
    assert want == {}


def test_hugetlb_controller_detection(tmp_path: Path) -> None:
    (tmp_path / "fs" / "cgroup" / "memory").mkdir(parents=True)
    assert cgroups.hugetlb_controller(tmp_path) is False  # cgroup v1 without the hierarchy
    (tmp_path / "fs" / "cgroup" / "hugetlb").mkdir()
    assert cgroups.hugetlb_controller(tmp_path) is True
    (tmp_path / "fs" / "cgroup" / "cgroup.controllers").write_text("cpuset cpu io memory pids\n")
    assert cgroups.hugetlb_controller(tmp_path) is False  # cgroup v2: the root's list decides
    (tmp_path / "fs" / "cgroup" / "cgroup.controllers").write_text("cpuset cpu io memory hugetlb pids\n")
    assert cgroups.hugetlb_controller(tmp_path) is True


# -- disable_proc_mount ---------------------------------------------------------------------------------
def test_disable_proc_mount_keeps_the_default_proc_paths(tmp_path: Path) -> None:
    asked = {"masked_paths": ["/proc/x"], "readonly_paths": ["/proc/y"]}
    linux = _spec(tmp_path, asked)["linux"]
    assert (linux["maskedPaths"], linux["readonlyPaths"]) == (["/proc/x"], ["/proc/y"])
    assert "maskedPaths" not in _spec(tmp_path, {})["linux"]
    off = cri("disable_proc_mount = true")
    for sc in (asked, {}):
        linux = _spec(tmp_path, sc, config=off)["linux"]
        assert (linux["maskedPaths"], linux["readonlyPaths"]) == (DEFAULT_MASKED_PATHS, DEFAULT_READONLY_PATHS)


# -- unset_seccomp_profile ------------------------------------------------------------------------------
def test_unset_seccomp_profile_is_what_a_context_asking_nothing_gets(tmp_path: Path) -> None:
    assert "seccomp" not in _spec(tmp_path, {})["linux"]
    dflt = cri('unset_seccomp_profile = "runtime/default"')
    assert _spec(tmp_path, {}, config=dflt)["linux"]["seccomp"]["defaultAction"] == "SCMP_ACT_ERRNO"
    assert "seccomp" in pod_spec(tmp_path, dflt)["linux"]
    assert "seccomp" not in pod_spec(tmp_path, CRIConfig())["linux"]
    # whatever the context asks wins: the message, or the deprecated string; privileged gets none
    for sc in ({"seccomp": SP(profile_type=SP.Unconfined)}, {"seccomp_profile_path": "unconfined"}):
        assert "seccomp" not in _spec(tmp_path, sc, config=dflt)["linux"]
    local = cri('unset_seccomp_profile = "localhost//etc/p.json"')  # localhost/<absolute path>
    mine = {"defaultAction": "SCMP_ACT_LOG"}
    assert _spec(tmp_path, {}, config=local, sec=SecurityInputs(seccomp_profile=mine))["linux"]["seccomp"] == mine


@pytest.mark.parametrize("value", ["default", "localhost/relative.json", "runtime/default "])
def test_an_unset_seccomp_profile_that_is_no_profile_is_refused(value: str) -> None:
    with pytest.raises(ConfigError) as exc:
        cri(f'unset_seccomp_profile = "{value}"')
    assert str(exc.value).startswith(f"{SRC}: {CRI}.unset_seccomp_profile: invalid seccomp profile")


# -- disable_apparmor -----------------------------------------------------------------------------------
def test_disable_apparmor_is_a_host_without_apparmor(tmp_path: Path) -> None:
    host = SecurityInputs(apparmor=(True, frozenset({"mine"})))
    local = {"apparmor": SP(profile_type=SP.Localhost, localhost_ref="mine")}
    assert _spec(tmp_path, local, sec=host)["process"]["apparmorProfile"] == "mine"
    off = cri("disable_apparmor = true")
    with pytest.raises(errdefs.FailedPrecondition, match="AppArmor is not enabled"):
        _spec(tmp_path, local, sec=host, config=off)
    runtime_default = {"apparmor": SP(profile_type=SP.RuntimeDefault)}
    with pytest.raises(errdefs.FailedPrecondition, match="RuntimeDefault"):
        _spec(tmp_path, runtime_default, sec=host)
    assert "apparmorProfile" not in _spec(tmp_path, runtime_default, sec=host, config=off)["process"]


# -- device_ownership_from_security_context -------------------------------------------------------------
def test_device_ownership_from_the_security_context(tmp_path: Path) -> None:
    dev = ({"path": "/dev/xnull", "type": "c", "major": 1, "minor": 3, "fileMode": 0o666, "uid": 0, "gid": 6},
           {"allow": True, "type": "c", "major": 1, "minor": 3, "access": "rwm"})
    sec = SecurityInputs(devices=[dev])
    user = {"run_as_user": pb.Int64Value(value=1000), "run_as_group": pb.Int64Value(value=2000)}

    def owner(sc: dict[str, Any], config: CRIConfig | None = None) -> tuple[int, int]:
        (d,) = _spec(tmp_path, sc, sec=sec, config=config)["linux"]["devices"]
        return d["uid"], d["gid"]

    assert owner(user) == (0, 6)  # the host node's owner
    on = cri("device_ownership_from_security_context = true")
    assert owner(user, on) == (1000, 2000)
    assert owner({"run_as_user": pb.Int64Value(value=1000)}, on) == (1000, 6)  # only non-zero ids
    assert owner({}, on) == (0, 6)
    assert dev[0]["uid"] == 0  # the host facts are not changed for the next container


# -- RDT and blockio classes ----------------------------------------------------------------------------
@pytest.mark.parametrize(("kind", "key", "where"), [
    ("rdt", "io.kubernetes.cri.rdt-class", "container"),
    ("rdt", "rdt.resources.beta.kubernetes.io/pod", "pod"),
    ("rdt", "rdt.resources.beta.kubernetes.io/container.c", "pod"),
    ("blockio", "io.kubernetes.cri.blockio-class", "container"),
    ("blockio", "blockio.resources.beta.kubernetes.io/pod", "pod"),
    ("blockio", "blockio.resources.beta.kubernetes.io/container.c", "pod"),
])
def test_rdt_and_blockio_classes_are_refused_unless_ignored(tmp_path: Path, kind: str, key: str,
                                                             where: str) -> None:
    ann = {"annotations": {key: "gold"}}
    kw: dict[str, Any] = ann if where == "container" else {"pod_extra": ann}
    with pytest.raises(errdefs.FailedPrecondition, match=f"ignore_{kind}_not_enabled_errors"):
        _spec(tmp_path, {}, **kw)
    ignore = cri(f"[{CRI}.containerd]\nignore_{kind}_not_enabled_errors = true")
    spec = _spec(tmp_path, {}, config=ignore, **kw)
    assert "intelRdt" not in spec["linux"] and "blockIO" not in spec["linux"]["resources"]
    # another container's class is not this one's
    if key.endswith("container.c"):
        _spec(tmp_path, {}, pod_extra={"annotations": {key.replace("container.c", "container.other"): "gold"}})


# -- enable_selinux / selinux_category_range ------------------------------------------------------------
def test_enable_selinux(caplog: pytest.LogCaptureFixture, tmp_path: Path) -> None:
    configopts.check_selinux(CRIConfig(), host_has_selinux=True)  # off: nothing to say
    on = cri("enable_selinux = true\nselinux_category_range = 512")
    with pytest.raises(errdefs.FailedPrecondition) as exc:
        configopts.check_selinux(on, host_has_selinux=True)
    assert f"{CRI}.enable_selinux = true is not supported" in str(exc.value) and "512" in str(exc.value)
    with caplog.at_level(logging.WARNING, "pycontainerd.cri"):
        configopts.check_selinux(on, host_has_selinux=False)  # containerd's warning; nothing to label
    assert "SELinux is not supported on this host" in caplog.text
    assert configopts.host_has_selinux(str(tmp_path)) is False
    (tmp_path / "enforce").write_text("1")
    assert configopts.host_has_selinux(str(tmp_path)) is True


# -- enable_cdi / cdi_spec_dirs -------------------------------------------------------------------------
@pytest.mark.parametrize(("body", "key"), [
    ("enable_cdi = true", "enable_cdi"),
    ('cdi_spec_dirs = ["/etc/cdi"]', "cdi_spec_dirs"),
])
def test_cdi_is_refused_naming_the_key(body: str, key: str) -> None:
    with pytest.raises(ConfigError) as exc:
        cri(body)
    assert str(exc.value).startswith(f"{SRC}: {CRI}.{key}: ") and "not supported" in str(exc.value)
    assert "CDI" in str(exc.value)


def test_cdi_defaults_are_accepted() -> None:
    assert cri('enable_cdi = false\ncdi_spec_dirs = ["/etc/cdi", "/var/run/cdi"]') == CRIConfig()


# -- ignore_image_defined_volumes -----------------------------------------------------------------------
def test_image_volumes_wanted_unless_ignored_or_mounted(tmp_path: Path) -> None:
    image: dict[str, Any] = {"config": {"Volumes": {"/var/lib/db": {}, "/data": {}, "/cache/": {}}}}
    assert volumes.wanted(image, [], ignore=False) == ["/cache/", "/data", "/var/lib/db"]
    assert volumes.wanted(image, ["/data/", "/cache"], ignore=False) == ["/var/lib/db"]  # a CRI mount wins
    assert volumes.wanted(image, [], ignore=True) == []  # ignore_image_defined_volumes = true
    assert volumes.wanted({"config": {}}, [], ignore=False) == []
    # the spec: bind mounts of their directories, ordered by depth with the pod's files
    sec = SecurityInputs(volumes=[("/var/lib/db", "/root/v1"), ("/data", "/root/v2")])
    mounts = _spec(tmp_path, {}, sec=sec)["mounts"]
    binds = [m for m in mounts if m["type"] == "bind"]
    assert [m["destination"] for m in binds] == ["/data", "/etc/hostname", "/etc/hosts", "/etc/resolv.conf",
                                                 "/dev/shm", "/var/lib/db"]
    assert binds[0] == {"destination": "/data", "type": "bind", "source": "/root/v2",
                        "options": ["rbind", "rprivate", "rw"]}


def test_image_volume_contents_are_copied_with_their_metadata(tmp_path: Path) -> None:
    src, dst = tmp_path / "src", tmp_path / "dst"
    (src / "sub").mkdir(parents=True)
    (src / "sub" / "file").write_text("data")
    (src / "sub" / "file").chmod(0o640)
    os.link(src / "sub" / "file", src / "hard")
    (src / "link").symlink_to("sub/file")
    os.mkfifo(src / "fifo")
    os.utime(src / "sub" / "file", ns=(10**18, 10**18))
    src.chmod(0o751)
    dst.mkdir()
    volumes._copy_dir(str(src), str(dst))
    assert (dst / "sub" / "file").read_text() == "data"
    assert stat.S_IMODE((dst / "sub" / "file").stat().st_mode) == 0o640
    assert (dst / "sub" / "file").stat().st_mtime_ns == 10**18
    assert (dst / "hard").stat().st_ino == (dst / "sub" / "file").stat().st_ino
    assert os.readlink(dst / "link") == "sub/file"
    assert stat.S_ISFIFO((dst / "fifo").lstat().st_mode)
    assert stat.S_IMODE(dst.stat().st_mode) == 0o751  # the volume takes the image directory's mode
    with pytest.raises(errdefs.FailedPrecondition, match="not initially empty"):
        volumes._copy_dir(str(src), str(dst))
    volumes.remove(tmp_path, "none")  # nothing there: fine
