"""Docker habits in pyctr: `run -d` keeps the output for `logs`, `stop -t`, `ps`, completion, ctr's flags."""

from __future__ import annotations

import json
import secrets
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.procs import wait_for

from .daemon import BIN

pytestmark = pytest.mark.root

IMAGE = "docker.io/library/busybox:latest"


@pytest.fixture(scope="module")
def d(shared_daemon: Any, busybox_archive: Path) -> Any:
    shared_daemon.ctr("images", "import", str(busybox_archive), timeout=120)
    return shared_daemon


@pytest.fixture
def cid(d: Any) -> Iterator[str]:
    name = f"hab-{secrets.token_hex(4)}"
    yield name
    d.pyctr("tasks", "kill", "-s", "SIGKILL", "-a", name, check=False)
    wait_for(lambda: name not in d.pyctr("ps", "-q").stdout.split(), 20, f"{name} to stop")
    d.pyctr("containers", "rm", "-f", name, check=False)


def _kept_log(d: Any, cid: str) -> Path:
    """The log file the daemon keeps for a `run -d` container: under its root, named in the label."""
    uri = json.loads(d.pyctr("containers", "info", cid).stdout)["Labels"]["io.pycontainerd.log-uri"]
    assert uri.startswith(f"file://{d.root}/"), uri
    return Path(uri[len("file://"):])


def test_run_detached_keeps_the_output_for_logs(d: Any, cid: str) -> None:
    d.pyctr("run", "-d", IMAGE, cid, "sh", "-c", "echo one; echo two >&2; echo three; sleep 600")
    wait_for(lambda: "three" in d.pyctr("logs", cid).stdout, 20, "the output in the log")
    # stdout and stderr are two pipes into the shim: their lines are all there, each stream in order
    lines = d.pyctr("logs", cid).stdout.splitlines()
    assert sorted(lines) == ["one", "three", "two"] and lines.index("one") < lines.index("three")
    assert d.pyctr("logs", "--tail", "1", cid).stdout == lines[-1] + "\n"
    log = _kept_log(d, cid)
    assert log.exists()
    r = d.pyctr("tasks", "attach", cid, check=False)  # points at logs, not back at attach
    assert r.returncode == 1 and f"pyctr logs -f {cid}" in r.stderr
    d.pyctr("stop", "-t", "0", cid)
    d.pyctr("containers", "rm", cid)
    wait_for(lambda: not log.exists(), 10, "the log to go")  # the log run -d made goes with the container


def test_kept_log_of_a_container_deleted_while_the_daemon_was_down_goes_at_start(daemon: Any,
                                                                                  busybox_archive: Path) -> None:
    """The delete event that removes a kept log never reaches a stopped daemon: a later start sweeps
    the logs of containers that no longer exist (and keeps those of containers that do)."""
    daemon.ctr("images", "import", str(busybox_archive), timeout=120)
    gone, kept = f"hab-{secrets.token_hex(4)}", f"hab-{secrets.token_hex(4)}"
    def logged(name: str) -> bool:
        return name in daemon.pyctr("logs", name).stdout

    def task_removed(name: str) -> bool:
        return daemon.pyctr("tasks", "rm", name, check=False).returncode == 0

    for name in (gone, kept):
        daemon.pyctr("run", "-d", IMAGE, name, "echo", name)
        wait_for(partial(logged, name), 20, f"{name}'s output")
    gone_log, kept_log = _kept_log(daemon, gone), _kept_log(daemon, kept)
    for name in (gone, kept):
        wait_for(partial(task_removed, name), 20, f"{name}'s task to go")
    daemon.stop()
    # the record deleted behind the daemon's back, as a crash between the commit and the event would leave it
    db = sqlite3.connect(daemon.root / "io.containerd.metadata.v1.sqlite" / "meta.db")
    with db:
        assert db.execute("DELETE FROM containers WHERE namespace = 'default' AND id = ?", (gone,)).rowcount == 1
    db.close()
    daemon.start()
    wait_for(lambda: not gone_log.exists(), 20, "the orphaned log to be swept")
    assert kept_log.exists() and daemon.pyctr("logs", kept).stdout == f"{kept}\n"
    daemon.pyctr("containers", "rm", kept)


def test_stop_kills_a_container_that_ignores_sigterm_after_the_grace_period(d: Any, cid: str) -> None:
    d.pyctr("run", "-d", IMAGE, cid, "sh", "-c", "trap '' TERM; echo ready; while :; do sleep 1; done")
    wait_for(lambda: "ready" in d.pyctr("logs", cid).stdout, 20, "the trap to be set")
    assert d.pyctr("ps").stdout.split("\n")[1].split()[:3] == [cid, IMAGE, "RUNNING"]
    start = time.monotonic()
    r = d.pyctr("stop", "-t", "1", cid)
    took = time.monotonic() - start
    assert r.stdout == f"{cid}\n"
    assert 1.0 <= took < 6.0, f"stop -t 1 took {took:.2f}s"
    rows = json.loads(d.pyctr("ps", "-a", "-o", "json").stdout)
    assert [(x["id"], x["status"]) for x in rows if x["id"] == cid] == [(cid, "stopped")]
    assert cid not in d.pyctr("ps", "-q").stdout.split()


def test_stop_returns_as_soon_as_the_task_exits_on_sigterm(d: Any, cid: str) -> None:
    # (a plain `sleep` as pid 1 would ignore SIGTERM: pid 1 has no default signal actions)
    d.pyctr("run", "-d", IMAGE, cid, "sh", "-c", "trap 'exit 0' TERM; echo ready; while :; do sleep 1; done")
    wait_for(lambda: "ready" in d.pyctr("logs", cid).stdout, 20, "the trap to be set")
    start = time.monotonic()
    d.pyctr("stop", "-t", "30", cid)
    assert time.monotonic() - start < 10


def test_run_takes_short_names_and_no_command_and_exec_ids_are_generated(d: Any, cid: str) -> None:
    r = d.pyctr("run", "--rm", "busybox", cid, "echo", "short")
    assert r.stdout == "short\n"
    d.pyctr("run", "-d", "busybox:latest", cid)  # the image's own command (sh, which waits on stdin: none)
    d.pyctr("run", "-d", IMAGE, f"{cid}x", "sleep", "600", check=False)
    try:
        r = d.pyctr("tasks", "exec", f"{cid}x", "echo", "from-exec")
        assert r.stdout == "from-exec\n"
    finally:
        d.pyctr("stop", "-t", "0", f"{cid}x", check=False)
        d.pyctr("containers", "rm", f"{cid}x", check=False)
    r = d.pyctr("run", "--rm", IMAGE, cid, "true", check=False)
    assert r.returncode == 1 and f"container {cid} already exists" in r.stderr
    assert "snapshot" not in r.stderr


def test_flags_like_ctr(d: Any, tmp_path: Path) -> None:
    pyctr = str(BIN / "pyctr")
    r = subprocess.run([pyctr], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0 and "usage: pyctr" in r.stdout
    r = subprocess.run([pyctr, "-v"], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0 and r.stdout.startswith("pyctr version ")
    r = subprocess.run([pyctr, "-a", d.address, "--connect-timeout", "1s", "--timeout", "1500ms", "version"],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 0 and "Server:" in r.stdout
    r = subprocess.run([pyctr, "-a", d.address, "--timeout", "1s", "events"], capture_output=True, text=True,
                       timeout=30)
    assert r.returncode == 5 and "timed out after 1s" in r.stderr


def test_fifos_go_under_fifo_dir(d: Any, cid: str, tmp_path: Path) -> None:
    fifo_dir = tmp_path / "fifos"
    r = d.pyctr("--fifo-dir", str(fifo_dir), "run", "--rm", IMAGE, cid, "echo", "hi")
    assert r.stdout == "hi\n"
    assert fifo_dir.is_dir() and not any(fifo_dir.iterdir())  # made there, removed afterwards


@pytest.mark.parametrize("prog", ["pyctr", "pycrictl"])
def test_completion_scripts_load_in_bash(prog: str) -> None:
    script = subprocess.run([str(BIN / prog), "completion", "bash"], capture_output=True, text=True, timeout=30,
                            check=True).stdout
    probe = (f'{script}\nCOMP_WORDS=({prog} ""); COMP_CWORD=1; _{prog}; echo "${{COMPREPLY[@]}}"\n'
             f'COMP_WORDS=({prog} version --); COMP_CWORD=2; _{prog}; echo "${{COMPREPLY[@]}}"\n')
    r = subprocess.run(["bash", "--norc", "-c", probe], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0 and r.stderr == "", r.stderr
    commands, flags = r.stdout.splitlines()
    assert "version" in commands.split()
    assert "--help" in flags.split()
    if prog == "pyctr":
        assert {"images", "run", "logs", "stop", "ps"} <= set(commands.split())


@pytest.mark.parametrize("command", [("snapshots", "ls"), ("leases", "ls"), ("content", "ls"), ("images", "ls"),
                                     ("containers", "ls"), ("namespaces", "ls")])
def test_list_commands_print_json_and_yaml(d: Any, command: tuple[str, ...]) -> None:
    import yaml

    lease = d.pyctr("leases", "create", "--id", f"hab-o-{secrets.token_hex(3)}", "k=v").stdout.strip()
    try:
        as_json = json.loads(d.pyctr(*command, "-o", "json").stdout)
        assert yaml.safe_load(d.pyctr(*command, "-o", "yaml").stdout) == as_json
        table = d.pyctr(*command).stdout.splitlines()
        assert isinstance(as_json, list) and len(as_json) == len(table) - 1
        assert as_json or command[0] == "containers"  # busybox's blobs and snapshot, our lease
        first = {"snapshots": "key", "leases": "id", "content": "digest", "images": "name", "containers": "id",
                 "namespaces": "name"}[command[0]]
        assert [r[first] for r in as_json] == [line.split()[0] for line in table[1:]]
        if command[0] == "leases":
            row = next(r for r in as_json if r["id"] == lease)
            assert row["labels"]["k"] == "v" and row["created_at"].endswith("Z")
    finally:
        d.pyctr("leases", "rm", lease, check=False)


def test_the_kept_log_is_the_daemons_private_and_outlives_client_task_and_restart(daemon: Any,
                                                                                   busybox_archive: Path) -> None:
    d = daemon
    d.ctr("images", "import", str(busybox_archive), timeout=120)
    d.pyctr("run", "-d", IMAGE, "once", "sh", "-c", "echo hi")
    wait_for(lambda: d.pyctr("logs", "once").stdout == "hi\n", 20, "hi in the log")
    log = _kept_log(d, "once")
    # root only: the file 0600, every directory the daemon made for it 0700; nobody cannot read it
    logs_dir = log.parents[1]
    for p in [log, log.parent, logs_dir]:
        assert p.stat().st_mode & 0o077 == 0, f"{p} is {oct(p.stat().st_mode)}"
    r = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "cat", str(log)],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode != 0 and "hi" not in r.stdout

    # -f follows until the task exits
    d.pyctr("run", "-d", IMAGE, "slow", "sh", "-c", "echo a; sleep 1; echo b")
    start = time.monotonic()
    assert d.pyctr("logs", "-f", "slow", timeout=30).stdout == "a\nb\n"
    assert time.monotonic() - start < 20
    assert d.pyctr("logs", "--tail", "1", "slow").stdout == "b\n"

    # after the task is gone and the daemon restarted, the output is still there
    wait_for(lambda: d.pyctr("tasks", "ls").stdout.count("STOPPED") == 2, 20, "both tasks to stop")
    d.pyctr("tasks", "rm", "once")
    d.restart()
    assert d.pyctr("logs", "once").stdout == "hi\n"

    # whoever removes the container (here the real ctr, which knows nothing of logs), the log goes
    d.ctr("containers", "rm", "once")
    wait_for(lambda: not log.exists(), 10, "the log to go with its container")
    assert _kept_log(d, "slow").exists()  # not the others'
