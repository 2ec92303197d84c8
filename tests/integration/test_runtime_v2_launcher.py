"""``runtime.v2`` in-process against Debian's Go ``containerd-shim-runc-v2``: no daemon, no ctr.

The task manager's own-launcher protocol (``ShimLauncher``) served by ``ShimManager.launcher``:
launch (the ``start`` handshake with a ``log`` FIFO drained into our log), Create/Start with the
runc root the manager chose, events routed back to the ``TaskShim`` over our ttrpc Events
server, a reconnection from the bundle's ``address`` file (what a daemon restart does),
Kill/Wait/Delete/Shutdown, and a shim killed with SIGKILL cleaned up by the binary's ``delete``.

The same test drives our own runtime v2 shim (``containerd-shim-pyrunc-v2`` from the venv).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
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

from pycontainerd.events import Exchange
from pycontainerd.runtime.shim_api import Shim, ShimLauncher
from pycontainerd.runtime.v2 import ShimManager
from tests.fixtures.procs import wait_for_async

from .daemon import BIN
from .shim_support import FifoReader, base_spec, build_rootfs, make_bundle, mounts_under, pid_alive

pytestmark = pytest.mark.root

SHIM = "/usr/bin/containerd-shim-runc-v2"
OUR_SHIM = str(Path(sys.executable).parent / "containerd-shim-pyrunc-v2")
NS = "pycd-v2l"


@pytest.fixture(scope="module")
def busybox() -> Iterator[tuple[Path, dict[str, Any]]]:
    if os.geteuid() != 0:
        pytest.skip("needs root")
    if not Path(SHIM).exists() or not shutil.which("runc"):
        pytest.skip("containerd-shim-runc-v2 or runc is not installed")
    root = Path(tempfile.mkdtemp(prefix="pycd-v2l-rootfs-"))
    try:
        yield build_rootfs(root), base_spec(root)
    finally:
        shutil.rmtree(root, ignore_errors=True)


async def _collect(shim: Shim, into: list[tuple[str, dict[str, Any]]]) -> None:
    async for item in shim.events():
        into.append(item)


@pytest.mark.parametrize("shim_binary", [SHIM, OUR_SHIM], ids=["go-runc-v2", "pyrunc-v2"])
def test_shim_launcher_over_the_go_shim(busybox: tuple[Path, dict[str, Any]], shim_binary: str) -> None:
    if not Path(shim_binary).exists():
        pytest.skip(f"{shim_binary} is not installed")
    rootfs, spec = busybox
    tmp = Path(tempfile.mkdtemp(prefix="pycd-v2l-"))
    grpc_address = str(tmp / "d.sock")
    ids = [f"v2l-{os.getpid()}", f"v2l-dead-{os.getpid()}"]
    runc_root = tmp / "runc"
    bundles = tmp / NS  # containerd's layout, <state>/<namespace>/<id>, which connect() reads
    bundles.mkdir()
    shim_pids: set[int] = set()

    async def body() -> None:
        manager = ShimManager(exchange=Exchange(), grpc_address=grpc_address, publish_binary=str(BIN / "pycontainerd"))
        await manager.start()
        launcher: ShimLauncher = manager.launcher(shim_binary)  # the task manager's own-launcher protocol
        background: list[asyncio.Task[None]] = []
        try:
            # 1. launch + create + start, with the runc root as the task manager passes it
            cid = ids[0]
            bundle = make_bundle(bundles, spec, rootfs, cid, ["sh", "-c", "echo hello; exec sleep 300"])
            out, err = FifoReader(bundle.fifo("stdout")), FifoReader(bundle.fifo("stderr"))
            shim = await launcher.launch(
                namespace=NS, container_id=cid, bundle=bundle.path, state_dir=tmp, runtime_root=str(runc_root / NS)
            )
            shim_pids.add(shim.pid)
            if shim_binary == SHIM:
                assert os.readlink(f"/proc/{shim.pid}/exe") == SHIM
            else:  # a Python script: the interpreter runs it
                assert shim_binary.encode() in Path(f"/proc/{shim.pid}/cmdline").read_bytes().split(b"\0")
            assert (bundle.path / "shim-binary-path").read_text() == shim_binary
            assert (bundle.path / "address").read_text() == shim.address
            events: list[tuple[str, dict[str, Any]]] = []
            background.append(asyncio.create_task(_collect(shim, events)))
            pid = await shim.create(
                rootfs=bundle.rootfs_mounts, stdin="", stdout=str(bundle.path / "stdout"),
                stderr=str(bundle.path / "stderr"), terminal=False,
            )  # fmt: skip
            assert (runc_root / NS / cid / "state.json").exists()  # Options.root: the shim adds the namespace
            assert await shim.start() == pid
            await out.read_until(b"hello\n")
            await wait_for_async(lambda: ("/tasks/start" in [t for t, _ in events]), 10, "/tasks/start routed")

            # 2. the daemon goes away and comes back: a new connection from the address file
            await shim.close()
            for t in background:
                t.cancel()
            again = await launcher.connect(bundle.path)
            assert again.pid == shim.pid
            events.clear()
            background.append(asyncio.create_task(_collect(again, events)))
            st = await again.state()
            assert (st.pid, st.status) == (pid, "running")
            waiter = asyncio.create_task(again.wait())
            await again.kill("", signal.SIGKILL)
            exit_ = await asyncio.wait_for(waiter, 30)
            assert exit_.exit_status == 137
            await wait_for_async(lambda: [p for t, p in events if t == "/tasks/exit"], 10, "/tasks/exit routed")
            assert (await again.delete()).exit_status == 137
            assert mounts_under(bundle.path) == []
            await again.shutdown()
            await again.close()
            await wait_for_async(lambda: not pid_alive(shim.pid), 15, "the shim to exit")
            assert not Path(again.address.removeprefix("unix://")).exists()
            out.close()
            err.close()

            # 3. a shim killed with SIGKILL: its event stream ends, its binary's delete cleans up
            cid = ids[1]
            bundle = make_bundle(bundles, spec, rootfs, cid, ["sleep", "300"])
            out, err = FifoReader(bundle.fifo("stdout")), FifoReader(bundle.fifo("stderr"))
            dead = await launcher.launch(
                namespace=NS, container_id=cid, bundle=bundle.path, state_dir=tmp, runtime_root=str(runc_root / NS)
            )
            shim_pids.add(dead.pid)
            task_pid = await dead.create(
                rootfs=bundle.rootfs_mounts, stdin="", stdout=str(bundle.path / "stdout"),
                stderr=str(bundle.path / "stderr"), terminal=False,
            )  # fmt: skip
            await dead.start()
            ended: list[tuple[str, dict[str, Any]]] = []
            stream = asyncio.create_task(_collect(dead, ended))
            os.kill(dead.pid, signal.SIGKILL)
            await asyncio.wait_for(stream, 15)  # the end of the stream is the task manager's cue
            gone = await launcher.cleanup(namespace=NS, container_id=cid, bundle=bundle.path)
            assert gone.exit_status == 128 + signal.SIGKILL
            await wait_for_async(lambda: not pid_alive(task_pid), 15, "the container to be killed")
            assert mounts_under(bundle.path) == []
            assert not Path(dead.address.removeprefix("unix://")).exists()  # the stale socket is removed
            await dead.close()
            out.close()
            err.close()
        finally:
            for t in background:
                t.cancel()
            await asyncio.gather(*background, return_exceptions=True)
            await manager.close()

    try:
        asyncio.run(asyncio.wait_for(body(), 120))
    finally:
        for cid in ids:
            subprocess.run(["runc", "--root", str(runc_root / NS), "delete", "--force", cid], capture_output=True,
                           check=False)  # fmt: skip
            sock = "/run/containerd/s/" + hashlib.sha256(os.path.join(grpc_address, NS, cid).encode()).hexdigest()
            with contextlib.suppress(FileNotFoundError):
                os.unlink(sock)
        for p in shim_pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(p, signal.SIGKILL)
        for m in reversed(mounts_under(tmp)):
            subprocess.run(["umount", "-l", m], capture_output=True, check=False)
        shutil.rmtree(tmp, ignore_errors=True)
