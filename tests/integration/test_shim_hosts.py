"""Shim groups: one shim process serves the containers of a group (the spec annotation
``io.containerd.runc.v2.group``, as containerd's runc v2 shim), else one per container.

Real runc and overlay mounts: two grouped containers share a shim; deleting one leaves the
other fully working (exec, kill, wait); the shim exits after the last one and removes its
socket; without the annotation every container gets its own process.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
from pathlib import Path
from typing import Any

import pytest

from pycontainerd.events import Exchange
from pycontainerd.runtime.shim_client import ShimLauncher
from pycontainerd.runtime.v2 import ShimManager
from pycontainerd.shim import v2layout

from .shim_fixtures import busybox  # noqa: F401  (session fixture)
from .shim_support import cleanup_container, make_bundle, pid_alive, poll_until

pytestmark = pytest.mark.root


def _gone(pid: int) -> bool:
    return not pid_alive(pid)


def _run(tmp_path: Path, busybox: tuple[Path, dict[str, Any]], group: str) -> list[int]:  # noqa: F811
    rootfs, spec = busybox
    if group:
        spec = dict(spec, annotations={"io.containerd.runc.v2.group": group})
    address = str(tmp_path / "d.sock")
    runc_root = str(tmp_path / "runc")
    runtime_root = os.path.join(runc_root, "hosts")
    bundles = tmp_path / "bundles"
    bundles.mkdir()
    started: list[tuple[str, int, Path]] = []
    pids: list[int] = []
    launcher = ShimLauncher()
    sockets = [v2layout.socket_address(address, "hosts", g).removeprefix("unix://") for g in (group, "a", "b") if g]

    async def body() -> None:
        manager = ShimManager(exchange=Exchange(), grpc_address=address, publish_binary="")
        await manager.start()
        try:
            await containers(manager)
        finally:
            await manager.close()

    async def containers(manager: ShimManager) -> None:
        clients = []
        for name in ("a", "b"):
            b = make_bundle(bundles, spec, rootfs, name, ["sleep", "1000"])
            c = await manager.launch_forked(
                namespace="hosts", container_id=name, bundle=b.path, fork=launcher, runc={"root": runc_root}
            )
            started.append((name, c.pid, b.path))
            await c.create(rootfs=b.rootfs_mounts, stdin="", stdout="", stderr="", terminal=False)
            await c.start()
            clients.append(c)
            pids.append(c.pid)
        a, b_ = clients
        # a goes away completely ...
        await a.kill("", 9)
        assert (await a.wait()).exit_status == 137
        await a.delete()
        await a.shutdown()
        await a.close()
        # ... b is unaffected
        assert (await b_.state()).status == "running"
        await b_.exec("e1", {"args": ["true"], "cwd": "/", "env": ["PATH=/bin"], "user": {"uid": 0, "gid": 0}},
                      stdin="", stdout="", stderr="", terminal=False)
        w = asyncio.create_task(b_.wait("e1"))
        await b_.start("e1")
        assert (await w).exit_status == 0
        await b_.delete("e1")
        if pids[0] == pids[1]:
            assert pid_alive(pids[1])  # the shared host still serves b
        await b_.kill("", 9)  # (sleep as pid 1 ignores SIGTERM)
        assert (await b_.wait()).exit_status == 137
        await b_.delete()
        await b_.shutdown()
        await b_.close()
        for pid in set(pids):
            await poll_until(functools.partial(_gone, pid), what="shim host exit")
        # nothing left behind: no sockets
        for sock in sockets:
            assert not os.path.exists(sock), sock

    async def main() -> None:
        try:
            await asyncio.wait_for(body(), 60)
        finally:
            await launcher.close()

    try:
        asyncio.run(main())
    finally:
        for cid, pid, path in started:
            cleanup_container(runtime_root, cid, pid, path)
        for sock in sockets:
            with contextlib.suppress(OSError):
                os.unlink(sock)
    return pids


def test_two_containers_of_a_group_share_a_shim(tmp_path: Path, busybox: tuple[Path, dict[str, Any]]) -> None:  # noqa: F811
    pids = _run(tmp_path, busybox, "pod")
    assert pids[0] == pids[1]


def test_without_a_group_a_process_per_container(tmp_path: Path, busybox: tuple[Path, dict[str, Any]]) -> None:  # noqa: F811
    pids = _run(tmp_path, busybox, "")
    assert pids[0] != pids[1]
