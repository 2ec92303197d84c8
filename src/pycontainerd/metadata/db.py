"""The metadata database: one SQLite file (WAL) under the daemon root.

Everything namespaced that containerd keeps in its bolt database lives here: namespaces,
images, content records (the bytes are shared in the content store), containers, leases and
their resources, and the namespaced view of snapshots.  One connection is used for writes
and runs every transaction on a dedicated thread, so the event loop never blocks on SQLite
and writers are serialised; reads go to a small pool of read-only connections (WAL lets
them run beside the writer).

Each transaction is a plain function ``fn(conn) -> T`` run with ``await db.write(fn)`` (one
``BEGIN IMMEDIATE`` ... ``COMMIT``; any exception rolls back) or ``await db.read(fn)``.
After a committed write that deleted something, ``on_delete`` callbacks fire; after every
committed write that changed rows, ``on_mutation`` callbacks fire on the writer thread (the
GC scheduler subscribes both with ``subscribe`` and counts them).

Group commit.  ``await db.write(fn, batch=True)`` lets the writer thread run ``fn`` in one
SQLite transaction together with the other batched writes queued at that moment, each in
its own ``SAVEPOINT`` (an ``fn`` that raises rolls back only its own changes and gets its
own exception); the caller hears about its ``fn`` only after the shared ``COMMIT``, and if
that fails every ``fn`` of the batch fails with it.  Under a burst (a pull writes ~3
records per blob, dozens of blobs at once) this replaces one ``BEGIN``/``COMMIT`` and one
WAL sync (and one trip through the queue) per record by one per batch: while the writer
thread syncs one batch, the next one queues up behind it.  Only batch an ``fn`` whose
effects outside the database do not depend on rows that other batched writes may have
changed uncommitted: a content commit (rename, then insert) qualifies; deletions and the
GC's blob sweep do not.

Durability (WAL mode).  Every write, batched or not, commits with ``synchronous=FULL``: the
WAL is synced (one ``fsync`` per ``COMMIT``, so one per batch) before any caller of the
transaction hears of it, so an acknowledged write survives ``kill -9`` and power loss, as a
bolt transaction in containerd does (bolt fsyncs every commit).  Batched writes used to
commit with ``NORMAL`` (no sync of their own); that was faster for a lone writer but left
the last acknowledged label or blob record to be lost on power failure, which is not like
for like with containerd.  Measured with ``python -m bench.metadata_commit`` (concurrent
``Content.Update`` label writes, 512 per run, median of 3, loaded 2-core VM, ext4 on a
virtio disk): writes/s with 1 / 8 / 32 writers at once — ``NORMAL`` batches 5399 / 10926
/ 18185, ``FULL`` batches 2156 / 8571 / 15268, one ``FULL`` transaction per write 2166 /
2566 / 2486; a second run, with the disk busier (fsync ~2 ms instead of ~0.3), ``NORMAL``
1799 / 6166 / 9446, ``FULL`` 369 / 1374 / 5851, per write 326 / 276 / 227.  So the group
commit keeps much of the throughput under concurrency, where the batches form (the more
the sync costs, the bigger they get); a lone writer pays its own sync, as in containerd.

The schema carries a version in ``PRAGMA user_version``; ``MIGRATIONS[i]`` moves a database
from version i to i+1, and opening a database newer than this code knows is refused.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import os
import queue
import sqlite3
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

from .. import errdefs, fsmodes

T = TypeVar("T")

MIGRATIONS: list[str] = [
    # 0 -> 1: the initial schema
    """
    CREATE TABLE namespaces (
        name TEXT PRIMARY KEY,
        labels TEXT NOT NULL DEFAULT '{}',
        created_at INTEGER NOT NULL,
        updated_at INTEGER NOT NULL
    );
    CREATE TABLE images (
        namespace TEXT NOT NULL,
        name TEXT NOT NULL,
        media_type TEXT NOT NULL,
        digest TEXT NOT NULL,
        size INTEGER NOT NULL,
        annotations TEXT NOT NULL DEFAULT '{}',
        labels TEXT NOT NULL DEFAULT '{}',
        created_at INTEGER NOT NULL,
        updated_at INTEGER NOT NULL,
        PRIMARY KEY (namespace, name)
    );
    CREATE TABLE content (
        namespace TEXT NOT NULL,
        digest TEXT NOT NULL,
        size INTEGER NOT NULL,
        labels TEXT NOT NULL DEFAULT '{}',
        created_at INTEGER NOT NULL,
        updated_at INTEGER NOT NULL,
        PRIMARY KEY (namespace, digest)
    );
    CREATE TABLE ingests (
        namespace TEXT NOT NULL,
        ref TEXT NOT NULL,
        expected TEXT NOT NULL DEFAULT '',
        created_at INTEGER NOT NULL,
        PRIMARY KEY (namespace, ref)
    );
    CREATE TABLE containers (
        namespace TEXT NOT NULL,
        id TEXT NOT NULL,
        labels TEXT NOT NULL DEFAULT '{}',
        image TEXT NOT NULL DEFAULT '',
        runtime_name TEXT NOT NULL DEFAULT '',
        runtime_options_type TEXT NOT NULL DEFAULT '',
        runtime_options BLOB,
        spec_type TEXT NOT NULL DEFAULT '',
        spec BLOB,
        snapshotter TEXT NOT NULL DEFAULT '',
        snapshot_key TEXT NOT NULL DEFAULT '',
        sandbox TEXT NOT NULL DEFAULT '',
        extensions TEXT NOT NULL DEFAULT '{}',
        created_at INTEGER NOT NULL,
        updated_at INTEGER NOT NULL,
        PRIMARY KEY (namespace, id)
    );
    CREATE TABLE leases (
        namespace TEXT NOT NULL,
        id TEXT NOT NULL,
        labels TEXT NOT NULL DEFAULT '{}',
        created_at INTEGER NOT NULL,
        PRIMARY KEY (namespace, id)
    );
    CREATE TABLE lease_resources (
        namespace TEXT NOT NULL,
        lease TEXT NOT NULL,
        type TEXT NOT NULL,
        id TEXT NOT NULL,
        PRIMARY KEY (namespace, lease, type, id)
    );
    CREATE TABLE snapshots (
        namespace TEXT NOT NULL,
        snapshotter TEXT NOT NULL,
        key TEXT NOT NULL,
        backend_key TEXT NOT NULL,
        parent TEXT NOT NULL DEFAULT '',
        labels TEXT NOT NULL DEFAULT '{}',
        created_at INTEGER NOT NULL,
        updated_at INTEGER NOT NULL,
        PRIMARY KEY (namespace, snapshotter, key)
    );
    CREATE INDEX snapshots_backend ON snapshots (snapshotter, backend_key);
    CREATE TABLE settings (
        key TEXT PRIMARY KEY,
        value TEXT NOT NULL
    );
    """,
]

SCHEMA_VERSION = len(MIGRATIONS)

MAX_BATCH = 256
"""At most this many batched writes share one transaction."""


def now_ns() -> int:
    return time.time_ns()


def dumps(obj: Mapping[str, Any] | None) -> str:
    return json.dumps(dict(obj or {}), sort_keys=True, separators=(",", ":"))


def loads(text: str | None) -> dict[str, Any]:
    if not text:
        return {}
    value = json.loads(text)
    assert isinstance(value, dict)
    return value


def _resolve(fut: asyncio.Future[Any], ok: bool, value: Any) -> None:
    if fut.cancelled():
        return
    if ok:
        fut.set_result(value)
    else:
        fut.set_exception(value)


class _ReadPool:
    """Reader threads fed from a queue, handing results straight to the caller's asyncio future.

    Why not ``run_in_executor``: a metadata read is a ~20 µs query, and the executor's
    concurrent ``Future`` (with its lock and condition) chained to an asyncio future cost
    more than that on every call; this hop is ~30 µs cheaper and reads are the most
    frequent thing the daemon does.  Threads start on demand, up to ``max_threads``."""

    def __init__(self, run: Callable[[Callable[[sqlite3.Connection], Any]], Any], max_threads: int) -> None:
        self._run = run
        self._max = max_threads
        self._q: queue.SimpleQueue[tuple[asyncio.AbstractEventLoop, asyncio.Future[Any], Any] | None] = (
            queue.SimpleQueue()
        )
        self._threads: list[threading.Thread] = []
        self._idle = 0
        self._mu = threading.Lock()

    def submit(self, loop: asyncio.AbstractEventLoop, fn: Callable[[sqlite3.Connection], T]) -> asyncio.Future[T]:
        fut: asyncio.Future[T] = loop.create_future()
        with self._mu:
            if self._idle == 0 and len(self._threads) < self._max:
                t = threading.Thread(target=self._work, name=f"meta-read-{len(self._threads)}", daemon=True)
                self._threads.append(t)
                t.start()
            else:
                self._idle -= 1  # one idle thread will take this job
        self._q.put((loop, fut, fn))
        return fut

    def _work(self) -> None:
        while True:
            job = self._q.get()
            if job is None:
                return
            loop, fut, fn = job
            try:
                value, ok = self._run(fn), True
            except BaseException as exc:  # handed to the awaiting coroutine
                value, ok = exc, False
            del fn, job
            try:
                loop.call_soon_threadsafe(_resolve, fut, ok, value)
            except RuntimeError:  # the loop is closed: nobody waits any more
                pass
            del fut, value
            with self._mu:
                self._idle += 1

    def shutdown(self) -> None:
        for _ in self._threads:
            self._q.put(None)
        for t in self._threads:
            t.join()


class Database:
    """The SQLite metadata store; create with ``Database.open(path)`` in a thread or ``await open_async``."""

    SYNC_UNBATCHED = "FULL"
    """``PRAGMA synchronous`` for ordinary writes: durable when they return (see the docstring)."""
    SYNC_BATCHED = "FULL"
    """... and for a batch: its one ``COMMIT`` syncs the WAL before any of its callers hears
    of it (``bench.metadata_commit`` sets it to ``NORMAL`` to measure what the sync costs)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        # One writer thread serialises every transaction; readers share a small pool.
        self._writer = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="meta-write")
        self._readers = _ReadPool(self._run_read, max_threads=4)
        self._local = threading.local()
        self._write_conn: sqlite3.Connection | None = None
        self._synchronous = "FULL"  # what the writer connection is set to (see _connect)
        # group commit: batched writes wait here for the writer thread (see the docstring)
        self._batch: list[tuple[Callable[[sqlite3.Connection], Any], concurrent.futures.Future[Any]]] = []
        self._batch_mu = threading.Lock()
        self._batch_scheduled = False
        self.on_delete: list[Callable[[], None]] = []
        self.on_mutation: list[Callable[[], None]] = []
        self._closed = False
        # bumped by the writer thread when a write transaction begins and again when it ends:
        # odd while one is in flight.  A read that saw the same even value before and after it
        # reflects the state of that generation (``generation_read``): what readers may cache.
        self.generation = 0
        # name -> [writes begun or ended, writes in flight] (``counted_write``): for readers that
        # keep what they derived from one table only (the CRI's image list), which ``generation``
        # (any write) would invalidate at every step
        self._counted: dict[str, list[int]] = {}

    # -- lifecycle -------------------------------------------------------------------------
    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=30)
        conn.execute("PRAGMA journal_mode=WAL")
        # synchronous=FULL: a committed write survives power loss and kill -9 alike
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("PRAGMA foreign_keys=ON")
        conn.row_factory = sqlite3.Row
        return conn

    def open_sync(self) -> None:
        # container specs (with their environment) are in here: root only (fsmodes)
        fsmodes.private_dir(self.path.parent, chmod=False)  # the daemon closes an old one
        fsmodes.close_existing([f"{self.path}-wal", f"{self.path}-shm"])
        fsmodes.private_file(self.path)
        conn = self._connect()
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise errdefs.FailedPrecondition(
                f"metadata database {self.path} has schema version {version}, newer than this pycontainerd "
                f"understands ({SCHEMA_VERSION}); upgrade pycontainerd"
            )
        for i in range(version, SCHEMA_VERSION):
            conn.execute("BEGIN IMMEDIATE")
            try:
                for stmt in _split_sql(MIGRATIONS[i]):
                    conn.execute(stmt)
                conn.execute(f"PRAGMA user_version={i + 1}")
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
        self._write_conn = conn

    async def open(self) -> None:
        await asyncio.get_running_loop().run_in_executor(self._writer, self.open_sync)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._writer.shutdown(wait=True)
        self._readers.shutdown()
        if self._write_conn is not None:
            self._write_conn.close()

    # -- transactions ----------------------------------------------------------------------
    def _set_synchronous(self, conn: sqlite3.Connection, mode: str) -> None:
        if self._synchronous != mode:
            conn.execute(f"PRAGMA synchronous={mode}")
            self._synchronous = mode

    def _run_write(
        self,
        fn: Callable[[sqlite3.Connection], T],
        synchronous: str | None = None,
        before_commit: Callable[[T], None] | None = None,
    ) -> T:
        conn = self._write_conn
        assert conn is not None, "database not open"
        self._set_synchronous(conn, synchronous or self.SYNC_UNBATCHED)
        before = conn.total_changes
        self.generation += 1
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                with errdefs.map_errors({sqlite3.IntegrityError: errdefs.AlreadyExists}, "metadata"):
                    result = fn(conn)
                if before_commit is not None:
                    before_commit(result)
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
        finally:
            self.generation += 1
        if conn.total_changes != before:
            self._notify_mutation(1)
        return result

    def _reader_conn(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._connect()
            conn.execute("PRAGMA query_only=ON")
            self._local.conn = conn
        return conn

    def _run_read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        conn = self._reader_conn()
        conn.execute("BEGIN")
        try:
            return fn(conn)
        finally:
            conn.execute("COMMIT")

    def _run_batch(self) -> None:
        """On the writer thread: run every queued batched write in one transaction."""
        with self._batch_mu:
            jobs, self._batch = self._batch[:MAX_BATCH], self._batch[MAX_BATCH:]
            if self._batch:
                self._writer.submit(self._run_batch)  # the rest in the next round
            else:
                self._batch_scheduled = False
        jobs = [(fn, fut) for fn, fut in jobs if fut.set_running_or_notify_cancel()]
        if len(jobs) == 1:
            fn, fut = jobs[0]
            try:
                fut.set_result(self._run_write(fn, self.SYNC_BATCHED))
            except BaseException as exc:
                fut.set_exception(exc)
            return
        if not jobs:
            return
        conn = self._write_conn
        assert conn is not None, "database not open"
        outcomes: list[tuple[bool, Any]] = []
        before = conn.total_changes
        self.generation += 1
        try:
            self._set_synchronous(conn, self.SYNC_BATCHED)
            conn.execute("BEGIN IMMEDIATE")
            try:
                for fn, _ in jobs:
                    conn.execute("SAVEPOINT batched")
                    try:
                        with errdefs.map_errors({sqlite3.IntegrityError: errdefs.AlreadyExists}, "metadata"):
                            outcomes.append((True, fn(conn)))
                    except Exception as exc:
                        conn.execute("ROLLBACK TO batched")
                        outcomes.append((False, exc))
                    conn.execute("RELEASE batched")
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
        except BaseException as exc:
            self.generation += 1
            for _, fut in jobs:
                fut.set_exception(exc)
            return
        self.generation += 1
        if conn.total_changes != before:
            self._notify_mutation(sum(1 for ok, _ in outcomes if ok))
        for (ok, value), (_, fut) in zip(outcomes, jobs, strict=True):
            if ok:
                fut.set_result(value)
            else:
                fut.set_exception(value)

    async def write(
        self,
        fn: Callable[[sqlite3.Connection], T],
        *,
        batch: bool = False,
        before_commit: Callable[[T], None] | None = None,
    ) -> T:
        """Run ``fn`` in a write transaction; ``batch=True`` allows group commit (see the docstring).

        ``before_commit`` (not with ``batch``) is called on the writer thread with ``fn``'s
        result once ``fn`` succeeded, right before ``COMMIT`` and its sync: work that only
        needs the result (e.g. a backend snapshot named by it) can start while the WAL is
        synced instead of after.  The write is still durable when this returns; if the
        ``COMMIT`` fails after ``before_commit`` ran, the caller must undo that work."""
        if not batch:
            return await asyncio.get_running_loop().run_in_executor(
                self._writer, self._run_write, fn, None, before_commit
            )
        if before_commit is not None:
            raise ValueError("before_commit is not supported with batch=True")
        fut: concurrent.futures.Future[T] = concurrent.futures.Future()
        with self._batch_mu:
            self._batch.append((fn, fut))
            if not self._batch_scheduled:
                self._batch_scheduled = True
                self._writer.submit(self._run_batch)
        return await asyncio.wrap_future(fut)

    async def read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        return await self._readers.submit(asyncio.get_running_loop(), fn)

    async def generation_read(self, fn: Callable[[sqlite3.Connection], T]) -> tuple[T, int | None]:
        """``read(fn)`` and the generation its result belongs to, or None when a write began or
        ended meanwhile (the result is right for this call, but not one to keep)."""
        before = self.generation
        result = await self.read(fn)
        return result, (before if before % 2 == 0 and self.generation == before else None)

    async def counted_write(self, name: str, fn: Callable[[sqlite3.Connection], T]) -> T:
        """``write(fn)``, counted under ``name`` (``counted_writes``) when it begins and when it ends."""
        counts = self._counted.setdefault(name, [0, 0])
        counts[0] += 1
        counts[1] += 1
        try:
            return await self.write(fn)
        finally:
            counts[1] -= 1
            counts[0] += 1

    def counted_writes(self, name: str) -> int | None:
        """How many ``counted_write``s under ``name`` began or ended so far; None while one is in flight."""
        counts = self._counted.get(name)
        if counts is None:
            return 0
        return None if counts[1] else counts[0]

    def write_sync(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """For code already on a worker thread (e.g. GC); never call from the event loop."""
        return self._writer.submit(self._run_write, fn).result()

    async def checkpoint(self, min_wal_bytes: int = 0) -> bool:
        """Fold the WAL into the database file and truncate it (after large deletions).

        With ``min_wal_bytes``, only when the WAL file has grown at least that big: SQLite's
        own (passive) auto-checkpoints already keep reusing a WAL of ~4 MiB, so truncating
        after every small deletion would only cost fsyncs.  Returns whether it ran."""

        def run() -> bool:
            assert self._write_conn is not None
            if min_wal_bytes > 0:
                try:
                    size = os.stat(f"{self.path}-wal").st_size
                except FileNotFoundError:
                    return False
                if size < min_wal_bytes:
                    return False
            self._write_conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            return True

        return await asyncio.get_running_loop().run_in_executor(self._writer, run)

    def subscribe(
        self, *, on_delete: Callable[[], None] | None = None, on_mutation: Callable[[], None] | None = None
    ) -> None:
        """Be told about committed deletions (``notify_deleted``) and row-changing writes."""
        if on_delete is not None:
            self.on_delete.append(on_delete)
        if on_mutation is not None:
            self.on_mutation.append(on_mutation)

    def _notify_mutation(self, n: int) -> None:
        for cb in list(self.on_mutation):
            for _ in range(n):
                cb()

    def notify_deleted(self) -> None:
        for cb in list(self.on_delete):
            cb()


def _split_sql(script: str) -> list[str]:
    return [s.strip() for s in script.split(";") if s.strip()]


def ensure_namespace(conn: sqlite3.Connection, namespace: str) -> None:
    """Any write into a namespace creates it, as containerd's buckets do."""
    ts = now_ns()
    conn.execute(
        "INSERT OR IGNORE INTO namespaces (name, labels, created_at, updated_at) VALUES (?, '{}', ?, ?)",
        (namespace, ts, ts),
    )
