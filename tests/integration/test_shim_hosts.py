"""Shim hosts: one forked shim process serves several containers (``PYCONTAINERD_SHIM_GROUP``).

Real runc and overlay mounts: two containers share a host; deleting one leaves the other
fully working (exec, kill, wait); the host exits after the last one; with a group size of 1
every container gets its own process again.
"""

from __future__ import annotations

import asyncio
import functools
import os
from pathlib import Path
from typing import Any

import pytest

from pycontainerd.runtime.shim_client import ShimClient, ShimLauncher, socket_path

from .shim_support import cleanup_container, make_bundle, pid_alive, poll_until
from .test_shim_lifecycle import busybox  # noqa: F401  (session fixture)

pytestmark = pytest.mark.root


def _gone(pid: int) -> bool:
    return not pid_alive(pid)


def _run(tmp_path: Path, busybox: tuple[Path, dict[str, Any]], group: str) -> list[int]:  # noqa: F811
    rootfs, spec = busybox
    state = tmp_path / "state"
    state.mkdir()
    runtime_root = str(tmp_path / "runc")
    bundles = tmp_path / "bundles"
    bundles.mkdir()
    started: list[tuple[str, int, Path]] = []
    pids: list[int] = []
    old = os.environ.get("PYCONTAINERD_SHIM_GROUP")
    os.environ["PYCONTAINERD_SHIM_GROUP"] = group
    launcher = ShimLauncher()

    async def body() -> None:
        clients = []
        for name in ("a", "b"):
            b = make_bundle(bundles, spec, rootfs, name, ["sleep", "1000"])
            c = await ShimClient.launch(
                namespace="hosts", container_id=name, bundle=b.path, state_dir=state,
                runtime_root=runtime_root, launcher=launcher,
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
        # nothing left behind: no sockets, no host logs (they were empty)
        for name in ("a", "b"):
            sock = socket_path(state, "hosts", name)
            assert not os.path.exists(sock), sock
            for pid in set(pids):
                assert not os.path.exists(os.path.join(os.path.dirname(sock), f"shim-{pid}.log"))

    async def main() -> None:
        try:
            await asyncio.wait_for(body(), 60)
        finally:
            await launcher.close()

    try:
        asyncio.run(main())
    finally:
        if old is None:
            os.environ.pop("PYCONTAINERD_SHIM_GROUP", None)
        else:
            os.environ["PYCONTAINERD_SHIM_GROUP"] = old
        for cid, pid, path in started:
            cleanup_container(runtime_root, cid, pid, path)
    return pids


def test_two_containers_share_a_host(tmp_path: Path, busybox: tuple[Path, dict[str, Any]]) -> None:  # noqa: F811
    pids = _run(tmp_path, busybox, "16")
    assert pids[0] == pids[1]


def test_group_of_one_is_a_process_per_container(tmp_path: Path, busybox: tuple[Path, dict[str, Any]]) -> None:  # noqa: F811
    pids = _run(tmp_path, busybox, "1")
    assert pids[0] != pids[1]
