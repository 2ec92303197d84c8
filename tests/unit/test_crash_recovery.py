"""What a crash (kill -9) can leave behind, and the start-up/GC code that cleans it up.

- a snapshot record whose backend snapshot was never made (``SnapshotStore.reconcile``);
- backend directories of a half-made (``new-*``) or half-removed (``rm-*``) snapshot, or
  with no record at all (``DirSnapshotter.cleanup``), while a concurrent remove's own
  ``rm-*`` directory is left to it;
- GC deleting blob bytes only after the records' transaction committed, so a crash in the
  middle never leaves a record without its blob.
"""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from pycontainerd import errdefs
from pycontainerd.metadata.db import Database
from pycontainerd.metadata.gc import Collector
from pycontainerd.metadata.snapshots import SnapshotStore
from pycontainerd.snapshots.native import NativeSnapshotter


async def _with_store(tmp: Path, fn: Any) -> None:
    db = Database(tmp / "meta.db")
    await db.open()
    backend = NativeSnapshotter(tmp / "native")
    try:
        await fn(SnapshotStore(db, "native", backend), db, backend)
    finally:
        await backend.close()
        await asyncio.to_thread(db.close)


def test_reconcile_drops_records_without_a_snapshot(tmp_path: Path) -> None:
    async def body(store: SnapshotStore, db: Database, backend: NativeSnapshotter) -> None:
        ns = store.namespaced("ns")
        await ns.prepare("a")
        await ns.commit("base", "a")
        # a crash inside Commit: the name's record exists, the backend never committed it;
        # a lease (the crashed pull's) still holds it
        def crash(conn: sqlite3.Connection) -> None:
            conn.execute("INSERT INTO leases (namespace, id, labels, created_at) VALUES ('ns', 'pull', '{}', 1)")
            conn.execute(
                "INSERT INTO snapshots (namespace, snapshotter, key, backend_key, parent, labels, created_at,"
                " updated_at) VALUES ('ns', 'native', 'layer2', 'ns/999/layer2', 'base', '{}', 1, 1)"
            )
            conn.execute("INSERT INTO lease_resources VALUES ('ns', 'pull', 'snapshots/native', 'layer2')")

        await db.write(crash)
        # the unpacker's view before the fix: Stat NotFound, Commit AlreadyExists, Prepare on it fails
        with pytest.raises(errdefs.NotFound):
            await ns.stat("layer2")
        assert await store.reconcile() == [("ns", "layer2")]
        assert await store.reconcile() == []
        resources = await db.read(lambda c: c.execute("SELECT * FROM lease_resources").fetchall())
        assert resources == []
        await ns.prepare("b", "base")
        await ns.commit("layer2", "b")  # the re-unpack goes through
        await ns.prepare("c", "layer2")
        assert (await ns.stat("layer2")).parent == "base"
        assert sorted(i.name for i in await ns.walk()) == ["base", "c", "layer2"]

    asyncio.run(_with_store(tmp_path, body))


def test_backend_cleanup_removes_crash_leftovers_but_not_a_remove_in_flight(tmp_path: Path) -> None:
    async def body(store: SnapshotStore, db: Database, backend: NativeSnapshotter) -> None:
        ns = store.namespaced("ns")
        await ns.prepare("keep")
        sdir = tmp_path / "native" / "snapshots"
        (kept,) = [p.name for p in sdir.iterdir()]
        for junk in ("new-abc", "rm-7", "4242"):
            (sdir / junk / "sub").mkdir(parents=True)
            (sdir / junk / "sub" / "f").write_bytes(b"x")
        (sdir / "stray-file").write_bytes(b"x")
        in_flight = sdir / "rm-99"
        (in_flight / "sub").mkdir(parents=True)
        backend._removing.add(in_flight.name)  # a remove() deleting it right now
        await backend.cleanup()
        assert sorted(p.name for p in sdir.iterdir()) == sorted([kept, "rm-99"])
        backend._removing.discard(in_flight.name)
        await backend.cleanup()
        assert [p.name for p in sdir.iterdir()] == [kept]
        await ns.remove("keep")
        assert list(sdir.iterdir()) == []

    asyncio.run(_with_store(tmp_path, body))


def test_concurrent_removes_and_cleanups_do_not_trip_over_each_other(tmp_path: Path) -> None:
    async def body(store: SnapshotStore, db: Database, backend: NativeSnapshotter) -> None:
        ns = store.namespaced("ns")
        for i in range(20):
            await ns.prepare(f"k{i}")
            (tmp_path / "native" / "snapshots").joinpath(str(i + 1), "d").mkdir()
        await asyncio.gather(*(ns.remove(f"k{i}") for i in range(20)), *(store.cleanup() for _ in range(5)))
        assert list((tmp_path / "native" / "snapshots").iterdir()) == []
        assert await backend.walk() == []

    asyncio.run(_with_store(tmp_path, body))


def test_gc_deletes_bytes_only_after_the_records_commit(tmp_path: Path) -> None:
    """A crash during the byte sweep must not take blobs whose records survive: the records
    are gone (committed) before the first blob is unlinked."""

    async def body() -> None:
        db = Database(tmp_path / "meta.db")
        await db.open()
        blobs = {"sha256:" + "a" * 64, "sha256:" + "b" * 64}
        seen_rows: list[int] = []

        def write(conn: sqlite3.Connection) -> None:
            for dg in blobs:
                conn.execute("INSERT INTO namespaces (name, created_at, updated_at) VALUES ('ns', 1, 1)"
                             " ON CONFLICT DO NOTHING")
                conn.execute("INSERT INTO content (namespace, digest, size, labels, created_at, updated_at)"
                             " VALUES ('ns', ?, 1, '{}', 1, 1)", (dg,))

        await db.write(write)

        def delete_blob(digest: str) -> None:
            # what another connection sees at this moment: the records must already be gone
            conn = sqlite3.connect(tmp_path / "meta.db")
            seen_rows.append(conn.execute("SELECT COUNT(*) FROM content").fetchone()[0])
            conn.close()
            blobs.discard(digest)
            raise OSError("simulated crash while unlinking")  # later blobs are retried next time

        collector = Collector(db, delete_blob=delete_blob, list_blobs=lambda: sorted(blobs), snapshot_cleanups={})
        stats = await collector.collect()
        assert stats.content == 2
        assert seen_rows and set(seen_rows) == {0}
        await asyncio.to_thread(db.close)

    asyncio.run(body())
