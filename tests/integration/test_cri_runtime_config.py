"""Per-runtime-handler CRI options on our daemon and on containerd 1.6's CRI, same config.

``[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.<name>]`` keys beyond the runtime itself:

- ``base_runtime_spec`` (containerd 1.4+): a JSON OCI spec (``ctr oci spec`` with an RLIMIT_NOFILE
  of 4242, ``noNewPrivileges`` and an annotation) the handler's containers start from, the CRI's
  settings on top; the pod's infra spec does not use it (containerd passes no base for the sandbox).
- ``cni_conf_dir``/``cni_max_conf_num`` (1.5+): the handler's pods networked from their own conf
  dir (two bridge networks on subnets of their own; max 2, so eth0 and eth1), the default dir
  (one network) for the others.
- ``snapshotter`` (1.7+): Debian's containerd 1.6 lacks it (``containerd config default`` lists no
  such key for a runtime), so that test runs on our daemon alone: the handler's pods and containers
  are snapshots of ``native`` (``ctr -n k8s.io snapshots --snapshotter native ls``), PullImage with
  that runtime handler unpacks there.

A missing base spec file fails the CRI plugin on both, the error naming the file (ours also the key).
"""

from __future__ import annotations

import contextlib
import json
import random
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from ipaddress import ip_address, ip_network
from pathlib import Path
from typing import Any

import grpc
import pytest

from pycontainerd.api.cri.runtime.v1 import api_pb2 as pb
from pycontainerd.api.cri.runtime.v1 import api_pb2_grpc as pb_grpc
from tests.fixtures.containerd import CTR, CriOptions, cri_config, running_containerd
from tests.fixtures.procs import remove_tree, wait_for

from .daemon import running_daemon
from .test_cri_pods import PYCRICTL, Engine, Setup, _ours, _theirs, busybox, container_config, pod_config, setup  # noqa: F401

pytestmark = pytest.mark.root
# ruff: noqa: F811 - the fixtures imported above are parameters here

NOFILE = 4242
MARKER = "base.example.com/marker"


def _base_spec() -> dict[str, Any]:
    spec = json.loads(subprocess.run([CTR, "oci", "spec"], check=True, capture_output=True, text=True).stdout)
    spec["process"]["rlimits"] = [{"type": "RLIMIT_NOFILE", "hard": NOFILE, "soft": NOFILE}]
    spec["process"]["noNewPrivileges"] = True
    spec["annotations"] = {MARKER: "yes"}
    return spec


@dataclass
class HandlerFiles:
    base: Path
    spec: Path
    net_dir: Path
    subnets: tuple[str, str]
    bridges: tuple[str, str]

    def runtimes(self, *, snapshotter: bool) -> dict[str, str]:
        out = {
            "based": f'runtime_type = "io.containerd.runc.v2"\nbase_runtime_spec = "{self.spec}"',
            "othernet": f'runtime_type = "io.containerd.runc.v2"\ncni_conf_dir = "{self.net_dir}"\n'
                        "cni_max_conf_num = 2",
        }
        if snapshotter:
            out["nativesn"] = 'runtime_type = "io.containerd.runc.v2"\nsnapshotter = "native"'
        return out


@contextlib.contextmanager
def _handler_files() -> Iterator[HandlerFiles]:
    """The base spec and a conf dir of two bridge networks (subnets and bridges of their own, no
    iptables: no ipMasq, no portmap); the bridges and IPAM state go at the end."""
    base = Path(tempfile.mkdtemp(prefix="pycd-crirtcfg-", dir="/tmp"))
    tag = f"{random.randrange(16**6):06x}"
    third = random.randrange(1, 255)
    files = HandlerFiles(base, base / "base-spec.json", base / "net.d",
                         (f"10.235.{third}.0/24", f"10.236.{third}.0/24"), (f"pycdha{tag}", f"pycdhb{tag}"))
    forward = Path("/proc/sys/net/ipv4/ip_forward").read_text()
    try:
        files.spec.write_text(json.dumps(_base_spec()))
        files.net_dir.mkdir()
        for i, (subnet, bridge) in enumerate(zip(files.subnets, files.bridges, strict=True)):
            (files.net_dir / f"{10 + i}-h{i}.conflist").write_text(json.dumps({
                "cniVersion": "0.4.0", "name": f"pycd-h{i}-{tag}",
                "plugins": [{"type": "bridge", "bridge": bridge, "isGateway": True, "ipMasq": False,
                             "ipam": {"type": "host-local", "ranges": [[{"subnet": subnet}]],
                                      "dataDir": str(base / "ipam")}}]}))
        yield files
    finally:
        for bridge in files.bridges:
            subprocess.run(["ip", "link", "del", bridge], capture_output=True, check=False)
        Path("/proc/sys/net/ipv4/ip_forward").write_text(forward)
        remove_tree(base)


@dataclass
class Rig:
    engine: Engine
    files: HandlerFiles


@pytest.fixture(scope="module")
def ours_c(setup: Setup) -> Iterator[Rig]:
    with _handler_files() as files, _ours(setup, runtimes=files.runtimes(snapshotter=True)) as e:
        yield Rig(e, files)


@pytest.fixture(scope="module")
def theirs_c(setup: Setup) -> Iterator[Rig]:
    with _handler_files() as files, _theirs(setup, runtimes=files.runtimes(snapshotter=False)) as e:
        yield Rig(e, files)


@pytest.fixture(params=["pycontainerd", "containerd"])
def rig(request: pytest.FixtureRequest) -> Rig:
    r = request.getfixturevalue("ours_c" if request.param == "pycontainerd" else "theirs_c")
    assert isinstance(r, Rig)
    return r


def _remove(engine: Engine, pod: str) -> None:
    engine.crictl("stopp", pod, check=False)
    engine.crictl("rmp", pod, check=False)


def _interfaces(pid: int) -> list[str]:
    lines = Path(f"/proc/{pid}/net/dev").read_text().splitlines()[2:]
    return sorted(line.split(":", 1)[0].strip() for line in lines)


def test_base_runtime_spec_is_the_base_of_the_handlers_containers(rig: Rig, busybox: str, tmp_path: Path) -> None:
    engine = rig.engine
    cfg = pod_config(tmp_path)
    pod = engine.crictl("runp", "--runtime", "based", str(cfg)).stdout.strip()
    try:
        pspec = engine.crictl_json("inspectp", pod)["info"]["runtimeSpec"]
        # the infra process's spec is the CRI's own: no base for the sandbox
        assert MARKER not in pspec.get("annotations", {})
        assert NOFILE not in [r.get("hard") for r in pspec["process"].get("rlimits") or []]
        engine.crictl("pull", busybox)
        cid = engine.crictl("create", pod, str(container_config(tmp_path, busybox, "sleep 100000")),
                            str(cfg)).stdout.strip()
        spec = engine.crictl_json("inspect", cid)["info"]["runtimeSpec"]
        # the base's rlimits and annotations stay, the CRI's settings are on top of them
        assert spec["process"]["rlimits"] == [{"type": "RLIMIT_NOFILE", "hard": NOFILE, "soft": NOFILE}]
        assert spec["annotations"][MARKER] == "yes"
        assert spec["annotations"]["io.kubernetes.cri.container-type"] == "container"
        assert "GREETING=hello" in spec["process"]["env"]
        assert not spec["process"].get("noNewPrivileges")  # set only when the security context asks
        assert "/run" not in [m["destination"] for m in spec["mounts"]]
        assert "/etc/hosts" in [m["destination"] for m in spec["mounts"]]
        assert spec["root"]["path"].endswith("rootfs")
        assert spec["linux"]["cgroupsPath"].endswith(cid)
        engine.crictl("start", cid)
        assert engine.crictl("exec", "-s", cid, "sh", "-c", "ulimit -n").stdout.strip() == str(NOFILE)
        # a container of the default handler starts from the CRI's default spec
        pod2cfg = pod_config(tmp_path)
        pod2 = engine.crictl("runp", str(pod2cfg)).stdout.strip()
        try:
            cid2 = engine.crictl("create", pod2, str(container_config(tmp_path, busybox, "sleep 100000", name="d")),
                                 str(pod2cfg)).stdout.strip()
            spec2 = engine.crictl_json("inspect", cid2)["info"]["runtimeSpec"]
            assert MARKER not in spec2["annotations"] and "rlimits" not in spec2["process"]
        finally:
            _remove(engine, pod2)
    finally:
        _remove(engine, pod)


def test_cni_conf_dir_networks_the_handlers_pods(rig: Rig, tmp_path: Path) -> None:
    engine = rig.engine
    other = engine.crictl("runp", "--runtime", "othernet", str(pod_config(tmp_path))).stdout.strip()
    default = engine.crictl("runp", str(pod_config(tmp_path))).stdout.strip()
    try:
        oinfo, dinfo = engine.crictl_json("inspectp", other), engine.crictl_json("inspectp", default)
        # the handler's conf dir: its first network's range for the pod IP, both networks
        # (cni_max_conf_num = 2) as eth0 and eth1
        first = ip_network(rig.files.subnets[0])
        assert ip_address(oinfo["status"]["network"]["ip"]) in first, oinfo["status"]["network"]
        assert _interfaces(int(oinfo["info"]["pid"])) == ["eth0", "eth1", "lo"]
        # the default's: the engine's own network (max_conf_num 1), not the handler's
        assert ip_address(dinfo["status"]["network"]["ip"]) in ip_network(engine.opts.subnet)
        assert _interfaces(int(dinfo["info"]["pid"])) == ["eth0", "lo"]
    finally:
        _remove(engine, other)
        _remove(engine, default)
    # torn down with the handler's networks too: their IPAM leases are gone
    leases = [p for p in (rig.files.base / "ipam").rglob("*") if p.is_file() and p.name[:1].isdigit()]
    assert leases == [], leases


def _native_snapshots(engine: Engine) -> set[str]:
    out = engine.ctr("snapshots", "--snapshotter", "native", "ls").splitlines()[1:]
    return {line.split()[0] for line in out if line.strip()}


def test_snapshotter_of_a_handler_ours_only(ours_c: Rig, busybox: str, tmp_path: Path) -> None:
    """containerd 1.7's per-runtime snapshotter (1.6 has no such key): PullImage for the handler
    unpacks into it; its pods and containers are snapshots of it, the sandbox image unpacked there
    when the pod needs it (it was pulled for the default snapshotter)."""
    e = ours_c.engine
    with grpc.insecure_channel(f"unix:{e.address}") as ch:
        img = pb_grpc.ImageServiceStub(ch)
        ref = img.PullImage(pb.PullImageRequest(image=pb.ImageSpec(image=busybox, runtime_handler="nativesn")),
                            timeout=120).image_ref
        chain = json.loads(img.ImageStatus(pb.ImageStatusRequest(image=pb.ImageSpec(image=ref), verbose=True),
                                           timeout=60).info["info"])["chainID"]
    assert chain in _native_snapshots(e)
    cfg = pod_config(tmp_path)
    pod = e.crictl("runp", "--runtime", "nativesn", str(cfg)).stdout.strip()
    try:
        assert json.loads(e.ctr("containers", "info", pod))["Snapshotter"] == "native"
        cid = e.crictl("create", pod, str(container_config(tmp_path, busybox, "echo hi > /out; sleep 100000")),
                       str(cfg)).stdout.strip()
        assert json.loads(e.ctr("containers", "info", cid))["Snapshotter"] == "native"
        assert {pod, cid} <= _native_snapshots(e)
        e.crictl("start", cid)
        assert e.crictl("exec", "-s", cid, "cat", "/out").stdout.strip() == "hi"
        stats = e.crictl_json("stats", "-o", "json", "--id", cid)
        layer = stats["stats"][0]["writableLayer"]
        assert "native" in layer["fsId"]["mountpoint"], layer
        e.crictl("stop", cid)
        e.crictl("rm", cid)
        assert cid not in _native_snapshots(e)
    finally:
        _remove(e, pod)
    assert pod not in _native_snapshots(e)


@pytest.mark.parametrize("which", ["pycontainerd", "containerd"])
def test_a_missing_base_spec_fails_the_cri_plugin(which: str, setup: Setup, tmp_path: Path) -> None:
    missing = tmp_path / "no-such-spec.json"
    runtimes = {"based": f'runtime_type = "io.containerd.runc.v2"\nbase_runtime_spec = "{missing}"'}
    opts = CriOptions(sandbox_image=setup.pause_ref, runtimes=runtimes)
    if which == "containerd":
        if not Path("/usr/bin/containerd").exists():
            pytest.skip("needs containerd (apt-get install containerd)")
        ctx: Any = running_containerd(cri=opts)
    else:
        base = Path(tempfile.mkdtemp(prefix="pycd-crirtcfg-", dir="/tmp"))
        ctx = _ours_plain(base, cri_config(base, opts.resolved(), "overlayfs"))
    with ctx as d:
        r = subprocess.run([PYCRICTL, "-r", f"unix://{d.address}", "version"], capture_output=True, text=True,
                           timeout=60)
        assert r.returncode != 0  # no CRI served
        wait_for(lambda: str(missing) in Path(d.log).read_text(errors="replace"), 10, "the error in the log")
        log = Path(d.log).read_text(errors="replace")
        assert "failed to load base OCI spec" in log
        if which == "pycontainerd":
            assert 'containerd.runtimes.based.base_runtime_spec' in log
        plugins = subprocess.run([CTR, "-a", d.address, "plugins", "ls"], capture_output=True, text=True,
                                 check=True).stdout
        cri = [line for line in plugins.splitlines() if "io.containerd.grpc.v1" in line and " cri " in line]
        assert cri and cri[0].split()[-1] == "error", plugins


@contextlib.contextmanager
def _ours_plain(base: Path, cri: str) -> Iterator[Any]:
    try:
        with running_daemon("version = 2\n" + cri) as d:
            yield d
    finally:
        shutil.rmtree(base, ignore_errors=True)



def test_a_handler_naming_a_snapshotter_not_loaded_fails_the_cri_plugin_ours_only(setup: Setup) -> None:
    """(containerd 1.6 has no per-runtime snapshotter key; 1.7 fails only when a pod needs it.)"""
    runtimes = {"zfs": 'runtime_type = "io.containerd.runc.v2"\nsnapshotter = "zfs"'}
    opts = CriOptions(sandbox_image=setup.pause_ref, runtimes=runtimes).resolved()
    base = Path(tempfile.mkdtemp(prefix="pycd-crirtcfg-", dir="/tmp"))
    with _ours_plain(base, cri_config(base, opts, "overlayfs")) as d:
        wait_for(lambda: "containerd.runtimes.zfs.snapshotter" in Path(d.log).read_text(errors="replace"), 10,
                 "the error in the log")
        assert "'zfs': that snapshotter is not loaded" in Path(d.log).read_text(errors="replace")
        r = subprocess.run([PYCRICTL, "-r", f"unix://{d.address}", "version"], capture_output=True, text=True,
                           timeout=60)
        assert r.returncode != 0
