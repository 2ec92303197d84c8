"""Our shim under the REAL containerd (Debian's 1.6) as runtime ``io.containerd.pyrunc.v2``.

containerd resolves that runtime to the binary ``containerd-shim-pyrunc-v2`` on its PATH (our
venv's bin), runs ``start`` in the bundle, talks ``containerd.task.v2.Task`` over ttrpc to the
socket it prints, receives our events on ``Events.Forward`` and, when the shim is gone, runs
``delete``.  ``ctr shim`` talks to the shim socket directly (it computes the address from
containerd's address, the namespace and the id).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import pty
import signal
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import any_pb2, empty_pb2

from pycontainerd.api.runtime.v2.task import shim_pb2
from pycontainerd.api.services.tasks.v1 import tasks_pb2, tasks_pb2_grpc
from pycontainerd.api.types.task import task_pb2
from pycontainerd.shim import v2layout
from pycontainerd.ttrpc import Client
from tests.fixtures.containerd import Containerd, running_containerd
from tests.fixtures.procs import cmdline, kill_pids, mounts_under, pid_alive, remove_tree, unmount_all, wait_for

from .test_ctr_tty import keys, wait_screen
from .test_ctr_tty import tmux as tmux  # the fixture

pytestmark = pytest.mark.root

RUNTIME = "io.containerd.pyrunc.v2"
IMAGE = "docker.io/library/busybox:latest"
VENV_BIN = Path(sys.executable).parent
TASK = "containerd.task.v2.Task"
OCI = "types.containerd.io/opencontainers/runtime-spec/1"
OCI_PROCESS = f"{OCI}/Process"


@pytest.fixture(scope="module")
def ctrd(busybox_archive: Path) -> Iterator[Containerd]:
    if os.geteuid() != 0:
        pytest.skip("needs root")
    if not (VENV_BIN / "containerd-shim-pyrunc-v2").exists():
        pytest.skip("containerd-shim-pyrunc-v2 is not installed in the venv (pip install -e .)")
    with contextlib.ExitStack() as stack, pytest.MonkeyPatch.context() as mp:
        mp.setenv("PATH", f"{VENV_BIN}:{os.environ.get('PATH', '/usr/bin:/bin')}")
        c = stack.enter_context(running_containerd())
        mp.undo()
        stack.callback(_remove_sockets, c.address)  # runs first, then containerd's cleanup
        c.ctr("images", "import", str(busybox_archive))
        yield c


_IDS: list[str] = []  # container ids and groups: their shim sockets go at the end, even after a failure


def _cid(prefix: str) -> str:
    _IDS.append(f"pyrunc-{prefix}-{uuid.uuid4().hex[:8]}")
    return _IDS[-1]


def _remove_sockets(address: str) -> None:
    """Sockets of shims that were killed (not shut down) by the containerd fixture's cleanup."""
    for name in _IDS:
        path = v2layout.socket_address(address, "default", name).removeprefix("unix://")
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)


def _our_shims(c: Containerd) -> list[int]:
    return [p for p in c.shim_pids() if "containerd-shim-pyrunc-v2" in cmdline(p) or "pycontainerd" in cmdline(p)]


def _socket_path(c: Containerd, cid: str, ns: str = "default") -> str:
    return v2layout.socket_address(c.address, ns, cid).removeprefix("unix://")


def _tasks(c: Containerd) -> dict[str, tuple[str, str]]:
    out = {}
    for line in c.ctr("tasks", "ls").stdout.splitlines()[1:]:
        parts = line.split()
        if len(parts) >= 3:
            out[parts[0]] = (parts[1], parts[2])
    return out


def test_run_rm_echo(ctrd: Containerd) -> None:
    cid = _cid("echo")
    r = ctrd.ctr("run", "--runtime", RUNTIME, "--rm", IMAGE, cid, "echo", "hi")
    assert r.stdout == "hi\n"
    r = ctrd.ctr("run", "--runtime", RUNTIME, "--rm", IMAGE, _cid("false"), "sh", "-c", "exit 3", check=False)
    assert r.returncode == 3, r.stderr
    # gone without a trace: no task, no container, no shim socket, no rootfs mount
    assert cid not in _tasks(ctrd)
    assert not os.path.exists(_socket_path(ctrd, cid))
    assert not [m for m in mounts_under(str(ctrd.state)) if cid in m]


def test_stdin_and_close_io(ctrd: Containerd) -> None:
    r = ctrd.ctr("run", "--runtime", RUNTIME, "--rm", IMAGE, _cid("stdin"), "sh", "-c", "cat; echo done",
                 input="line1\nline2\n")
    assert r.stdout == "line1\nline2\ndone\n"  # ctr closed stdin (CloseIO) after its EOF: cat ended


def test_tty_resize_and_exit_code(ctrd: Containerd, tmux: str) -> None:
    cid = _cid("tty")
    keys(tmux, f"ctr -a {ctrd.address} run --runtime {RUNTIME} --rm -t {IMAGE} {cid} sh; echo CTR-EXIT=$?", "Enter")
    wait_screen(tmux, "/ #")
    keys(tmux, "echo $((6*7)) from $(tty)", "Enter")
    wait_screen(tmux, "42 from /dev/pts/0")
    keys(tmux, "stty size", "Enter")
    wait_screen(tmux, "30 120")  # ResizePty: the tmux window's size
    keys(tmux, "exit 5", "Enter")
    wait_screen(tmux, "CTR-EXIT=5")


def test_detached_exec_kill_and_state(ctrd: Containerd) -> None:
    cid = _cid("det")
    ctrd.ctr("run", "--runtime", RUNTIME, "-d", IMAGE, cid, "sleep", "300")
    try:
        sock = _socket_path(ctrd, cid)
        assert os.path.exists(sock)
        assert (ctrd.state / "io.containerd.runtime.v2.task" / "default" / cid / "address").read_text() == f"unix://{sock}"
        assert oct(os.stat(sock).st_mode & 0o777) == "0o600"
        status, pid = _tasks(ctrd)[cid][1], _tasks(ctrd)[cid][0]
        assert status == "RUNNING" and pid_alive(int(pid))
        shims = _our_shims(ctrd)
        assert len(shims) == 1, [cmdline(p) for p in ctrd.shim_pids()]

        r = ctrd.ctr("tasks", "exec", "--exec-id", "e1", cid, "sh", "-c", "echo out; echo err >&2; exit 7", check=False)
        assert r.returncode == 7
        assert "out" in r.stdout and "err" in r.stderr
        r = ctrd.ctr("tasks", "ps", cid)
        assert pid in r.stdout

        ctrd.ctr("tasks", "pause", cid)
        assert _tasks(ctrd)[cid][1] == "PAUSED"
        ctrd.ctr("tasks", "resume", cid)
        assert _tasks(ctrd)[cid][1] == "RUNNING"

        r = ctrd.ctr("tasks", "metrics", "--format", "json", cid)
        metrics = json.loads(r.stdout)
        assert metrics["pids"]["current"] == 1, r.stdout  # the cgroup Metrics the shim's Stats returned
        assert metrics["memory"]["usage"]["usage"] > 0, r.stdout

        # Update (ctr 1.6 has no `tasks update`: straight to the shim, LinuxResources JSON in an Any)
        memory = json.dumps({"memory": {"limit": 64 << 20}}).encode()
        limits = any_pb2.Any(type_url=f"{OCI}/LinuxResources", value=memory)
        update = shim_pb2.UpdateTaskRequest(id=cid, resources=limits)
        asyncio.run(_task_call(sock, "Update", update, empty_pb2.Empty))
        limit = Path(f"/sys/fs/cgroup/memory/default/{cid}/memory.limit_in_bytes")
        if not limit.exists():  # cgroup v2
            limit = Path(f"/sys/fs/cgroup/default/{cid}/memory.max")
        assert limit.read_text().strip() == str(64 << 20)

        r = ctrd.ctr("tasks", "checkpoint", cid, check=False)
        assert r.returncode != 0 and "criu" in r.stderr

        ctrd.ctr("tasks", "kill", "-s", "KILL", cid)
        wait_for(lambda: _tasks(ctrd)[cid][1] == "STOPPED", 20, "the task to stop")
        ctrd.ctr("tasks", "delete", cid)
        wait_for(lambda: not any(pid_alive(p) for p in shims), 20, "the shim to exit")
        assert not os.path.exists(sock)
    finally:
        ctrd.ctr("tasks", "kill", "-s", "KILL", cid, check=False)
        ctrd.ctr("tasks", "delete", "-f", cid, check=False)
        ctrd.ctr("containers", "delete", cid, check=False)


class CtrEvents:
    """`ctr events` running in the background; ``wait_for(topic, cid)`` polls its output."""

    def __init__(self, c: Containerd) -> None:
        self.proc = subprocess.Popen(
            ["ctr", "-a", c.address, "events"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
        )
        assert self.proc.stdout is not None
        os.set_blocking(self.proc.stdout.fileno(), False)
        self.lines: list[str] = []

    def topics(self, cid: str) -> list[str]:
        # "<date> <time> +0000 UTC <namespace> <topic> <event JSON>"
        return [x.split()[5] for x in self.lines if cid in x and len(x.split()) > 5]

    def wait_for(self, topic: str, cid: str) -> None:
        def seen() -> bool:
            chunk = self.proc.stdout.read() if self.proc.stdout else None
            if chunk:
                self.lines.extend(chunk.splitlines())
            return topic in self.topics(cid)

        wait_for(seen, 20, f"event {topic} of {cid}")

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()


@pytest.fixture
def ctr_events(ctrd: Containerd) -> Iterator[CtrEvents]:
    ev = CtrEvents(ctrd)
    try:
        yield ev
    finally:
        ev.close()


def test_events_reach_containerd(ctrd: Containerd, ctr_events: CtrEvents) -> None:
    cid = _cid("ev")
    ctrd.ctr("run", "--runtime", RUNTIME, "--rm", IMAGE, cid, "true")
    ctr_events.wait_for("/tasks/delete", cid)
    for topic in ("/tasks/create", "/tasks/start", "/tasks/exit", "/tasks/delete"):
        assert topic in ctr_events.topics(cid), ctr_events.lines


def test_group_annotation_shares_one_shim(ctrd: Containerd) -> None:
    group = _cid("group")
    a, b = _cid("ga"), _cid("gb")
    try:
        for cid in (a, b):
            ctrd.ctr("run", "--runtime", RUNTIME, "--annotation", f"io.containerd.runc.v2.group={group}", "-d", IMAGE,
                     cid, "sleep", "300")
        address = v2layout.socket_address(ctrd.address, "default", group)
        bundles = ctrd.state / "io.containerd.runtime.v2.task" / "default"
        assert (bundles / a / "address").read_text() == (bundles / b / "address").read_text() == address
        shim_pids = {asyncio.run(_connect(address, cid)) for cid in (a, b)}
        assert len(shim_pids) == 1
        (shim_pid,) = shim_pids
        assert [p for p in _our_shims(ctrd) if pid_alive(p)] == [shim_pid]

        # the first container goes; the shim stays for the second
        ctrd.ctr("tasks", "kill", "-s", "KILL", a)
        wait_for(lambda: _tasks(ctrd)[a][1] == "STOPPED", 20, "the task to stop")
        ctrd.ctr("tasks", "delete", a)
        ctrd.ctr("containers", "delete", a)
        assert pid_alive(shim_pid) and _tasks(ctrd)[b][1] == "RUNNING"
        r = ctrd.ctr("tasks", "exec", "--exec-id", "e", b, "echo", "b alive")
        assert r.stdout == "b alive\n"
        ctrd.ctr("tasks", "kill", "-s", "KILL", b)
        wait_for(lambda: _tasks(ctrd)[b][1] == "STOPPED", 20, "the task to stop")
        ctrd.ctr("tasks", "delete", b)
        wait_for(lambda: not pid_alive(shim_pid), 20, "the group's shim to exit")
        assert not os.path.exists(address.removeprefix("unix://"))
    finally:
        for cid in (a, b):
            ctrd.ctr("tasks", "kill", "-s", "KILL", cid, check=False)
            ctrd.ctr("tasks", "delete", "-f", cid, check=False)
            ctrd.ctr("containers", "delete", cid, check=False)


async def _task_call(sock: str, method: str, req: Any, resp_type: type[Any]) -> Any:
    async with await Client.connect(sock) as client:
        return await client.call(TASK, method, req, resp_type, timeout=10)


async def _connect(address: str, cid: str) -> int:
    async with await Client.connect(address) as client:
        resp = await client.call(TASK, "Connect", shim_pb2.ConnectRequest(id=cid), shim_pb2.ConnectResponse, timeout=10)
        assert resp.task_pid > 0
        return resp.shim_pid


def test_oom_event(ctrd: Containerd, ctr_events: CtrEvents) -> None:
    cid = _cid("oom")
    r = ctrd.ctr("run", "--runtime", RUNTIME, "--rm", "--memory-limit", str(16 << 20), IMAGE, cid, "sh", "-c",
                 "x=a; while true; do x=$x$x; done", check=False)
    assert r.returncode == 137, (r.returncode, r.stderr)
    ctr_events.wait_for("/tasks/oom", cid)


def test_ctr_shim_commands(ctrd: Containerd, tmp_path: Path) -> None:
    cid = _cid("shim")
    ctrd.ctr("run", "--runtime", RUNTIME, "-d", IMAGE, cid, "sleep", "300")
    try:
        r = ctrd.ctr("shim", "--id", cid, "state")
        state = json.loads(r.stdout)
        assert state["id"] == cid and state["status"] == 2  # RUNNING
        assert state["bundle"].endswith(f"/default/{cid}")

        # `ctr shim exec` of Debian's ctr 1.6.20 panics before it dials the shim (typeurl.TypeURL
        # of a non-pointer specs.Process): do what it would do with our ttrpc client instead
        spec = {"args": ["sh", "-c", "echo from-shim-exec; exit 5"], "cwd": "/", "env": ["PATH=/bin"],
                "user": {"uid": 0, "gid": 0}}
        out = tmp_path / "out"
        os.mkfifo(out)
        reader = os.open(out, os.O_RDONLY | os.O_NONBLOCK)
        try:
            exit_status = asyncio.run(_exec_over_ttrpc(_socket_path(ctrd, cid), cid, spec, str(out)))
            assert exit_status == 5
            assert os.read(reader, 4096) == b"from-shim-exec\n"
        finally:
            os.close(reader)

        ctrd.ctr("tasks", "kill", "-s", "KILL", cid)
        wait_for(lambda: _tasks(ctrd)[cid][1] == "STOPPED", 20, "the task to stop")
        r = ctrd.ctr("shim", "--id", cid, "delete", cid)  # the socket from --id, the request from the argument
        assert "exit status 137" in r.stdout, r.stdout
    finally:
        ctrd.ctr("tasks", "delete", "-f", cid, check=False)
        ctrd.ctr("containers", "delete", cid, check=False)


async def _exec_over_ttrpc(sock: str, cid: str, spec: dict[str, Any], stdout: str) -> int:
    async with await Client.connect(sock) as client:
        md = {"containerd-namespace-ttrpc": "default"}
        any_spec = any_pb2.Any(type_url=OCI_PROCESS, value=json.dumps(spec).encode())
        req = shim_pb2.ExecProcessRequest(id=cid, exec_id="x1", spec=any_spec, stdout=stdout)
        await client.call(TASK, "Exec", req, empty_pb2.Empty, timeout=10, metadata=md)
        await client.call(TASK, "Start", shim_pb2.StartRequest(id=cid, exec_id="x1"), shim_pb2.StartResponse,
                          timeout=10, metadata=md)
        waited = await client.call(TASK, "Wait", shim_pb2.WaitRequest(id=cid, exec_id="x1"), shim_pb2.WaitResponse,
                                   timeout=10, metadata=md)
        await client.call(TASK, "Delete", shim_pb2.DeleteRequest(id=cid, exec_id="x1"), shim_pb2.DeleteResponse,
                          timeout=10, metadata=md)
        return waited.exit_status


def test_containerd_restart_keeps_running_task(busybox_archive: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root")
    base = Path(tempfile.mkdtemp(prefix="pycd-ctrd-", dir="/tmp"))
    cid = _cid("rst")
    with contextlib.ExitStack() as cleanup, pytest.MonkeyPatch.context() as mp:
        # the fixture removes only a base it made itself: this one is ours to remove, last
        cleanup.callback(remove_tree, base)
        cleanup.callback(unmount_all, str(base))
        cleanup.callback(_remove_sockets, str(base / "containerd.sock"))
        mp.setenv("PATH", f"{VENV_BIN}:{os.environ.get('PATH', '/usr/bin:/bin')}")
        with running_containerd(base=base) as c:
            c.ctr("images", "import", str(busybox_archive))
            c.ctr("run", "--runtime", RUNTIME, "-d", IMAGE, cid, "sleep", "300")
            pid = int(_tasks(c)[cid][0])
            shims = _our_shims(c)
            assert len(shims) == 1
            c.stop()
            assert pid_alive(pid) and pid_alive(shims[0])
            c.start()
            assert _tasks(c)[cid] == (str(pid), "RUNNING")
            r = c.ctr("tasks", "exec", "--exec-id", "after", cid, "echo", "still here")
            assert r.stdout == "still here\n"
            # the container dies while containerd is down: its exit event cannot be delivered
            # (dropped after retries), the shim still knows and answers State/Delete after
            c.stop()
            os.kill(pid, signal.SIGKILL)
            wait_for(lambda: not pid_alive(pid), 20, "the container to die")
            assert pid_alive(shims[0])
            c.start()
            wait_for(lambda: _tasks(c)[cid][1] == "STOPPED", 20, "the task to show stopped")
            r = c.ctr("tasks", "delete", cid)
            assert "exit with non-zero exit code 137" in r.stderr, r.stderr
            c.ctr("containers", "delete", cid)
            wait_for(lambda: not pid_alive(shims[0]), 20, "the shim to exit")
        kill_pids([p for p in shims if pid_alive(p)])


# -- stdin: the shim holds the stdin FIFO's write end too (containerd/containerd#661) -----------------
# Each test runs on containerd's own runc shim (Debian's containerd-shim-runc-v2) and on ours, so
# the two are held to the same behaviour: a process's stdin ends only on CloseIO, never because
# the FIFO's writer (ctr, the CRI) went away.

RUNTIMES = ("io.containerd.runc.v2", RUNTIME)
RUNTIME_IDS = ("containerd-shim", "ours")
READ_LOOP = "while read l; do echo got-$l; done; echo EOF-SEEN"


def _ctr_detached(c: Containerd, *args: str, tty: bool) -> None:
    """``ctr ... --detach``, its stdin a pipe nobody writes (or a terminal nobody types on): ctr,
    the stdin FIFO's writer, exits once the process started, and sends no CloseIO."""
    if tty:
        parent, child = pty.openpty()
    else:
        child, parent = os.pipe()
    try:
        err = subprocess.DEVNULL if tty else subprocess.PIPE
        proc = subprocess.Popen(["ctr", "-a", c.address, *args], stdin=child, stdout=child if tty else subprocess.PIPE,
                                stderr=child if tty else err, start_new_session=True)
        try:
            out, errs = proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            raise
        assert proc.returncode == 0, (args, out, errs)
    finally:
        os.close(parent)
        os.close(child)


def _grpc_tasks(c: Containerd) -> Iterator[Any]:
    with grpc.insecure_channel(f"unix://{c.address}") as ch:
        yield tasks_pb2_grpc.TasksStub(ch)


_NS = (("containerd-namespace", "default"),)


def _status(c: Containerd, cid: str, exec_id: str = "") -> int:
    for stub in _grpc_tasks(c):
        return int(stub.Get(tasks_pb2.GetRequest(container_id=cid, exec_id=exec_id), metadata=_NS, timeout=10)
                   .process.status)
    raise AssertionError("unreachable")


def _close_io(c: Containerd, cid: str, exec_id: str = "") -> None:
    for stub in _grpc_tasks(c):
        stub.CloseIO(tasks_pb2.CloseIORequest(container_id=cid, exec_id=exec_id, stdin=True), metadata=_NS, timeout=10)


def _shim_of(c: Containerd, cid: str) -> int:
    """The shim serving ``cid``: its init process's parent (the shim is the subreaper)."""
    pid = _tasks(c)[cid][0]
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("PPid:"):
            return int(line.split()[1])
    raise AssertionError(f"no parent of {pid}")


def _fd_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


class _Fifos:
    """The FIFOs ctr left in ``--fifo-dir`` for process ``name``: we write stdin, read stdout."""

    def __init__(self, fifo_dir: Path, name: str) -> None:
        found = list(fifo_dir.glob(f"*/{name}-stdin"))
        assert len(found) == 1, list(fifo_dir.rglob("*"))
        self.stdin = str(found[0])
        self.out_fd = os.open(str(found[0].parent / f"{name}-stdout"), os.O_RDONLY | os.O_NONBLOCK)
        self.out = b""

    def send(self, data: bytes) -> None:
        try:  # ENXIO: the shim closed its read end, i.e. the process's stdin is closed
            fd = os.open(self.stdin, os.O_WRONLY | os.O_NONBLOCK)
        except OSError as exc:
            raise AssertionError(f"stdin FIFO has no reader any more ({exc}); output so far {self.out!r}") from exc
        try:
            os.write(fd, data)
        finally:
            os.close(fd)  # a writer goes away again

    def wait_output(self, text: bytes, what: str) -> None:
        def seen() -> bool:
            with contextlib.suppress(BlockingIOError):
                while chunk := os.read(self.out_fd, 65536):
                    self.out += chunk
            return text in self.out

        try:
            wait_for(seen, 20, what)
        except TimeoutError as exc:
            raise AssertionError(f"{exc}: output {self.out!r}") from None

    def close(self) -> None:
        os.close(self.out_fd)


@pytest.mark.parametrize("tty", [False, True], ids=["pipes", "tty"])
@pytest.mark.parametrize("kind", ["task", "exec"])
@pytest.mark.parametrize("runtime", RUNTIMES, ids=RUNTIME_IDS)
def test_stdin_outlives_its_writer_until_close_io(ctrd: Containerd, runtime: str, kind: str, tty: bool,
                                                 tmp_path: Path) -> None:
    cid = _cid(f"keep-{kind}")
    fifo_dir = tmp_path / "fifo"
    fifo_dir.mkdir()
    term = ["-t"] if tty else []
    exec_id = ""
    fifos: _Fifos | None = None
    try:
        if kind == "task":
            _ctr_detached(ctrd, "run", "--runtime", runtime, "-d", *term, "--fifo-dir", str(fifo_dir), IMAGE, cid,
                          "sh", "-c", READ_LOOP, tty=tty)
            name = cid
        else:
            ctrd.ctr("run", "--runtime", runtime, "-d", "--null-io", IMAGE, cid, "sleep", "300")
            shim = _shim_of(ctrd, cid)
            baseline = _fd_count(shim)
            exec_id = name = "reader"
            _ctr_detached(ctrd, "tasks", "exec", "-d", *term, "--fifo-dir", str(fifo_dir), "--exec-id", exec_id, cid,
                          "sh", "-c", READ_LOOP, tty=tty)
        fifos = _Fifos(fifo_dir, name)
        # ctr, the writer, is gone without CloseIO: the process still reads
        fifos.send(b"one\n")
        fifos.wait_output(b"got-one", "the first line after ctr left")
        fifos.send(b"two\n")  # and again after our own writer came and went
        fifos.wait_output(b"got-two", "the line of a second writer")
        assert b"EOF-SEEN" not in fifos.out
        assert _status(ctrd, cid, exec_id) == task_pb2.RUNNING
        # CloseIO (with no writer left) ends it
        _close_io(ctrd, cid, exec_id)
        if not tty:  # (containerd's shim hangs the terminal up instead: the shell dies of SIGHUP)
            fifos.wait_output(b"EOF-SEEN", "EOF after CloseIO")
        wait_for(lambda: _status(ctrd, cid, exec_id) == task_pb2.STOPPED, 20, "the reader to exit after CloseIO")
        if kind == "exec":
            ctrd.ctr("tasks", "delete", "--exec-id", exec_id, cid, check=False)  # fails with a non-zero exit
            if runtime == RUNTIME or not tty:  # (containerd's shim keeps a fd after its tty exec: not ours to check)
                wait_for(lambda: _fd_count(shim) == baseline, 10, f"the shim's fds back to {baseline}")
    finally:
        if fifos is not None:
            fifos.close()
        ctrd.ctr("tasks", "kill", "-s", "KILL", cid, check=False)
        ctrd.ctr("tasks", "delete", "-f", cid, check=False)
        ctrd.ctr("containers", "delete", cid, check=False)


@pytest.mark.parametrize("runtime", RUNTIMES, ids=RUNTIME_IDS)
def test_piped_stdin_ends_with_ctrs_close_io(ctrd: Containerd, runtime: str) -> None:
    """``echo hi | ctr run --rm IMG id cat`` and ``ctr tasks exec`` likewise: stdin ends at ctr's EOF.

    ``ctr tasks exec`` sends CloseIO at its EOF.  ``ctr run`` (1.6) does not when its stdin ends
    before Create returned (containerd/containerd#4489: its closer is not set yet): containerd's
    own shim then keeps the stdin open and ``cat`` never exits (measured: still running after
    60 s), so that half runs on ours only, where a writer gone before Start ends stdin.  (With
    ``</dev/null`` ctr's writer never even connects: ``ctr run --rm IMG id cat`` hangs on both
    shims, as before this shim held stdin open - measured, 10 s.)"""
    if runtime == RUNTIME:
        r = ctrd.ctr("run", "--runtime", runtime, "--rm", IMAGE, _cid("pipe"), "cat", input="hi\n", timeout=60)
        assert r.stdout == "hi\n"
    cid = _cid("pipex")
    try:
        ctrd.ctr("run", "--runtime", runtime, "-d", "--null-io", IMAGE, cid, "sleep", "300")
        r = ctrd.ctr("tasks", "exec", "--exec-id", "cat", cid, "sh", "-c", "cat; echo done", input="hi\n", timeout=60)
        assert r.stdout == "hi\ndone\n"
    finally:
        ctrd.ctr("tasks", "kill", "-s", "KILL", cid, check=False)
        ctrd.ctr("tasks", "delete", "-f", cid, check=False)
        ctrd.ctr("containers", "delete", cid, check=False)


@pytest.mark.parametrize("runtime", RUNTIMES, ids=RUNTIME_IDS)
def test_20_exec_stdin_sessions_leave_no_fd_in_the_shim(ctrd: Containerd, runtime: str) -> None:
    cid = _cid("fds")
    try:
        ctrd.ctr("run", "--runtime", runtime, "-d", "--null-io", IMAGE, cid, "sleep", "300")
        shim = _shim_of(ctrd, cid)
        baseline = _fd_count(shim)
        lost = []
        for i in range(20):
            r = ctrd.ctr("tasks", "exec", "--exec-id", f"s{i}", cid, "cat", input=f"line-{i}\n", timeout=60)
            if r.stdout != f"line-{i}\n":
                lost.append((i, r.stdout))
        # ctr 1.6 with containerd's own shim loses a session's output now and then under load (seen once
        # in 20 sessions in a fresh-clone run: cat's line never reached ctr; daemon, shim and ctr are
        # all containerd's there); ours must not lose any. The fds are the point of the test, on both.
        assert not lost if runtime == RUNTIME else len(lost) <= 2, lost
        wait_for(lambda: _fd_count(shim) == baseline, 10, f"the shim's fds back to {baseline}")
    finally:
        ctrd.ctr("tasks", "kill", "-s", "KILL", cid, check=False)
        ctrd.ctr("tasks", "delete", "-f", cid, check=False)
        ctrd.ctr("containers", "delete", cid, check=False)
