"""``[timeouts]``: containerd 1.6's four runtime timeouts reach the code they name (shim load,
cleanup and shutdown in the shim manager, task state in the task manager); the config loader
refuses any other key (tests/unit/test_config_keys.py)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest
from google.protobuf import empty_pb2

from pycontainerd import errdefs
from pycontainerd.api.runtime.v2.task import shim_pb2
from pycontainerd.config import Config, parse_config
from pycontainerd.config.model import DEFAULT_TIMEOUTS
from pycontainerd.events import Exchange
from pycontainerd.runtime.task_plugin import TIMEOUT_KEYS, timeouts_from_config
from pycontainerd.runtime.task_types import TaskIO, Timeouts
from pycontainerd.runtime.v2 import ShimManager, TaskShim
from pycontainerd.ttrpc import CallContext, Client, Method, Server

from .test_runtime_task_manager import Env


def test_timeouts_come_from_the_config() -> None:
    assert set(TIMEOUT_KEYS) == set(DEFAULT_TIMEOUTS)
    assert timeouts_from_config(Config()) == Timeouts()  # containerd's defaults on both sides
    cfg = parse_config(
        'version = 2\n[timeouts]\n"io.containerd.timeout.shim.cleanup" = "7s"\n'
        '"io.containerd.timeout.shim.load" = "1m"\n'
        '"io.containerd.timeout.shim.shutdown" = "250ms"\n"io.containerd.timeout.task.state" = "1.5s"\n'
    )
    assert timeouts_from_config(cfg) == Timeouts(shim_cleanup=7.0, shim_load=60.0, shim_shutdown=0.25,
                                                 task_state=1.5)


def test_task_state_timeout_reports_unknown(tmp_path: Path) -> None:
    """A shim that does not answer State within io.containerd.timeout.task.state: the task is
    reported with status unknown (containerd's tasks service does the same), not waited on."""

    async def run() -> None:
        async with Env(tmp_path) as env:
            tm = env.manager()
            tm.timeouts = Timeouts(task_state=0.2)
            await env.container("c1")
            pid = await tm.create("default", "c1", io=TaskIO())
            (shim,) = env.launcher.shims.values()
            stuck = asyncio.Event()

            async def state(exec_id: str = "") -> Any:
                await stuck.wait()

            shim.state = state  # type: ignore[method-assign]
            t0 = time.monotonic()
            st = await tm.get("default", "c1")
            assert (st.status, st.pid) == ("unknown", pid)
            assert [t.status for t in await tm.list_tasks("default")] == ["unknown"]
            assert time.monotonic() - t0 < 5
            stuck.set()

    asyncio.run(run())


class _Stuck:
    """A containerd.task.v2.Task server whose Connect and Shutdown never answer."""

    def __init__(self) -> None:
        self.never = asyncio.Event()
        self.calls: list[str] = []

    def methods(self) -> dict[str, Method]:
        async def connect(req: shim_pb2.ConnectRequest, ctx: CallContext) -> shim_pb2.ConnectResponse:
            self.calls.append("Connect")
            await self.never.wait()
            return shim_pb2.ConnectResponse()

        async def shutdown(req: shim_pb2.ShutdownRequest, ctx: CallContext) -> empty_pb2.Empty:
            self.calls.append("Shutdown")
            await self.never.wait()
            return empty_pb2.Empty()

        return {"Connect": Method(shim_pb2.ConnectRequest, connect),
                "Shutdown": Method(shim_pb2.ShutdownRequest, shutdown)}


def _manager(tmp_path: Path, timeouts: Timeouts) -> ShimManager:
    return ShimManager(exchange=Exchange(), grpc_address=str(tmp_path / "ctd.sock"),
                       publish_binary="/nonexistent/pycontainerd", timeouts=timeouts)


def test_shim_load_timeout_on_reconnect(tmp_path: Path) -> None:
    async def run() -> None:
        stuck = _Stuck()
        server = Server()
        server.register("containerd.task.v2.Task", stuck.methods())
        await server.start(str(tmp_path / "shim.sock"))
        bundle = tmp_path / "default" / "c1"
        bundle.mkdir(parents=True)
        (bundle / "address").write_text(f"unix://{tmp_path}/shim.sock")
        try:
            t0 = time.monotonic()
            with pytest.raises(errdefs.DeadlineExceeded, match=r"io\.containerd\.timeout\.shim\.load"):
                await _manager(tmp_path, Timeouts(shim_load=0.3)).connect(bundle)
            assert stuck.calls == ["Connect"]
            assert time.monotonic() - t0 < 5
        finally:
            stuck.never.set()
            await server.close()

    asyncio.run(run())


def test_shim_shutdown_timeout(tmp_path: Path) -> None:
    async def run() -> None:
        stuck = _Stuck()
        server = Server()
        server.register("containerd.task.v2.Task", stuck.methods())
        await server.start(str(tmp_path / "shim.sock"))
        client = await Client.connect(f"unix://{tmp_path}/shim.sock")
        shim = TaskShim(client, namespace="default", container_id="c1", bundle=tmp_path, address="a", pid=0,
                        shutdown_timeout=0.3)
        try:
            t0 = time.monotonic()
            await shim.shutdown()  # logged, not raised: the caller goes on closing, as containerd does
            assert stuck.calls == ["Shutdown"]
            assert time.monotonic() - t0 < 5  # neither the old fixed 10 s nor for ever
        finally:
            await shim.close()
            stuck.never.set()
            await server.close()

    asyncio.run(run())


def test_shim_cleanup_timeout(tmp_path: Path) -> None:
    """The dead shim's binary ``delete`` is given io.containerd.timeout.shim.cleanup, then killed."""
    slow = tmp_path / "containerd-shim-slow-v2"
    slow.write_text("#!/bin/sh\nexec sleep 30\n")
    slow.chmod(0o755)
    bundle = tmp_path / "default" / "c1"
    bundle.mkdir(parents=True)
    (bundle / "shim-binary-path").write_text(str(slow))

    async def run() -> None:
        t0 = time.monotonic()
        with pytest.raises(errdefs.DeadlineExceeded, match=r"timed out after 0\.3s"):
            await _manager(tmp_path, Timeouts(shim_cleanup=0.3)).cleanup(
                namespace="default", container_id="c1", bundle=bundle)
        assert time.monotonic() - t0 < 10

    asyncio.run(run())


# -- [plugins."io.containerd.runtime.v1.linux"] runtime / runtime_root -----------------------------------


def test_v1_linux_runtime_keys_give_its_tasks_their_runc(tmp_path: Path) -> None:
    """``ctr run --runtime io.containerd.runtime.v1.linux``: its runc binary and root come from the
    v1 runtime plugin's section; other runc tasks keep the CRI default runtime's."""
    from pycontainerd.runtime.task_plugin import defaults_from_config

    from .test_runtime_task_manager import FakeLauncher

    cfg = parse_config('version = 2\n[plugins."io.containerd.runtime.v1.linux"]\nruntime = "/usr/bin/crun"\n'
                       'runtime_root = "/run/crun-v1"\n')
    defaults = defaults_from_config(cfg)
    assert (defaults.v1_binary_name, defaults.v1_root) == ("/usr/bin/crun", "/run/crun-v1")
    assert defaults.binary_name == "runc"
    assert (defaults_from_config(Config()).v1_binary_name, defaults_from_config(Config()).v1_root) == ("", "")

    seen: dict[str, tuple[str, str | None]] = {}

    class Recording(FakeLauncher):
        async def launch(self, **kw: Any) -> Any:
            seen[kw["container_id"]] = (kw["runtime_binary"], kw["runtime_root"])
            return await super().launch(**kw)

    async def run() -> None:
        async with Env(tmp_path) as env:
            env.launcher = Recording()
            tm = env.manager()
            tm.defaults = defaults
            await env.container("v1", runtime="io.containerd.runtime.v1.linux")
            await env.container("v2")
            await tm.create("default", "v1", io=TaskIO())
            await tm.create("default", "v2", io=TaskIO())

    asyncio.run(run())
    assert seen["v1"] == ("/usr/bin/crun", "/run/crun-v1/default")
    assert seen["v2"][0] == "runc" and seen["v2"][1] != "/run/crun-v1/default"
