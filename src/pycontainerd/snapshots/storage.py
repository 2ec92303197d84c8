"""A snapshotter's own bookkeeping: which snapshots exist, their kinds, parents and ids.

Like containerd's ``snapshots/storage`` (a bolt file ``metadata.db`` under the snapshotter
root), we keep one SQLite file there.  Every snapshot has a numeric ``id`` that never
changes, even when an active snapshot is committed under a new name: the directory
``snapshots/<id>`` stays where it is, and numeric ids keep overlay ``lowerdir=`` options
short.  Keys (active, view) and names (committed) share the ``key`` column.

All methods are blocking; snapshotters call them from worker threads, inside
``with store.transaction() as tx:`` so that the filesystem work done in the block and the
records commit or roll back together (the block raising rolls back the records; the
snapshotter undoes its own filesystem work).
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from .. import errdefs, fsmodes
from .. import labels as labelutil
from .interfaces import Info, Kind, Usage

_SCHEMA = """
CREATE TABLE IF NOT EXISTS snapshots (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    key TEXT NOT NULL UNIQUE,
    kind INTEGER NOT NULL,
    parent TEXT NOT NULL DEFAULT '',
    labels TEXT NOT NULL DEFAULT '{}',
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    size INTEGER NOT NULL DEFAULT 0,
    inodes INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS snapshots_parent ON snapshots (parent);
"""


@dataclass(frozen=True)
class Snapshot:
    """What a snapshotter needs to build mounts: its id, kind, and parent ids (nearest first)."""

    id: str
    kind: Kind
    parent_ids: tuple[str, ...]


def _labels(text: str) -> dict[str, str]:
    value = json.loads(text or "{}")
    assert isinstance(value, dict)
    return {str(k): str(v) for k, v in value.items()}


def _dump(labels: Mapping[str, str] | None) -> str:
    return json.dumps(dict(labels or {}), sort_keys=True, separators=(",", ":"))


class Tx:
    """Operations inside one transaction."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def _row(self, key: str) -> sqlite3.Row:
        row = self.conn.execute("SELECT * FROM snapshots WHERE key=?", (key,)).fetchone()
        if row is None:
            raise errdefs.NotFound(f"snapshot {key} does not exist")
        assert isinstance(row, sqlite3.Row)
        return row

    @staticmethod
    def _info(row: sqlite3.Row) -> Info:
        return Info(
            name=row["key"],
            kind=Kind(row["kind"]),
            parent=row["parent"],
            labels=_labels(row["labels"]),
            created_at=row["created_at"],
            updated_at=row["updated_at"],
        )

    def _parent_ids(self, parent: str) -> tuple[str, ...]:
        ids: list[str] = []
        seen: set[str] = set()
        while parent:
            row = self.conn.execute("SELECT id, parent FROM snapshots WHERE key=?", (parent,)).fetchone()
            if row is None:
                raise errdefs.NotFound(f"parent snapshot {parent} does not exist")
            if parent in seen:
                raise errdefs.FailedPrecondition(f"snapshot parent cycle at {parent}")
            seen.add(parent)
            ids.append(str(row["id"]))
            parent = row["parent"]
        return tuple(ids)

    def create(self, key: str, kind: Kind, parent: str = "", labels: Mapping[str, str] | None = None) -> Snapshot:
        if kind not in (Kind.ACTIVE, Kind.VIEW):
            raise errdefs.InvalidArgument(
                f"snapshot type {kind.name} invalid; only active or view snapshots can be created"
            )
        if not key:
            raise errdefs.InvalidArgument("snapshot key must not be empty")
        if self.conn.execute("SELECT 1 FROM snapshots WHERE key=?", (key,)).fetchone():
            raise errdefs.AlreadyExists(f"snapshot {key}: already exists")
        parent_ids: tuple[str, ...] = ()
        if parent:
            prow = self.conn.execute("SELECT kind FROM snapshots WHERE key=?", (parent,)).fetchone()
            if prow is None:
                raise errdefs.NotFound(f"parent snapshot {parent} does not exist")
            if prow["kind"] != Kind.COMMITTED:
                raise errdefs.InvalidArgument(f"parent {parent} is not a committed snapshot")
            parent_ids = self._parent_ids(parent)
        ts = time.time_ns()
        cur = self.conn.execute(
            "INSERT INTO snapshots (key, kind, parent, labels, created_at, updated_at) VALUES (?,?,?,?,?,?)",
            (key, int(kind), parent, _dump(labels), ts, ts),
        )
        return Snapshot(str(cur.lastrowid), kind, parent_ids)

    def get(self, key: str) -> Snapshot:
        """An active or view snapshot (FailedPrecondition for a committed one)."""
        row = self._row(key)
        if row["kind"] not in (Kind.ACTIVE, Kind.VIEW):
            raise errdefs.FailedPrecondition(f"requested snapshot {key} not active or view")
        return Snapshot(str(row["id"]), Kind(row["kind"]), self._parent_ids(row["parent"]))

    def info(self, key: str) -> tuple[str, Info, Usage]:
        row = self._row(key)
        return str(row["id"]), self._info(row), Usage(row["size"], row["inodes"])

    def update(self, info: Info, fieldpaths: Sequence[str] = ()) -> Info:
        row = self._row(info.name)
        labels = labelutil.apply_field_paths(
            _labels(row["labels"]), info.labels, fieldpaths or labelutil.FIELD, what=f"snapshot {info.name}"
        )
        ts = time.time_ns()
        self.conn.execute("UPDATE snapshots SET labels=?, updated_at=? WHERE key=?", (_dump(labels), ts, info.name))
        return self._info(self._row(info.name))

    def commit(self, key: str, name: str, usage: Usage, labels: Mapping[str, str] | None = None) -> str:
        if not name:
            raise errdefs.InvalidArgument("snapshot name must not be empty")
        if self.conn.execute("SELECT 1 FROM snapshots WHERE key=?", (name,)).fetchone():
            raise errdefs.AlreadyExists(f"committed snapshot {name}: already exists")
        row = self._row(key)
        if row["kind"] != Kind.ACTIVE:
            raise errdefs.FailedPrecondition(
                f"snapshot {key} is not active ({Kind(row['kind'])}); only active snapshots can be committed"
            )
        merged = dict(labels or {})  # replaced, not inherited (as containerd)
        ts = time.time_ns()
        self.conn.execute(
            "UPDATE snapshots SET key=?, kind=?, labels=?, created_at=?, updated_at=?, size=?, inodes=? WHERE id=?",
            (name, int(Kind.COMMITTED), _dump(merged), ts, ts, usage.size, usage.inodes, row["id"]),
        )
        return str(row["id"])

    def remove(self, key: str) -> tuple[str, Kind]:
        row = self._row(key)
        if self.conn.execute("SELECT 1 FROM snapshots WHERE parent=? LIMIT 1", (key,)).fetchone():
            raise errdefs.FailedPrecondition(f"cannot remove snapshot {key} with child")
        self.conn.execute("DELETE FROM snapshots WHERE id=?", (row["id"],))
        return str(row["id"]), Kind(row["kind"])

    def walk(self) -> list[Info]:
        return [self._info(r) for r in self.conn.execute("SELECT * FROM snapshots ORDER BY key")]

    def ids(self) -> dict[str, str]:
        """id -> key of every snapshot."""
        return {str(r["id"]): r["key"] for r in self.conn.execute("SELECT id, key FROM snapshots")}


class MetaStore:
    """The SQLite file; one connection guarded by a lock (snapshotter ops are short)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        fsmodes.private_dir(path.parent, chmod=False)
        fsmodes.close_existing([f"{path}-wal", f"{path}-shm"])
        fsmodes.private_file(path)
        self._conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30)
        self._conn.row_factory = sqlite3.Row
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=FULL")
        self._conn.executescript(_SCHEMA)
        self._lock = threading.RLock()
        self._depth = 0

    @contextlib.contextmanager
    def transaction(self) -> Iterator[Tx]:
        with self._lock:
            if self._depth:  # nested: join the outer transaction
                self._depth += 1
                try:
                    yield Tx(self._conn)
                finally:
                    self._depth -= 1
                return
            self._conn.execute("BEGIN IMMEDIATE")
            self._depth = 1
            try:
                yield Tx(self._conn)
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            else:
                self._conn.execute("COMMIT")
            finally:
                self._depth = 0

    def close(self) -> None:
        with self._lock:
            self._conn.close()
