"""Pure helpers of the CRI pods and containers: names, resolv.conf, cgroup paths, OCI resources."""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path
from typing import Any

import pytest

from pycontainerd import errdefs
from pycontainerd.api.cri.runtime.v1 import api_pb2 as pb
from pycontainerd.config.model import CRIConfig
from pycontainerd.cri import runtime
from pycontainerd.cri.containers import Containers, container_name, merge_resources, oci_resources
from pycontainerd.cri.features import HandlerFeatures
from pycontainerd.cri.sandbox import (
    InterfaceUsage,
    Sandbox,
    Sandboxes,
    cgroups_path,
    host_network,
    parent_cgroup,
    parse_net_dev,
    pod_name,
    resolv_conf,
)
from pycontainerd.oci.spec import RootfsFiles


def test_names_like_containerd() -> None:
    pod = pb.PodSandboxMetadata(name="web", namespace="default", uid="u1", attempt=2)
    assert pod_name(pod) == "web_default_u1_2"
    assert container_name(pb.ContainerMetadata(name="app", attempt=1), pod) == "app_web_default_u1_1"


def test_resolv_conf_from_dns_config() -> None:
    assert resolv_conf(pb.DNSConfig()) is None  # the host's is copied then
    text = resolv_conf(pb.DNSConfig(servers=["10.0.0.10", "10.0.0.11"], searches=["a.svc", "svc"],
                                    options=["ndots:5"]))
    assert text == "search a.svc svc\nnameserver 10.0.0.10\nnameserver 10.0.0.11\noptions ndots:5\n"


def test_cgroups_path_and_host_network() -> None:
    assert cgroups_path("", "abc") == "/k8s.io/abc"
    assert cgroups_path("/kubepods/burstable/", "abc") == "/kubepods/burstable/abc"
    cfg = pb.PodSandboxConfig()
    assert not host_network(cfg)
    cfg.linux.security_context.namespace_options.network = pb.NODE
    assert host_network(cfg)


def test_oci_resources() -> None:
    assert oci_resources(pb.LinuxContainerResources()) == {}
    res = pb.LinuxContainerResources(cpu_shares=512, cpu_quota=50000, cpu_period=100000, cpuset_cpus="0",
                                     memory_limit_in_bytes=64 << 20)
    assert oci_resources(res) == {"cpu": {"shares": 512, "quota": 50000, "period": 100000, "cpus": "0"},
                                  "memory": {"limit": 64 << 20}}



def test_oci_resources_swap_hugepages_unified() -> None:
    """containerd 1.6's rules: swap only where the host accounts it (memory limit = no swap by
    default), hugepage limits and unified keys passed on for runc to apply or refuse."""
    res = pb.LinuxContainerResources(memory_limit_in_bytes=64 << 20)
    assert oci_resources(res, swap_accounting=True)["memory"] == {"limit": 64 << 20, "swap": 64 << 20}
    assert oci_resources(res, swap_accounting=False)["memory"] == {"limit": 64 << 20}
    res.memory_swap_limit_in_bytes = 128 << 20
    assert oci_resources(res, swap_accounting=True)["memory"] == {"limit": 64 << 20, "swap": 128 << 20}
    res = pb.LinuxContainerResources(hugepage_limits=[pb.HugepageLimit(page_size="2MB", limit=4 << 20)],
                                     unified={"memory.high": "1000000"})
    assert oci_resources(res) == {"hugepageLimits": [{"pageSize": "2MB", "limit": 4 << 20}],
                                  "unified": {"memory.high": "1000000"}}
    merged = merge_resources({"cpu": {"shares": 2}, "hugepageLimits": [{"pageSize": "1GB", "limit": 1}]},
                             {"cpu": {"quota": 5}, "hugepageLimits": []})
    assert merged == {"cpu": {"shares": 2, "quota": 5}, "hugepageLimits": []}


def test_swap_accounting_reads_the_host(tmp_path: Path) -> None:
    from pycontainerd import cgroups

    (tmp_path / "sys/fs/cgroup/memory").mkdir(parents=True)
    (tmp_path / "proc/self").mkdir(parents=True)
    assert not cgroups.swap_accounting(tmp_path / "sys", tmp_path / "proc")
    (tmp_path / "sys/fs/cgroup/memory/memory.memsw.limit_in_bytes").write_text("9223372036854771712\n")
    assert cgroups.swap_accounting(tmp_path / "sys", tmp_path / "proc")
    v2 = tmp_path / "v2"
    (v2 / "sys/fs/cgroup/user.slice").mkdir(parents=True)
    (v2 / "sys/fs/cgroup/cgroup.controllers").write_text("memory\n")
    (v2 / "proc/self").mkdir(parents=True)
    (v2 / "proc/self/cgroup").write_text("0::/user.slice\n")
    assert not cgroups.swap_accounting(v2 / "sys", v2 / "proc")
    (v2 / "sys/fs/cgroup/user.slice/memory.swap.max").write_text("max\n")
    assert cgroups.swap_accounting(v2 / "sys", v2 / "proc")


def test_stats_from_cgroup_v1_and_v2_metrics() -> None:
    c = type("C", (), {"id": "x", "config": pb.ContainerConfig(metadata=pb.ContainerMetadata(name="n"))})()
    v1 = {"at": 5, "mode": "v1", "data": {"cpu": {"usage": {"total": 1234}},
                                          "memory": {"usage": {"usage": 1000}, "total_inactive_file": 300}}}
    s = runtime._stats_pb(c, v1)
    assert s.cpu.usage_core_nano_seconds.value == 1234 and s.memory.working_set_bytes.value == 700
    v2 = {"at": 5, "mode": "v2", "data": {"cpu": {"usage_usec": 3}, "memory": {"usage": 100, "inactive_file": 500}},
          "layer": {"used_bytes": 9, "inodes_used": 2, "mountpoint": "/m"}}
    s = runtime._stats_pb(c, v2)
    assert s.cpu.usage_core_nano_seconds.value == 3000 and s.memory.working_set_bytes.value == 0
    assert s.writable_layer.used_bytes.value == 9 and s.writable_layer.fs_id.mountpoint == "/m"
    assert not runtime._stats_pb(c, None).HasField("cpu")


def test_parse_net_dev() -> None:
    text = (
        "Inter-|   Receive                                                |  Transmit\n"
        " face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls "
        "carrier compressed\n"
        "    lo:     120       2    0    0    0     0          0         0      120       2    0    0    0     0"
        "       0          0\n"
        "  eth0:    1024      12    3    0    0     0          0         0      472       6    4    0    0     0"
        "       0          0\n"
        "garbage line\n"
    )
    assert parse_net_dev(text) == [InterfaceUsage("lo", 120, 0, 120, 0), InterfaceUsage("eth0", 1024, 3, 472, 4)]


def _config(systemd: bool) -> CRIConfig:
    cfg = CRIConfig()
    rt = cfg.default_runtime
    runtimes = {**cfg.containerd.runtimes, cfg.containerd.default_runtime_name: dataclasses.replace(
        rt, options=dataclasses.replace(rt.options, systemd_cgroup=systemd))}
    return dataclasses.replace(cfg, containerd=dataclasses.replace(cfg.containerd, runtimes=runtimes))


def test_runtime_config_reports_the_cgroup_driver() -> None:
    def driver(systemd: bool) -> int:
        svc = runtime.RuntimeService(runtime.RuntimeState(_config(systemd)))
        return asyncio.run(svc.RuntimeConfig(pb.RuntimeConfigRequest(), None)).linux.cgroup_driver

    assert driver(False) == pb.CGROUPFS
    assert driver(True) == pb.SYSTEMD


def test_systemd_cgroup_paths_like_containerd() -> None:
    slice_ = "kubepods-besteffort-pod1.slice"
    assert cgroups_path(slice_, "abc", systemd=True) == "kubepods-besteffort-pod1.slice:cri-containerd:abc"
    assert cgroups_path(f"/kubepods.slice/kubepods-besteffort.slice/{slice_}", "abc", systemd=True) == \
        f"{slice_}:cri-containerd:abc"  # the kubelet's full path: its last slice
    assert cgroups_path("", "abc", systemd=True) == "system.slice:cri-containerd:abc"
    with pytest.raises(errdefs.InvalidArgument, match="not a systemd slice"):
        cgroups_path("/kubepods/besteffort/pod1", "abc", systemd=True)
    assert parent_cgroup(slice_, True) == "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod1.slice"
    assert parent_cgroup("/kubepods/besteffort/pod1", False) == "/kubepods/besteffort/pod1"


@pytest.mark.parametrize("systemd", [False, True])
def test_the_cgroup_driver_reported_is_the_one_pods_get(systemd: bool, tmp_path: Path) -> None:
    """RuntimeConfig's driver, the pod's and its containers' cgroupsPath, and runc's --systemd-cgroup
    (the tasks' options) all follow the default runtime's SystemdCgroup."""
    cfg = _config(systemd)
    reported = asyncio.run(runtime.RuntimeService(runtime.RuntimeState(cfg)).RuntimeConfig(
        pb.RuntimeConfigRequest(), None)).linux.cgroup_driver
    pods = Sandboxes(config=cfg, images=None, containers=None, tasks=None,  # type: ignore[arg-type]
                     state_dir=tmp_path, cni=None)
    parent = "kubepods-besteffort-pod1.slice" if systemd else "/kubepods/besteffort/pod1"
    pod_cfg = pb.PodSandboxConfig(metadata=pb.PodSandboxMetadata(name="p", namespace="n", uid="u"))
    pod_cfg.linux.cgroup_parent = parent
    pod_spec = pods._spec("s" * 64, pod_cfg, {"config": {"Cmd": ["pause"]}}, "/run/netns/x",
                          pods.systemd_cgroup(""))
    containers = Containers(pods=pods, images=None, containers=None, tasks=None,  # type: ignore[arg-type]
                            state_dir=tmp_path, max_log_line=16384)
    sb = Sandbox(id="s" * 64, config=pod_cfg, created_at_ns=1, netns="/run/netns/x", ip="", additional_ips=[],
                 ready=True, pid=1)
    ctr_cfg = pb.ContainerConfig(metadata=pb.ContainerMetadata(name="c"), image=pb.ImageSpec(image="i"),
                                 command=["true"])
    ctr_spec = containers._spec("c" * 64, sb, ctr_cfg, {}, RootfsFiles(None, None), None)
    paths = [pod_spec["linux"]["cgroupsPath"], ctr_spec["linux"]["cgroupsPath"]]
    if systemd:
        assert reported == pb.SYSTEMD
        assert paths == [f"{parent}:cri-containerd:{'s' * 64}", f"{parent}:cri-containerd:{'c' * 64}"]
    else:
        assert reported == pb.CGROUPFS
        assert paths == [f"{parent}/{'s' * 64}", f"{parent}/{'c' * 64}"]
    assert pods.run_options("").systemd_cgroup is systemd


def test_stop_signals() -> None:
    import signal

    from pycontainerd.cri.containers import parse_signal, signal_enum, stop_signal_name

    cfg = pb.ContainerConfig()
    assert stop_signal_name(cfg, {}) == "SIGTERM"
    assert stop_signal_name(cfg, {"config": {"StopSignal": "SIGQUIT"}}) == "SIGQUIT"
    cfg.stop_signal = pb.SIGUSR1  # the config's wins over the image's
    assert stop_signal_name(cfg, {"config": {"StopSignal": "SIGQUIT"}}) == "SIGUSR1"
    cfg.stop_signal = pb.SIGRTMINPLUS3
    assert stop_signal_name(cfg, {}) == "SIGRTMIN+3"
    cfg.stop_signal = pb.SIGRTMAXMINUS2
    assert stop_signal_name(cfg, {}) == "SIGRTMAX-2"
    assert parse_signal("SIGUSR1") == parse_signal("usr1") == signal.SIGUSR1
    assert parse_signal("9") == 9
    assert parse_signal("SIGRTMIN+3") == signal.SIGRTMIN + 3
    assert parse_signal("SIGRTMAX-2") == signal.SIGRTMAX - 2
    assert parse_signal("SIGCLD") == signal.SIGCHLD
    with pytest.raises(errdefs.InvalidArgument):
        parse_signal("SIGNOPE")
    assert signal_enum("SIGUSR1") == pb.SIGUSR1
    assert signal_enum("SIGRTMIN+3") == pb.SIGRTMINPLUS3
    assert signal_enum("9") == pb.RUNTIME_DEFAULT


def test_sandbox_user_from_the_image_passwd(tmp_path: Path) -> None:
    """The infra process's user as containerd's sandbox spec: run_as_user[:run_as_group], else the
    sandbox image's User, resolved in the image's /etc/passwd (a listed uid takes its group, an
    unlisted one group 0); without the files a user that needs them stays root until they come."""
    pods = Sandboxes(config=_config(False), images=None, containers=None, tasks=None,  # type: ignore[arg-type]
                     state_dir=tmp_path, cni=None)
    files = RootfsFiles("root:x:0:0::/:/bin/sh\npause:x:65535:65532::/:/bin/false\n",
                        "root:x:0:\npause:x:65532:\nextra:x:700:pause\n")

    def user(image_user: str = "", files: RootfsFiles | None = None, **sc: Any) -> dict[str, Any]:
        cfg = pb.PodSandboxConfig(metadata=pb.PodSandboxMetadata(name="p", namespace="n", uid="u"))
        cfg.linux.security_context.MergeFrom(pb.LinuxSandboxSecurityContext(**sc))
        spec = pods._spec("s" * 64, cfg, {"config": {"Cmd": ["pause"], "User": image_user}}, "/run/netns/x",
                          files=files)
        return dict(spec["process"]["user"])

    uid = pb.Int64Value
    assert user(files=files, run_as_user=uid(value=65535)) == {"uid": 65535, "gid": 65532, "additionalGids": [65532]}
    assert user(files=files, run_as_user=uid(value=1234)) == {"uid": 1234, "gid": 0, "additionalGids": [0]}
    assert user(run_as_user=uid(value=5), run_as_group=uid(value=6)) == {"uid": 5, "gid": 6, "additionalGids": [6]}
    assert user("pause", files) == {"uid": 65535, "gid": 65532, "additionalGids": [65532]}
    assert user("65535", files) == {"uid": 65535, "gid": 65532, "additionalGids": [65532]}
    assert user("pause", None)["uid"] == 0  # until the caller has read the files
    assert user("", files) == {"uid": 0, "gid": 0}
    with pytest.raises(errdefs.InvalidArgument, match="without user"):
        user(files=files, run_as_group=uid(value=6))


def test_container_status_resources_from_the_spec() -> None:
    """ContainerStatus.resources as containerd 1.6's copyResourcesToStatus: the spec's linux.resources
    and the process's oom_score_adj; an empty ContainerResources without a linux section."""
    spec = {"process": {"oomScoreAdj": 900}, "linux": {"resources": {
        "cpu": {"period": 100000, "quota": -1, "shares": 2, "cpus": "0-1", "mems": "0"},
        "memory": {"limit": 1 << 30, "swap": 2 << 30}, "devices": [{"allow": False, "access": "rwm"}],
        "hugepageLimits": [{"pageSize": "2MB", "limit": 4 << 20}], "unified": {"memory.high": "max"}}}}
    got = runtime._container_resources(spec)
    assert got == pb.ContainerResources(linux=pb.LinuxContainerResources(
        cpu_period=100000, cpu_quota=-1, cpu_shares=2, cpuset_cpus="0-1", cpuset_mems="0",
        memory_limit_in_bytes=1 << 30, memory_swap_limit_in_bytes=2 << 30, oom_score_adj=900,
        hugepage_limits=[pb.HugepageLimit(page_size="2MB", limit=4 << 20)], unified={"memory.high": "max"}))
    assert runtime._container_resources({"linux": {}}) == pb.ContainerResources(linux=pb.LinuxContainerResources())
    assert not runtime._container_resources({}).HasField("linux")


def test_a_pods_containers_see_it_as_the_task_manager_knows_it(tmp_path: Path) -> None:
    """get(known=True), for CreateContainer/StartContainer: a pod this daemon ran is answered from
    memory while the task manager knows its task runs (no record read, no State call to its shim);
    once it does not know (an exit seen, a restart), the record and the shim are asked again."""

    class Tasks:
        pid = 0

        def running_pid(self, namespace: str, cid: str) -> int:
            return self.pid

        def has_task(self, namespace: str, cid: str) -> bool:
            return False

    class Store:
        reads = 0

        async def get(self, namespace: str, cid: str) -> Any:
            self.reads += 1
            raise errdefs.NotFound(f"container {cid!r}")

        async def list(self, namespace: str, filters: Any = ()) -> list[Any]:
            self.reads += 1
            return []

    tasks, store = Tasks(), Store()
    pods = Sandboxes(config=_config(False), images=None, containers=store, tasks=tasks,  # type: ignore[arg-type]
                     state_dir=tmp_path, cni=None)
    cfg = pb.PodSandboxConfig(metadata=pb.PodSandboxMetadata(name="p", namespace="n", uid="u"))
    pods._known["s1"] = Sandbox(id="s1", config=cfg, created_at_ns=1, netns="", ip="", additional_ips=[],
                                ready=True, pid=0)
    tasks.pid = 4242
    sb = asyncio.run(pods.get("s1", known=True))
    assert (sb.id, sb.ready, sb.pid, sb.config.metadata.name, store.reads) == ("s1", True, 4242, "p", 0)
    with pytest.raises(errdefs.NotFound):  # the other callers always read the record
        asyncio.run(pods.get("s1"))
    assert store.reads > 0
    tasks.pid, store.reads = 0, 0  # its exit seen: the record and the shim decide
    with pytest.raises(errdefs.NotFound):
        asyncio.run(pods.get("s1", known=True))
    assert store.reads > 0


def test_container_names_kept_in_memory(tmp_path: Path) -> None:
    """CreateContainer's name check: the stored names are read once, then kept through the
    daemon's own creates and removes; a name that looks taken is checked against the store
    (a record removed by other means frees it)."""
    from pycontainerd.cri.sandbox import CONTAINER_EXT, KIND_CONTAINER, KIND_LABEL, ext_value
    from pycontainerd.metadata.containers import Container

    class Store:
        def __init__(self) -> None:
            self.records: list[Container] = []
            self.reads = 0

        async def list(self, namespace: str, filters: Any = ()) -> list[Container]:
            self.reads += 1
            return list(self.records)

    def record(name: str) -> Container:
        return Container(id=name, labels={KIND_LABEL: KIND_CONTAINER},
                         extensions={CONTAINER_EXT: ext_value({"name": name})})

    store = Store()
    store.records = [record("old")]
    ctrs = Containers(pods=None, images=None, containers=store, tasks=None,  # type: ignore[arg-type]
                      state_dir=tmp_path, max_log_line=16384, features=HandlerFeatures({}, None))

    async def main() -> None:
        assert not await ctrs._name_taken("a")
        assert store.reads == 1
        assert not await ctrs._name_taken("b")
        assert store.reads == 1  # from memory
        assert await ctrs._name_taken("old")  # read once, confirmed by the store
        ctrs._name_kept("a", True)  # a create of ours
        store.records.append(record("a"))
        assert await ctrs._name_taken("a")
        store.records = []  # removed behind our back (ctr containers rm)
        assert not await ctrs._name_taken("a")
        assert not await ctrs._name_taken("old")
        reads = store.reads
        assert not await ctrs._name_taken("old")
        assert store.reads == reads  # the store's answer was kept
        ctrs._name_kept("c", True)
        ctrs._name_kept("c", False)  # created and removed by us
        assert not await ctrs._name_taken("c")
        assert store.reads == reads

    asyncio.run(main())
