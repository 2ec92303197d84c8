"""The daemon's own runc runtime speaks the runtime v2 shim API (task.v2 over ttrpc).

Shims the daemon starts for ``io.containerd.runc.v2`` (the default) are forked by its fork
server and listen where containerd would put them (``/run/containerd/s/<sha256 of
address/namespace/group>``), so the real ``ctr shim`` reaches them; one shim per container
unless the ``io.containerd.runc.v2.group`` annotation groups them; a shim killed with -9
stops only its own container's task.

(``ctr shim delete`` is not exercised: Debian's ctr sends a DeleteRequest with an empty id,
which a runc v2 shim answers NotFound; ``ctr shim exec`` panics in ctr itself.)
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from pycontainerd import errdefs
from pycontainerd.runtime.shim_client import ShimLauncher
from pycontainerd.shim import v2layout
from tests.fixtures.procs import wait_for

from .daemon import CTR, Daemon
from .test_tasks_lifecycle import Api, gone_or_zombie, oci_spec, rootfs  # noqa: F401 - fixture

pytestmark = pytest.mark.root

RUNNING = 2  # containerd.v1.types.Status RUNNING, as ctr shim state prints it


@pytest.fixture
def api(daemon: Daemon) -> Iterator[Api]:
    a = Api(daemon.address)
    try:
        yield a
    finally:
        a.close()


def bundle_of(daemon: Daemon, cid: str, ns: str = "default") -> Path:
    return daemon.state / "io.containerd.runtime.v2.task" / ns / cid


def shim_state(daemon: Daemon, cid: str, ns: str = "default") -> dict[str, object]:
    r = subprocess.run([CTR, "-a", daemon.address, "-n", ns, "shim", "--id", cid, "state"],
                       capture_output=True, text=True, timeout=30)  # fmt: skip
    assert r.returncode == 0, f"ctr shim state {cid}: {r.stdout}{r.stderr}"
    state: dict[str, object] = json.loads(r.stdout)
    return state


def task_status(daemon: Daemon, cid: str) -> str:
    for line in daemon.ctr("tasks", "ls").stdout.splitlines()[1:]:
        fields = line.split()
        if fields and fields[0] == cid:
            return fields[2]
    return ""


def wait_stopped(daemon: Daemon, cid: str) -> None:
    wait_for(lambda: task_status(daemon, cid) == "STOPPED", 20, f"{cid} to stop")


@contextlib.contextmanager
def removing_sockets(daemon: Daemon, ids: list[str]) -> Iterator[None]:
    """Sockets a killed shim leaves in /run/containerd/s go at the end, whatever happens."""
    try:
        yield
    finally:
        for cid in ids:
            path = v2layout.socket_address(daemon.address, "default", cid).removeprefix("unix://")
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)


def start(daemon: Daemon, api: Api, root: Path, cid: str, **annotations: str) -> int:
    spec = oci_spec("default", cid, ["sleep", "1000"], root)
    if annotations:
        spec["annotations"] = annotations
    api.create_container(cid, spec)
    daemon.ctr("tasks", "start", "-d", cid)
    return int(daemon.ctr("tasks", "ls").stdout.split(cid, 1)[1].split()[0])


def test_ctr_shim_state_reaches_our_default_shim(daemon: Daemon, api: Api, rootfs: Path) -> None:  # noqa: F811
    with removing_sockets(daemon, ["c1"]):
        pid = start(daemon, api, rootfs, "c1")
        address = (bundle_of(daemon, "c1") / "address").read_text().strip()
        assert address == v2layout.socket_address(daemon.address, "default", "c1")
        state = shim_state(daemon, "c1")
        assert state["id"] == "c1" and state["pid"] == pid and state["status"] == RUNNING
        assert state["bundle"] == str(bundle_of(daemon, "c1"))
        daemon.ctr("tasks", "kill", "-s", "9", "c1")
        wait_for(lambda: task_status(daemon, "c1") == "STOPPED", 20, "c1 to stop")
        daemon.ctr("tasks", "rm", "c1")
        daemon.ctr("containers", "rm", "c1")


def test_one_shim_per_container_and_a_killed_shim_stops_only_its_own(
    daemon: Daemon, api: Api, rootfs: Path  # noqa: F811
) -> None:
    with removing_sockets(daemon, ["a", "b"]):
        pid_a = start(daemon, api, rootfs, "a")
        start(daemon, api, rootfs, "b")
        shim_a = int((bundle_of(daemon, "a") / "shim.pid").read_text())
        shim_b = int((bundle_of(daemon, "b") / "shim.pid").read_text())
        assert shim_a != shim_b
        assert (bundle_of(daemon, "a") / "address").read_text() != (bundle_of(daemon, "b") / "address").read_text()
        os.kill(shim_a, signal.SIGKILL)
        wait_for(lambda: task_status(daemon, "a") == "STOPPED", 30, "a's task to be tombstoned")
        # the tombstone's cleanup (our binary's ``delete``: runc delete --force) ends a's container
        wait_for(lambda: gone_or_zombie(pid_a), 30, "a's container to be gone")
        assert task_status(daemon, "b") == "RUNNING"
        assert shim_state(daemon, "b")["status"] == RUNNING
        for cid in ("a", "b"):
            daemon.ctr("tasks", "kill", "-s", "9", cid, check=False)
            wait_stopped(daemon, cid)
            daemon.ctr("tasks", "rm", cid)


def test_group_annotation_shares_a_shim(daemon: Daemon, api: Api, rootfs: Path) -> None:  # noqa: F811
    group = {"io.containerd.runc.v2.group": "pod1"}
    with removing_sockets(daemon, ["pod1"]):
        start(daemon, api, rootfs, "g1", **group)
        start(daemon, api, rootfs, "g2", **group)
        want = v2layout.socket_address(daemon.address, "default", "pod1")
        for cid in ("g1", "g2"):
            assert (bundle_of(daemon, cid) / "address").read_text().strip() == want
            assert task_status(daemon, cid) == "RUNNING"
        # (``ctr shim --id g1`` computes the socket from the container id, not its group, so
        # it cannot reach a grouped container's shim — with containerd neither)
        for cid in ("g1", "g2"):
            daemon.ctr("tasks", "kill", "-s", "9", cid)
            wait_stopped(daemon, cid)
            daemon.ctr("tasks", "rm", cid)
        # the group's shim exits once its last container is deleted, and takes its socket along
        wait_for(lambda: not os.path.exists(want.removeprefix("unix://")), 20, "the group's shim to exit")


def test_a_cancelled_launch_does_not_answer_the_next_one(tmp_path: Path) -> None:
    """A create cancelled while the fork server works on it (its client went away) must not
    leave its reply to the next caller (who would get another container's answer)."""

    async def body() -> None:
        fork = ShimLauncher()
        try:
            first = asyncio.ensure_future(fork.start_v2(
                {"namespace": "default", "id": "one", "bundle": str(tmp_path / "one"), "address": "/x"}
            ))  # fmt: skip
            await asyncio.sleep(0.05)  # the request is out; the cold fork server is still warming up
            first.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await first
            with pytest.raises(errdefs.NotFound, match="two"):
                await fork.start_v2(
                    {"namespace": "default", "id": "two", "bundle": str(tmp_path / "two"), "address": "/x"}
                )
        finally:
            await fork.close()

    asyncio.run(body())
