"""metadata.snapshots: namespaces, backend keys, leases, events (native backend, no mounts)."""

from __future__ import annotations

import asyncio
import sqlite3
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
