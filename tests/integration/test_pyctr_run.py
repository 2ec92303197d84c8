"""pyctr run/tasks/containers/snapshots/logs/stats, against our daemon AND real containerd 1.6.

Every test runs twice: once against pycontainerd (the ``shared_daemon`` fixture) and once
against Debian's containerd on its own temp socket (``shared_containerd``), with the busybox
image imported by the real ``ctr images import``.  The client side is the same code, so a
test that passes on containerd and fails on pycontainerd points at the daemon, and the
other way round at the client.

Container ids carry a random suffix: both daemons put containers in cgroup
/<namespace>/<id> and runc state under /run/containerd/runc, so ids must not collide with
another daemon's running at the same time.  Every test removes what it made, even when it
fails (``_cleanup``), by pid and mount via the fixtures.
"""

from __future__ import annotations

import json
import os
import pty
import secrets
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.procs import wait_for

from .daemon import BIN, CTR

pytestmark = pytest.mark.root

IMAGE = "docker.io/library/busybox:latest"
PYCTR = str(BIN / "pyctr")


@dataclass
class Engine:
    name: str
    address: str

    def _run(self, binary: str, args: tuple[str, ...], input: str | None, timeout: float, check: bool
             ) -> subprocess.CompletedProcess[str]:
        r = subprocess.run([binary, "-a", self.address, "-n", "default", *args], input=input,
                           stdin=None if input is not None else subprocess.DEVNULL,
                           capture_output=True, text=True, timeout=timeout)
        if check and r.returncode != 0:
            raise AssertionError(f"[{self.name}] {binary} {' '.join(args)} failed ({r.returncode}):\n"
                                 f"{r.stdout}\n{r.stderr}")
        return r

    def pyctr(self, *args: str, input: str | None = None, timeout: float = 60, check: bool = True
              ) -> subprocess.CompletedProcess[str]:
        return self._run(PYCTR, args, input, timeout, check)

    def ctr(self, *args: str, input: str | None = None, timeout: float = 60, check: bool = True
            ) -> subprocess.CompletedProcess[str]:
        return self._run(CTR, args, input, timeout, check)

    def tasks(self) -> dict[str, str]:
        rows = self.pyctr("tasks", "ls").stdout.splitlines()[1:]
        return {r.split()[0]: r.split()[2] for r in rows if r.strip()}

    def containers(self) -> list[str]:
        return self.pyctr("containers", "ls", "-q").stdout.split()

    def snapshot_keys(self) -> list[str]:
        rows = self.pyctr("snapshots", "ls").stdout.splitlines()[1:]
        return [r.split()[0] for r in rows if r.strip()]


@pytest.fixture(scope="module", params=["pycontainerd", "containerd"])
def engine(request: pytest.FixtureRequest, busybox_archive: Path) -> Engine:
    if request.param == "pycontainerd":
        d: Any = request.getfixturevalue("shared_daemon")
        r = subprocess.run([CTR, "-a", d.address, "plugins", "ls", "type==io.containerd.grpc.v1,id==tasks"],
                           capture_output=True, text=True, timeout=30)
        assert len(r.stdout.splitlines()) >= 2, f"no tasks plugin in the daemon: {r.stdout}{r.stderr}"
    else:
        d = request.getfixturevalue("shared_containerd")
    eng = Engine(request.param, d.address)
    eng.ctr("images", "import", str(busybox_archive), timeout=120)
    return eng


@pytest.fixture
def cid(engine: Engine) -> Iterator[str]:
    """A fresh container id; whatever it left behind is removed afterwards."""
    name = f"pr-{secrets.token_hex(4)}"
    yield name
    _cleanup(engine, name)


def _cleanup(engine: Engine, name: str) -> None:
    if name in engine.tasks():
        engine.pyctr("tasks", "kill", "-s", "SIGKILL", "-a", name, check=False)
        wait_for(lambda: engine.tasks().get(name) in (None, "STOPPED"), 20, f"{name} to stop")
        engine.pyctr("tasks", "rm", "-f", name, check=False)
    if name in engine.containers():
        engine.pyctr("containers", "rm", "-f", name, check=False)


# -- run -------------------------------------------------------------------------------------
def test_run_rm_prints_output_and_exits_with_the_code(engine: Engine, cid: str) -> None:
    r = engine.pyctr("run", "--rm", IMAGE, cid, "sh", "-c", "echo hi; echo oops >&2; exit 3", check=False)
    assert r.returncode == 3, r.stderr
    assert r.stdout == "hi\n"
    assert "oops" in r.stderr
    assert cid not in engine.containers()
    assert cid not in engine.tasks()
    assert cid not in engine.snapshot_keys()


def test_stdin_eof_reaches_the_container(engine: Engine, cid: str) -> None:
    r = engine.pyctr("run", "--rm", IMAGE, cid, "cat", input="x\n", check=False, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout == "x\n"
    big = "".join(f"line {i}\n" for i in range(20000))  # > a pipe buffer, both ways
    r = engine.pyctr("run", "--rm", IMAGE, cid, "wc", "-l", input=big, check=False, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "20000"


def test_run_flags_reach_the_process(engine: Engine, cid: str, tmp_path: Path) -> None:
    (tmp_path / "hello").write_text("from the host\n")
    tmp_path.chmod(0o755)  # the process runs as nobody
    script = "echo $FOO; pwd; id -u; cat /mnt/hello; touch /mnt/x 2>/dev/null || echo ro-mount; " \
             "touch /y 2>/dev/null || echo ro-root"
    r = engine.pyctr("run", "--rm", "--env", "FOO=bar", "--cwd", "/tmp", "--user", "65534",
                     "--mount", f"type=bind,src={tmp_path},dst=/mnt,options=rbind:ro", "--read-only",
                     IMAGE, cid, "sh", "-c", script, check=False)
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == ["bar", "/tmp", "65534", "from the host", "ro-mount", "ro-root"]


def test_signals_are_forwarded_to_the_task(engine: Engine, cid: str) -> None:
    proc = subprocess.Popen(
        [PYCTR, "-a", engine.address, "run", "--rm", IMAGE, cid, "sh", "-c",
         "trap 'echo got-term; exit 7' TERM; echo ready; while true; do sleep 0.1; done"],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline() == "ready\n"
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
        assert proc.returncode == 7, err
        assert "got-term" in out
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


def test_tty_mode(engine: Engine, cid: str) -> None:
    master, slave = pty.openpty()
    try:
        import fcntl
        import struct
        import termios

        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 33, 101, 0, 0))
        # the client sizes the pty once the task has started (as ctr does): the shell waits for
        # that (up to 20 s) instead of sleeping a fixed time
        wait_size = 'i=0; while [ "$(stty size)" != "33 101" ] && [ $i -lt 400 ]; do i=$((i+1)); sleep 0.05; done'
        proc = subprocess.Popen([PYCTR, "-a", engine.address, "run", "--rm", "-t", IMAGE, cid, "sh", "-c",
                                 f"{wait_size}; stty size; tty; echo $TERM; exit 4"],
                                stdin=slave, stdout=slave, stderr=slave, start_new_session=True)
        os.close(slave)
        slave = -1
        out = b""
        deadline = time.monotonic() + 30
        while proc.poll() is None or out.count(b"\n") < 3:
            if time.monotonic() > deadline:
                break
            import select

            ready, _, _ = select.select([master], [], [], 0.2)
            if ready:
                try:
                    out += os.read(master, 4096)
                except OSError:
                    break
        proc.wait(10)
        text = out.decode(errors="replace").replace("\r", "")
        assert proc.returncode == 4, text
        assert "33 101" in text
        assert "/dev/pts/" in text
        assert "xterm" in text
    finally:
        os.close(master)
        if slave >= 0:
            os.close(slave)


# -- detached lifecycle: tasks ls/ps/exec/kill/rm, containers rm ----------------------------
def test_detached_task_lifecycle(engine: Engine, cid: str) -> None:
    engine.pyctr("run", "-d", IMAGE, cid, "sleep", "1000")
    assert engine.tasks()[cid] == "RUNNING"
    ps = engine.pyctr("tasks", "ps", cid).stdout.splitlines()
    assert ps[0].split()[0] == "PID"
    assert len(ps) >= 2

    r = engine.pyctr("tasks", "exec", "--exec-id", "e1", cid, "sh", "-c", "echo from-exec; exit 5", check=False)
    assert r.returncode == 5, r.stderr
    assert r.stdout == "from-exec\n"
    r = engine.pyctr("tasks", "exec", "--exec-id", "e2", cid, "cat", input="piped\n", check=False)
    assert (r.returncode, r.stdout) == (0, "piped\n"), r.stderr

    # the container is running: rm must refuse
    r = engine.pyctr("containers", "rm", cid, check=False)
    assert r.returncode != 0
    assert "non stopped" in r.stderr

    engine.pyctr("tasks", "kill", "-s", "SIGKILL", cid)
    wait_for(lambda: engine.tasks().get(cid) == "STOPPED", 20, f"{cid} to stop")
    engine.pyctr("tasks", "rm", cid)
    assert cid not in engine.tasks()
    engine.pyctr("containers", "rm", cid)
    assert cid not in engine.containers()
    assert cid not in engine.snapshot_keys()


def test_start_an_existing_container_and_pause_resume(engine: Engine, cid: str) -> None:
    engine.pyctr("containers", "create", IMAGE, cid, "sleep", "1000")
    info = json.loads(engine.pyctr("containers", "info", cid).stdout)
    assert info["Spec"]["process"]["args"] == ["sleep", "1000"]
    engine.pyctr("tasks", "start", "-d", cid)
    assert engine.tasks()[cid] == "RUNNING"
    engine.pyctr("tasks", "pause", cid)
    assert engine.tasks()[cid] == "PAUSED"
    engine.pyctr("tasks", "resume", cid)
    assert engine.tasks()[cid] == "RUNNING"
    engine.pyctr("containers", "rm", "-f", cid)
    assert cid not in engine.containers()


# -- logs and stats --------------------------------------------------------------------------
def test_logs_of_a_container_started_with_a_log_uri(engine: Engine, cid: str, tmp_path: Path) -> None:
    log = tmp_path / "out.log"
    engine.pyctr("run", "-d", "--log-uri", f"file://{log}", IMAGE, cid, "sh", "-c",
                 "echo line1; echo line2 >&2; sleep 0.5; echo line3")
    follow = engine.pyctr("logs", "-f", cid, timeout=30)  # returns once the task exited
    lines = follow.stdout.splitlines()
    # stdout and stderr are copied separately by the shim: their relative order is not kept
    assert sorted(lines[:2]) == ["line1", "line2"]
    assert lines[2:] == ["line3"]
    wait_for(lambda: engine.tasks().get(cid) == "STOPPED", 20, f"{cid} to stop")
    assert engine.pyctr("logs", cid).stdout == follow.stdout
    assert engine.pyctr("logs", "--tail", "1", cid).stdout == "line3\n"
    r = engine.pyctr("logs", "nonexistent-container", check=False)
    assert r.returncode == 1
    assert "not found" in r.stderr


def test_stats_table(engine: Engine, cid: str) -> None:
    engine.pyctr("run", "-d", "--memory-limit", str(64 << 20), IMAGE, cid, "sh", "-c",
                 "sleep 1000 & sleep 1000 & wait")
    wait_for(lambda: len(engine.pyctr("tasks", "ps", cid).stdout.splitlines()) >= 4, 20, "3 processes")
    out = engine.pyctr("stats", "--interval", "0.2", cid).stdout.splitlines()
    assert out[0].split()[:3] == ["ID", "CPU", "%"]
    row = out[1].split()
    assert row[0] == cid
    assert row[-1] == "3"  # pids
    assert "64.0 MiB" in out[1]
    metrics = engine.pyctr("tasks", "metrics", cid).stdout
    assert "pids.current" in metrics


# -- the spec: pyctr builds what ctr builds --------------------------------------------------
def test_containers_create_matches_real_ctr(engine: Engine, tmp_path: Path) -> None:
    flags = ["--env", "A=B", "--label", "x=y", "--read-only", "--seccomp", "--net-host", "--cwd", "/tmp",
             "--mount", f"type=bind,src={tmp_path},dst=/mnt,options=rbind:ro"]
    ids = [f"cmp-ctr-{secrets.token_hex(3)}", f"cmp-py-{secrets.token_hex(3)}"]
    try:
        engine.ctr("containers", "create", *flags, IMAGE, ids[0], "echo", "hi")
        engine.pyctr("containers", "create", *flags, IMAGE, ids[1], "echo", "hi")
        infos = [json.loads(engine.ctr("containers", "info", i).stdout) for i in ids]
        for key in ("Labels", "Image", "Runtime", "Snapshotter"):
            assert infos[0][key] == infos[1][key], key
        specs = [json.dumps(info["Spec"]).replace(i, "ID") for info, i in zip(infos, ids, strict=True)]
        assert json.loads(specs[1]) == json.loads(specs[0])
    finally:
        for i in ids:
            engine.pyctr("containers", "rm", i, check=False)


# -- snapshots -------------------------------------------------------------------------------
def test_snapshots_commands(engine: Engine, busybox_image: Any) -> None:
    top = busybox_image.chain_ids[-1]
    key = f"sk-{secrets.token_hex(4)}"
    name = f"committed-{key}"
    try:
        assert top in engine.snapshot_keys()
        info = json.loads(engine.pyctr("snapshots", "info", top).stdout)
        assert info["Kind"] == "Committed"
        assert info["Name"] == top
        out = engine.pyctr("snapshots", "prepare", "--target", "/mnt/t", "--label", "containerd.io/gc.root=x",
                           key, top).stdout
        assert out.startswith("mount -t ")
        assert " /mnt/t " in out
        assert engine.pyctr("snapshots", "mounts", "/mnt/t", key).stdout == out
        assert json.loads(engine.pyctr("snapshots", "info", key).stdout)["Kind"] == "Active"
        engine.pyctr("snapshots", "label", key, "color=blue")
        assert json.loads(engine.pyctr("snapshots", "info", key).stdout)["Labels"]["color"] == "blue"
        usage = engine.pyctr("snapshots", "usage", "-b", key).stdout.splitlines()
        assert usage[0].split() == ["KEY", "SIZE", "INODES"]
        assert usage[1].split()[0] == key
        engine.pyctr("snapshots", "commit", "--label", "containerd.io/gc.root=x", name, key)
        assert json.loads(engine.pyctr("snapshots", "info", name).stdout)["Parent"] == top
        tree = engine.pyctr("snapshots", "tree").stdout
        assert f"\\_ {top}" in tree
        assert f"\\_ {name}" in tree
        r = engine.pyctr("snapshots", "rm", top, check=False)
        assert r.returncode == 1  # it has a child
    finally:
        engine.pyctr("snapshots", "rm", name, key, check=False)
    assert name not in engine.snapshot_keys()


def test_run_unpacks_an_image_that_is_not_unpacked(engine: Engine, cid: str, busybox_archive: Path,
                                                   tmp_path: Path) -> None:
    # a second name for the same image, imported without unpacking into a fresh snapshotter key space
    name = f"docker.io/library/nounpack-{cid}:latest"
    engine.ctr("images", "import", "--no-unpack", "--index-name", name, str(busybox_archive))
    assert name in engine.ctr("images", "ls", "-q").stdout.split()
    engine.ctr("snapshots", "--snapshotter", "native", "ls")  # the native snapshotter has nothing yet
    try:
        r = engine.pyctr("run", "--rm", "--snapshotter", "native", name, cid, "echo", "unpacked", check=False,
                         timeout=120)
        assert r.returncode == 0, r.stderr
        assert r.stdout == "unpacked\n"
    finally:
        engine.ctr("images", "rm", name, check=False)


def test_errors_are_clear(engine: Engine, cid: str) -> None:
    r = engine.pyctr("run", "--rm", "docker.io/library/missing:latest", cid, "true", check=False)
    assert r.returncode == 1
    assert "not found" in r.stderr
    r = engine.pyctr("run", "--rm", "-d", IMAGE, cid, "true", check=False)
    assert r.returncode == 1
    assert "--detach and --rm" in r.stderr
    r = engine.pyctr("tasks", "exec", "--exec-id", "e", "no-such-task", "true", check=False)
    assert r.returncode == 1
    assert "not found" in r.stderr
    assert cid not in engine.containers()


# -- the foreground fast path (client/fastrun.py) ----------------------------------------------
_MODULES_PROBE = """
import atexit, sys
atexit.register(lambda: print("MODULES", sorted(m for m in ("grpc", "asyncio", "google.protobuf")
                                                 if m in sys.modules), file=sys.stderr))
sys.argv = ["pyctr", *sys.argv[1:]]
from pycontainerd.cli.pyctr.main import main
main()
"""


def _info(engine: Engine, cid: str) -> dict[str, Any]:
    info: dict[str, Any] = json.loads(engine.pyctr("containers", "info", cid).stdout)
    for k in ("ID", "SnapshotKey", "CreatedAt", "UpdatedAt"):
        info.pop(k, None)
    return info


def test_run_in_the_foreground_needs_neither_grpc_nor_asyncio(engine: Engine, cid: str, tmp_path: Path) -> None:
    fifo_dir = tmp_path / "fifo"
    r = subprocess.run([str(BIN / "python"), "-c", _MODULES_PROBE, "-a", engine.address, "--fifo-dir", str(fifo_dir),
                        "run", "--rm", IMAGE, cid, "sh", "-c", "echo out; echo err >&2; exit 5"],
                       stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60)
    assert r.returncode == 5 and r.stdout == "out\n", r.stderr
    assert "err\n" in r.stderr and "MODULES []" in r.stderr
    assert cid not in engine.containers() and cid not in engine.snapshot_keys()
    assert not [x for x in engine.pyctr("leases", "ls", "-q").stdout.split() if x.startswith("pyctr-")]  # lease gone
    assert list(fifo_dir.iterdir()) == []  # and so are the FIFOs


def test_fast_and_full_client_make_the_same_container(engine: Engine, cid: str) -> None:
    """A foreground run goes through client/fastrun.py; with --timeout, through the full client."""
    other = f"{cid}-b"
    flags = ("--env", "A=1", "--label", "l=v", "--cwd", "/tmp", "--user", "1:2", "--memory-limit", "64m",
             "--cpus", "0.5", "--hostname", "h", "--read-only")
    try:
        engine.pyctr("run", *flags, IMAGE, cid, "true")
        engine.pyctr("--timeout", "1m", "run", *flags, IMAGE, other, "true")
        fast, full = _info(engine, cid), _info(engine, other)
        for spec in (fast["Spec"], full["Spec"]):
            spec["linux"]["cgroupsPath"] = spec["linux"]["cgroupsPath"].rsplit("/", 1)[0]
        assert fast == full
        assert fast["Labels"]["l"] == "v" and fast["Spec"]["process"]["user"]["uid"] == 1
    finally:
        _cleanup(engine, other)


def test_run_falls_back_to_the_full_client_when_it_must(engine: Engine, cid: str) -> None:
    # a short name (normalized by the full client), an id in use, an image not found: same answers
    assert engine.pyctr("run", "--rm", "busybox", cid, "echo", "short").stdout == "short\n"
    engine.pyctr("run", IMAGE, cid, "true")
    r = engine.pyctr("run", "--rm", IMAGE, cid, "true", check=False)
    assert r.returncode == 1 and f"container {cid} already exists" in r.stderr
    r = engine.pyctr("run", "--rm", "docker.io/library/nothere:1", f"{cid}-x", "true", check=False)
    assert r.returncode == 1 and "not found: pull it first" in r.stderr
