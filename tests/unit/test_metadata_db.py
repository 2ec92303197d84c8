"""The metadata database: schema versions, migrations, transactions."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest

from pycontainerd import errdefs
from pycontainerd.metadata import db as dbmod
from pycontainerd.metadata.db import SCHEMA_VERSION, Database


def test_open_migrates_to_current_version(tmp_path: Path) -> None:
    d = Database(tmp_path / "meta.db")
    d.open_sync()
    try:
        conn = sqlite3.connect(tmp_path / "meta.db")
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        assert {"namespaces", "images", "content", "containers", "leases", "lease_resources", "snapshots"} <= tables
        conn.close()
    finally:
        d.close()


def test_reopen_is_idempotent(tmp_path: Path) -> None:
    for _ in range(2):
        d = Database(tmp_path / "meta.db")
        d.open_sync()
        d.close()


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    conn = sqlite3.connect(tmp_path / "meta.db")
    conn.execute(f"PRAGMA user_version={SCHEMA_VERSION + 1}")
    conn.close()
    d = Database(tmp_path / "meta.db")
    with pytest.raises(errdefs.FailedPrecondition, match="newer than this pycontainerd"):
        d.open_sync()
    d.close()


def test_a_failing_migration_leaves_the_old_version(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    d = Database(tmp_path / "meta.db")
    d.open_sync()
    d.close()
    monkeypatch.setattr(dbmod, "MIGRATIONS", [*dbmod.MIGRATIONS, "CREATE TABLE x (a); CREATE TABLE x (a)"])
    monkeypatch.setattr(dbmod, "SCHEMA_VERSION", len(dbmod.MIGRATIONS))
    d = Database(tmp_path / "meta.db")
    with pytest.raises(sqlite3.OperationalError):
        d.open_sync()
    d.close()
    conn = sqlite3.connect(tmp_path / "meta.db")
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    assert not conn.execute("SELECT 1 FROM sqlite_master WHERE name='x'").fetchone()
    conn.close()


def test_write_rolls_back_on_error_and_maps_integrity_errors(tmp_path: Path) -> None:
    async def go() -> None:
        d = Database(tmp_path / "meta.db")
        await d.open()
        try:
            def insert(conn: sqlite3.Connection) -> None:
                dbmod.ensure_namespace(conn, "a")
                conn.execute("INSERT INTO leases (namespace, id, created_at) VALUES ('a', 'l1', 1)")

            await d.write(insert)

            def insert_then_fail(conn: sqlite3.Connection) -> None:
                conn.execute("INSERT INTO leases (namespace, id, created_at) VALUES ('a', 'l2', 1)")
                raise errdefs.InvalidArgument("nope")

            with pytest.raises(errdefs.InvalidArgument):
                await d.write(insert_then_fail)
            with pytest.raises(errdefs.AlreadyExists):
                await d.write(insert)  # the same primary key again
            rows = await d.read(lambda c: [r["id"] for r in c.execute("SELECT id FROM leases")])
            assert rows == ["l1"]
        finally:
            d.close()

    asyncio.run(go())
