"""``containerd.runc.v1.Options`` reach runc through our task.v2 shim, and ``delete`` cleans up
after a dead shim — driven the way containerd drives a runtime v2 shim, with our ttrpc client.

runc is a wrapper (BinaryName) that logs its arguments and drops ``--systemd-cgroup`` (no
systemd here) before exec'ing the real runc, so every option is seen on runc's command line.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from google.protobuf import any_pb2, empty_pb2

from pycontainerd import errdefs
from pycontainerd.api.runtime.v2.runc.options import oci_pb2
from pycontainerd.api.runtime.v2.task import shim_pb2
from pycontainerd.api.types import mount_pb2
from pycontainerd.shim import v2layout
from pycontainerd.ttrpc import Client

from .shim_support import FifoReader, base_spec, build_rootfs, make_bundle, mounts_under, pid_alive, poll_until

pytestmark = pytest.mark.root

SHIM = Path(sys.executable).parent / "containerd-shim-pyrunc-v2"
TASK = "containerd.task.v2.Task"
NS = "pycd-v2opts"
WRAPPER = """#!/bin/sh
printf '%s\\n' "$*" >> {log}
for a do
  shift
  [ "$a" = "--systemd-cgroup" ] || set -- "$@" "$a"
done
exec {runc} "$@"
"""


@pytest.fixture(scope="module")
def busybox() -> Iterator[tuple[Path, dict[str, Any]]]:
    if os.geteuid() != 0:
        pytest.skip("needs root")
    if not SHIM.exists() or not shutil.which("runc"):
        pytest.skip("containerd-shim-pyrunc-v2 (pip install -e .) or runc missing")
    root = Path(tempfile.mkdtemp(prefix="pycd-v2opts-rootfs-"))
    try:
        yield build_rootfs(root), base_spec(root)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _options(**kw: Any) -> any_pb2.Any:
    return any_pb2.Any(type_url="containerd.runc.v1.Options", value=oci_pb2.Options(**kw).SerializeToString())


def _start(bundle: Path, cid: str, address: str, options: any_pb2.Any | None = None) -> str:
    r = subprocess.run(
        [str(SHIM), "-namespace", NS, "-address", address, "-publish-binary", "/usr/bin/containerd", "-id", cid,
         "start"],
        cwd=bundle, input=options.SerializeToString() if options else b"", capture_output=True, timeout=30,
        env={k: v for k, v in os.environ.items() if k != "TTRPC_ADDRESS"},
    )  # fmt: skip
    assert r.returncode == 0, r.stderr.decode()
    return r.stdout.decode()


class Env:
    def __init__(self, busybox: tuple[Path, dict[str, Any]]) -> None:
        self.rootfs, self.spec = busybox
        self.tmp = Path(tempfile.mkdtemp(prefix="pycd-v2opts-"))
        self.address = str(self.tmp / "containerd.sock")
        self.cids: list[str] = []
        self.roots: list[str] = [os.path.join(v2layout.DEFAULT_RUNC_ROOT, NS)]
        self.cgroups: list[str] = []

    def bundle(self, cid: str, args: list[str], **process: Any) -> Any:
        self.cids.append(cid)
        return make_bundle(self.tmp, self.spec, self.rootfs, cid, args, **process)

    def shim_pid(self, cid: str) -> int:
        with contextlib.suppress(OSError, ValueError):
            return int((self.tmp / cid / "shim.pid").read_text())
        return 0

    def cleanup(self) -> None:
        for cid in self.cids:
            for root in self.roots:
                if os.path.isdir(os.path.join(root, cid)):
                    subprocess.run(["runc", "--root", root, "delete", "--force", cid], capture_output=True, check=False)
            pid = self.shim_pid(cid)
            if pid and pid_alive(pid):
                os.kill(pid, signal.SIGKILL)
                poll_sync(lambda pid=pid: not pid_alive(pid))
            with contextlib.suppress(FileNotFoundError):
                os.unlink(v2layout.socket_address(self.address, NS, cid).removeprefix("unix://"))
        for m in reversed(mounts_under(self.tmp)):
            subprocess.run(["umount", "-l", m], capture_output=True, check=False)
        for root in self.roots:  # runc made them (our namespace's): gone when empty
            with contextlib.suppress(OSError):
                os.rmdir(root)
        for cg in self.cgroups:
            with contextlib.suppress(OSError):
                os.rmdir(cg)
        shutil.rmtree(self.tmp, ignore_errors=True)


def poll_sync(cond: Any, timeout: float = 10.0) -> None:
    asyncio.run(poll_until(cond, timeout=timeout, what="condition"))


@pytest.fixture
def env(busybox: tuple[Path, dict[str, Any]]) -> Iterator[Env]:
    e = Env(busybox)
    try:
        yield e
    finally:
        e.cleanup()


async def _call(client: Client, method: str, req: Any, resp: type[Any]) -> Any:
    return await client.call(TASK, method, req, resp, timeout=30, metadata={"containerd-namespace-ttrpc": NS})


def test_every_runc_option_reaches_runc(env: Env) -> None:
    cid = f"v2opts-{os.getpid()}"
    runc_log = env.tmp / "runc-args.log"
    wrapper = env.tmp / "runc-wrap"
    wrapper.write_text(WRAPPER.format(log=runc_log, runc=shutil.which("runc")))
    wrapper.chmod(0o755)
    runc_root = env.tmp / "runc-root"
    env.roots.append(str(runc_root / NS))
    shim_cg = f"pycd-shimcg-{os.getpid()}"
    cg_dir = Path("/sys/fs/cgroup/pids") / shim_cg
    cg_dir.mkdir()
    env.cgroups.append(str(cg_dir))
    bundle = env.bundle(cid, ["sh", "-c", "stat -L -c '%u %g' /proc/self/fd/1; id -u"], user={"uid": 1000, "gid": 1000})
    opts = _options(
        no_pivot_root=True, no_new_keyring=True, shim_cgroup=shim_cg, io_uid=1000, io_gid=1000,
        binary_name=str(wrapper), root=str(runc_root), systemd_cgroup=True,
    )  # fmt: skip
    address = _start(bundle.path, cid, env.address, opts)
    assert address == v2layout.socket_address(env.address, NS, cid)
    shim_pid = env.shim_pid(cid)
    # ShimCgroup: `start` moved the shim into it
    assert str(shim_pid) in (cg_dir / "cgroup.procs").read_text().split()

    async def body() -> None:
        stdout = FifoReader(bundle.fifo("stdout"))
        async with await Client.connect(address) as client:
            create = shim_pb2.CreateTaskRequest(
                id=cid, bundle=str(bundle.path), rootfs=[mount_pb2.Mount(**m) for m in bundle.rootfs_mounts],
                stdout=str(bundle.path / "stdout"), options=opts,
            )  # fmt: skip
            pid = (await _call(client, "Create", create, shim_pb2.CreateTaskResponse)).pid
            assert (runc_root / NS / cid / "state.json").exists()  # Root: runc state under <Root>/<ns>
            await _call(client, "Start", shim_pb2.StartRequest(id=cid), shim_pb2.StartResponse)
            waited = await _call(client, "Wait", shim_pb2.WaitRequest(id=cid), shim_pb2.WaitResponse)
            assert waited.exit_status == 0
            # IoUid/IoGid: the process's stdout pipe belongs to them
            assert await stdout.read_until_eof() == b"1000 1000\n1000\n"
            stdout.close()
            deleted = await _call(client, "Delete", shim_pb2.DeleteRequest(id=cid), shim_pb2.DeleteResponse)
            assert (deleted.pid, deleted.exit_status) == (pid, 0)

            # the checkpoint options and Checkpoint itself are refused, naming what is missing
            other = env.bundle(f"{cid}-criu", ["true"])
            for field, go_name in (("criu_path", "CriuPath"), ("criu_image_path", "CriuImagePath"),
                                   ("criu_work_path", "CriuWorkPath")):  # fmt: skip
                bad = shim_pb2.CreateTaskRequest(
                    id=f"{cid}-criu", bundle=str(other.path), options=_options(**{field: "/x"})
                )
                with pytest.raises(errdefs.InvalidArgument, match=go_name):
                    await _call(client, "Create", bad, shim_pb2.CreateTaskResponse)
            wrong = any_pb2.Any(type_url="runtimeoptions.v1.Options", value=b"")
            with pytest.raises(errdefs.InvalidArgument, match=r"runtimeoptions\.v1\.Options"):
                await _call(client, "Create", shim_pb2.CreateTaskRequest(id=f"{cid}-criu", bundle=str(other.path),
                                                                         options=wrong), shim_pb2.CreateTaskResponse)
            with pytest.raises(errdefs.NotFound):
                await _call(client, "Checkpoint", shim_pb2.CheckpointTaskRequest(id=f"{cid}-criu"), empty_pb2.Empty)

            await _call(client, "Shutdown", shim_pb2.ShutdownRequest(id=cid), empty_pb2.Empty)
            await asyncio.wait_for(client.wait_closed(), 15)

    asyncio.run(asyncio.wait_for(body(), 60))
    poll_sync(lambda: not pid_alive(shim_pid))
    assert not os.path.exists(address.removeprefix("unix://"))
    calls = runc_log.read_text().splitlines()
    assert calls and all(f"--root {runc_root}/{NS} " in c and "--systemd-cgroup" in c for c in calls), calls
    (create_call,) = [c for c in calls if " create " in c]
    assert "--no-pivot" in create_call and "--no-new-keyring" in create_call, create_call


def test_checkpoint_is_refused(env: Env) -> None:
    cid = f"v2ckpt-{os.getpid()}"
    bundle = env.bundle(cid, ["sleep", "60"])
    address = _start(bundle.path, cid, env.address)

    async def body() -> None:
        async with await Client.connect(address) as client:
            create = shim_pb2.CreateTaskRequest(
                id=cid, bundle=str(bundle.path), rootfs=[mount_pb2.Mount(**m) for m in bundle.rootfs_mounts]
            )
            await _call(client, "Create", create, shim_pb2.CreateTaskResponse)
            with pytest.raises(errdefs.Unimplemented, match="criu"):
                await _call(client, "Checkpoint", shim_pb2.CheckpointTaskRequest(id=cid, path="/x"), empty_pb2.Empty)
            restore = shim_pb2.CreateTaskRequest(id="other", bundle=str(bundle.path), checkpoint="/x")
            with pytest.raises(errdefs.Unimplemented, match="checkpoint"):
                await _call(client, "Create", restore, shim_pb2.CreateTaskResponse)

    asyncio.run(asyncio.wait_for(body(), 60))


def test_delete_after_the_shim_died(env: Env) -> None:
    cid = f"v2del-{os.getpid()}"
    bundle = env.bundle(cid, ["sleep", "300"])
    runc_root = env.tmp / "runc-root"
    env.roots.append(str(runc_root / NS))
    address = _start(bundle.path, cid, env.address)
    pid = 0

    async def body() -> None:
        nonlocal pid
        async with await Client.connect(address) as client:
            create = shim_pb2.CreateTaskRequest(
                id=cid, bundle=str(bundle.path), rootfs=[mount_pb2.Mount(**m) for m in bundle.rootfs_mounts],
                options=_options(root=str(runc_root)),
            )  # fmt: skip
            pid = (await _call(client, "Create", create, shim_pb2.CreateTaskResponse)).pid
            await _call(client, "Start", shim_pb2.StartRequest(id=cid), shim_pb2.StartResponse)

    asyncio.run(asyncio.wait_for(body(), 60))
    shim_pid = env.shim_pid(cid)
    os.kill(shim_pid, signal.SIGKILL)
    poll_sync(lambda: not pid_alive(shim_pid))
    assert pid_alive(pid) and mounts_under(bundle.path)
    assert os.path.exists(address.removeprefix("unix://"))
    # containerd's `delete`: cwd = bundle, a DeleteResponse (protobuf) on stdout
    r = subprocess.run(
        [str(SHIM), "-namespace", NS, "-address", env.address, "-publish-binary", "/usr/bin/containerd", "-id", cid,
         "-bundle", str(bundle.path), "delete"],
        cwd=bundle.path, capture_output=True, timeout=30, check=True,
    )  # fmt: skip
    resp = shim_pb2.DeleteResponse.FromString(r.stdout)
    assert (resp.pid, resp.exit_status) == (pid, 128 + signal.SIGKILL)
    assert resp.exited_at.seconds > 0
    poll_sync(lambda: not pid_alive(pid))
    assert not (runc_root / NS / cid).exists()  # runc delete used the Root from options.json
    assert mounts_under(bundle.path) == []
    assert json.loads((bundle.path / v2layout.OPTIONS_FILE).read_text()) == {"root": str(runc_root)}
    assert not os.path.exists(address.removeprefix("unix://"))  # the killed shim's socket went too
