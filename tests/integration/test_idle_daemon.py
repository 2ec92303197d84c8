"""What a real daemon, started as the bench starts it (W6, idle PSS) and answering ``ctr
version``, has NOT loaded: the parts loaded on first use stay out of memory until then.

``tests/unit/test_idle_imports.py`` checks the modules the daemon imports to start; this one
runs the daemon's entry point with its plugins started (the runtime's deferred shims, the
command line's fast path, the servicers), then reads ``sys.modules`` inside it.  Their first use is tested
where it is exercised: a task (``test_tasks_lifecycle``), a restart with live shims
(``test_shim_restart``), an event published to an idle daemon's events socket
(``test_runtime_v2_external::test_publish_command_forwards_to_the_daemon``), any service's
first call (every ``ctr`` test).
"""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fixtures.procs import wait_for

from .daemon import CTR, kill_pids, pids_mentioning, unmount_all

pytestmark = pytest.mark.root

# loaded by the first shim (a task created or restored, a connection on the events socket)
RUNTIME_V2 = [
    "pycontainerd.runtime.v2.manager",
    "pycontainerd.runtime.v2.shim",
    "pycontainerd.runtime.shim_client",
    "pycontainerd.ttrpc",
    "pycontainerd.ttrpc.aio",
    "pycontainerd.ttrpc.protocol",
    "pycontainerd.api.runtime.v2.task.shim_pb2",
    "pycontainerd.api.services.ttrpc.events.v1.events_pb2",
]
# the command line of a started daemon is read without argparse; `config dump` alone writes TOML
STARTUP = ["argparse", "gettext", "tomli_w"]
# the generated modules of the services not called yet (services.common.DeferredModule)
SERVICES = [
    "pycontainerd.api.services.containers.v1.containers_pb2",
    "pycontainerd.api.services.content.v1.content_pb2",
    "pycontainerd.api.services.diff.v1.diff_pb2",
    "pycontainerd.api.services.events.v1.events_pb2",
    "pycontainerd.api.services.images.v1.images_pb2",
    "pycontainerd.api.services.leases.v1.leases_pb2",
    "pycontainerd.api.services.namespaces.v1.namespaces_pb2",
    "pycontainerd.api.services.snapshots.v1.snapshots_pb2",
    "pycontainerd.api.services.tasks.v1.tasks_pb2",
    "pycontainerd.api.events.task_pb2",
    "pycontainerd.api.cgroups.v1.metrics_pb2",
    "pycontainerd.api.cgroups.v2.metrics_pb2",
    "pycontainerd.api.types.task.task_pb2",
]

# the daemon's own entry point (`pycontainerd ARGS`), which on a trigger file dumps sys.modules
# and stops itself: a watcher thread, no change to the daemon
WRAPPER = r"""
import json, os, signal, sys, threading, time
trigger, out = sys.argv[1], sys.argv[2]
sys.argv = ["pycontainerd"] + sys.argv[3:]

def watch():
    while not os.path.exists(trigger):
        time.sleep(0.02)
    with open(out + ".tmp", "w") as f:
        json.dump(sorted(sys.modules), f)
    os.rename(out + ".tmp", out)
    os.kill(os.getpid(), signal.SIGTERM)

threading.Thread(target=watch, daemon=True).start()
from pycontainerd.daemon.__main__ import main
main()
"""


@pytest.fixture
def base() -> Iterator[Path]:
    d = Path(tempfile.mkdtemp(prefix="pycd-idle-", dir="/tmp"))
    try:
        yield d
    finally:
        kill_pids(pids_mentioning(str(d)))
        unmount_all(str(d))
        subprocess.run(["rm", "-rf", "--one-file-system", str(d)], check=False)


def test_idle_daemon_has_not_loaded_the_runtime_v2_manager(base: Path) -> None:
    config = base / "config.toml"
    config.write_text('version = 2\ndisabled_plugins = ["io.containerd.grpc.v1.cri"]\n')  # as the bench's W6
    address = str(base / "pycd.sock")
    trigger, out = base / "dump", base / "modules.json"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    with open(base / "daemon.log", "wb") as logf:
        proc = subprocess.Popen(
            [sys.executable, "-c", WRAPPER, str(trigger), str(out), "--root", str(base / "root"),
             "--state", str(base / "state"), "--address", address, "--config", str(config)],
            stdout=logf, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True, env=env,
        )  # fmt: skip
    try:
        def serving() -> bool:
            if proc.poll() is not None:
                raise AssertionError(f"daemon exited {proc.returncode}: {(base / 'daemon.log').read_text()[-3000:]}")
            return subprocess.run([CTR, "-a", address, "version"], capture_output=True, timeout=10).returncode == 0

        wait_for(serving, 60, "the daemon to answer ctr version", interval=0.05)
        # the shims' events socket is there (containerd's), only the daemon's user may use it
        events = base / "pycd.sock.ttrpc"
        mode = os.lstat(events).st_mode
        assert stat.S_ISSOCK(mode) and stat.S_IMODE(mode) == 0o600
        trigger.touch()
        wait_for(out.exists, 30, "the daemon's module list")
        loaded = set(json.loads(out.read_text()))
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            proc.wait(10)
    assert "pycontainerd.runtime.task_manager" in loaded  # the task manager is there ...
    assert "pycontainerd.runtime.v2.binary" in loaded
    assert [m for m in RUNTIME_V2 + STARTUP if m in loaded] == []  # ... its shim machinery is not
    # ctr version called Version and Introspection (Server: the daemon's UUID) ...
    assert "pycontainerd.api.services.introspection.v1.introspection_pb2" in loaded
    assert [m for m in SERVICES if m in loaded] == []  # ... and nothing else
    assert not (base / "pycd.sock.ttrpc").exists()  # a stopped daemon removes its events socket
