"""``ctr run`` with a real image: pulled from docker-registry on 127.0.0.1, unpacked on overlayfs.

The whole client path of containerd 1.6's ctr: Images.Get, Leases, Snapshots.Prepare/Mounts,
Containers.Create with the runc v2 options Any, FIFOs opened by our shim, Wait before Start,
Delete, then container + snapshot removal.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.fixtures.procs import wait_for
from tests.fixtures.pytest_plugin import PushedImage

from .daemon import Daemon, mounts_under

pytestmark = pytest.mark.root


def _tasks(daemon: Daemon) -> dict[str, str]:
    rows = daemon.ctr("tasks", "ls").stdout.splitlines()[1:]
    return {r.split()[0]: r.split()[2] for r in rows}


@pytest.fixture
def image(daemon: Daemon, pushed_busybox: PushedImage) -> str:
    r = daemon.ctr("plugins", "ls", "type==io.containerd.grpc.v1,id==tasks", check=False)
    assert len(r.stdout.splitlines()) >= 2, f"no tasks plugin in the daemon: {r.stdout}{r.stderr}"
    daemon.ctr("images", "pull", "--plain-http", pushed_busybox.ref, timeout=120)
    return pushed_busybox.ref


def test_ctr_run_rm_prints_and_exits_with_code(daemon: Daemon, image: str) -> None:
    r = daemon.ctr("run", "--rm", image, "r1", "sh", "-c", "echo hi; exit 3", check=False, timeout=60)
    assert r.returncode == 3, r.stderr
    assert r.stdout == "hi\n"
    assert "r1" not in _tasks(daemon)
    assert daemon.ctr("containers", "ls", "-q").stdout.split() == []
    assert "r1" not in daemon.ctr("snapshots", "ls").stdout
    assert [m for m in mounts_under(str(daemon.state)) if "/r1/" in m or m.endswith("/r1/rootfs")] == []


@pytest.mark.parametrize(("args", "code"), [(["true"], 0), (["false"], 1), (["sh", "-c", "exit 42"], 42)])
def test_ctr_run_rm_exit_codes_of_processes_that_exit_at_once(daemon: Daemon, image: str, args: list[str],
                                                              code: int) -> None:
    # the shim starts the init through runc's exec FIFO (no `runc start`): the exit may come
    # before that start has answered
    r = daemon.ctr("run", "--rm", image, "q1", *args, check=False, timeout=60)
    assert r.returncode == code, r.stderr
    assert "q1" not in _tasks(daemon)
    assert daemon.ctr("containers", "ls", "-q").stdout.split() == []


def test_ctr_run_detached_is_running_for_runc_too(daemon: Daemon, image: str) -> None:
    daemon.ctr("run", "-d", image, "d2", "sleep", "1000", timeout=60)
    try:
        assert _tasks(daemon)["d2"] == "RUNNING"
        runc_root = daemon.state / "runc" / "default"
        st = subprocess.run(["runc", "--root", str(runc_root), "state", "d2"], capture_output=True, text=True,
                            check=True)
        assert json.loads(st.stdout)["status"] == "running"
        assert not (runc_root / "d2" / "exec.fifo").exists()
        daemon.ctr("tasks", "kill", "-s", "SIGKILL", "d2")
        wait_for(lambda: _tasks(daemon).get("d2") == "STOPPED", 20, "d2 to stop")
        r = daemon.ctr("tasks", "rm", "d2")
        assert r.returncode == 0
    finally:
        daemon.ctr("tasks", "kill", "-s", "SIGKILL", "d2", check=False)
        daemon.ctr("tasks", "rm", "-f", "d2", check=False)
        daemon.ctr("containers", "rm", "d2", check=False)


def test_ctr_run_detached_then_exec_kill_rm(daemon: Daemon, image: str) -> None:
    daemon.ctr("run", "-d", image, "d1", "sleep", "1000", timeout=60)
    try:
        assert _tasks(daemon)["d1"] == "RUNNING"
        r = daemon.ctr("tasks", "exec", "--exec-id", "x", "d1", "cat", "/etc/hostname", check=False, timeout=60)
        assert r.returncode == 0, r.stderr
        out = daemon.ctr("tasks", "metrics", "d1").stdout
        assert "d1" in out
        daemon.ctr("tasks", "kill", "-s", "SIGKILL", "d1")
        wait_for(lambda: _tasks(daemon).get("d1") == "STOPPED", 20, "d1 to stop")
        daemon.ctr("tasks", "rm", "d1")
        daemon.ctr("containers", "rm", "d1")
        assert "d1" not in daemon.ctr("snapshots", "ls").stdout
    finally:
        daemon.ctr("tasks", "kill", "-s", "SIGKILL", "d1", check=False)
        daemon.ctr("tasks", "rm", "-f", "d1", check=False)
        daemon.ctr("containers", "rm", "d1", check=False)


def test_missing_snapshot_is_not_found(daemon: Daemon, image: str) -> None:
    daemon.ctr("containers", "create", image, "ns1", "true", timeout=60)
    daemon.ctr("snapshots", "rm", "ns1")
    r = daemon.ctr("tasks", "start", "ns1", check=False, timeout=60)
    assert r.returncode != 0
    assert "not found" in r.stderr, r.stderr
    assert _tasks(daemon) == {}
    task_dir = Path(daemon.state) / "io.containerd.runtime.v2.task" / "default"
    assert not task_dir.exists() or list(task_dir.iterdir()) == []
    daemon.ctr("containers", "rm", "ns1", check=False)


def test_unknown_runtime_via_ctr_run(daemon: Daemon, image: str) -> None:
    r = daemon.ctr("run", "--rm", "--runtime", "io.containerd.nope.v1", image, "u1", "true", check=False, timeout=60)
    assert r.returncode != 0
    assert "not found" in r.stderr, r.stderr
    assert "io.containerd.nope.v1" in r.stderr, r.stderr
    daemon.ctr("containers", "rm", "u1", check=False)
