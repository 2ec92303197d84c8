"""Chaos: ``kill -9`` of the daemon (or of a shim) in the middle of import, pull, unpack, run,
exec, delete and GC, at a random moment, over and over; after each restart the store and the
runtime must be whole.

Invariants checked after every restart:
- the daemon serves; every content record has its blob, whose bytes hash to its digest;
- every image listed is complete (``ctr images check``) and unpacks/mounts;
- no ghost task: every container can be stopped and removed, and its id reused at once;
- once everything is removed, nothing is left: no shim, no mount, no bundle, no shim socket,
  no FIFO, no cgroup of ours, no blob, no snapshot.

``make test`` runs a few iterations (CHAOS_ITERATIONS, default 4); ``make chaos`` runs many.
`make test` uses a fixed seed; `make chaos` a new one each run, printed (CHAOS_SEED replays it).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import os
import random
import subprocess
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.fixtures.procs import mounts_under, pid_alive, wait_for
from tests.fixtures.pytest_plugin import PushedImage
from tests.integration.daemon import CTR, Daemon
from tests.integration.issue4_support import assert_store_empty, blobs_dir, content

pytestmark = pytest.mark.root

ITERATIONS = int(os.environ.get("CHAOS_ITERATIONS", "4"))
SEED = int(os.environ.get("CHAOS_SEED", "1"))  # make chaos passes a new one each run


def _bg(d: Daemon, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([CTR, "-a", d.address, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)


def _finish(p: subprocess.Popen[str]) -> None:
    try:
        p.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        p.kill()
        p.communicate()


def _running(d: Daemon) -> list[str]:
    out = d.ctr("tasks", "ls", check=False).stdout.splitlines()[1:]
    return [line.split()[0] for line in out if line.split()[2:3] == ["RUNNING"]]


class World:
    """What one chaos run has: the daemon, the image sources, and a random generator."""

    def __init__(self, d: Daemon, archive: Path, pushed: PushedImage, rng: random.Random) -> None:
        self.d, self.archive, self.pushed, self.rng = d, archive, pushed, rng
        self.log: list[str] = []

    # operations: each starts something and returns the process it runs in (killed or not)
    def op_import(self) -> subprocess.Popen[str]:
        return _bg(self.d, "images", "import", str(self.archive))

    def op_pull(self) -> subprocess.Popen[str]:
        return _bg(self.d, "images", "pull", "--plain-http", self.pushed.ref)

    def op_run(self) -> subprocess.Popen[str]:
        self.d.ctr("images", "pull", "--plain-http", self.pushed.ref)
        return _bg(self.d, "run", "-d", self.pushed.ref, f"c-{uuid.uuid4().hex[:8]}", "sleep", "1000")

    def op_exec(self) -> subprocess.Popen[str]:
        running = _running(self.d)
        if not running:
            return self.op_run()
        return _bg(self.d, "tasks", "exec", "--exec-id", f"e{uuid.uuid4().hex[:6]}", self.rng.choice(running),
                   "sh", "-c", "echo hi; sleep 2")

    def op_delete(self) -> subprocess.Popen[str]:
        running = _running(self.d)
        if not running:
            return self.op_run()
        cid = self.rng.choice(running)
        return subprocess.Popen(["sh", "-c", f"{CTR} -a {self.d.address} tasks kill -s 9 {cid}; "
                                 f"{CTR} -a {self.d.address} tasks delete {cid}; "
                                 f"{CTR} -a {self.d.address} containers rm {cid}"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)

    def op_gc(self) -> subprocess.Popen[str]:
        names = self.d.ctr("images", "ls", "-q").stdout.split()
        if not names:
            return self.op_pull()
        return _bg(self.d, "images", "rm", "--sync", *names)

    def ops(self) -> dict[str, Callable[[], subprocess.Popen[str]]]:
        return {"import": self.op_import, "pull": self.op_pull, "run": self.op_run, "exec": self.op_exec,
                "delete": self.op_delete, "gc": self.op_gc}


# -- invariants ---------------------------------------------------------------------------------


def check_content(d: Daemon) -> None:
    for digest in content(d):
        path = blobs_dir(d) / digest.removeprefix("sha256:")
        assert path.is_file(), f"content record {digest} has no blob"
        assert "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest() == digest, f"blob {digest} is corrupt"


def check_images(d: Daemon) -> None:
    out = d.ctr("images", "check").stdout.splitlines()[1:]
    for line in out:
        cols = line.split()
        assert "complete" in cols, f"image not complete after restart: {line}"


def _stopped(d: Daemon, cid: str) -> bool:
    return cid not in _running(d)


def remove_everything(d: Daemon, ref: str) -> list[str]:
    """Stop and remove every container (reusing each id once), then every image. Returns the ids."""
    ids = d.ctr("containers", "ls", "-q").stdout.split()
    for cid in ids:
        d.ctr("tasks", "kill", "-s", "9", cid, check=False)
        wait_for(functools.partial(_stopped, d, cid), 30, f"task {cid} to stop")
        r = d.ctr("tasks", "delete", cid, check=False)
        assert r.returncode == 0 or "not found" in r.stderr, f"tasks delete {cid}: {r.stderr}"
        d.ctr("containers", "rm", cid)
    if ids:
        # a ghost task would answer AlreadyExists here
        d.ctr("images", "pull", "--plain-http", ref)
        d.ctr("run", "--rm", ref, ids[0], "true")
    refs = d.ctr("images", "ls", "-q").stdout.split()
    if refs:
        d.ctr("images", "rm", "--sync", *refs)
    # a client killed mid-operation leaves its lease (ctr's expire after 24 h, as containerd's do);
    # removing them is what their expiry would do
    leases = d.ctr("leases", "ls", "-q").stdout.split()
    if leases:
        d.ctr("leases", "rm", "--sync", *leases)
    return ids


def check_nothing_left(d: Daemon) -> None:
    wait_for(lambda: not d.shim_pids(), 30, "every shim to exit")
    assert mounts_under(str(d.base)) == [], "mounts left"
    runtime = d.state / "io.containerd.runtime.v2.task"
    bundles = [p for p in runtime.glob("*/*") if p.is_dir()] if runtime.is_dir() else []
    assert bundles == [], f"bundles left: {bundles}"
    # the daemon's own sockets (its address, the debug socket it always serves) are not leaks
    own = {Path(d.address), d.state / "debug.sock"}
    socks = [p for p in d.state.rglob("*") if p.is_socket() and p not in own]
    assert socks == [], f"sockets left: {socks}"
    fifos = [p for p in d.state.rglob("*") if p.is_fifo()]
    assert fifos == [], f"FIFOs left: {fifos}"
    cg = [p for p in Path("/sys/fs/cgroup").glob("*/default/c-*") if p.is_dir()]
    cg += [p for p in Path("/sys/fs/cgroup").glob("default/c-*") if p.is_dir()]
    assert cg == [], f"cgroups left: {cg}"
    assert_store_empty(d)


def test_kill9_anywhere_loses_nothing_and_leaks_nothing(daemon: Daemon, busybox_archive: Path,
                                                        pushed_busybox: PushedImage) -> None:
    rng = random.Random(SEED)
    print(f"chaos seed {SEED}, {ITERATIONS} iterations")
    w = World(daemon, busybox_archive, pushed_busybox, rng)
    history = []
    for i in range(ITERATIONS):
        name = rng.choice(sorted(w.ops()))
        target = rng.choice(["daemon", "daemon", "daemon", "shim"])
        delay = rng.uniform(0.0, 0.4)
        history.append(f"{i}: {name}, kill -9 {target} after {delay * 1000:.0f} ms")
        proc = w.ops()[name]()
        time.sleep(delay)  # the random moment is the point of the test
        shims = daemon.shim_pids()
        if target == "shim" and shims:
            with contextlib.suppress(ProcessLookupError):  # it may have exited on its own meanwhile
                os.kill(rng.choice(shims), 9)
            _finish(proc)
        else:
            daemon.kill9()
            _finish(proc)
            daemon.start()
        try:
            check_content(daemon)
            check_images(daemon)
            if rng.random() < 0.5 or i == ITERATIONS - 1:
                remove_everything(daemon, pushed_busybox.ref)
                check_nothing_left(daemon)
        except AssertionError as exc:
            raise AssertionError(f"seed {SEED}: {exc}\nhistory:\n" + "\n".join(history)) from exc
    remove_everything(daemon, pushed_busybox.ref)
    check_nothing_left(daemon)
    assert pid_alive(daemon.pid)
