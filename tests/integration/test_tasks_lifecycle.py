"""Issue 5 (daemon half): containers + tasks through the real ctr, real shims and runc.

Containers are created with a busybox rootfs directory (spec ``root.path`` absolute, no
snapshot), over gRPC from Python, because that needs no image store; everything after that
is the real ``ctr``: ``tasks start`` (attached and ``-d``), ``ls``, ``ps``, ``exec``,
``metrics``, ``pause``/``resume``, ``kill``, ``rm``, ``containers rm``.  Bad input is
checked both ways: the gRPC status code (Python client) and ctr's stderr.  The restart
scenario kills the daemon with SIGKILL while tasks run, lets one exit meanwhile, and checks
that the new daemon reconnects.  Every test deletes its tasks in ``finally`` and the fixture
kills leftover shims/containers by pid.
"""

from __future__ import annotations

import functools
import itertools
import json
import os
import re
import shutil
import signal
import subprocess
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import any_pb2

from pycontainerd.api.services.containers.v1 import containers_pb2, containers_pb2_grpc
from pycontainerd.api.services.tasks.v1 import tasks_pb2, tasks_pb2_grpc
from pycontainerd.api.types import mount_pb2
from pycontainerd.api.types.task import task_pb2
from tests.fixtures.procs import wait_for

from .daemon import Daemon, mounts_under

pytestmark = pytest.mark.root

SPEC_URL = "types.containerd.io/opencontainers/runtime-spec/1/Spec"
PROCESS_URL = "types.containerd.io/opencontainers/runtime-spec/1/Process"
BUSYBOX = shutil.which("busybox") or "/bin/busybox"
APPLETS = ("sh", "echo", "sleep", "cat", "true", "false", "ls", "ps", "id", "hostname", "read", "kill", "yes")


# -- helpers ---------------------------------------------------------------------------------------
def gone_or_zombie(pid: int | str) -> bool:
    """The process has exited (reaped already, or a zombie): one read, no exists-then-read race."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] == "Z"


@pytest.fixture(scope="module")
def rootfs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("busybox") / "rootfs"
    for d in ("bin", "proc", "sys", "dev", "etc", "tmp", "run"):
        (root / d).mkdir(parents=True)
    shutil.copy2(BUSYBOX, root / "bin" / "busybox")
    for a in APPLETS:
        (root / "bin" / a).symlink_to("busybox")
    (root / "etc" / "passwd").write_text("root:x:0:0:root:/:/bin/sh\n")
    return root


def oci_spec(ns: str, cid: str, args: list[str], root: Path, **process: Any) -> dict[str, Any]:
    """A spec like ctr's default (oci.populateDefaultUnixSpec), trimmed to what busybox needs."""
    caps = [
        "CAP_CHOWN",
        "CAP_DAC_OVERRIDE",
        "CAP_FSETID",
        "CAP_FOWNER",
        "CAP_MKNOD",
        "CAP_NET_RAW",
        "CAP_SETGID",
        "CAP_SETUID",
        "CAP_SETFCAP",
        "CAP_SETPCAP",
        "CAP_NET_BIND_SERVICE",
        "CAP_SYS_CHROOT",
        "CAP_KILL",
        "CAP_AUDIT_WRITE",
    ]
    proc: dict[str, Any] = {
        "terminal": False,
        "user": {"uid": 0, "gid": 0},
        "args": args,
        "env": ["PATH=/bin"],
        "cwd": "/",
        "capabilities": {k: caps for k in ("bounding", "effective", "permitted")},
        "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}],
        "noNewPrivileges": True,
    }
    proc.update(process)
    return {
        "ociVersion": "1.0.2-dev",
        "process": proc,
        "root": {"path": str(root), "readonly": True},
        "hostname": cid,
        "mounts": [
            {
                "destination": "/proc",
                "type": "proc",
                "source": "proc",
                "options": ["nosuid", "noexec", "nodev"],
            },
            {
                "destination": "/dev",
                "type": "tmpfs",
                "source": "tmpfs",
                "options": ["nosuid", "strictatime", "mode=755", "size=65536k"],
            },
            {
                "destination": "/dev/pts",
                "type": "devpts",
                "source": "devpts",
                "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"],
            },
            {
                "destination": "/dev/shm",
                "type": "tmpfs",
                "source": "shm",
                "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"],
            },
            {
                "destination": "/sys",
                "type": "sysfs",
                "source": "sysfs",
                "options": ["nosuid", "noexec", "nodev", "ro"],
            },
            {"destination": "/tmp", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "nodev"]},
        ],
        "linux": {
            "resources": {"devices": [{"allow": False, "access": "rwm"}]},
            "cgroupsPath": f"/{ns}/{cid}",
            "namespaces": [{"type": t} for t in ("pid", "ipc", "uts", "mount", "network")],
            "maskedPaths": ["/proc/kcore", "/proc/keys", "/proc/timer_list", "/sys/firmware"],
            "readonlyPaths": ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"],
        },
    }


class Api:
    """A minimal Python gRPC client for the calls ctr cannot make without an image store."""

    def __init__(self, address: str, namespace: str = "default") -> None:
        self.channel = grpc.insecure_channel(f"unix:{address}")
        self.md = (("containerd-namespace", namespace),)
        self.containers = containers_pb2_grpc.ContainersStub(self.channel)
        self.tasks = tasks_pb2_grpc.TasksStub(self.channel)

    def close(self) -> None:
        self.channel.close()

    def create_container(
        self, cid: str, spec: dict[str, Any] | bytes, *, runtime: str = "io.containerd.runc.v2", **fields: Any
    ) -> containers_pb2.Container:
        value = spec if isinstance(spec, bytes) else json.dumps(spec).encode()
        c = containers_pb2.Container(id=cid, spec=any_pb2.Any(type_url=SPEC_URL, value=value), **fields)
        c.runtime.name = runtime
        return self.containers.Create(containers_pb2.CreateContainerRequest(container=c), metadata=self.md).container

    def code_of(self, fn: Callable[[], Any]) -> tuple[grpc.StatusCode, str]:
        try:
            fn()
        except grpc.RpcError as exc:
            return exc.code(), exc.details() or ""
        raise AssertionError("call succeeded")


@pytest.fixture
def api(daemon: Daemon) -> Iterator[Api]:
    r = daemon.ctr("plugins", "ls", "type==io.containerd.grpc.v1,id==tasks", check=False)
    assert r.returncode == 0 and len(r.stdout.splitlines()) >= 2, f"no tasks plugin in the daemon: {r.stdout}{r.stderr}"
    a = Api(daemon.address)
    yield a
    # delete whatever a failed test left behind, by the API
    for ns in ("default",):
        md = (("containerd-namespace", ns),)
        try:
            tasks = a.tasks.List(tasks_pb2.ListTasksRequest(), metadata=md).tasks
        except grpc.RpcError:
            tasks = []  # type: ignore[assignment]  # (a repeated field otherwise)
        for t in tasks:
            try:
                a.tasks.Kill(tasks_pb2.KillRequest(container_id=t.id, signal=9, all=True), metadata=md)
            except grpc.RpcError:
                pass
            try:
                a.tasks.Wait(tasks_pb2.WaitRequest(container_id=t.id), metadata=md, timeout=10)
                a.tasks.Delete(tasks_pb2.DeleteTaskRequest(container_id=t.id), metadata=md, timeout=10)
            except grpc.RpcError:
                pass
    a.close()


def task_rows(daemon: Daemon) -> dict[str, tuple[str, str]]:
    lines = daemon.ctr("tasks", "ls").stdout.splitlines()
    assert lines[0].split() == ["TASK", "PID", "STATUS"]
    return {ln.split()[0]: (ln.split()[1], ln.split()[2]) for ln in lines[1:]}


# -- tests ------------------------------------------------------------------------------------------
def test_start_attached_prints_output_and_exit_code(daemon: Daemon, api: Api, rootfs: Path) -> None:
    api.create_container("hi", oci_spec("default", "hi", ["sh", "-c", "echo hi; echo err >&2; exit 3"], rootfs))
    r = daemon.ctr("tasks", "start", "hi", check=False, timeout=60)
    assert r.returncode == 3, r.stderr
    assert r.stdout == "hi\n"
    assert "err" in r.stderr
    assert "hi" not in task_rows(daemon)  # attached ``tasks start`` deletes the task after it exits
    daemon.ctr("containers", "rm", "hi")
    assert "hi" not in daemon.ctr("containers", "ls", "-q").stdout.split()


def test_detached_task_commands(daemon: Daemon, api: Api, rootfs: Path) -> None:
    api.create_container("web", oci_spec("default", "web", ["sleep", "1000"], rootfs), labels={"app": "web"})
    assert daemon.ctr("containers", "ls", "-q", "labels.app==web").stdout.split() == ["web"]
    daemon.ctr("tasks", "start", "-d", "web", timeout=60)
    pid, status = task_rows(daemon)["web"]
    assert status == "RUNNING"
    assert int(pid) > 0
    assert os.path.exists(f"/proc/{pid}")

    # ps lists the init pid
    ps = daemon.ctr("tasks", "ps", "web").stdout.splitlines()
    assert ps[0].split()[:2] == ["PID", "INFO"]
    assert pid in {ln.split()[0] for ln in ps[1:]}

    # exec with an exec id, output and exit code come back
    r = daemon.ctr(
        "tasks",
        "exec",
        "--exec-id",
        "e1",
        "web",
        "sh",
        "-c",
        "echo from-exec; hostname; exit 4",
        check=False,
        timeout=60,
    )
    assert r.returncode == 4, r.stderr
    assert r.stdout.split() == ["from-exec", "web"]

    # metrics: ctr decodes our Any and prints the table
    m = daemon.ctr("tasks", "metrics", "web").stdout
    assert "ID" in m
    assert "web" in m
    assert re.search(r"memory\.usage_in_bytes\s+\d+", m) or re.search(r"memory\.usage\s+\d+", m), m
    mj = json.loads(daemon.ctr("tasks", "metrics", "--format", "json", "web").stdout)
    assert mj  # a decoded metrics message

    # pause / resume
    daemon.ctr("tasks", "pause", "web")
    assert task_rows(daemon)["web"][1] == "PAUSED"
    daemon.ctr("tasks", "resume", "web")
    assert task_rows(daemon)["web"][1] == "RUNNING"

    # a running task cannot be removed
    r = daemon.ctr("tasks", "rm", "web", check=False)
    assert r.returncode != 0, r.stderr
    assert "failed precondition" in r.stderr, r.stderr
    r = daemon.ctr("containers", "rm", "web", check=False)
    assert r.returncode != 0, r.stderr
    assert "non stopped" in r.stderr, r.stderr

    # kill → STOPPED (SIGTERM, ctr's default, is ignored by a pid-1 ``sleep`` without handlers,
    # as under containerd); rm returns the task; container rm works
    daemon.ctr("tasks", "kill", "web")
    assert task_rows(daemon)["web"][1] == "RUNNING"
    daemon.ctr("tasks", "kill", "-s", "SIGKILL", "web")
    wait_for(lambda: task_rows(daemon)["web"][1] == "STOPPED", 20, "web to stop")
    assert gone_or_zombie(pid)
    daemon.ctr("tasks", "rm", "web")
    daemon.ctr("containers", "rm", "web")
    assert daemon.ctr("tasks", "ls").stdout.splitlines()[1:] == []
    assert not (daemon.state / "io.containerd.runtime.v2.task" / "default" / "web").exists()


def test_events_are_published(daemon: Daemon, api: Api, rootfs: Path) -> None:
    proc = subprocess.Popen(
        ["/usr/bin/ctr", "-a", daemon.address, "events"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(iter(proc.stdout.readline, "")), daemon=True)  # type: ignore[union-attr]
    reader.start()

    def seen(text: str) -> bool:
        return any(text in ln for ln in list(lines))

    try:
        # the subscription is live once an event of ours shows up: create namespaces until one does
        probes = itertools.count()

        def subscribed() -> bool:
            if seen("/namespaces/create"):
                return True
            daemon.ctr("namespaces", "create", f"probe{next(probes)}")
            return False

        wait_for(subscribed, 20, "ctr events to receive a /namespaces/create")
        api.create_container("ev", oci_spec("default", "ev", ["true"], rootfs))
        daemon.ctr("tasks", "start", "ev", timeout=60)  # attached: deletes the task when it exits
        daemon.ctr("containers", "rm", "ev")
        try:
            wait_for(lambda: seen("/containers/delete"), 20, "/containers/delete from ctr events")
        except TimeoutError as exc:
            raise AssertionError(f"{exc}; ctr events printed: {''.join(lines)!r}") from None
    finally:
        # SIGTERM, not SIGINT: a shell running the suite as a background job starts it with
        # SIGINT ignored, and Go keeps an inherited SIG_IGN, so ctr would never see a SIGINT
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=10)
        reader.join(timeout=10)
    out = "".join(lines)
    topics = re.findall(r"default (/\S+)", out)
    for t in (
        "/containers/create",
        "/tasks/create",
        "/tasks/start",
        "/tasks/exit",
        "/tasks/delete",
        "/containers/delete",
    ):
        assert t in topics, out
    assert topics.index("/tasks/create") < topics.index("/tasks/start") < topics.index("/tasks/exit")
    assert '"container_id":"ev"' in out.replace(" ", "")


def test_bad_input_codes(daemon: Daemon, api: Api, rootfs: Path) -> None:
    md = api.md
    # container spec must be set / runtime name must be set
    c = containers_pb2.Container(id="nospec")
    c.runtime.name = "io.containerd.runc.v2"
    code, msg = api.code_of(
        lambda: api.containers.Create(containers_pb2.CreateContainerRequest(container=c), metadata=md)
    )
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert "spec must be set" in msg
    # duplicate container
    api.create_container("dup", oci_spec("default", "dup", ["true"], rootfs))
    code, msg = api.code_of(lambda: api.create_container("dup", oci_spec("default", "dup", ["true"], rootfs)))
    assert code == grpc.StatusCode.ALREADY_EXISTS
    assert 'container "dup": already exists' in msg

    # no task → NotFound (real ctr relies on it)
    code, msg = api.code_of(lambda: api.tasks.Get(tasks_pb2.GetRequest(container_id="dup"), metadata=md))
    assert code == grpc.StatusCode.NOT_FOUND
    assert "task dup not found" in msg

    # unknown runtime
    api.create_container("badrt", oci_spec("default", "badrt", ["true"], rootfs), runtime="io.containerd.nope.v1")
    r = daemon.ctr("tasks", "start", "badrt", check=False)
    assert r.returncode != 0, r.stderr
    assert "not found" in r.stderr, r.stderr
    assert "io.containerd.nope.v1" in r.stderr, r.stderr

    # invalid spec JSON
    api.create_container("badjson", b"{this is not json")
    code, msg = api.code_of(lambda: api.tasks.Create(tasks_pb2.CreateTaskRequest(container_id="badjson"), metadata=md))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert "JSON" in msg

    # missing snapshot: rootfs mounts naming directories that are gone
    spec = oci_spec("default", "nosnap", ["true"], rootfs)
    spec["root"] = {"path": "rootfs"}
    api.create_container("nosnap", spec)
    gone = daemon.base / "gone"
    req = tasks_pb2.CreateTaskRequest(
        container_id="nosnap",
        rootfs=[
            mount_pb2.Mount(
                type="overlay",
                source="overlay",
                options=[f"lowerdir={gone}/l", f"upperdir={gone}/u", f"workdir={gone}/w"],
            )
        ],
    )
    code, msg = api.code_of(lambda: api.tasks.Create(req, metadata=md))
    assert code == grpc.StatusCode.NOT_FOUND
    assert "does not exist" in msg
    # and no rootfs at all with a relative root.path
    code, msg = api.code_of(lambda: api.tasks.Create(tasks_pb2.CreateTaskRequest(container_id="nosnap"), metadata=md))
    assert code == grpc.StatusCode.FAILED_PRECONDITION
    assert "no rootfs" in msg
    assert not list((daemon.state / "io.containerd.runtime.v2.task").rglob("config.json"))

    # exec id in use; empty exec id; unknown signal
    api.create_container("busy", oci_spec("default", "busy", ["sleep", "1000"], rootfs))
    daemon.ctr("tasks", "start", "-d", "busy", timeout=60)
    pspec = any_pb2.Any(
        type_url=PROCESS_URL,
        value=json.dumps(
            {"args": ["sleep", "100"], "cwd": "/", "env": ["PATH=/bin"], "user": {"uid": 0, "gid": 0}}
        ).encode(),
    )
    api.tasks.Exec(tasks_pb2.ExecProcessRequest(container_id="busy", exec_id="x1", spec=pspec), metadata=md)
    code, msg = api.code_of(
        lambda: api.tasks.Exec(tasks_pb2.ExecProcessRequest(container_id="busy", exec_id="x1", spec=pspec), metadata=md)
    )
    assert code == grpc.StatusCode.ALREADY_EXISTS, msg
    code, msg = api.code_of(
        lambda: api.tasks.Exec(tasks_pb2.ExecProcessRequest(container_id="busy", exec_id="", spec=pspec), metadata=md)
    )
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert "exec id" in msg
    api.tasks.DeleteProcess(tasks_pb2.DeleteProcessRequest(container_id="busy", exec_id="x1"), metadata=md)
    r = daemon.ctr("tasks", "kill", "-s", "99", "busy", check=False)
    assert r.returncode != 0, r.stderr
    assert "invalid argument" in r.stderr, r.stderr
    code, msg = api.code_of(
        lambda: api.tasks.Checkpoint(tasks_pb2.CheckpointTaskRequest(container_id="busy"), metadata=md)
    )
    assert code == grpc.StatusCode.UNIMPLEMENTED
    assert "checkpoint" in msg
    daemon.ctr("tasks", "kill", "-s", "KILL", "busy")
    w = api.tasks.Wait(tasks_pb2.WaitRequest(container_id="busy"), metadata=md, timeout=20)
    assert w.exit_status == 137
    daemon.ctr("tasks", "rm", "busy")


def test_wait_before_start_and_after_exit(daemon: Daemon, api: Api, rootfs: Path) -> None:
    md = api.md
    api.create_container("w", oci_spec("default", "w", ["sh", "-c", "exit 7"], rootfs))
    created = api.tasks.Create(tasks_pb2.CreateTaskRequest(container_id="w"), metadata=md)
    assert created.pid > 0
    got = api.tasks.Get(tasks_pb2.GetRequest(container_id="w"), metadata=md).process
    assert got.status == task_pb2.CREATED
    assert got.pid == created.pid
    fut = api.tasks.Wait.future(tasks_pb2.WaitRequest(container_id="w"), metadata=md, timeout=30)
    # a round trip behind the Wait on the same channel: the Wait is in the daemon before Start
    # goes out (a Wait that answered before the exit would not say 7 below), and still pending
    assert api.tasks.Get(tasks_pb2.GetRequest(container_id="w"), metadata=md).process.status == task_pb2.CREATED
    assert not fut.done()
    api.tasks.Start(tasks_pb2.StartRequest(container_id="w"), metadata=md)
    assert fut.result().exit_status == 7
    again = api.tasks.Wait(tasks_pb2.WaitRequest(container_id="w"), metadata=md, timeout=5)
    assert again.exit_status == 7
    d = api.tasks.Delete(tasks_pb2.DeleteTaskRequest(container_id="w"), metadata=md)
    assert d.exit_status == 7
    assert d.pid == created.pid
    assert d.exited_at.seconds > 0


def test_restart_reconnects_and_sees_exits(daemon: Daemon, api: Api, rootfs: Path) -> None:
    for cid in ("stay", "dies"):
        api.create_container(cid, oci_spec("default", cid, ["sleep", "1000"], rootfs))
        daemon.ctr("tasks", "start", "-d", cid, timeout=60)
    rows = task_rows(daemon)
    dies_pid = int(rows["dies"][0])
    daemon.kill9()
    os.kill(dies_pid, signal.SIGKILL)  # exits while the daemon is down; its shim reaps it
    wait_for(lambda: gone_or_zombie(dies_pid), 20, "the task to die")
    daemon.start()
    rows = task_rows(daemon)
    assert rows["stay"][1] == "RUNNING"
    assert int(rows["stay"][0]) > 0
    assert rows["dies"][1] == "STOPPED"
    w = api.tasks.Wait(tasks_pb2.WaitRequest(container_id="dies"), metadata=api.md, timeout=10)
    assert w.exit_status == 137
    daemon.ctr("tasks", "rm", "dies")
    r = daemon.ctr("tasks", "exec", "--exec-id", "after", "stay", "echo", "still-here", timeout=60)
    assert r.stdout.strip() == "still-here"
    daemon.ctr("tasks", "kill", "-s", "KILL", "stay")
    wait_for(lambda: task_rows(daemon)["stay"][1] == "STOPPED", 20, "stay to stop")
    daemon.ctr("tasks", "rm", "stay")
    assert task_rows(daemon) == {}


def test_restart_with_dead_shim_leaves_stopped_task(daemon: Daemon, api: Api, rootfs: Path) -> None:
    api.create_container("orphan", oci_spec("default", "orphan", ["sleep", "1000"], rootfs))
    daemon.ctr("tasks", "start", "-d", "orphan", timeout=60)
    bundle = daemon.state / "io.containerd.runtime.v2.task" / "default" / "orphan"
    meta = json.loads((bundle / "daemon-task.json").read_text())
    daemon.kill9()
    os.kill(meta["shim_pid"], signal.SIGKILL)  # the shim is gone too
    daemon.start()
    rows = task_rows(daemon)
    assert rows["orphan"][1] == "STOPPED"
    assert not bundle.exists()  # runc delete --force, unmount, rmdir
    assert gone_or_zombie(meta["pid"])
    daemon.ctr("tasks", "rm", "orphan")
    assert task_rows(daemon) == {}


def test_fifty_containers_ten_at_a_time_leave_nothing(daemon: Daemon, api: Api, rootfs: Path) -> None:
    md = api.md

    def one(i: int) -> int:
        cid = f"many-{i}"
        api.create_container(cid, oci_spec("default", cid, ["sh", "-c", f"exit {i % 7}"], rootfs))
        api.tasks.Create(tasks_pb2.CreateTaskRequest(container_id=cid), metadata=md, timeout=60)
        waiter = api.tasks.Wait.future(tasks_pb2.WaitRequest(container_id=cid), metadata=md, timeout=60)
        api.tasks.Start(tasks_pb2.StartRequest(container_id=cid), metadata=md, timeout=60)
        status = waiter.result().exit_status
        api.tasks.Delete(tasks_pb2.DeleteTaskRequest(container_id=cid), metadata=md, timeout=60)
        api.containers.Delete(containers_pb2.DeleteContainerRequest(id=cid), metadata=md, timeout=60)
        return status

    with ThreadPoolExecutor(10) as pool:
        statuses = list(pool.map(one, range(50)))
    assert statuses == [i % 7 for i in range(50)]
    assert task_rows(daemon) == {}
    assert daemon.ctr("containers", "ls", "-q").stdout.split() == []
    task_dir = daemon.state / "io.containerd.runtime.v2.task"
    assert not task_dir.exists() or list(task_dir.iterdir()) == []
    assert mounts_under(str(daemon.base)) == []
    shims = daemon.shim_pids()
    assert shims == [], shims
    for ctrl in ("memory", "pids"):
        cg = Path("/sys/fs/cgroup") / ctrl / "default"
        if cg.is_dir():
            assert [p.name for p in cg.iterdir() if p.is_dir() and p.name.startswith("many-")] == []


def _bind_rootfs(rootfs: Path) -> list[mount_pb2.Mount]:
    return [mount_pb2.Mount(type="bind", source=str(rootfs), options=["rbind", "ro"])]


def _bundle(daemon: Daemon, cid: str) -> Path:
    return daemon.state / "io.containerd.runtime.v2.task" / "default" / cid


def _rootfs_spec(cid: str, args: list[str], rootfs: Path) -> dict[str, Any]:
    spec = oci_spec("default", cid, args, rootfs)
    spec["root"] = {"path": "rootfs", "readonly": True}  # the bundle's, with the rootfs mounts on it
    return spec


def test_rootfs_mounts_are_on_the_bundle_until_delete_answers(daemon: Daemon, api: Api, rootfs: Path) -> None:
    """Our own shim: the daemon mounts the rootfs while the shim starts and unmounts it at
    Delete, before the reply (where the shim's Delete would), so nothing stays mounted."""
    cid = "premount-ok"
    md = api.md
    api.create_container(cid, _rootfs_spec(cid, ["sh", "-c", "exit 5"], rootfs))
    try:
        api.tasks.Create(tasks_pb2.CreateTaskRequest(container_id=cid, rootfs=_bind_rootfs(rootfs)), metadata=md,
                         timeout=60)
        bundle = _bundle(daemon, cid)
        assert mounts_under(str(bundle)) == [str(bundle / "rootfs")]
        assert json.loads((bundle / "daemon-task.json").read_text())["extra"]["rootfs_mounted_by_daemon"] is True
        waiter = api.tasks.Wait.future(tasks_pb2.WaitRequest(container_id=cid), metadata=md, timeout=60)
        api.tasks.Start(tasks_pb2.StartRequest(container_id=cid), metadata=md, timeout=60)
        assert waiter.result().exit_status == 5
        r = api.tasks.Delete(tasks_pb2.DeleteTaskRequest(container_id=cid), metadata=md, timeout=60)
        assert r.exit_status == 5
        # at the reply already, not later with the bundle's removal
        assert [m for m in mounts_under(str(daemon.base)) if f"/{cid}" in m] == []
    finally:
        api.containers.Delete(containers_pb2.DeleteContainerRequest(id=cid), metadata=md, timeout=60)
    wait_for(lambda: not _bundle(daemon, cid).exists(), 20, "the bundle's removal")


def test_create_failing_after_the_rootfs_mount_leaves_nothing_mounted(daemon: Daemon, api: Api,
                                                                     rootfs: Path) -> None:
    """runc create fails (a bind mount of a missing source) after the daemon mounted the
    rootfs; and a rootfs mount that itself fails: no mount, bundle or shim is left."""
    md = api.md
    bad_spec = _rootfs_spec("premount-runc-fails", ["true"], rootfs)
    bad_spec["mounts"].append({"destination": "/x", "type": "bind", "source": "/nonexistent-pycd-src",
                               "options": ["rbind"]})
    cases = [
        ("premount-runc-fails", bad_spec, _bind_rootfs(rootfs)),
        ("premount-mount-fails", _rootfs_spec("premount-mount-fails", ["true"], rootfs),
         [mount_pb2.Mount(type="pycd-no-such-fs", source="none", options=["ro"])]),
    ]
    for cid, spec, mounts in cases:
        api.create_container(cid, spec)
        try:
            request = tasks_pb2.CreateTaskRequest(container_id=cid, rootfs=mounts)
            code, detail = api.code_of(functools.partial(api.tasks.Create, request, metadata=md, timeout=60))
            assert code != grpc.StatusCode.OK, (cid, detail)
            assert [m for m in mounts_under(str(daemon.base)) if f"/{cid}" in m] == [], cid
            assert not _bundle(daemon, cid).exists(), cid
            assert cid not in task_rows(daemon)
        finally:
            api.containers.Delete(containers_pb2.DeleteContainerRequest(id=cid), metadata=md, timeout=60)
    wait_for(lambda: daemon.shim_pids() == [], 20, "the failed tasks' shims to exit")


def test_rootfs_mounted_by_the_daemon_is_unmounted_after_a_restart(daemon: Daemon, api: Api,
                                                                   rootfs: Path) -> None:
    """The bundle meta says who mounted the rootfs: a daemon restarted while the task ran
    unmounts it at Delete all the same (the shim does not, its Create had no mounts)."""
    cid = "premount-restart"
    md = api.md
    api.create_container(cid, _rootfs_spec(cid, ["sleep", "1000"], rootfs))
    try:
        api.tasks.Create(tasks_pb2.CreateTaskRequest(container_id=cid, rootfs=_bind_rootfs(rootfs)), metadata=md,
                         timeout=60)
        api.tasks.Start(tasks_pb2.StartRequest(container_id=cid), metadata=md, timeout=60)
        bundle = _bundle(daemon, cid)
        assert mounts_under(str(bundle)) == [str(bundle / "rootfs")]
        daemon.kill9()
        daemon.start()
        assert task_rows(daemon)[cid][1] == "RUNNING"
        daemon.ctr("tasks", "kill", "-s", "KILL", cid)
        wait_for(lambda: task_rows(daemon)[cid][1] == "STOPPED", 20, f"{cid} to stop")
        daemon.ctr("tasks", "rm", cid)
        assert [m for m in mounts_under(str(daemon.base)) if f"/{cid}" in m] == []
    finally:
        api.containers.Delete(containers_pb2.DeleteContainerRequest(id=cid), metadata=md, timeout=60)
