"""What a real daemon, started as the bench starts it (W6, idle PSS) and answering ``ctr
version`` and health checks, has NOT loaded: the parts loaded on first use stay out of memory
until then, the protobuf runtime among them (those calls have hand-written codecs, ``rpc.wire``).

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
import re
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
# the command line of a started daemon is read without argparse; `config dump` alone writes TOML;
# shutil (it imports bz2 and lzma) at the first rmtree/which (the overlayfs check removes its
# directories without it), calendar at the first timestamp parsed
STARTUP = ["argparse", "gettext", "tomli_w", "shutil", "bz2", "lzma", "calendar"]
# our modules used by one kind of call: the filter language at the first filtered call (a list,
# an events subscription), cgroups at the first metrics call, the stack walker at the first dump,
# the codecs at the first apply or diff, the shim protocols (annotations) and CreateOptions with the
# first task
FIRST_USE = ["pycontainerd.filters", "pycontainerd.regexp", "pycontainerd.cgroups", "pycontainerd.debug.stacks",
             "pycontainerd.debug.profile", "pycontainerd.diff.compression",
             "pycontainerd.runtime.shim_api", "pycontainerd.shim.protocol"]
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

# the daemon's own entry point (`pycontainerd ARGS`), which dumps sys.modules to N.json for each
# trigger file N appearing in a directory: a watcher thread, no change to the daemon
WRAPPER = r"""
import json, os, sys, threading, time
triggers = sys.argv[1]
sys.argv = ["pycontainerd"] + sys.argv[2:]

def watch():
    done = set()
    while True:
        for name in sorted(set(os.listdir(triggers)) - done):
            if name.endswith("json") or name.endswith(".tmp"):
                continue
            done.add(name)
            out = os.path.join(triggers, name + ".json")
            with open(out + ".tmp", "w") as f:
                json.dump(sorted(sys.modules), f)
            os.rename(out + ".tmp", out)
        time.sleep(0.02)

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


def _health_check(address: str) -> int:
    """grpc.health.v1.Health/Check of the whole daemon (service ""), as kubelet probes it."""
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    with grpc.insecure_channel(f"unix://{address}") as ch:
        resp = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(service=""), timeout=10)
    return int(resp.status)


def _introspection_server(address: str) -> tuple[str, int]:
    import grpc
    from google.protobuf import empty_pb2

    from pycontainerd.api.services.introspection.v1 import introspection_pb2_grpc

    with grpc.insecure_channel(f"unix://{address}") as ch:
        resp = introspection_pb2_grpc.IntrospectionStub(ch).Server(empty_pb2.Empty(), timeout=10)
    return resp.uuid, resp.pid


def test_idle_daemon_has_not_loaded_the_runtime_v2_manager_nor_protobuf(base: Path) -> None:
    config = base / "config.toml"
    config.write_text('version = 2\ndisabled_plugins = ["io.containerd.grpc.v1.cri"]\n')  # as the bench's W6
    address = str(base / "pycd.sock")
    triggers = base / "dumps"
    triggers.mkdir()

    def modules(name: str) -> set[str]:
        (triggers / name).touch()
        out = triggers / f"{name}.json"
        wait_for(out.exists, 30, "the daemon's module list")
        return set(json.loads(out.read_text()))

    def ctr(*args: str) -> str:
        p = subprocess.run([CTR, "-a", address, *args], capture_output=True, text=True, timeout=30)
        assert p.returncode == 0, (args, p.stdout, p.stderr)
        return p.stdout

    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    with open(base / "daemon.log", "wb") as logf:
        proc = subprocess.Popen(
            [sys.executable, "-c", WRAPPER, str(triggers), "--root", str(base / "root"),
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
        version = ctr("version")  # what ctr prints of the daemon: as before the hand-written codecs
        server = version[version.index("Server:"):]
        m = re.fullmatch(r"Server:\n  Version:  (\S+)\n  Revision: pycontainerd\n  UUID: ([0-9a-f-]{36})\n", server)
        assert m is not None, version
        from pycontainerd import __version__

        assert m.group(1) == __version__
        assert _health_check(address) == 1  # SERVING
        loaded = modules("idle")
        proc_pid_uuid = m.group(2)
        ctr("namespaces", "create", "idle-test")  # a call that needs protobuf: it loads then
        assert "idle-test" in ctr("namespaces", "ls")
        assert ctr("-n", "idle-test", "containers", "ls").split() == ["CONTAINER", "IMAGE", "RUNTIME"]
        # a filtered list: the filter language loads then (a bad filter is still InvalidArgument)
        assert ctr("-n", "idle-test", "containers", "ls", "labels.a==b").split() == ["CONTAINER", "IMAGE", "RUNTIME"]
        bad = subprocess.run([CTR, "-a", address, "-n", "idle-test", "containers", "ls", "labels.a=="],
                             capture_output=True, text=True, timeout=30)
        assert bad.returncode != 0 and "parse error" in bad.stderr and "invalid argument" in bad.stderr, bad.stderr
        assert _introspection_server(address) == (proc_pid_uuid, proc.pid)  # what the hand codec sent
        assert _health_check(address) == 1
        after = modules("after")
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            proc.wait(10)
    assert "pycontainerd.runtime.task_manager" in loaded  # the task manager is there ...
    assert "pycontainerd.runtime.v2.binary" in loaded
    assert [m for m in RUNTIME_V2 + STARTUP + FIRST_USE if m in loaded] == []  # ... its shim machinery is not
    # ctr version called Version and Introspection.Server, a health check Health.Check: all three
    # served by hand-written codecs, so neither a generated module nor the protobuf runtime is loaded
    assert [m for m in loaded if m.startswith(("pycontainerd.api.", "google.", "grpc"))] == []
    assert [m for m in SERVICES if m in loaded] == []
    # the first calls needing protobuf loaded it (and their services' modules only)
    assert "google.protobuf" in after
    assert "pycontainerd.filters" in after  # the filtered containers ls
    assert "pycontainerd.api.services.namespaces.v1.namespaces_pb2" in after
    assert "pycontainerd.api.services.containers.v1.containers_pb2" in after
    assert [m for m in SERVICES if m in after] == ["pycontainerd.api.services.containers.v1.containers_pb2",
                                                   "pycontainerd.api.services.namespaces.v1.namespaces_pb2"]
    assert not (base / "pycd.sock.ttrpc").exists()  # a stopped daemon removes its events socket
