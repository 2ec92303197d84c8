"""The shim starts a created container through runc's exec FIFO instead of ``runc start``
(runc 1.0/1.1, no poststart hooks), with real runc: the same outcome as ``runc start``.

``runc`` on the launcher's PATH is a wrapper that logs every command and execs the real runc:
the launcher probes it (it answers as the real runc does), so the shims use it, and the log
shows which runtime commands ran."""

from __future__ import annotations

import asyncio
import functools
import json
import os
import shutil
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pycontainerd import errdefs
from pycontainerd.runtime.v2 import TaskShim

from .shim_fixtures import ShimEnv, busybox, run  # noqa: F401  (session fixture)
from .shim_support import (
    FifoReader,
    poll_until,
)

pytestmark = pytest.mark.root


class Env(ShimEnv):
    """The shim tests' environment, plus what runc itself says and which commands it ran."""

    def __init__(self, tmp: Path, rootfs: Path, spec: dict[str, Any], real_runc: str) -> None:
        super().__init__(tmp, rootfs, spec, ns="fifostart")
        self.calls = tmp / "runc-calls.log"
        self.real_runc = real_runc

    def commands(self, name: str) -> list[str]:
        """The runtime commands run for container ``name`` (``create``, ``start``, ...)."""
        if not self.calls.exists():
            return []
        out = []
        for line in self.calls.read_text().splitlines():
            words = line.split()
            if words and words[-1] == name:
                rest = words[words.index("json") + 1 :]
                out.append(next(w for w in rest if not w.startswith("--")))
        return out

    def runc_status(self, name: str) -> str:
        r = subprocess.run(
            [self.real_runc, "--root", self.runtime_root, "state", name], capture_output=True, text=True, check=True
        )
        return str(json.loads(r.stdout)["status"])

    def runc_list(self) -> dict[str, str]:
        r = subprocess.run(
            [self.real_runc, "--root", self.runtime_root, "list", "--format", "json"],
            capture_output=True,
            text=True,
            check=True,
        )
        return {c["id"]: c["status"] for c in json.loads(r.stdout or "[]") or []}


@pytest.fixture
def env(tmp_path: Path, busybox: tuple[Path, dict[str, Any]], monkeypatch: pytest.MonkeyPatch) -> Iterator[Env]:  # noqa: F811
    real = shutil.which("runc")
    assert real is not None
    version = subprocess.run([real, "--version"], capture_output=True, text=True, check=True).stdout
    if not version.startswith(("runc version 1.0.", "runc version 1.1.")):
        pytest.skip(f"the exec FIFO start is for runc 1.0/1.1, this is {version.splitlines()[0]!r}")
    bindir = tmp_path / "bin"
    bindir.mkdir()
    wrapper = bindir / "runc"
    wrapper.write_text(f'#!/bin/sh\necho "$*" >> {tmp_path / "runc-calls.log"}\nexec {real} "$@"\n')
    wrapper.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bindir}:{os.environ.get('PATH', '')}")
    e = Env(tmp_path, *busybox, real_runc=real)
    try:
        yield e
    finally:
        e.cleanup()


def test_started_without_runc_start_is_running_for_runc_too(env: Env) -> None:
    async def body() -> None:
        bundle, c = await env.launch("f1", ["sleep", "1000"])
        events: list[tuple[str, dict[str, Any]]] = []

        async def collect() -> None:
            async for ev in c.events():
                events.append(ev)

        collector = asyncio.create_task(collect())
        pid = await c.create(rootfs=bundle.rootfs_mounts, stdin="", stdout="", stderr="", terminal=False)
        assert env.runc_status("f1") == "created"
        fifo = Path(env.runtime_root, "f1", "exec.fifo")
        assert fifo.exists()
        assert await c.start() == pid
        assert (await c.state()).status == "running"
        assert env.runc_status("f1") == "running"
        assert env.runc_list()["f1"] == "running"
        assert not fifo.exists()
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            assert f.read().split(b"\0")[0] == b"sleep"  # the user process, exec'd by runc init
        await poll_until(lambda: any(t == "/tasks/start" for t, _ in events), what="start event")
        assert next(p for t, p in events if t == "/tasks/start") == {"container_id": "f1", "pid": pid}
        # exec processes still go through runc exec
        out_path = bundle.fifo("exec-out")
        out = FifoReader(out_path)
        proc_spec = dict(env.spec["process"], args=["sh", "-c", "echo from exec; exit 5"], terminal=False)
        await c.exec("e1", proc_spec, stdin="", stdout=out_path, stderr="", terminal=False)
        await c.start("e1")
        assert (await c.wait("e1")).exit_status == 5
        assert await out.read_until_eof() == b"from exec\n"
        await c.delete("e1")
        out.close()
        # a second start is refused, as before
        with pytest.raises(errdefs.FailedPrecondition):
            await c.start()
        await c.kill("", signal.SIGKILL)
        assert (await c.wait()).exit_status == 137
        await c.delete()
        await env.finish(c, bundle)
        collector.cancel()
        assert env.commands("f1")[:2] == ["create", "exec"]
        assert "start" not in env.commands("f1")

    run(env, body())


@pytest.mark.parametrize(
    ("args", "code"),
    [
        (["true"], 0),
        (["false"], 1),
        (["sh", "-c", "echo out; exit 7"], 7),
        (["sh", "-c", "exit 255"], 255),
    ],
)
def test_exit_codes_of_processes_that_exit_at_once(env: Env, args: list[str], code: int) -> None:
    async def body() -> None:
        bundle, c = await env.launch("x1", args)
        out_path = bundle.fifo("stdout")
        out = FifoReader(out_path)
        pid = await c.create(rootfs=bundle.rootfs_mounts, stdin="", stdout=out_path, stderr="", terminal=False)
        waiter = asyncio.create_task(c.wait())  # as ctr run: Wait before Start
        await asyncio.sleep(0)
        assert await c.start() == pid
        info = await waiter
        assert (info.pid, info.exit_status) == (pid, code)
        assert await out.read_until_eof() == (b"out\n" if "echo out; exit 7" in args else b"")
        assert (await c.delete()).exit_status == code
        await env.finish(c, bundle)
        out.close()
        assert "start" not in env.commands("x1")

    run(env, body())


def test_an_init_killed_before_start_fails_start_cleanly(env: Env) -> None:
    async def body() -> None:
        for i in range(3):
            name = f"k{i}"
            bundle, c = await env.launch(name, ["sleep", "1000"])
            pid = await c.create(rootfs=bundle.rootfs_mounts, stdin="", stdout="", stderr="", terminal=False)
            os.kill(pid, signal.SIGKILL)
            if i == 2:  # the shim has seen the exit: refused by state
                await poll_until(functools.partial(_stopped, c), what="stopped")
            # the shim may or may not have seen the exit yet: either way an error, no hang
            with pytest.raises((errdefs.Unknown, errdefs.FailedPrecondition)):
                await asyncio.wait_for(c.start(), 10)
            # the init's end of the FIFO may close (it was killed opening it) before the
            # shim reaped it: the exit follows
            await poll_until(functools.partial(_stopped, c), what="stopped after the failed start")
            st = await c.state()
            assert (st.status, st.exit_status) == ("stopped", 137)
            assert (await c.delete()).exit_status == 137
            await env.finish(c, bundle)
            assert "start" not in env.commands(name)

    run(env, body())


async def _stopped(c: TaskShim) -> bool:
    return (await c.state()).status == "stopped"


def test_poststart_hooks_go_through_runc_start(env: Env) -> None:
    async def body() -> None:
        marker = env.tmp / "poststart-ran"
        spec = json.loads(json.dumps(env.spec))
        spec["hooks"] = {"poststart": [{"path": "/bin/sh", "args": ["sh", "-c", f"echo $$ > {marker}"]}]}
        bundle, c = await env.launch("h1", ["sh", "-c", "exit 3"], spec=spec)
        pid = await c.create(rootfs=bundle.rootfs_mounts, stdin="", stdout="", stderr="", terminal=False)
        waiter = asyncio.create_task(c.wait())
        await asyncio.sleep(0)
        assert await c.start() == pid
        assert (await waiter).exit_status == 3
        assert marker.exists()
        assert env.commands("h1")[:2] == ["create", "start"]
        await c.delete()
        await env.finish(c, bundle)

    run(env, body())
