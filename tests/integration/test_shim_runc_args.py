"""What the shim passes to runc, with real runc behind a recording wrapper (``BinaryName``)."""

from __future__ import annotations

import json
import shutil
import sys

import pytest

from .shim_fixtures import ShimEnv, busybox, env, run
from .shim_support import make_bundle

__all__ = ["busybox", "env"]  # fixtures, used by name

pytestmark = pytest.mark.root


def test_a_shim_at_debug_level_does_not_run_runc_with_debug(env: ShimEnv) -> None:
    # containerd's runc shim never sets go-runc's Debug (its NewRunc: Command, Log, LogFormat
    # json, PdeathSignal, Root, SystemdCgroup), whatever its own -debug: runc --debug would write
    # its debug lines, nsexec's included, into the bundle's log.json at every command
    runc = shutil.which("runc")
    assert runc is not None
    log = env.tmp / "runc-argv.log"
    wrapper = env.tmp / "runc-wrapper"
    wrapper.write_text(
        f"#!{sys.executable} -I\n"
        "import json, os, sys\n"
        f"with open({str(log)!r}, 'a') as f:\n"
        "    f.write(json.dumps(sys.argv[1:]) + '\\n')\n"
        f"os.execv({runc!r}, [{runc!r}, *sys.argv[1:]])\n"
    )
    wrapper.chmod(0o755)

    async def body() -> None:
        assert env.manager is not None
        bundle = make_bundle(env.bundles, env.spec, env.rootfs, "dbg", ["true"])
        shim = await env.manager.launch_forked(
            namespace=env.ns, container_id="dbg", bundle=bundle.path, fork=env.launcher,
            runc={"root": env.runc_root, "binary_name": str(wrapper)}, debug=True,
        )
        env.started.append(("dbg", shim.pid, bundle.path))
        await shim.create(rootfs=bundle.rootfs_mounts, stdin="", stdout="", stderr="", terminal=False)
        await shim.start()
        assert (await shim.wait()).exit_status == 0
        await shim.delete()
        await env.finish(shim, bundle)

    run(env, body())
    argvs = [json.loads(line) for line in log.read_text().splitlines()]
    commands = [next(a for a in argv if a in ("create", "start", "delete", "state", "kill")) for argv in argvs
                if any(a in ("create", "start", "delete", "state", "kill") for a in argv)]
    assert "create" in commands and "start" in commands and "delete" in commands, argvs
    assert all("--log-format" in argv and "--root" in argv for argv in argvs), argvs
    assert not [argv for argv in argvs if "--debug" in argv]
