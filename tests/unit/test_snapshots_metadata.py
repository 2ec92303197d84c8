"""metadata.snapshots: namespaces, backend keys, leases, events (native backend, no mounts)."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from pathlib import Path
from typing import Any

import pytest

from pycontainerd import errdefs
from pycontainerd.events import Exchange
from pycontainerd.metadata.db import Database
from pycontainerd.metadata.snapshots import SnapshotStore
from pycontainerd.snapshots.interfaces import Kind
from pycontainerd.snapshots.native import NativeSnapshotter


async def _with_store(tmp: Path, fn: Any) -> None:
    db = Database(tmp / "meta.db")
    await db.open()
    backend = NativeSnapshotter(tmp / "native")
    ex = Exchange()
    events: list[Any] = []

    async def collect() -> None:
        async for env in ex.subscribe():
            events.append(env)

    task = asyncio.ensure_future(collect())
    await asyncio.sleep(0)
    try:
        await fn(SnapshotStore(db, "native", backend, ex), db, backend, events)
    finally:
        task.cancel()
        await backend.close()
        await asyncio.to_thread(db.close)


def test_namespaces_are_isolated(tmp_path: Path) -> None:
    async def body(store: SnapshotStore, db: Database, backend: NativeSnapshotter, events: list[Any]) -> None:
        a, b = store.namespaced("ns-a"), store.namespaced("ns-b")
        await a.prepare("k")
        await b.prepare("k")  # same key, other namespace
        await a.commit("c", "k")
        with pytest.raises(errdefs.NotFound):
            await b.prepare("x", "c")  # a's committed snapshot is invisible in b
        assert [i.name for i in await a.walk()] == ["c"]
        assert [(i.name, i.kind) for i in await b.walk()] == [("k", Kind.ACTIVE)]
        bkeys = sorted(i.name for i in await backend.walk())
        assert len(bkeys) == 2, bkeys
        assert {k.split("/")[0] for k in bkeys} == {"ns-a", "ns-b"}, bkeys
        await a.prepare("child", "c")
        assert (await a.stat("child")).parent == "c"  # parent shown by its namespace name
        with pytest.raises(errdefs.FailedPrecondition):
            await a.remove("c")
        await a.remove("child")
        await a.remove("c")
        await b.remove("k")
        assert await backend.walk() == []
        await asyncio.sleep(0)
        topics = [(e.namespace, e.topic, dict(e.payload)) for e in events]
        assert ("ns-a", "/snapshot/commit", {"key": "k", "name": "c", "snapshotter": "native"}) in topics
        assert ("ns-b", "/snapshot/remove", {"key": "k", "snapshotter": "native"}) in topics
        assert ("ns-a", "/snapshot/prepare", {"key": "child", "parent": "c", "snapshotter": "native"}) in topics

    asyncio.run(_with_store(tmp_path, body))


def test_lease_resources_and_backend_failure_rollback(tmp_path: Path) -> None:
    async def body(store: SnapshotStore, db: Database, backend: NativeSnapshotter, events: list[Any]) -> None:
        def add_lease(conn: sqlite3.Connection) -> None:
            conn.execute("INSERT INTO leases (namespace, id, labels, created_at) VALUES ('ns', 'l1', '{}', 0)")

        await db.write(add_lease)
        leased = store.namespaced("ns", "l1")
        await leased.prepare("k")
        await leased.commit("c", "k")
        rows = await db.read(
            lambda c: [tuple(r) for r in c.execute("SELECT type, id FROM lease_resources ORDER BY id").fetchall()]
        )
        assert rows == [("snapshots/native", "c")]
        with pytest.raises(errdefs.NotFound):
            await store.namespaced("ns", "missing-lease").prepare("z")
        # the backend refuses (parent not committed): the namespace row must not stay behind
        await leased.prepare("active")
        with pytest.raises(errdefs.InvalidArgument):
            await leased.prepare("bad", "active")
        assert sorted(i.name for i in await leased.walk()) == ["active", "c"]
        await leased.remove("active")
        ids = await db.read(lambda c: [r["id"] for r in c.execute("SELECT id FROM lease_resources").fetchall()])
        assert ids == ["c"]

    asyncio.run(_with_store(tmp_path, body))


def test_cleanup_removes_orphaned_backend_snapshots(tmp_path: Path) -> None:
    async def body(store: SnapshotStore, db: Database, backend: NativeSnapshotter, events: list[Any]) -> None:
        ns = store.namespaced("ns")
        await ns.prepare("k")
        await backend.prepare("orphan-active")
        await backend.commit("orphan", "orphan-active")
        await backend.prepare("orphan-child", "orphan")
        await ns.cleanup()
        assert [i.name.split("/")[-1] for i in await backend.walk()] == ["k"]
        assert len(list((tmp_path / "native" / "snapshots").iterdir())) == 1

    asyncio.run(_with_store(tmp_path, body))


class _GatedDatabase(Database):
    """A Database whose writes with ``before_commit`` hold their COMMIT until ``gate`` is
    set (or fail instead of committing, with ``fail_commit``)."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.gate = threading.Event()
        self.gated = 0
        self.fail_commit = False

    def _run_write(self, fn: Any, synchronous: str | None = None, before_commit: Any = None) -> Any:
        if before_commit is None:
            return super()._run_write(fn, synchronous)

        def hold(result: Any) -> None:
            before_commit(result)
            self.gated += 1
            if self.fail_commit:
                raise sqlite3.OperationalError("disk I/O error (test)")
            assert self.gate.wait(10), "the backend snapshot was not started before the COMMIT"

        return super()._run_write(fn, synchronous, hold)


def _gated_store(tmp: Path, fn: Any) -> None:
    async def run() -> None:
        db = _GatedDatabase(tmp / "meta.db")
        await db.open()
        backend = NativeSnapshotter(tmp / "native")
        try:
            await fn(SnapshotStore(db, "native", backend), db, backend)
        finally:
            await backend.close()
            await asyncio.to_thread(db.close)

    asyncio.run(run())


def test_prepare_makes_the_backend_snapshot_while_the_row_commits(tmp_path: Path) -> None:
    """The backend snapshot is started before the row's COMMIT (and its sync) returns, and a
    cleanup running meanwhile (the row not yet committed) leaves it alone."""

    async def body(store: SnapshotStore, db: _GatedDatabase, backend: NativeSnapshotter) -> None:
        real_prepare = backend.prepare
        seen: list[list[str]] = []

        async def prepare(key: str, parent: str = "", labels: Any = None) -> Any:
            mounts = await real_prepare(key, parent, labels)
            await store.cleanup()  # the row is still uncommitted (the gate is shut)
            seen.append([i.name for i in await backend.walk()])
            db.gate.set()
            return mounts

        backend.prepare = prepare  # type: ignore[method-assign]
        ns = store.namespaced("ns")
        await ns.prepare("k")
        assert db.gated == 1
        assert len(seen) == 1 and len(seen[0]) == 1, seen  # cleanup did not remove it
        assert [i.name for i in await ns.walk()] == ["k"]
        assert store._making == set()

    _gated_store(tmp_path, body)


def test_prepare_whose_commit_fails_removes_the_backend_snapshot(tmp_path: Path) -> None:
    async def body(store: SnapshotStore, db: _GatedDatabase, backend: NativeSnapshotter) -> None:
        db.fail_commit = True
        ns = store.namespaced("ns")
        with pytest.raises(Exception, match="disk I/O error"):
            await ns.prepare("k")
        assert db.gated == 1
        assert await backend.walk() == []
        assert await ns.walk() == []
        assert store._making == set()
        db.fail_commit = False
        db.gate.set()
        await ns.prepare("k")  # the key is free again
        assert [i.name for i in await ns.walk()] == ["k"]

    _gated_store(tmp_path, body)


def test_remove_removes_the_backend_snapshot_while_the_row_commits(tmp_path: Path) -> None:
    async def body(store: SnapshotStore, db: _GatedDatabase, backend: NativeSnapshotter) -> None:
        ns = store.namespaced("ns")
        db.gate.set()
        await ns.prepare("k")
        db.gate.clear()
        real_remove = backend.remove
        rows_seen: list[int] = []

        async def remove(key: str) -> None:
            await real_remove(key)
            # the row's deletion is not committed yet: the gate holds the COMMIT
            rows_seen.append(await db.read(lambda c: len(c.execute("SELECT 1 FROM snapshots").fetchall())))
            db.gate.set()

        backend.remove = remove  # type: ignore[method-assign]
        gated = db.gated
        await ns.remove("k")
        assert db.gated == gated + 1
        assert rows_seen == [1]
        assert await backend.walk() == []
        assert await ns.walk() == []

    _gated_store(tmp_path, body)


def test_prepare_with_more_writes_in_its_transaction(tmp_path: Path) -> None:
    """prepare(with_tx=): the snapshot and another store's record (the CRI's container) commit
    together; a with_tx that fails rolls the snapshot back and leaves no backend snapshot."""
    from pycontainerd.metadata.containers import Container, ContainerStore, TypedValue

    spec = TypedValue("types.containerd.io/opencontainers/runtime-spec/1/Spec", b"{}")

    async def body(store: SnapshotStore, db: Database, backend: NativeSnapshotter, events: list[Any]) -> None:
        containers = ContainerStore(db)
        sn = store.namespaced("ns")
        commits = db.generation
        tx, created = containers.create_in("ns", Container(id="c1", runtime_name="io.containerd.runc.v2", spec=spec,
                                                           snapshotter="native", snapshot_key="k1"))
        await sn.prepare("k1", with_tx=tx)
        assert db.generation - commits == 2  # one write transaction (its begin and its end)
        assert created().id == "c1"
        assert (await containers.get("ns", "c1")).snapshot_key == "k1"
        assert (await sn.stat("k1")).kind == Kind.ACTIVE
        # the same record again: the container's AlreadyExists, and no snapshot k2 anywhere
        tx2, _ = containers.create_in("ns", Container(id="c1", runtime_name="io.containerd.runc.v2", spec=spec))
        with pytest.raises(errdefs.AlreadyExists, match="c1"):
            await sn.prepare("k2", with_tx=tx2)
        with pytest.raises(errdefs.NotFound):
            await sn.stat("k2")
        await asyncio.sleep(0.05)
        assert len(await backend.walk()) == 1

    asyncio.run(_with_store(tmp_path, body))
