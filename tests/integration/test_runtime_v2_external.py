"""Runtime v2 with an external shim: our daemon driving Debian's Go ``containerd-shim-runc-v2``.

The shim is selected three ways, all by containerd's rules:

- ``ctr run --runtime /usr/bin/containerd-shim-runc-v2`` (an absolute path is the binary);
- ``ctr run --runtime io.containerd.debianrunc.v2`` with ``containerd-shim-debianrunc-v2`` (a
  symlink to Debian's shim) first on the daemon's ``PATH``;
- the config: the default CRI runtime ``runc`` with ``runtime_type = "io.containerd.runc.v2"``
  and ``runtime_path = "/usr/bin/containerd-shim-runc-v2"`` (containerd 1.7's option) makes
  every ``io.containerd.runc.v2`` task, plain ``ctr run`` included, use that binary instead of
  the daemon's own shim.

Everything after that is the real ``ctr``: run --rm (exit code), run -d, run -t (resize),
tasks exec, pause/resume, metrics, kill, rm, events (an OOM kill's /tasks/oom too); a failed
Create; a SIGKILL of the daemon with the container running and a restart that reconnects
(tasks ls, exec, kill, Wait); a shim killed with SIGKILL (the shim binary's ``delete`` cleans
up); and the daemon's ``publish`` command.  The Go shim's sockets
(``/run/containerd/s/<sha256(address/ns/id)>``) are removed after each test, its processes
are killed by pid with the daemon fixture's cleanup (their command lines name our temp dir).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from google.protobuf import any_pb2

from pycontainerd.api.events import task_pb2 as ev_task_pb2
from pycontainerd.api.services.tasks.v1 import tasks_pb2, tasks_pb2_grpc
from tests.fixtures.procs import pids_mentioning, wait_for

from .daemon import BIN, CTR, Daemon, mounts_under, running_daemon
from .test_ctr_tty import keys, wait_screen

pytestmark = pytest.mark.root

SHIM = "/usr/bin/containerd-shim-runc-v2"
IMAGE = "docker.io/library/busybox:latest"
NS = "default"
CONFIG_RUNTIME_PATH = f"""version = 2
[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
  runtime_type = "io.containerd.runc.v2"
  runtime_path = "{SHIM}"
"""


def go_shim_socket(d: Daemon, namespace: str, cid: str) -> str:
    """Where the Go shim listens: /run/containerd/s/<sha256(<address>/<ns>/<id>)>."""
    return "/run/containerd/s/" + hashlib.sha256(os.path.join(d.address, namespace, cid).encode()).hexdigest()


class Ext:
    """A daemon plus the container ids a test used (to remove the Go shims' sockets)."""

    def __init__(self, d: Daemon) -> None:
        self.d = d
        self.ids: set[str] = set()

    def cid(self, name: str) -> str:
        self.ids.add(name)
        return name

    def tasks(self) -> dict[str, tuple[str, str]]:
        rows = self.d.ctr("tasks", "ls").stdout.splitlines()[1:]
        return {r.split()[0]: (r.split()[1], r.split()[2]) for r in rows}

    def status(self, cid: str) -> str | None:
        t = self.tasks().get(cid)
        return t[1] if t else None

    def shim_exe_of(self, cid: str) -> str:
        """The executable of the process that is the task's parent: its shim."""
        pid = int(self.tasks()[cid][0])
        stat = Path(f"/proc/{pid}/stat").read_text()
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        return os.readlink(f"/proc/{ppid}/exe")

    def remove(self, cid: str) -> None:
        if cid in self.tasks():
            self.d.ctr("tasks", "kill", "-a", "-s", "SIGKILL", cid, check=False)
            with contextlib.suppress(TimeoutError):
                wait_for(lambda: self.status(cid) in (None, "STOPPED"), 20, f"{cid} to stop")
            self.d.ctr("tasks", "rm", "-f", cid, check=False)
        self.d.ctr("containers", "rm", cid, check=False)

    def cleanup(self) -> None:
        for cid in self.ids:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(go_shim_socket(self.d, NS, cid))


@contextlib.contextmanager
def external_daemon(archive: Path, config_text: str = "") -> Iterator[Ext]:
    if not Path(SHIM).exists():
        pytest.skip(f"{SHIM} is not installed (Debian package containerd)")
    with running_daemon(config_text) as d:
        ext = Ext(d)
        try:
            d.ctr("images", "import", str(archive), timeout=120)
            yield ext
        finally:
            with contextlib.suppress(Exception):
                for cid in list(ext.ids):
                    ext.remove(cid)
            d.stop()
            ext.cleanup()


@pytest.fixture
def ext(busybox_archive: Path) -> Iterator[Ext]:
    with external_daemon(busybox_archive) as e:
        yield e


class Events:
    """``ctr events`` running in the background, its output collected."""

    def __init__(self, d: Daemon) -> None:
        self.out = tempfile.TemporaryFile()  # noqa: SIM115 - closed by close()
        self.proc = subprocess.Popen([CTR, "-a", d.address, "events"], stdout=self.out, stderr=subprocess.STDOUT)

    def text(self) -> str:
        self.out.seek(0)
        return self.out.read().decode(errors="replace")

    def lines(self, topic: str, cid: str) -> list[str]:
        return [ln for ln in self.text().splitlines() if f" {topic} " in ln and cid in ln]

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)
        self.out.close()


@contextlib.contextmanager
def ctr_events(d: Daemon) -> Iterator[Events]:
    ev = Events(d)
    try:
        # subscribed once a published event shows up
        wait_for(lambda: _publish_probe(d, ev), 20, "ctr events to subscribe")
        yield ev
    finally:
        ev.close()


def _publish_probe(d: Daemon, ev: Events) -> bool:
    d.ctr("namespaces", "create", f"probe-{time.monotonic_ns()}", check=False)
    return "/namespaces/create" in ev.text()


# -- tests ------------------------------------------------------------------------------------------
def test_run_rm_with_absolute_shim_path_exits_with_code(ext: Ext) -> None:
    cid = ext.cid("abs-rm")
    r = ext.d.ctr("run", "--rm", "--runtime", SHIM, IMAGE, cid, "sh", "-c", "echo hi; exit 3", check=False, timeout=60)
    assert r.returncode == 3, r.stderr
    assert r.stdout == "hi\n"
    assert cid not in ext.tasks()
    assert ext.d.ctr("containers", "ls", "-q").stdout.split() == []
    assert [m for m in mounts_under(str(ext.d.state)) if f"/{cid}/" in m or m.endswith(f"/{cid}/rootfs")] == []
    assert "started shim /usr/bin/containerd-shim-runc-v2" in ext.d.log.read_text()
    assert not os.path.exists(go_shim_socket(ext.d, NS, cid))  # the shim shut down and removed it


def test_our_pyrunc_shim_under_our_daemon(ext: Ext) -> None:
    """Our own runtime v2 shim (``containerd-shim-pyrunc-v2``) through the same manager."""
    ours = str(Path(sys.executable).parent / "containerd-shim-pyrunc-v2")
    if not Path(ours).exists():
        pytest.skip(f"{ours} is not installed (pip install -e .)")
    r = ext.d.ctr("run", "--rm", "--runtime", ours, IMAGE, ext.cid("pyrunc-rm"), "sh", "-c", "echo hi; exit 3",
                  check=False, timeout=60)  # fmt: skip
    assert (r.returncode, r.stdout) == (3, "hi\n"), r.stderr
    cid = ext.cid("pyrunc-d")
    ext.d.ctr("run", "-d", "--runtime", ours, IMAGE, cid, "sleep", "300", timeout=60)
    assert ext.status(cid) == "RUNNING"
    pid = int(ext.tasks()[cid][0])
    ppid = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    assert ours.encode() in Path(f"/proc/{ppid}/cmdline").read_bytes().split(b"\0")  # our shim is the parent
    r = ext.d.ctr("tasks", "exec", "--exec-id", "e1", cid, "sh", "-c", "echo in; exit 4", check=False)
    assert (r.returncode, r.stdout) == (4, "in\n"), r.stderr
    ext.d.ctr("tasks", "kill", "-s", "SIGKILL", cid)
    wait_for(lambda: ext.status(cid) == "STOPPED", 20, f"{cid} to stop")
    ext.d.ctr("tasks", "rm", cid)
    ext.d.ctr("containers", "rm", cid)
    wait_for(lambda: not os.path.exists(go_shim_socket(ext.d, NS, cid)), 20, "the shim's socket to go")


def test_detached_exec_pause_metrics_kill_and_events(ext: Ext) -> None:
    cid = ext.cid("abs-d")
    with ctr_events(ext.d) as ev:
        ext.d.ctr("run", "-d", "--runtime", SHIM, IMAGE, cid, "sleep", "1000", timeout=60)
        assert ext.status(cid) == "RUNNING"
        assert ext.shim_exe_of(cid) == SHIM
        bundle = ext.d.state / "io.containerd.runtime.v2.task" / NS / cid
        assert (bundle / "address").read_text().strip() == "unix://" + go_shim_socket(ext.d, NS, cid)
        # runc's state lives under our state dir, not containerd's /run/containerd/runc
        assert (ext.d.state / "runc" / NS / cid / "state.json").exists()

        r = ext.d.ctr("tasks", "exec", "--exec-id", "x1", cid, "sh", "-c", "echo exec-out; exit 4", check=False)
        assert (r.returncode, r.stdout) == (4, "exec-out\n"), r.stderr
        ps = ext.d.ctr("tasks", "ps", cid).stdout
        assert ext.tasks()[cid][0] in ps

        ext.d.ctr("tasks", "pause", cid)
        assert ext.status(cid) == "PAUSED"
        ext.d.ctr("tasks", "resume", cid)
        assert ext.status(cid) == "RUNNING"

        metrics = ext.d.ctr("tasks", "metrics", cid).stdout
        assert cid in metrics and "memory" in metrics.lower(), metrics

        ext.d.ctr("tasks", "kill", "-s", "SIGKILL", cid)
        wait_for(lambda: ext.status(cid) == "STOPPED", 20, f"{cid} to stop")
        ext.d.ctr("tasks", "rm", cid)
        ext.d.ctr("containers", "rm", cid)
        assert not bundle.exists()
        wait_for(lambda: not os.path.exists(go_shim_socket(ext.d, NS, cid)), 15, "the shim to exit")

        for topic in ("/tasks/create", "/tasks/start", "/tasks/exec-added", "/tasks/exec-started",
                      "/tasks/paused", "/tasks/resumed", "/tasks/delete"):  # fmt: skip
            wait_for(functools.partial(ev.lines, topic, cid), 10, f"{topic} in ctr events")
        # one exit for the exec (status 4), one for the init (SIGKILL: 137)
        wait_for(lambda: len(ev.lines("/tasks/exit", cid)) >= 2, 10, "two /tasks/exit")
        exits = "\n".join(ev.lines("/tasks/exit", cid))
        assert '"exit_status":4' in exits.replace(" ", "") and '"exit_status":137' in exits.replace(" ", ""), exits
        # the daemon publishes /tasks/create|start|delete itself: the shim's copies are not doubled
        assert len(ev.lines("/tasks/create", cid)) == 1
        assert len(ev.lines("/tasks/delete", cid)) == 1


def test_runtime_name_resolved_on_path(busybox_archive: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bindir = Path(tempfile.mkdtemp(prefix="pycd-shimpath-", dir="/tmp"))
    try:
        os.symlink(SHIM, bindir / "containerd-shim-debianrunc-v2")
        monkeypatch.setenv("PATH", f"{bindir}:{os.environ.get('PATH', '')}")
        with external_daemon(busybox_archive) as ext:
            cid = ext.cid("path-d")
            ext.d.ctr("run", "-d", "--runtime", "io.containerd.debianrunc.v2", IMAGE, cid, "sleep", "1000")
            assert ext.shim_exe_of(cid) == SHIM
            assert ext.d.ctr("containers", "info", cid).stdout.count("io.containerd.debianrunc.v2") >= 1
            ext.d.ctr("tasks", "kill", "-s", "SIGKILL", cid)
            wait_for(lambda: ext.status(cid) == "STOPPED", 20, f"{cid} to stop")
            ext.d.ctr("tasks", "rm", cid)
            # a name with no binary anywhere: refused as containerd refuses it
            r = ext.d.ctr("run", "--rm", "--runtime", "io.containerd.nope.v9", IMAGE, ext.cid("nope"), "true",
                          check=False)  # fmt: skip
            assert r.returncode != 0
            assert "containerd-shim-nope-v9" in r.stderr and "not found" in r.stderr, r.stderr
    finally:
        subprocess.run(["rm", "-rf", str(bindir)], check=False)


def test_config_runtime_path_moves_runc_tasks_to_the_external_shim(busybox_archive: Path) -> None:
    with external_daemon(busybox_archive, CONFIG_RUNTIME_PATH) as ext:
        cid = ext.cid("cfg-rm")
        r = ext.d.ctr("run", "--rm", IMAGE, cid, "sh", "-c", "exit 7", check=False, timeout=60)
        assert r.returncode == 7, r.stderr
        cid = ext.cid("cfg-d")
        # ctr turns --runc-root into the container's containerd.runc.v1.Options: they reach the shim
        altroot = ext.d.base / "altroot"
        ext.d.ctr("run", "-d", "--runc-root", str(altroot), IMAGE, cid, "sleep", "1000", timeout=60)
        assert ext.shim_exe_of(cid) == SHIM
        assert (altroot / NS / cid / "state.json").exists()
        ext.d.ctr("tasks", "kill", "-s", "SIGKILL", cid)
        wait_for(lambda: ext.status(cid) == "STOPPED", 20, f"{cid} to stop")
        ext.d.ctr("tasks", "rm", cid)


def test_daemon_kill9_and_restart_reconnects(ext: Ext) -> None:
    cid = ext.cid("restart-d")
    ext.d.ctr("run", "-d", "--runtime", SHIM, IMAGE, cid, "sleep", "1000", timeout=60)
    pid = ext.tasks()[cid][0]
    ext.d.kill9()
    ext.d.start()
    assert ext.tasks()[cid] == (pid, "RUNNING")
    r = ext.d.ctr("tasks", "exec", "--exec-id", "after", cid, "echo", "still here", check=False)
    assert (r.returncode, r.stdout) == (0, "still here\n"), r.stderr
    with ctr_events(ext.d) as ev, grpc.insecure_channel(f"unix://{ext.d.address}") as channel:
        tasks = tasks_pb2_grpc.TasksStub(channel)
        md = (("containerd-namespace", NS),)
        # Wait (ctr has no command for it) is in flight through the reconnected shim while we kill
        waiting = tasks.Wait.future(tasks_pb2.WaitRequest(container_id=cid), metadata=md, timeout=60)
        assert ext.status(cid) == "RUNNING"  # a round trip through the daemon: the Wait is still pending
        assert not waiting.done()
        ext.d.ctr("tasks", "kill", "-s", "SIGKILL", cid)
        assert waiting.result(timeout=30).exit_status == 137
        assert ext.status(cid) == "STOPPED"
        # the shim forwards its exit to the new daemon's ttrpc events socket
        wait_for(lambda: ev.lines("/tasks/exit", cid), 15, "/tasks/exit after the restart")
    deleted = ext.d.ctr("tasks", "rm", cid)
    assert deleted.returncode == 0
    wait_for(lambda: not os.path.exists(go_shim_socket(ext.d, NS, cid)), 15, "the shim to exit")


def test_killed_shim_is_cleaned_up_by_its_delete_command(ext: Ext) -> None:
    cid = ext.cid("dead-shim")
    ext.d.ctr("run", "-d", "--runtime", SHIM, IMAGE, cid, "sleep", "1000", timeout=60)
    task_pid = int(ext.tasks()[cid][0])
    stat = Path(f"/proc/{task_pid}/stat").read_text()
    shim_pid = int(stat.rsplit(")", 1)[1].split()[1])
    assert os.readlink(f"/proc/{shim_pid}/exe") == SHIM
    os.kill(shim_pid, signal.SIGKILL)
    wait_for(lambda: ext.status(cid) == "STOPPED", 30, "the task to be reported stopped")
    # the shim binary's `delete` killed the container (runc delete --force) and unmounted it
    wait_for(lambda: not Path(f"/proc/{task_pid}").exists() or _zombie(task_pid), 15, "the container to die")
    assert [m for m in mounts_under(str(ext.d.state)) if f"/{cid}/" in m] == []
    assert not os.path.exists(go_shim_socket(ext.d, NS, cid))
    ext.d.ctr("tasks", "rm", cid)
    ext.d.ctr("containers", "rm", cid)


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def test_publish_command_forwards_to_the_daemon(ext: Ext) -> None:
    event = ev_task_pb2.TaskOOM(container_id="published-1")
    packed = any_pb2.Any(type_url="containerd.events.TaskOOM", value=event.SerializeToString())
    with ctr_events(ext.d) as ev:
        r = subprocess.run(
            [str(BIN / "pycontainerd"), "--address", ext.d.address, "publish", "--topic", "/tasks/oom",
             "--namespace", "pubns"],
            input=packed.SerializeToString(), capture_output=True, timeout=30,
        )  # fmt: skip
        assert r.returncode == 0, r.stderr.decode()
        line = wait_for(lambda: ev.lines("/tasks/oom", "published-1"), 10, "the published event")[0]
        assert "pubns" in line
        r = subprocess.run(
            [str(BIN / "pycontainerd"), "--address", ext.d.address, "publish", "--namespace", "pubns"],
            input=b"", capture_output=True, timeout=30,
        )  # fmt: skip
        assert r.returncode == 1
        assert b"topic required" in r.stderr


@pytest.fixture
def term() -> Iterator[str]:
    """A tmux session (120x30) giving ctr a real terminal, as in test_ctr_tty."""
    if not shutil.which("tmux"):
        pytest.skip("tmux is not installed")
    session = f"pycd-v2-{os.getpid()}-{time.monotonic_ns()}"
    subprocess.run(["tmux", "new-session", "-d", "-s", session, "-x", "120", "-y", "30", "env", "PS1=host$ ", "sh"],
                   check=True)  # fmt: skip
    try:
        yield session
    finally:
        subprocess.run(["tmux", "kill-session", "-t", session], check=False, capture_output=True)


def test_terminal_and_resize_through_the_go_shim(ext: Ext, term: str) -> None:
    """``ctr run -t``: the console socket, ResizePty (``stty size`` is the tmux window's) and the exit code."""
    cid = ext.cid("tty-go")
    keys(term, f"{CTR} -a {ext.d.address} run --rm -t --runtime {SHIM} {IMAGE} {cid} sh; echo CTR-EXIT=$?", "Enter")
    wait_screen(term, "/ #")
    assert ext.shim_exe_of(cid) == SHIM
    keys(term, "stty size", "Enter")
    wait_screen(term, "30 120")
    keys(term, "exit 6", "Enter")
    wait_screen(term, "CTR-EXIT=6")


def test_failed_create_leaves_no_shim_behind(ext: Ext) -> None:
    cid = ext.cid("bad-exec")
    r = ext.d.ctr("run", "--rm", "--runtime", SHIM, IMAGE, cid, "/no/such/binary", check=False, timeout=60)
    assert r.returncode != 0
    assert "/no/such/binary" in r.stderr, r.stderr
    assert cid not in ext.tasks()
    bundle = ext.d.state / "io.containerd.runtime.v2.task" / NS / cid
    wait_for(lambda: not bundle.exists(), 15, "the bundle to be removed")
    wait_for(lambda: not os.path.exists(go_shim_socket(ext.d, NS, cid)), 15, "the shim to exit")
    assert [p for p in pids_mentioning(f"-id {cid} ") if _exe_of(p) == SHIM] == []
    assert [m for m in mounts_under(str(ext.d.state)) if f"/{cid}/" in m] == []


def _exe_of(pid: int) -> str:
    try:
        return os.readlink(f"/proc/{pid}/exe")
    except OSError:
        return ""


def test_oom_event_from_the_go_shim_reaches_ctr_events(ext: Ext) -> None:
    cid = ext.cid("oom-go")
    with ctr_events(ext.d) as ev:
        # tail keeps the whole newline-free stream in memory: killed at the 16 MiB limit
        r = ext.d.ctr(
            "run", "--rm", "--memory-limit", str(16 << 20), "--runtime", SHIM, IMAGE, cid,
            "sh", "-c", "head -c 268435456 /dev/zero | tail", check=False, timeout=90,
        )  # fmt: skip
        assert r.returncode != 0
        wait_for(lambda: ev.lines("/tasks/oom", cid), 15, "/tasks/oom in ctr events")


def test_ttrpc_address_and_cgroup_path_from_the_config(busybox_archive: Path) -> None:
    """``[ttrpc] address`` moves the shims' event socket (Go shims find it through
    TTRPC_ADDRESS) and ``[cgroup] path`` puts the daemon in that cgroup, created if missing,
    as containerd does with both; before, both keys were accepted and ignored."""
    group = f"pycd-opts-{os.getpid()}"
    events_dir = Path(tempfile.mkdtemp(prefix="pycd-ttrpc-", dir="/tmp"))
    events_sock = events_dir / "events.ttrpc"
    conf = f'version = 2\n[ttrpc]\naddress = "{events_sock}"\n[cgroup]\npath = "/{group}"\n'
    try:
        with external_daemon(busybox_archive, conf) as ext:
            assert events_sock.is_socket()
            assert not os.path.exists(ext.d.address + ".ttrpc")
            own = Path(f"/proc/{ext.d.pid}/cgroup").read_text().splitlines()
            # v1: every hierarchy (memory among them); v2: the one line "0::/<group>"
            assert any(ln.endswith(f":/{group}") and (":memory:" in ln or ln.startswith("0::")) for ln in own), own
            cid = ext.cid("ttrpc-moved")
            with ctr_events(ext.d) as ev:
                ext.d.ctr("run", "-d", "--runtime", SHIM, IMAGE, cid, "sleep", "1000", timeout=60)
                ext.d.ctr("tasks", "kill", "-s", "SIGKILL", cid)
                # /tasks/exit comes from the Go shim, forwarded over ttrpc to the configured socket
                wait_for(lambda: ev.lines("/tasks/exit", cid), 15, "/tasks/exit from the Go shim")
    finally:
        shutil.rmtree(events_dir, ignore_errors=True)
        for hierarchy in Path("/sys/fs/cgroup").iterdir():
            d = hierarchy / group
            if d.is_dir():
                wait_for(functools.partial(_rmdir, d), 15, f"{d} to be removed")  # empty once the daemon is gone


def _rmdir(d: Path) -> bool:
    try:
        d.rmdir()
    except OSError:
        return False
    return True


def test_an_unusable_cgroup_path_stops_the_start_naming_the_key(tmp_path: Path) -> None:
    d = Daemon(tmp_path, 'version = 2\n[cgroup]\npath = "/../escape"\n')
    try:
        r = subprocess.run(d.command(), capture_output=True, text=True, timeout=60)
        assert r.returncode == 1, r.stderr
        assert "cgroup.path" in r.stderr and "below the cgroup root" in r.stderr
    finally:
        d.cleanup()
