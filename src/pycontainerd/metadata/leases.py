"""Leases: named holds on resources, so that garbage collection leaves them alone.

A client creates a lease, sends its id as ``containerd-lease`` on later calls, and every
blob, ingest or snapshot written under it becomes one of its resources
(``lease_resources``: ``content`` + digest, ``ingests`` + ref, ``snapshots/<snapshotter>``
+ key).  Deleting the lease releases them for the collector; ``sync`` runs it at once
(when one is installed).  A lease labelled ``containerd.io/gc.expire`` (RFC 3339) stops
holding anything after that time; it is still listed until the collector removes it.
"""

from __future__ import annotations

import base64
import builtins
import os
import sqlite3
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from .. import errdefs
from .. import labels as labelutil
from ..content.helpers import validate_digest
from .db import Database, dumps, ensure_namespace, loads, now_ns

_TYPE_ORDER = {"content": 0, "ingests": 1}


@dataclass
class Lease:
    id: str
    labels: dict[str, str] = field(default_factory=dict)
    created_at: int = 0

    def expires_at(self) -> int | None:
        """The ``containerd.io/gc.expire`` time in ns since the epoch (None: no or bad label)."""
        return parse_expire(self.labels.get(labelutil.GC_EXPIRE, ""))

    def expired(self, now: int | None = None) -> bool:
        exp = self.expires_at()
        return exp is not None and exp <= (time.time_ns() if now is None else now)


@dataclass(frozen=True)
class Resource:
    id: str
    type: str


def parse_expire(value: str) -> int | None:
    """RFC 3339 (Go's ``time.RFC3339``, with optional fraction) → ns since the epoch."""
    if not value:
        return None
    text = value.strip()
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    frac_ns = 0
    if "." in text:
        head, _, rest = text.partition(".")
        digits = ""
        while rest and rest[0].isdigit():
            digits, rest = digits + rest[0], rest[1:]
        frac_ns = int((digits + "000000000")[:9]) if digits else 0
        text = head + rest
    try:
        dt = datetime.fromisoformat(text)
    except ValueError:
        return None
    if dt.tzinfo is None:
        return None
    return int(dt.timestamp()) * 1_000_000_000 + frac_ns


def generate_id() -> str:
    """A fresh lease id, shaped like containerd's (``<nanoseconds>-<random>``)."""
    return f"{time.time_ns() % 1_000_000_000}-{base64.urlsafe_b64encode(os.urandom(3)).decode()}"


def parse_resource(r: Resource) -> Resource:
    """Validate a resource's type and id; content ids are normalised digests."""
    keys = r.type.split("/")
    if keys[0] in ("content", "ingests"):
        if len(keys) != 1:
            raise errdefs.InvalidArgument(f"invalid resource type {r.type}")
        if keys[0] == "content":
            try:
                validate_digest(r.id)
            except errdefs.InvalidArgument as exc:
                raise errdefs.InvalidArgument(f"invalid content resource id {r.id}: {exc}") from exc
    elif keys[0] == "snapshots":
        if len(keys) != 2 or not keys[1]:
            raise errdefs.InvalidArgument(f"invalid snapshot resource type {r.type}")
    else:
        raise errdefs.Unimplemented(f"resource type {r.type} not supported yet")
    if not r.id:
        raise errdefs.InvalidArgument("resource id must not be empty")
    return r


def adaptor(lease: Lease) -> Callable[[tuple[str, ...]], str | None]:
    """Filter fields: ``id``, ``labels.<key>``."""

    def get(path: tuple[str, ...]) -> str | None:
        if not path:
            return None
        if path[0] == "id":
            return lease.id or None
        if path[0] == "labels":
            if len(path) == 1:
                return "" if lease.labels else None
            return lease.labels.get(".".join(path[1:]))
        return None

    return get


def _require(conn: sqlite3.Connection, ns: str, lease_id: str) -> None:
    if conn.execute("SELECT 1 FROM leases WHERE namespace=? AND id=?", (ns, lease_id)).fetchone() is None:
        raise errdefs.NotFound(f'lease "{lease_id}": not found')


class LeaseStore:
    """Namespaced leases and their resources in the metadata database."""

    def __init__(self, db: Database, *, collect: Callable[[], Awaitable[object]] | None = None) -> None:
        self.db = db
        # the garbage collector's "collect now" (Delete with sync); None without a collector
        self.gc_hook = collect

    async def create(self, namespace: str, lease_id: str = "", labels: Mapping[str, str] | None = None) -> Lease:
        # empty values are not stored (as containerd's label buckets)
        lease = Lease(lease_id or generate_id(), {k: v for k, v in (labels or {}).items() if v}, now_ns())
        try:
            labelutil.validate_all(lease.labels)
        except errdefs.InvalidArgument as exc:
            raise errdefs.InvalidArgument(f"lease.Labels: {exc}") from exc

        def tx(conn: sqlite3.Connection) -> None:
            ensure_namespace(conn, namespace)
            if conn.execute("SELECT 1 FROM leases WHERE namespace=? AND id=?", (namespace, lease.id)).fetchone():
                raise errdefs.AlreadyExists(f'lease "{lease.id}": already exists')
            conn.execute(
                "INSERT INTO leases (namespace, id, labels, created_at) VALUES (?,?,?,?)",
                (namespace, lease.id, dumps(lease.labels), lease.created_at),
            )

        await self.db.write(tx)
        return lease

    async def delete(self, namespace: str, lease_id: str, *, sync: bool = False, batch: bool = False) -> None:
        """``batch``: group-committed with the batched writes queued with it (``Database.write``),
        e.g. the record that holds what the lease protected until then."""

        def tx(conn: sqlite3.Connection) -> None:
            cur = conn.execute("DELETE FROM leases WHERE namespace=? AND id=?", (namespace, lease_id))
            if cur.rowcount == 0:
                raise errdefs.NotFound(f'lease "{lease_id}": not found')
            conn.execute("DELETE FROM lease_resources WHERE namespace=? AND lease=?", (namespace, lease_id))

        await self.db.write(tx, batch=batch)
        self.db.notify_deleted()
        if sync and self.gc_hook is not None:
            await self.gc_hook()

    async def get(self, namespace: str, lease_id: str) -> Lease:
        row = await self.db.read(
            lambda c: c.execute("SELECT * FROM leases WHERE namespace=? AND id=?", (namespace, lease_id)).fetchone()
        )
        if row is None:
            raise errdefs.NotFound(f'lease "{lease_id}": not found')
        return Lease(row["id"], {str(k): str(v) for k, v in loads(row["labels"]).items()}, row["created_at"])

    async def list(self, namespace: str, filter_exprs: Sequence[str] = ()) -> builtins.list[Lease]:
        from .. import filters  # the filter language (and regexp) at the first filtered call: W6, idle PSS
        flt = filters.parse_all(list(filter_exprs))
        rows = await self.db.read(
            lambda c: c.execute(
                "SELECT * FROM leases WHERE namespace=? ORDER BY created_at, id", (namespace,)
            ).fetchall()
        )
        out = [Lease(r["id"], {str(k): str(v) for k, v in loads(r["labels"]).items()}, r["created_at"]) for r in rows]
        return [lease for lease in out if flt.match(adaptor(lease))]

    async def add_resource(self, namespace: str, lease_id: str, resource: Resource) -> None:
        r = parse_resource(resource)

        def tx(conn: sqlite3.Connection) -> None:
            _require(conn, namespace, lease_id)
            conn.execute(
                "INSERT OR IGNORE INTO lease_resources (namespace, lease, type, id) VALUES (?,?,?,?)",
                (namespace, lease_id, r.type, r.id),
            )

        await self.db.write(tx)

    async def delete_resource(self, namespace: str, lease_id: str, resource: Resource) -> None:
        r = parse_resource(resource)

        def tx(conn: sqlite3.Connection) -> None:
            _require(conn, namespace, lease_id)
            conn.execute(
                "DELETE FROM lease_resources WHERE namespace=? AND lease=? AND type=? AND id=?",
                (namespace, lease_id, r.type, r.id),
            )

        await self.db.write(tx)
        self.db.notify_deleted()

    async def list_resources(self, namespace: str, lease_id: str) -> builtins.list[Resource]:
        def tx(conn: sqlite3.Connection) -> builtins.list[Resource]:
            _require(conn, namespace, lease_id)
            rows = conn.execute(
                "SELECT type, id FROM lease_resources WHERE namespace=? AND lease=?", (namespace, lease_id)
            ).fetchall()
            return [Resource(r["id"], r["type"]) for r in rows]

        res = await self.db.read(tx)
        return sorted(res, key=lambda r: (_TYPE_ORDER.get(r.type, 2), r.type, r.id))
