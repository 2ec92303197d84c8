"""The shim tests' environment: a busybox rootfs and runc's base spec (``busybox``, once a
session), ``ShimEnv`` (a shim manager in the test's loop and the fork server, the bundles, runc's
root; what it started is cleaned up), its per-test ``env`` fixture and ``run`` (a test body in a
loop with the manager started and closed).

Test modules import the fixtures they use by name (``from .shim_fixtures import busybox, env``).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any

import pytest

from pycontainerd.events import Exchange
from pycontainerd.runtime.shim_client import ShimLauncher
from pycontainerd.runtime.v2 import ShimManager, TaskShim
from pycontainerd.shim import v2layout

from .shim_support import (
    Bundle,
    base_spec,
    build_rootfs,
    cleanup_container,
    make_bundle,
    mounts_under,
    pid_alive,
    poll_until,
)


def _require() -> None:
    if not shutil.which("runc"):
        pytest.skip("runc is not installed")


@pytest.fixture(scope="session")
def busybox(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    _require()
    root = tmp_path_factory.mktemp("shimroot")
    return build_rootfs(root), base_spec(root)


class ShimEnv:
    def __init__(self, tmp: Path, rootfs: Path, spec: dict[str, Any], ns: str = "shimtest") -> None:
        self.tmp = tmp
        self.rootfs = rootfs
        self.spec = spec
        self.ns = ns
        self.runc_root = str(tmp / "runc")  # Options.root; runc's state is <root>/<namespace>
        self.runtime_root = os.path.join(self.runc_root, self.ns)
        self.bundles = tmp / "bundles"
        self.bundles.mkdir()
        self.launcher = ShimLauncher()
        self.manager: ShimManager | None = None
        self.started: list[tuple[str, int, Path]] = []

    async def start(self) -> None:
        """The shim manager (in the test's loop): the events socket the shims forward to."""
        self.manager = ShimManager(exchange=Exchange(), grpc_address=str(self.tmp / "d.sock"), publish_binary="")
        await self.manager.start()

    async def launch(self, name: str, args: list[str], spec: dict[str, Any] | None = None,
                     **process: Any) -> tuple[Bundle, TaskShim]:
        assert self.manager is not None
        bundle = make_bundle(self.bundles, spec or self.spec, self.rootfs, name, args, **process)
        client = await self.manager.launch_forked(
            namespace=self.ns, container_id=name, bundle=bundle.path, fork=self.launcher, runc={"root": self.runc_root}
        )
        self.started.append((name, client.pid, bundle.path))
        return bundle, client

    async def finish(self, client: TaskShim, bundle: Bundle) -> None:
        """Delete + shutdown, then check the shim is gone and nothing is left mounted."""
        await client.shutdown()
        await client.close()
        await poll_until(lambda: not pid_alive(client.pid), what="shim exit")
        assert mounts_under(bundle.path) == []

    async def close(self) -> None:
        if self.manager is not None:
            await self.manager.close()
        await self.launcher.close()

    def cleanup(self) -> None:
        for name, pid, path in self.started:
            cleanup_container(self.runtime_root, name, pid, path)
            with contextlib.suppress(OSError):
                os.unlink(v2socket(self, name))  # left behind if the shim was killed


def v2socket(env: ShimEnv, name: str) -> str:
    return v2layout.socket_address(str(env.tmp / "d.sock"), env.ns, name).removeprefix("unix://")


@pytest.fixture
def env(tmp_path: Path, busybox: tuple[Path, dict[str, Any]]) -> Iterator[ShimEnv]:
    e = ShimEnv(tmp_path, *busybox)
    try:
        yield e
    finally:
        e.cleanup()


def run(env: ShimEnv, coro: Coroutine[Any, Any, None], timeout: float = 60.0) -> None:
    async def body() -> None:
        try:
            await env.start()
            await asyncio.wait_for(coro, timeout)
        finally:
            await env.close()

    asyncio.run(body())
