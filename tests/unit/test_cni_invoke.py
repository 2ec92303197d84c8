"""cni.invoke.exec_plugin on real processes (small sh scripts, no root), under asyncio's
loop and uvloop (the daemon's): stdin fed whole, stdout/stderr read, exit status, the output
cap, the timeout and cancellation (the plugin's session killed and reaped, no fd left behind)."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import pytest

from pycontainerd.cni import PluginError
from pycontainerd.cni.invoke import MAX_OUTPUT, exec_plugin

LOOPS = ["asyncio"]
try:
    import uvloop

    LOOPS.append("uvloop")
except ImportError:  # pragma: no cover - uvloop is a dependency of the daemon
    uvloop = None  # type: ignore[assignment]


@pytest.fixture(params=LOOPS)
def run(request: pytest.FixtureRequest) -> Callable[[Coroutine[Any, Any, Any]], Any]:
    if request.param == "uvloop":
        return lambda coro: uvloop.run(coro)
    return asyncio.run


def _plugin(tmp_path: Path, body: str) -> str:
    p = tmp_path / "plugin"
    p.write_text("#!/bin/sh\n" + body)
    p.chmod(0o755)
    return str(p)


def _fds(run: Callable[..., Any]) -> set[str]:
    """Our open fds, after a loop of the same kind ran (uvloop keeps a few of its own)."""
    run(asyncio.sleep(0))
    return set(os.listdir("/proc/self/fd"))


def test_stdin_fed_whole_and_output_read(tmp_path: Path, run: Callable[..., Any]) -> None:
    path = _plugin(tmp_path, 'echo "$CNI_COMMAND" >&2\nwc -c\n')
    data = b"x" * (300 * 1024)  # more than a pipe buffer: written as the plugin reads
    before = _fds(run)
    out = run(exec_plugin(path, env={"CNI_COMMAND": "ADD"}, stdin=data, deadline=20, what="p"))
    assert int(out.strip()) == len(data)
    assert set(os.listdir("/proc/self/fd")) <= before


def test_a_failure_carries_stdout_and_stderr(tmp_path: Path, run: Callable[..., Any]) -> None:
    path = _plugin(tmp_path, 'cat >/dev/null\necho "plain failure"\necho "on stderr" >&2\nexit 3\n')
    with pytest.raises(PluginError, match=r"p failed: plain failure \(stderr: on stderr\)"):
        run(exec_plugin(path, env={}, stdin=b"{}", deadline=20, what="p"))


def test_output_over_the_cap_is_refused(tmp_path: Path, run: Callable[..., Any]) -> None:
    path = _plugin(tmp_path, f"head -c {MAX_OUTPUT + 10} /dev/zero\n")
    with pytest.raises(PluginError, match="output larger than"):
        run(exec_plugin(path, env={}, stdin=b"", deadline=20, what="p"))


def test_timeout_and_cancel_kill_the_plugin_session(tmp_path: Path, run: Callable[..., Any]) -> None:
    pids = tmp_path / "pids"
    # the plugin and a helper it leaves in its session both go
    path = _plugin(tmp_path, f'sleep 60 &\necho "$$ $!" > {pids}\nwait\n')
    before = _fds(run)
    with pytest.raises(PluginError, match="timed out after 1s"):
        run(exec_plugin(path, env={}, stdin=b"", deadline=1, what="p"))
    for pid in map(int, pids.read_text().split()):
        assert not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text().split(")")[1][:3]
    pids.unlink()

    async def cancelled() -> None:
        task = asyncio.ensure_future(exec_plugin(path, env={}, stdin=b"", deadline=60, what="p"))
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 20
        while not pids.exists() or len(pids.read_text().split()) < 2:
            assert loop.time() < deadline, "the plugin never started"
            await asyncio.sleep(0.02)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    run(cancelled())
    plugin_pid = int(pids.read_text().split()[0])
    with pytest.raises(ChildProcessError):
        os.waitpid(plugin_pid, os.WNOHANG)  # reaped already
    assert set(os.listdir("/proc/self/fd")) <= before
