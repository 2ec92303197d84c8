"""The daemon's rarer commands (``runc features``, ``runc delete --force``, the shim launcher's
start) are spawned off the event loop, closing our descriptors, as the hot paths do.

Under uvloop, ``asyncio.create_subprocess_exec`` is libuv's ``uv_spawn``: a fork of the whole
daemon on the loop's thread, and the child keeps every inheritable descriptor of ours (and
copies of its stdio that uvloop makes).  Each command here is a recorder that writes down the
descriptors beyond stdio it would pass on (those without close-on-exec), under both loops; on
the old code the uvloop cases listed the test's inheritable descriptor (and uvloop's copies).
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import pytest

from pycontainerd.cri.features import runc_mount_options
from pycontainerd.runtime import bundle as bundlemod
from pycontainerd.runtime.shim_client import ShimLauncher
from pycontainerd.runtime.task_recovery import runc_force_delete
from pycontainerd.threads import run_process

RECORDER = """#!{python} -I
import os, sys
fds = []
for name in sorted(os.listdir('/proc/self/fd'), key=int):
    fd = int(name)
    try:
        if fd > 2 and os.get_inheritable(fd):
            fds.append(f'{{fd}}={{os.readlink(f"/proc/self/fd/{{fd}}")}}')
    except OSError:
        pass
with open({log!r}, 'a') as f:
    f.write(' '.join(sys.argv[1:3]) + '|' + ' '.join(fds) + '\\n')
if sys.argv[1:2] == ['features']:
    print('{{"mountOptions": ["rro", "ro"]}}')
elif sys.argv[1:3] == ['-s', '-m']:  # the launcher: become it
    os.execv({python!r}, [{python!r}, *sys.argv[1:]])
"""


def _loops() -> list[Any]:
    params: list[Any] = [pytest.param(asyncio.new_event_loop, id="asyncio")]
    try:
        import uvloop
    except ImportError:
        params.append(pytest.param(None, id="uvloop", marks=pytest.mark.skip(reason="uvloop is not installed")))
    else:
        params.append(pytest.param(uvloop.new_event_loop, id="uvloop"))
    return params


@pytest.fixture
def recorder(tmp_path: Path) -> tuple[Path, Path]:
    log = tmp_path / "fds.log"
    script = tmp_path / "recorder"
    script.write_text(RECORDER.format(python=sys.executable, log=str(log)))
    script.chmod(0o755)
    return script, log


def _run(new_loop: Callable[[], asyncio.AbstractEventLoop], coro: Coroutine[Any, Any, None]) -> None:
    leak = os.open("/dev/null", os.O_RDONLY)  # a descriptor of ours a child could inherit
    os.set_inheritable(leak, True)
    loop = new_loop()
    try:
        loop.run_until_complete(coro)
    finally:
        loop.close()
        os.close(leak)


def _recorded(log: Path) -> dict[str, str]:
    return dict(line.split("|", 1) for line in log.read_text().splitlines())


@pytest.mark.parametrize("new_loop", _loops())
def test_runc_features_and_forced_delete_inherit_only_stdio(
    new_loop: Callable[[], asyncio.AbstractEventLoop], recorder: tuple[Path, Path]
) -> None:
    script, log = recorder

    async def body() -> None:
        assert await runc_mount_options(str(script)) == frozenset({"rro", "ro"})
        meta = bundlemod.BundleMeta(namespace="ns", id="c1", runtime_name="io.containerd.runc.v2",
                                    binary_name=str(script), runtime_root="/run/nowhere")
        await runc_force_delete(meta)
        done = await run_process([str(script), "x", "y"], limit=10)
        assert done.returncode == 0

    _run(new_loop, body())
    assert _recorded(log) == {"features": "", "--root /run/nowhere": "", "x y": ""}


@pytest.mark.parametrize("new_loop", _loops())
def test_the_shim_launcher_inherits_only_stdio(
    new_loop: Callable[[], asyncio.AbstractEventLoop], recorder: tuple[Path, Path]
) -> None:
    # (the launcher also closes what it finds at start, commit c99d657: this is what it is given)
    script, log = recorder

    async def body() -> None:
        launcher = ShimLauncher(python=str(script))
        try:
            await launcher.start()
            assert launcher.pid > 0
        finally:
            await launcher.close()
        assert launcher.pid == 0

    _run(new_loop, body())
    assert _recorded(log) == {"-s -m": ""}
