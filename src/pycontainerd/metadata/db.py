"""The metadata database: one SQLite file (WAL) under the daemon root.

Everything namespaced that containerd keeps in its bolt database lives here: namespaces,
images, content records (the bytes are shared in the content store), containers, leases and
their resources, and the namespaced view of snapshots.  One connection is used for writes
and runs every transaction on a dedicated thread, so the event loop never blocks on SQLite
and writers are serialised; reads go to a small pool of read-only connections (WAL lets
them run beside the writer).

Each transaction is a plain function ``fn(conn) -> T`` run with ``await db.write(fn)`` (one
``BEGIN IMMEDIATE`` ... ``COMMIT``; any exception rolls back) or ``await db.read(fn)``.
After a committed write that deleted something, ``on_delete`` callbacks fire (the GC
scheduler counts them).

The schema carries a version in ``PRAGMA user_version``; ``MIGRATIONS[i]`` moves a database
from version i to i+1, and opening a database newer than this code knows is refused.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import sqlite3
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

from .. import errdefs

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


class Database:
    """The SQLite metadata store; create with ``Database.open(path)`` in a thread or ``await open_async``."""

    def __init__(self, path: Path) -> None:
        self.path = path
        # One writer thread serialises every transaction; readers share a small pool.
        self._writer = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="meta-write")
        self._readers = concurrent.futures.ThreadPoolExecutor(max_workers=4, thread_name_prefix="meta-read")
        self._local = threading.local()
        self._write_conn: sqlite3.Connection | None = None
        self.on_delete: list[Callable[[], None]] = []
        self._closed = False

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
        self.path.parent.mkdir(parents=True, exist_ok=True)
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
        self._readers.shutdown(wait=True)
        if self._write_conn is not None:
            self._write_conn.close()

    # -- transactions ----------------------------------------------------------------------
    def _run_write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        conn = self._write_conn
        assert conn is not None, "database not open"
        before = conn.total_changes
        conn.execute("BEGIN IMMEDIATE")
        try:
            with errdefs.map_errors({sqlite3.IntegrityError: errdefs.AlreadyExists}, "metadata"):
                result = fn(conn)
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        del before
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

    async def write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._writer, self._run_write, fn)

    async def read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._readers, self._run_read, fn)

    def write_sync(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """For code already on a worker thread (e.g. GC); never call from the event loop."""
        return self._writer.submit(self._run_write, fn).result()

    async def checkpoint(self) -> None:
        """Fold the WAL into the database file and truncate it (after large deletions)."""

        def run() -> None:
            assert self._write_conn is not None
            self._write_conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")

        await asyncio.get_running_loop().run_in_executor(self._writer, run)

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
