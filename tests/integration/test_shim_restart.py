"""The shim survives the daemon: kill -9 of the client process, then reconnect (runtime v2:
the bundle's ``address`` file, task.v2 over ttrpc, events to the new daemon's Events socket)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from pycontainerd.events import Exchange
from pycontainerd.runtime.shim_client import read_exit
from pycontainerd.runtime.v2 import ShimManager
from pycontainerd.shim import v2layout

from .shim_fixtures import busybox  # noqa: F401  (session fixture)
from .shim_support import FifoReader, cleanup_container, kill_pid, make_bundle, mounts_under, pid_alive, poll_until

pytestmark = pytest.mark.root

# The "daemon": launches two shims through its own launcher, creates and starts both
# containers, reports pids, then hangs until it is killed.
CLIENT = r"""
import asyncio, json, sys
from pathlib import Path
from pycontainerd.events import Exchange
from pycontainerd.runtime.shim_client import ShimLauncher
from pycontainerd.runtime.v2 import ShimManager

async def main(cfg):
    launcher = ShimLauncher()
    manager = ShimManager(exchange=Exchange(), grpc_address=cfg["address"], publish_binary="")
    await manager.start()
    out = {"client": __import__("os").getpid()}
    for c in cfg["containers"]:
        client = await manager.launch_forked(namespace="restart", container_id=c["id"], bundle=Path(c["bundle"]),
                                             fork=launcher, runc={"root": cfg["runc_root"]})
        pid = await client.create(rootfs=c["rootfs"], stdin="", stdout=c["stdout"], stderr="", terminal=False)
        await client.start()
        out[c["id"]] = {"shim": client.pid, "init": pid}
    out["launcher"] = launcher.pid
    print(json.dumps(out), flush=True)
    await asyncio.Event().wait()

asyncio.run(main(json.loads(sys.argv[1])))
"""


def test_daemon_killed_then_reconnect(tmp_path: Path, busybox: tuple[Path, dict[str, Any]]) -> None:  # noqa: F811
    rootfs, spec = busybox
    address = str(tmp_path / "d.sock")  # the "daemon"'s address: shim sockets and events derive from it
    runc_root = str(tmp_path / "runc")
    runtime_root = os.path.join(runc_root, "restart")
    bundles = tmp_path / "restart"  # containerd's layout: <...>/<namespace>/<id>
    bundles.mkdir()
    live = make_bundle(
        bundles, spec, rootfs, "live", ["sh", "-c", "while [ ! -e /tmp/stop ]; do sleep 0.05; done; echo done; exit 9"]
    )
    quick = make_bundle(bundles, spec, rootfs, "quick", ["sh", "-c", "sleep 0.3; echo bye; exit 4"])
    live_out, quick_out = live.fifo("stdout"), quick.fifo("stdout")
    # the client's FIFO ends live in the "daemon" process and die with it
    cfg = {
        "address": address,
        "runc_root": runc_root,
        "containers": [
            {"id": "live", "bundle": str(live.path), "rootfs": live.rootfs_mounts, "stdout": live_out},
            {"id": "quick", "bundle": str(quick.path), "rootfs": quick.rootfs_mounts, "stdout": quick_out},
        ],
    }
    holders = [os.open(p, os.O_RDONLY | os.O_NONBLOCK) for p in (live_out, quick_out)]
    proc = subprocess.Popen(
        [sys.executable, "-c", CLIENT, json.dumps(cfg)], stdout=subprocess.PIPE, env=dict(os.environ)
    )
    info: dict[str, Any] = {}
    try:
        assert proc.stdout is not None
        info = json.loads(proc.stdout.readline())
        for fd in holders:
            os.close(fd)
        holders = []
        proc.send_signal(signal.SIGKILL)  # the daemon crashes
        proc.wait()

        async def body() -> None:
            manager = ShimManager(exchange=Exchange(), grpc_address=address, publish_binary="")
            await manager.start()  # the restarted daemon
            try:
                await reconnect(manager)
            finally:
                await manager.close()

        async def reconnect(manager: ShimManager) -> None:
            await poll_until(lambda: not pid_alive(info["launcher"]), what="launcher exit")
            for cid in ("live", "quick"):
                shim = info[cid]["shim"]
                assert pid_alive(shim)
                assert os.getsid(shim) == shim  # its own session
            # "quick" exits while nobody is connected: the shim records it
            await poll_until(lambda: read_exit(quick.path) is not None, what="exit file")
            c = await manager.connect(quick.path)
            assert c.pid == info["quick"]["shim"]
            assert (await c.wait()).exit_status == 4
            assert (await c.state()).status == "stopped"
            await c.delete()
            await c.shutdown()
            await c.close()

            c = await manager.connect(live.path)
            events: list[tuple[str, dict[str, Any]]] = []

            async def collect() -> None:
                async for ev in c.events():
                    events.append(ev)

            collector = asyncio.create_task(collect())
            assert (await c.state()).status == "running"
            out = FifoReader(live_out)  # a new client attaches to the output
            touch = dict(spec["process"], args=["touch", "/tmp/stop"], terminal=False)
            await c.exec("stopper", touch, stdin="", stdout="", stderr="", terminal=False)
            await c.start("stopper")
            assert (await c.wait("stopper")).exit_status == 0
            await c.delete("stopper")
            assert (await c.wait()).exit_status == 9
            assert await out.read_until_eof() == b"done\n"
            out.close()
            await c.delete()
            await poll_until(lambda: ("/tasks/exit", "live") in [(t, p.get("id")) for t, p in events])
            await c.shutdown()
            await c.close()
            collector.cancel()
            for cid, b in (("live", live), ("quick", quick)):
                def gone(pid: int = info[cid]["shim"]) -> bool:
                    return not pid_alive(pid)

                await poll_until(gone, what=f"{cid} shim exit")
                assert mounts_under(b.path) == []

        asyncio.run(asyncio.wait_for(body(), 60))
    finally:
        for fd in holders:
            os.close(fd)
        kill_pid(proc.pid)
        proc.wait()
        if info.get("launcher"):
            kill_pid(info["launcher"])
        for cid, b in (("live", live), ("quick", quick)):
            cleanup_container(runtime_root, cid, info.get(cid, {}).get("shim", 0), b.path)
            with contextlib.suppress(OSError):
                os.unlink(v2layout.socket_address(address, "restart", cid).removeprefix("unix://"))
