"""An acknowledged batched metadata write is durable: its group commit fsyncs the WAL before any
caller hears of it, and the data is there after the writer is killed.

The child process below opens a database, holds the writer thread, queues twenty batched writes
(so they form one batch), lets them commit, prints ``acked`` once every caller has its answer,
and then waits to be SIGKILLed.  It runs under ``strace`` (``make deps`` installs it), and
fsyncs two marker files around the batch so the trace shows which syncs belong to it.  A kill
does not lose the page cache, so surviving it proves only that the commit happened before the
ack; the trace proves the sync: exactly one ``fdatasync``/``fsync`` of the WAL for the batch of
twenty, before the ack (with ``synchronous=NORMAL`` there was none)."""

from __future__ import annotations

import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

from tests.fixtures.procs import kill_pids, pid_alive, wait_for

CHILD = r'''
import asyncio, os, sys, threading
from pathlib import Path
from pycontainerd.metadata.db import Database, ensure_namespace

def marker(path):
    fd = os.open(path, os.O_CREAT | os.O_WRONLY, 0o600)
    os.fsync(fd)
    os.close(fd)

async def main(path):
    db = Database(Path(path))
    await db.open()
    commits = []
    db._write_conn.set_trace_callback(lambda sql: commits.append(sql) if sql == "COMMIT" else None)
    marker(path + ".begin")
    release, started = threading.Event(), threading.Event()

    def block(conn):  # holds the writer thread; writes nothing (so its COMMIT syncs nothing)
        started.set()
        release.wait(30)

    blocker = asyncio.ensure_future(db.write(block))
    await asyncio.to_thread(started.wait, 30)

    def insert(i):
        def tx(conn):
            ensure_namespace(conn, "ns")
            conn.execute("INSERT INTO leases (namespace, id, created_at) VALUES ('ns', ?, 1)", (f"l{i:02d}",))
        return tx

    writes = [asyncio.ensure_future(db.write(insert(i), batch=True)) for i in range(20)]
    while len(db._batch) < 20:
        await asyncio.sleep(0.001)
    release.set()
    await blocker
    await asyncio.gather(*writes)
    marker(path + ".end")
    print("acked", os.getpid(), len(commits), flush=True)
    await asyncio.sleep(600)  # until killed

asyncio.run(main(sys.argv[1]))
'''

SYNC = re.compile(r"^(\d+)\s+(?:fsync|fdatasync)\((\d+)<([^>]*)>\)\s+=\s+0")


def test_an_acknowledged_batched_write_is_synced_and_survives_a_kill(tmp_path: Path) -> None:
    strace = shutil.which("strace")
    assert strace, "strace is needed (make deps installs it)"
    db = tmp_path / "meta.db"
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    trace = tmp_path / "trace"
    proc = subprocess.Popen([strace, "-f", "-y", "-e", "trace=fsync,fdatasync", "-o", str(trace),
                             sys.executable, str(script), str(db)],
                            stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True)
    child = 0
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().split()  # blocks until the ack (or the child's exit: "")
        assert line[:1] == ["acked"], f"child did not acknowledge: {line}"
        child, commits = int(line[1]), int(line[2])
        os.kill(child, signal.SIGKILL)
        proc.wait(timeout=30)  # strace ends with its tracee
        wait_for(lambda: not pid_alive(child), 10, "the killed child to go")
    finally:
        if child:
            kill_pids([child])
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)

    # the data of every acknowledged write is there
    conn = sqlite3.connect(db)
    try:
        rows = [r[0] for r in conn.execute("SELECT id FROM leases ORDER BY id")]
    finally:
        conn.close()
    assert rows == [f"l{i:02d}" for i in range(20)]

    # ... and it was synced before the ack: one WAL sync for the batch, between the markers
    assert commits == 2  # the blocker's (empty) and the batch's: the twenty shared one
    paths = [m.group(3) for ln in trace.read_text().splitlines() if (m := SYNC.match(ln))]
    begin, end = paths.index(f"{db}.begin"), paths.index(f"{db}.end")
    assert paths[begin + 1:end] == [f"{db}-wal"], paths
