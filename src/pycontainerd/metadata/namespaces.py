"""Namespaces: names with labels; deleting one that still holds anything is refused."""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from .. import errdefs, identifiers
from .. import labels as labelutil
from ..events import Exchange
from .db import Database, dumps, ensure_namespace, loads, now_ns

# what a namespace may still hold; deleting it then is FailedPrecondition
_HOLDERS = (
    ("images", "images"),
    ("content", "blobs"),
    ("containers", "containers"),
    ("snapshots", "snapshots"),
    ("leases", "leases"),
)


@dataclass
class Namespace:
    name: str
    labels: dict[str, str] = field(default_factory=dict)


class NamespaceStore:
    def __init__(self, db: Database, exchange: Exchange) -> None:
        self.db = db
        self.exchange = exchange

    async def create(self, name: str, labels: Mapping[str, str] | None = None) -> Namespace:
        identifiers.validate(name)
        labelutil.validate_all(labels or {})

        def tx(conn: sqlite3.Connection) -> None:
            if conn.execute("SELECT 1 FROM namespaces WHERE name=?", (name,)).fetchone():
                raise errdefs.AlreadyExists(f"namespace {name}: already exists")
            ts = now_ns()
            conn.execute(
                "INSERT INTO namespaces (name, labels, created_at, updated_at) VALUES (?,?,?,?)",
                (name, dumps(labels), ts, ts),
            )

        await self.db.write(tx)
        self.exchange.publish(name, "/namespaces/create", {"name": name, "labels": dict(labels or {})})
        return Namespace(name, dict(labels or {}))

    async def get(self, name: str) -> Namespace:
        """Never fails: an unknown (even malformed) namespace has no labels, as in containerd (clients read
        defaults from here)."""
        row = await self.db.read(lambda c: c.execute("SELECT labels FROM namespaces WHERE name=?", (name,)).fetchone())
        return Namespace(name, loads(row["labels"]) if row else {})

    async def list(self) -> list[Namespace]:
        rows = await self.db.read(lambda c: c.execute("SELECT name, labels FROM namespaces ORDER BY name").fetchall())
        return [Namespace(r["name"], loads(r["labels"])) for r in rows]

    async def update(self, name: str, labels: Mapping[str, str], paths: Sequence[str] = ()) -> Namespace:
        """Set the labels named by ``labels.<key>`` paths; with no paths, replace them all.

        Unlike the other resources, a namespace takes no bare ``labels`` path (containerd's
        Namespaces service refuses it as any other field).
        """
        identifiers.validate(name)
        for p in paths:
            if p == labelutil.FIELD or not labelutil.is_field_path(p):
                raise errdefs.InvalidArgument(f"cannot update {p!r} field on namespace {name!r}")

        def tx(conn: sqlite3.Connection) -> dict[str, str]:
            ensure_namespace(conn, name)
            row = conn.execute("SELECT labels FROM namespaces WHERE name=?", (name,)).fetchone()
            current = labelutil.apply_field_paths(
                loads(row["labels"]), labels, paths or labelutil.FIELD, what=f"namespace {name!r}"
            )
            conn.execute(
                "UPDATE namespaces SET labels=?, updated_at=? WHERE name=?", (dumps(current), now_ns(), name)
            )
            return current

        current = await self.db.write(tx)
        self.exchange.publish(name, "/namespaces/update", {"name": name, "labels": current})
        return Namespace(name, current)

    async def delete(self, name: str) -> None:
        # no identifier check: a malformed name cannot exist, so it is NotFound (as containerd answers)
        def tx(conn: sqlite3.Connection) -> None:
            if not conn.execute("SELECT 1 FROM namespaces WHERE name=?", (name,)).fetchone():
                raise errdefs.NotFound(f"namespace {name!r}: not found")
            held = [
                what
                for table, what in _HOLDERS
                if conn.execute(f"SELECT 1 FROM {table} WHERE namespace=? LIMIT 1", (name,)).fetchone()
            ]
            if held:
                raise errdefs.FailedPrecondition(
                    f"namespace {name} must be empty, but it still has {', '.join(held)}"
                )
            conn.execute("DELETE FROM namespaces WHERE name=?", (name,))

        await self.db.write(tx)
        self.exchange.publish(name, "/namespaces/delete", {"name": name})
