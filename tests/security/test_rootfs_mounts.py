"""Rootfs mounts of ``Tasks.Create`` stay inside the bundle, and none outlives a killed shim.

A ``containerd.types.Mount`` carries a ``target`` (a sub-path of the rootfs, containerd 1.7+).
It is resolved with the bundle's rootfs as ``/`` (``..`` stops at it, symlinks are followed
inside it), as containerd's ``fs.RootPath`` does, so a request cannot mount onto a host path.
When the shim is killed with SIGKILL the daemon notices, and unmounts every mount of the
task's rootfs, stacked or nested, before it reports the task stopped.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from pycontainerd.api.services.containers.v1 import containers_pb2
from pycontainerd.api.services.tasks.v1 import tasks_pb2
from pycontainerd.api.types import mount_pb2
from pycontainerd.api.types.task import task_pb2
from tests.fixtures.procs import remove_tree, wait_for
from tests.integration.daemon import Daemon, mounts_under, running_daemon, unmount_all
from tests.integration.test_tasks_lifecycle import Api, oci_spec

pytestmark = pytest.mark.root


@pytest.fixture
def daemon() -> Iterator[Daemon]:
    if os.geteuid() != 0:
        pytest.skip("needs root")
    with running_daemon() as d:
        yield d


@pytest.fixture
def host_dir() -> Iterator[Path]:
    """A host directory the request tries to mount onto (unmounted and removed afterwards)."""
    path = Path(tempfile.mkdtemp(prefix="pycd-sec-escape-", dir="/tmp"))
    (path / "mt").mkdir()
    try:
        yield path
    finally:
        unmount_all(str(path))  # what the old code leaked there
        remove_tree(path)


def test_rootfs_target_is_confined_and_shim_kill_leaves_no_mount(
    daemon: Daemon, host_dir: Path, tmp_path: Path
) -> None:
    from tests.integration.test_tasks_lifecycle import APPLETS, BUSYBOX

    # a busybox rootfs that also holds the escaping path, so the confined mount succeeds
    image = tmp_path / "image"
    for d in ("bin", "proc", "sys", "dev", "etc", "tmp"):
        (image / d).mkdir(parents=True)
    (image / host_dir.relative_to("/") / "mt").mkdir(parents=True)
    (image / "bin" / "busybox").write_bytes(Path(BUSYBOX).read_bytes())
    (image / "bin" / "busybox").chmod(0o755)
    for a in APPLETS:
        (image / "bin" / a).symlink_to("busybox")

    cid = f"sec-escape-{secrets.token_hex(4)}"
    api = Api(daemon.address)
    try:
        spec = oci_spec("default", cid, ["sleep", "1000"], image)
        spec["root"] = {"path": "rootfs", "readonly": True}
        api.create_container(cid, spec)
        escape = "../" * 40 + str(host_dir.relative_to("/")) + "/mt"
        rootfs = [
            mount_pb2.Mount(type="bind", source=str(image), options=["rbind", "rw"]),
            mount_pb2.Mount(type="tmpfs", source="sec-escape", target=escape, options=["size=1m"]),
        ]
        api.tasks.Create(
            tasks_pb2.CreateTaskRequest(container_id=cid, rootfs=rootfs), metadata=api.md, timeout=60
        )
        bundle = daemon.state / "io.containerd.runtime.v2.task" / "default" / cid

        # nothing on the host path; the tmpfs is inside the bundle's rootfs
        assert mounts_under(str(host_dir)) == []
        inside = bundle / "rootfs" / host_dir.relative_to("/") / "mt"
        assert str(inside) in mounts_under(str(bundle)), mounts_under(str(bundle))

        api.tasks.Start(tasks_pb2.StartRequest(container_id=cid), metadata=api.md, timeout=60)
        meta = json.loads((bundle / "daemon-task.json").read_text())
        os.kill(meta["shim_pid"], signal.SIGKILL)

        def stopped() -> bool:
            # answers while the daemon is still cleaning up, too (it waits for the tombstone)
            r = api.tasks.Get(tasks_pb2.GetRequest(container_id=cid), metadata=api.md, timeout=20)
            return r.process.status == task_pb2.STOPPED

        wait_for(stopped, 30, "the daemon to notice the dead shim")
        assert mounts_under(str(bundle)) == []
        assert mounts_under(str(host_dir)) == []
        api.tasks.Delete(tasks_pb2.DeleteTaskRequest(container_id=cid), metadata=api.md, timeout=30)
        assert mounts_under(str(daemon.base)) == []
    finally:
        try:
            api.tasks.Kill(tasks_pb2.KillRequest(container_id=cid, signal=9, all=True), metadata=api.md)
        except grpc.RpcError:
            pass
        try:
            api.tasks.Delete(tasks_pb2.DeleteTaskRequest(container_id=cid), metadata=api.md, timeout=30)
        except grpc.RpcError:
            pass
        try:
            api.containers.Delete(containers_pb2.DeleteContainerRequest(id=cid), metadata=api.md, timeout=30)
        except grpc.RpcError:
            pass
        api.close()


@pytest.mark.parametrize("side", ["daemon", "shim"])
def test_mount_target_stays_inside_and_unmounts_with_the_root(tmp_path: Path, side: str) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root")
    from pycontainerd import mountopts
    from pycontainerd.mount import core
    from pycontainerd.mount import mount as daemon_mount
    from pycontainerd.shim import service as shim_service

    root = tmp_path / "root"
    root.mkdir()
    image = tmp_path / "image"  # holds the escaping path, so the confined mount has its directory
    (image / str(tmp_path.relative_to("/")) / "outside").mkdir(parents=True)
    (tmp_path / "outside").mkdir()
    escape = "../" * 20 + str(tmp_path.relative_to("/")) + "/outside"
    try:
        if side == "daemon":
            daemon_mount.mount_all(
                [
                    daemon_mount.Mount("bind", str(image), ["rbind"]),
                    daemon_mount.Mount("tmpfs", "sub", ["size=1m"], target=escape),
                ],
                root,
            )
        else:
            # the shim's path: the Create request's mounts (dicts) through mount.core
            core.mount_all(
                [
                    shim_service._mount({"type": "bind", "source": str(image), "options": ["rbind"]}),
                    shim_service._mount({"type": "tmpfs", "source": "sub", "target": escape, "options": ["size=1m"]}),
                ],
                str(root),
            )
        inside = str(root / str(tmp_path.relative_to("/")) / "outside")
        assert mountopts.mountpoints_under(str(tmp_path / "outside"), include_root=True) == []
        assert inside in mountopts.mountpoints_under(str(root))
        if side == "daemon":
            daemon_mount.unmount_all(root)  # the nested one first, then the base
        else:
            core.unmount_all(str(root))  # as the shim's delete and cleanup do
        assert mountopts.mountpoints_under(str(root), include_root=True) == []
    finally:
        for mp in mountopts.mountpoints_under(str(tmp_path), include_root=True):
            subprocess.run(["umount", "-l", mp], check=False, capture_output=True)
