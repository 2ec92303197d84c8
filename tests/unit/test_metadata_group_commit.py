"""Group commit of batched metadata writes, and content commits that only rename inside them."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import sqlite3
import stat
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from pycontainerd import errdefs
from pycontainerd.content.interfaces import Info
from pycontainerd.content.local import LocalStore
from pycontainerd.metadata.content import ContentStore
from pycontainerd.metadata.db import Database, ensure_namespace
from pycontainerd.metadata.gc import Collector
from tests.fixtures.procs import wait_for_async


def digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@asynccontextmanager
async def opened(tmp: Path) -> AsyncIterator[Database]:
    db = Database(tmp / "meta.db")
    await db.open()
    try:
        yield db
    finally:
        await asyncio.to_thread(db.close)


def run(fn: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(fn())  # type: ignore[arg-type]


def commits_of(db: Database) -> list[str]:
    """Record the transaction statements the writer connection runs from now on."""
    seen: list[str] = []
    assert db._write_conn is not None
    db._write_conn.set_trace_callback(lambda sql: seen.append(sql) if sql in ("COMMIT", "ROLLBACK") else None)
    return seen


async def hold_writer(db: Database) -> tuple[threading.Event, asyncio.Future[None]]:
    """A write that blocks the writer thread until the returned event is set."""
    release, started = threading.Event(), threading.Event()

    def block(conn: sqlite3.Connection) -> None:
        started.set()
        release.wait(10)

    fut = asyncio.ensure_future(db.write(block))
    assert await asyncio.to_thread(started.wait, 10)
    return release, fut


def insert_lease(lease: str) -> Callable[[sqlite3.Connection], str]:
    def tx(conn: sqlite3.Connection) -> str:
        ensure_namespace(conn, "ns")
        conn.execute("INSERT INTO leases (namespace, id, created_at) VALUES ('ns', ?, 1)", (lease,))
        return lease

    return tx


async def leases(db: Database) -> list[str]:
    rows = await db.read(lambda c: c.execute("SELECT id FROM leases ORDER BY id").fetchall())
    return [r[0] for r in rows]


def test_queued_batched_writes_share_one_transaction(tmp_path: Path) -> None:
    async def body() -> None:
        async with opened(tmp_path) as db:
            release, blocker = await hold_writer(db)
            seen = commits_of(db)
            writes = [asyncio.ensure_future(db.write(insert_lease(f"l{i:02d}"), batch=True)) for i in range(20)]
            await wait_for_async(lambda: len(db._batch) == 20, 5, "the twenty writes to queue")
            assert not any(w.done() for w in writes)  # nobody hears before the commit
            release.set()
            assert await asyncio.gather(*writes) == [f"l{i:02d}" for i in range(20)]
            await blocker
            assert seen == ["COMMIT", "COMMIT"]  # the blocker's, then one for all twenty
            assert await leases(db) == [f"l{i:02d}" for i in range(20)]

    run(body)


def test_a_failing_batched_write_rolls_back_only_itself(tmp_path: Path) -> None:
    async def body() -> None:
        async with opened(tmp_path) as db:
            await db.write(insert_lease("taken"))
            release, blocker = await hold_writer(db)

            def half_then_fail(conn: sqlite3.Connection) -> None:
                conn.execute("INSERT INTO leases (namespace, id, created_at) VALUES ('ns', 'half', 1)")
                raise errdefs.InvalidArgument("no")

            w1 = asyncio.ensure_future(db.write(insert_lease("a"), batch=True))
            w2 = asyncio.ensure_future(db.write(half_then_fail, batch=True))
            w3 = asyncio.ensure_future(db.write(insert_lease("taken"), batch=True))  # IntegrityError
            w4 = asyncio.ensure_future(db.write(insert_lease("b"), batch=True))
            release.set()
            await blocker
            assert await w1 == "a"
            with pytest.raises(errdefs.InvalidArgument):
                await w2
            with pytest.raises(errdefs.AlreadyExists):
                await w3
            assert await w4 == "b"
            assert await leases(db) == ["a", "b", "taken"]

    run(body)


def test_a_cancelled_batched_write_does_not_run(tmp_path: Path) -> None:
    async def body() -> None:
        async with opened(tmp_path) as db:
            release, blocker = await hold_writer(db)
            gone = asyncio.ensure_future(db.write(insert_lease("gone"), batch=True))
            kept = asyncio.ensure_future(db.write(insert_lease("kept"), batch=True))
            await asyncio.sleep(0)
            gone.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await gone  # (the cancel reaches the writer's queue through the loop)
            release.set()
            await blocker
            assert await kept == "kept"
            assert gone.cancelled()
            assert await leases(db) == ["kept"]

    run(body)


def test_batches_are_bounded_and_all_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from pycontainerd.metadata import db as dbmod

    monkeypatch.setattr(dbmod, "MAX_BATCH", 4)

    async def body() -> None:
        async with opened(tmp_path) as db:
            release, blocker = await hold_writer(db)
            seen = commits_of(db)
            writes = [asyncio.ensure_future(db.write(insert_lease(f"l{i:02d}"), batch=True)) for i in range(10)]
            await asyncio.sleep(0)
            release.set()
            await asyncio.gather(blocker, *writes)
            assert seen.count("COMMIT") == 1 + 3  # 4 + 4 + 2
            assert len(await leases(db)) == 10

    run(body)


# -- content commits ---------------------------------------------------------------------------


@asynccontextmanager
async def content(tmp: Path) -> AsyncIterator[tuple[Database, LocalStore, ContentStore]]:
    async with opened(tmp) as db:
        local = LocalStore(tmp / "content")
        await asyncio.to_thread(local.setup_sync)
        yield db, local, ContentStore(db, local)


def test_a_burst_of_commits_and_label_updates(tmp_path: Path) -> None:
    async def body() -> None:
        async with content(tmp_path) as (db, local, cs):
            ns = cs.namespaced("default")
            blobs = [os.urandom(1000 + i) for i in range(30)]

            async def one(i: int, data: bytes) -> str:
                w = await ns.writer(f"layer-{i}", len(data), digest_of(data))
                await w.write(data)
                dgst = await w.commit(len(data), digest_of(data))
                await ns.update(Info(digest=dgst, size=0, labels={"src": str(i)}), ["labels.src"])
                return dgst

            seen = commits_of(db)
            got = await asyncio.gather(*(one(i, b) for i, b in enumerate(blobs)))
            assert got == [digest_of(b) for b in blobs]
            assert seen.count("COMMIT") < 3 * len(blobs)  # some transactions were shared
            for i, b in enumerate(blobs):
                info = await ns.info(digest_of(b))
                assert info.labels == {"src": str(i)}
                path = local.blob_path(digest_of(b))
                assert path.read_bytes() == b
                assert stat.S_IMODE(path.stat().st_mode) == 0o400  # root only (fsmodes)
            assert await ns.list_statuses() == []
            assert list((tmp_path / "content" / "ingest").iterdir()) == []

    run(body)


def test_a_failed_verification_leaves_a_resumable_ingest(tmp_path: Path) -> None:
    async def body() -> None:
        async with content(tmp_path) as (_db, local, cs):
            ns = cs.namespaced("default")
            w = await ns.writer("ref", 0)
            await w.write(b"hello")
            with pytest.raises(errdefs.FailedPrecondition, match="unexpected commit digest"):
                await w.commit(5, digest_of(b"other"))
            # the lock is free, the bytes are there and writable, nothing is visible
            w = await ns.writer("ref", 0)
            assert (await w.status()).offset == 5
            await w.write(b" world")
            assert await w.commit(11, digest_of(b"hello world")) == digest_of(b"hello world")
            with pytest.raises(errdefs.NotFound):
                await ns.info(digest_of(b"hello"))
            assert local.blob_path(digest_of(b"hello world")).read_bytes() == b"hello world"

    run(body)


def test_local_commit_steps_and_duplicate(tmp_path: Path) -> None:
    async def body() -> None:
        local = LocalStore(tmp_path / "content")
        await asyncio.to_thread(local.setup_sync)
        first = await local.writer("a")
        await first.write(b"same")
        second = await local.writer("b")
        await second.write(b"same")
        assert await first.prepare_commit(4, "") == digest_of(b"same")
        await second.prepare_commit(4, digest_of(b"same"))
        assert first.publish_sync() == digest_of(b"same")
        with pytest.raises(errdefs.AlreadyExists):
            second.publish_sync()
        await first.finish_commit()
        await second.finish_commit()
        assert await local.list_statuses() == []
        assert not local.is_locked("a") and not local.is_locked("b")
        # a finished writer never releases a lock it no longer holds
        third = await local.writer("a")
        await first.finish_commit()
        assert local.is_locked("a")
        await third.close()

    run(body)


def test_gc_blob_sweep_never_removes_a_blob_being_committed(tmp_path: Path) -> None:
    async def body() -> None:
        async with content(tmp_path) as (db, local, cs):
            cs.delete_unreferenced_blobs = False
            collector = Collector(
                db,
                delete_blob=local.delete_sync,
                list_blobs=lambda: [i.digest for i in local._walk_sync()],
                snapshot_cleanups={},
            )
            ns = cs.namespaced("default")
            blobs = [os.urandom(512) for _ in range(40)]

            async def one(data: bytes) -> None:
                w = await ns.writer(f"r-{digest_of(data)}", len(data))
                await w.write(data)
                await w.commit(len(data), digest_of(data), {"containerd.io/gc.root": "x"})

            async def sweeps() -> None:
                for _ in range(20):
                    await db.write(collector._sweep_blobs)

            await asyncio.gather(sweeps(), *(one(b) for b in blobs))
            for b in blobs:
                assert local.blob_path(digest_of(b)).read_bytes() == b

    run(body)


def test_batched_writes_commit_with_a_sync_as_ordinary_ones_do(tmp_path: Path) -> None:
    """Every acknowledged write is durable (synchronous=FULL), batched or not; the fsync itself
    is shown in test_metadata_durability."""

    def mode(conn: sqlite3.Connection) -> int:
        return int(conn.execute("PRAGMA synchronous").fetchone()[0])

    async def body() -> None:
        async with opened(tmp_path) as db:
            assert await db.write(mode) == 2  # FULL
            assert await db.write(mode, batch=True) == 2
            assert await db.write(mode) == 2
            release, blocker = await hold_writer(db)
            both = [asyncio.ensure_future(db.write(mode, batch=True)) for _ in range(2)]
            release.set()
            await blocker
            assert await asyncio.gather(*both) == [2, 2]

    run(body)
