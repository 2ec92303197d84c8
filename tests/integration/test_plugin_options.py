"""Plugin options through a real daemon started with a config file: each option we accept
works, and one we cannot honour stops the start-up with a message naming the key.

- overlayfs: ``mount_options`` in the mounts ctr prints, ``upperdir_label`` in ``ctr
  snapshots info``, ``sync_remove`` (directory gone when Remove returns) vs the default
  (left to the GC's cleanup), ``slow_chown = true`` refused;
- native: ``root_path`` holds the snapshots;
- runc options of the default runtime: ``BinaryName`` runs our runc wrapper, which sees
  ``--no-pivot`` (``NoPivotRoot``) and ``--no-new-keyring`` (``NoNewKeyring``) on ``create``
  and stdio pipes owned by ``IoUid``/``IoGid`` (runc then gives the owner to the process's
  user and keeps the group, so the container sees ``0:IoGid``).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import any_pb2

from pycontainerd.api.services.containers.v1 import containers_pb2, containers_pb2_grpc
from tests.fixtures.procs import wait_for

from .daemon import Daemon, running_daemon

pytestmark = pytest.mark.root

OVERLAY = "io.containerd.snapshotter.v1.overlayfs"
SPEC_URL = "types.containerd.io/opencontainers/runtime-spec/1/Spec"


@pytest.fixture
def base() -> Iterator[Path]:
    d = Path(tempfile.mkdtemp(prefix="pycd-opts-", dir="/tmp"))
    try:
        yield d
    finally:
        subprocess.run(["rm", "-rf", "--one-file-system", str(d)], check=False)


def _overlay_dir(d: Daemon) -> Path:
    return d.root / OVERLAY / "snapshots"


def test_overlay_options(base: Path) -> None:
    conf = (
        f'version = 2\n[plugins."{OVERLAY}"]\nmount_options = ["nodev"]\nupperdir_label = true\nsync_remove = true\n'
    )
    with running_daemon(conf) as d:
        d.ctr("snapshots", "--snapshotter", "overlayfs", "prepare", "base")
        d.ctr("snapshots", "--snapshotter", "overlayfs", "commit", "layer", "base")
        d.ctr("snapshots", "--snapshotter", "overlayfs", "prepare", "top", "layer")
        mounts = d.ctr("snapshots", "--snapshotter", "overlayfs", "mounts", str(base), "top").stdout
        assert mounts.startswith("mount -t overlay") and mounts.strip().endswith(",nodev")
        info = json.loads(d.ctr("snapshots", "--snapshotter", "overlayfs", "info", "top").stdout)
        upper = Path(info["Labels"]["containerd.io/snapshot/overlay.upperdir"])
        assert upper.is_dir() and upper.is_relative_to(_overlay_dir(d))
        before = {p.name for p in _overlay_dir(d).iterdir()}
        d.ctr("snapshots", "--snapshotter", "overlayfs", "rm", "top")
        after = {p.name for p in _overlay_dir(d).iterdir()}
        assert after == before - {upper.parent.name}  # removed within Remove


def test_overlay_default_removal_is_left_to_the_collector() -> None:
    with running_daemon() as d:
        d.ctr("snapshots", "--snapshotter", "overlayfs", "prepare", "a")
        info = json.loads(d.ctr("snapshots", "--snapshotter", "overlayfs", "info", "a").stdout)
        assert "containerd.io/snapshot/overlay.upperdir" not in info.get("Labels", {})  # label off by default
        mounts = d.ctr("snapshots", "--snapshotter", "overlayfs", "mounts", "/tmp/x", "a").stdout
        assert "nodev" not in mounts
        d.ctr("snapshots", "--snapshotter", "overlayfs", "rm", "a")
        # the GC's cleanup, run after the collection the removal scheduled, deletes the directory
        wait_for(lambda: not any(_overlay_dir(d).iterdir()), 20, "the removed snapshot's directory to go")


def _refused(base: Path, config: str) -> str:
    """Start a daemon that must refuse its config: its exit status is 1, its stderr is returned."""
    d = Daemon(base, config)
    try:
        r = subprocess.run(d.command(), capture_output=True, text=True, timeout=60)
        assert r.returncode == 1, r.stderr
        assert not Path(d.address).exists()
        return r.stderr
    finally:
        d.cleanup()


def test_overlay_slow_chown_is_refused_naming_the_key(base: Path) -> None:
    err = _refused(base, f'version = 2\n[plugins."{OVERLAY}"]\nslow_chown = true\n')
    key = f'plugins."{OVERLAY}".slow_chown'
    assert f'invalid configuration: {base / "config.toml"}: {key}: True is not supported' in err


def test_native_root_path(base: Path) -> None:
    where = base / "native-elsewhere"
    with running_daemon(f'version = 2\n[plugins."io.containerd.snapshotter.v1.native"]\nroot_path = "{where}"\n') as d:
        d.ctr("snapshots", "--snapshotter", "native", "prepare", "n1")
        mounts = d.ctr("snapshots", "--snapshotter", "native", "mounts", "/tmp/x", "n1").stdout
        assert str(where / "snapshots") in mounts
        assert len(list((where / "snapshots").iterdir())) == 1
        assert not (d.root / "io.containerd.snapshotter.v1.native" / "snapshots").exists()


def test_a_bad_plugin_value_is_refused_naming_file_and_key(base: Path) -> None:
    # a section the model does not type: decoded when the plugin loads, before anything starts
    err = _refused(base, 'version = 2\n[plugins."io.containerd.snapshotter.v1.native"]\nroot_path = 7\n')
    key = 'plugins."io.containerd.snapshotter.v1.native".root_path'
    assert f"invalid configuration: {base / 'config.toml'}: {key}: expected a string, got integer 7" in err


# -- runc options ------------------------------------------------------------------------------------
def _rootfs(base: Path) -> Path:
    root = base / "rootfs"
    for sub in ("bin", "proc", "dev", "sys", "tmp"):
        (root / sub).mkdir(parents=True)
    shutil.copy2(shutil.which("busybox") or "/bin/busybox", root / "bin" / "busybox")
    for applet in ("sh", "stat", "cat"):
        (root / "bin" / applet).symlink_to("busybox")
    return root


def _spec(cid: str, root: Path, args: list[str]) -> dict[str, Any]:
    return {
        "ociVersion": "1.0.2-dev",
        "process": {"terminal": False, "user": {"uid": 0, "gid": 0}, "args": args, "env": ["PATH=/bin"],
                    "cwd": "/", "noNewPrivileges": True},
        "root": {"path": str(root), "readonly": True},
        "hostname": cid,
        "mounts": [{"destination": "/proc", "type": "proc", "source": "proc", "options": ["nosuid", "noexec"]}],
        "linux": {"cgroupsPath": f"/default/{cid}",
                  "namespaces": [{"type": t} for t in ("pid", "ipc", "uts", "mount", "network")]},
    }


def test_runc_options_reach_runc_and_the_shim(base: Path) -> None:
    runc = shutil.which("runc")
    assert runc is not None
    log = base / "runc-args.log"
    wrapper = base / "runc-wrapper"
    # the wrapper records its arguments and, for create, who owns the stdio runc is handed
    wrapper.write_text(
        "#!/bin/sh\n"
        f'case " $* " in *" create "*) echo stdio $(stat -L -c %u:%g /proc/$$/fd/1 /proc/$$/fd/2) >> {log};; esac\n'
        f'echo "$*" >> {log}\n'
        f'exec {runc} "$@"\n'
    )
    wrapper.chmod(0o755)
    rootfs = _rootfs(base)
    conf = (
        'version = 2\n[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]\n'
        f'BinaryName = "{wrapper}"\nNoPivotRoot = true\nNoNewKeyring = true\nIoUid = 1234\nIoGid = 2345\n'
    )
    with running_daemon(conf) as d:
        channel = grpc.insecure_channel(f"unix:{d.address}")
        try:
            c = containers_pb2.Container(
                id="opts",
                spec=any_pb2.Any(type_url=SPEC_URL, value=json.dumps(
                    _spec("opts", rootfs, ["sh", "-c", "stat -L -c %u:%g /proc/self/fd/1 /proc/self/fd/2"])
                ).encode()),
            )
            c.runtime.name = "io.containerd.runc.v2"
            containers_pb2_grpc.ContainersStub(channel).Create(
                containers_pb2.CreateContainerRequest(container=c), metadata=(("containerd-namespace", "default"),)
            )
            out = d.ctr("tasks", "start", "opts", timeout=60).stdout
            lines = log.read_text().splitlines()
            # the shim gives the pipes to IoUid:IoGid before runc create ...
            assert [ln.split()[1:] for ln in lines if ln.startswith("stdio ")] == [["1234:2345", "1234:2345"]], lines
            # ... and runc, as it does, hands the owner to the process's user but keeps the group
            assert out.split() == ["0:2345", "0:2345"]
            creates = [ln.split() for ln in lines if not ln.startswith("stdio ") and " create " in f" {ln} "]
            assert len(creates) == 1, lines
            assert "--no-pivot" in creates[0] and "--no-new-keyring" in creates[0]
        finally:
            d.ctr("tasks", "rm", "-f", "opts", check=False)
            d.ctr("containers", "rm", "opts", check=False)
            channel.close()


def test_runc_options_we_cannot_honour_are_refused(base: Path) -> None:
    err = _refused(base, 'version = 2\n[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]\n'
                         'CriuPath = "/usr/sbin/criu"\n')
    assert "runtimes.runc.options.CriuPath: '/usr/sbin/criu' is not supported" in err



def test_runc_inherits_only_its_stdio_from_the_shim(base: Path) -> None:
    """Our shims are forked from the daemon's launcher, which its spawner (uvloop) left
    holding inheritable copies of its stdio (the daemon's socket, /dev/null, daemon.log):
    runc, run by the shim, must not get them."""
    runc = shutil.which("runc")
    assert runc is not None
    log = base / "runc-fds.log"
    wrapper = base / "runc-wrapper"
    # the wrapper records, for each runc command, the descriptors it would pass on (those
    # without close-on-exec) beyond its stdio, then runs runc
    wrapper.write_text(
        "#!/usr/bin/python3 -I\n"
        "import os, sys\n"
        "fds = []\n"
        "for name in sorted(os.listdir('/proc/self/fd'), key=int):\n"
        "    fd = int(name)\n"
        "    try:\n"
        "        if fd > 2 and os.get_inheritable(fd):\n"
        "            fds.append(f'{fd}={os.readlink(f\"/proc/self/fd/{fd}\")}')\n"
        "    except OSError:\n"
        "        pass\n"
        f"with open({str(log)!r}, 'a') as f:\n"
        "    cmd = next((a for a in sys.argv[1:] if a in ('create', 'start', 'kill', 'delete', 'state')), '?')\n"
        "    f.write(cmd + '|' + ' '.join(fds) + '\\n')\n"
        f"os.execv({runc!r}, [{runc!r}, *sys.argv[1:]])\n"
    )
    wrapper.chmod(0o755)
    rootfs = _rootfs(base)
    conf = (
        'version = 2\n[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]\n'
        f'BinaryName = "{wrapper}"\n'
    )
    with running_daemon(conf) as d:
        channel = grpc.insecure_channel(f"unix:{d.address}")
        try:
            c = containers_pb2.Container(
                id="fds",
                spec=any_pb2.Any(
                    type_url=SPEC_URL, value=json.dumps(_spec("fds", rootfs, ["sh", "-c", "true"])).encode()
                ),
            )
            c.runtime.name = "io.containerd.runc.v2"
            containers_pb2_grpc.ContainersStub(channel).Create(
                containers_pb2.CreateContainerRequest(container=c), metadata=(("containerd-namespace", "default"),)
            )
            d.ctr("tasks", "start", "fds", timeout=60)
        finally:
            d.ctr("tasks", "rm", "-f", "fds", check=False)
            d.ctr("containers", "rm", "fds", check=False)
            channel.close()
        lines = log.read_text().splitlines()
        assert lines, "the wrapper never ran"
        assert any(ln.startswith("create|") for ln in lines), lines
        assert [ln for ln in lines if not ln.endswith("|")] == [], lines
