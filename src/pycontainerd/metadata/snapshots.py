"""Per-namespace snapshots over one backend snapshotter (containerd's metadata snapshotter).

A backend snapshotter (overlay, native) knows nothing of namespaces.  This layer keeps, in
the ``snapshots`` table of the metadata database, one row per (namespace, snapshotter,
key) with the key the backend knows it by (``<ns>/<seq>/<key>``, so that equal keys in two
namespaces never collide), the parent *as the namespace names it*, and the labels
(``containerd.io/gc.root`` and friends are ordinary labels here).  Kinds, mounts and usage
come from the backend.

Ordering against the backend, which is not in our transaction:

- prepare/view: insert the row first (a concurrent prepare of the same key then fails with
  AlreadyExists, and the parent cannot be removed under us because it has a child row),
  then create the backend snapshot — started once the row is written but before its
  ``COMMIT`` returns, so the two syncs overlap (the reply waits for both); if the backend
  fails the row is deleted again, if the ``COMMIT`` fails the backend snapshot is removed;
- commit: reserve the name row, commit in the backend, then drop the key row;
- remove: delete the row (refused while children exist in the namespace), then remove the
  backend snapshot — started before the row's ``COMMIT`` returns, so the syncs overlap; a
  backend failure is logged and left to ``cleanup``/GC.

So a crash (``kill -9``, power loss) can leave a backend snapshot without a row (``cleanup``
removes it; it skips those being made, ``_making``) or a row without a backend snapshot
(``reconcile``, run by the GC at start-up, drops it).

A lease (``containerd-lease``) given with a write records the resource
``("snapshots/<snapshotter>", key)`` in ``lease_resources``.  Events ``/snapshot/prepare``,
``/snapshot/commit`` and ``/snapshot/remove`` are published after success.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import functools
import logging
import sqlite3
from collections.abc import Callable, Mapping, Sequence

from .. import errdefs
from .. import labels as labelutil
from ..events import Exchange
from ..mount import Mount
from ..snapshots.base import match_filters
from ..snapshots.interfaces import Info, Kind, Snapshotter, Usage
from .db import Database, dumps, ensure_namespace, loads, now_ns

log = logging.getLogger("pycontainerd.metadata.snapshots")

_INSERT = (
    "INSERT INTO snapshots (namespace, snapshotter, key, backend_key, parent, labels, created_at, updated_at)"
    " VALUES (?,?,?,?,?,?,?,?)"
)


def validate_labels(labels: Mapping[str, str]) -> None:
    """The shared label rule (key + value at most 4096 bytes), plus: no empty keys."""
    if "" in labels:
        raise errdefs.InvalidArgument("label key must not be empty")
    labelutil.validate_all(labels)


class SnapshotStore:
    """The namespaced view of one snapshotter; every method takes the namespace."""

    def __init__(self, db: Database, name: str, backend: Snapshotter, exchange: Exchange | None = None) -> None:
        self.db = db
        self.name = name
        self.backend = backend
        self.exchange = exchange
        # backend keys of snapshots being made while their row commits (``_create``)
        self._making: set[str] = set()

    @property
    def lease_type(self) -> str:
        return f"snapshots/{self.name}"

    def namespaced(self, namespace: str, lease: str | None = None) -> NamespacedSnapshotter:
        return NamespacedSnapshotter(self, namespace, lease)

    def _publish(self, namespace: str, topic: str, payload: dict[str, str]) -> None:
        if self.exchange is not None:
            payload["snapshotter"] = self.name
            self.exchange.publish(namespace, topic, payload)

    # -- helpers (run inside db transactions) ------------------------------------------------
    def _row(self, conn: sqlite3.Connection, ns: str, key: str) -> sqlite3.Row:
        row = conn.execute(
            "SELECT * FROM snapshots WHERE namespace=? AND snapshotter=? AND key=?", (ns, self.name, key)
        ).fetchone()
        if row is None:
            raise errdefs.NotFound(f"snapshot {key} does not exist")
        assert isinstance(row, sqlite3.Row)
        return row

    def _next_seq(self, conn: sqlite3.Connection) -> int:
        setting = f"snapshots/{self.name}/seq"
        row = conn.execute("SELECT value FROM settings WHERE key=?", (setting,)).fetchone()
        seq = int(row["value"]) + 1 if row else 1
        conn.execute("INSERT OR REPLACE INTO settings (key, value) VALUES (?, ?)", (setting, str(seq)))
        return seq

    def _add_lease(self, conn: sqlite3.Connection, ns: str, lease: str | None, key: str) -> None:
        if not lease:
            return
        if conn.execute("SELECT 1 FROM leases WHERE namespace=? AND id=?", (ns, lease)).fetchone() is None:
            raise errdefs.NotFound(f"lease {lease} does not exist")
        conn.execute(
            "INSERT OR IGNORE INTO lease_resources (namespace, lease, type, id) VALUES (?,?,?,?)",
            (ns, lease, self.lease_type, key),
        )

    def _drop_lease_refs(self, conn: sqlite3.Connection, ns: str, key: str) -> None:
        conn.execute("DELETE FROM lease_resources WHERE namespace=? AND type=? AND id=?", (ns, self.lease_type, key))

    def _info(self, row: sqlite3.Row, backend: Info) -> Info:
        # the backend's own labels (e.g. overlay's upperdir label) under the namespace's, as
        # containerd's metadata snapshotter merges them; backends are given no labels
        return Info(
            name=row["key"],
            kind=backend.kind,
            parent=row["parent"],
            labels={**backend.labels, **loads(row["labels"])},
            created_at=row["created_at"],
            updated_at=row["updated_at"],
        )

    async def _bkey(self, ns: str, key: str) -> str:
        row = await self.db.read(lambda c: self._row(c, ns, key))
        return str(row["backend_key"])

    # -- API ---------------------------------------------------------------------------------
    async def stat(self, ns: str, key: str) -> Info:
        row = await self.db.read(lambda c: self._row(c, ns, key))
        binfo = await self.backend.stat(row["backend_key"])
        return self._info(row, binfo)

    async def update(self, ns: str, info: Info, fieldpaths: Sequence[str] = ()) -> Info:
        if not info.name:
            raise errdefs.InvalidArgument("must specify snapshot name")

        def tx(conn: sqlite3.Connection) -> sqlite3.Row:
            row = self._row(conn, ns, info.name)
            # containerd validates the merged labels, so an unnamed bad label in the request is ignored
            labels = labelutil.apply_field_paths(
                loads(row["labels"]), info.labels, fieldpaths or labelutil.FIELD, what=f"snapshot {info.name}"
            )
            conn.execute(
                "UPDATE snapshots SET labels=?, updated_at=? WHERE namespace=? AND snapshotter=? AND key=?",
                (dumps(labels), now_ns(), ns, self.name, info.name),
            )
            return self._row(conn, ns, info.name)

        row = await self.db.write(tx)
        binfo = await self.backend.stat(row["backend_key"])
        return self._info(row, binfo)

    async def usage(self, ns: str, key: str) -> Usage:
        return await self.backend.usage(await self._bkey(ns, key))

    async def mounts(self, ns: str, key: str) -> builtins.list[Mount]:
        return await self.backend.mounts(await self._bkey(ns, key))

    async def prepare(
        self,
        ns: str,
        key: str,
        parent: str = "",
        labels: Mapping[str, str] | None = None,
        lease: str | None = None,
        *,
        with_tx: Callable[[sqlite3.Connection], None] | None = None,
    ) -> builtins.list[Mount]:
        """``with_tx``: more writes of the same database in the snapshot's transaction (e.g. the
        record that names the snapshot: then no lease is needed to keep it in between)."""
        return await self._create(ns, Kind.ACTIVE, key, parent, labels, lease, with_tx)

    async def view(
        self,
        ns: str,
        key: str,
        parent: str = "",
        labels: Mapping[str, str] | None = None,
        lease: str | None = None,
    ) -> builtins.list[Mount]:
        return await self._create(ns, Kind.VIEW, key, parent, labels, lease)

    async def _create(
        self, ns: str, kind: Kind, key: str, parent: str, labels: Mapping[str, str] | None, lease: str | None,
        with_tx: Callable[[sqlite3.Connection], None] | None = None,
    ) -> builtins.list[Mount]:
        if not key:
            raise errdefs.InvalidArgument("snapshot key must not be empty")
        labels = dict(labels or {})
        validate_labels(labels)

        def tx(conn: sqlite3.Connection) -> tuple[str, str]:
            ensure_namespace(conn, ns)
            if conn.execute(
                "SELECT 1 FROM snapshots WHERE namespace=? AND snapshotter=? AND key=?", (ns, self.name, key)
            ).fetchone():
                raise errdefs.AlreadyExists(f"snapshot {key}: already exists")
            pbkey = ""
            if parent:
                prow = conn.execute(
                    "SELECT backend_key FROM snapshots WHERE namespace=? AND snapshotter=? AND key=?",
                    (ns, self.name, parent),
                ).fetchone()
                if prow is None:
                    raise errdefs.NotFound(f"parent snapshot {parent} does not exist")
                pbkey = prow["backend_key"]
            bkey = f"{ns}/{self._next_seq(conn)}/{key}"
            ts = now_ns()
            conn.execute(
                _INSERT,
                (ns, self.name, key, bkey, parent, dumps(labels), ts, ts),
            )
            self._add_lease(conn, ns, lease, key)
            if with_tx is not None:
                with_tx(conn)
            return bkey, pbkey

        # The backend snapshot is made while the row's COMMIT syncs the WAL (``before_commit``):
        # its own store's sync then overlaps ours instead of following it.  The reply still
        # waits for both, so both are durable when it goes out (see the module docstring
        # for the crash states; ``_making`` keeps ``cleanup`` off the snapshot meanwhile).
        loop = asyncio.get_running_loop()
        made: builtins.list[tuple[str, asyncio.Task[builtins.list[Mount]]]] = []
        abandoned = False

        def start_backend(keys: tuple[str, str]) -> None:  # on the loop
            if abandoned:
                return  # the caller left before the write finished: no backend work
            self._making.add(keys[0])
            coro = self.backend.view(*keys) if kind == Kind.VIEW else self.backend.prepare(*keys)
            made.append((keys[0], loop.create_task(coro)))

        def before_commit(keys: tuple[str, str]) -> None:  # on the writer thread
            loop.call_soon_threadsafe(start_backend, keys)

        try:
            try:
                bkey, pbkey = await self.db.write(tx, before_commit=before_commit)
            except BaseException:
                abandoned = True
                # start_backend ran before this resumed (it was scheduled first) unless we were
                # cancelled: a backend snapshot made for a row that did not commit is removed
                for made_key, task in made:
                    with contextlib.suppress(Exception):
                        await asyncio.shield(task)
                        await self.backend.remove(made_key)
                raise
            if not made:  # cannot happen (see above); made here rather than never
                start_backend((bkey, pbkey))
            try:
                mounts = await made[0][1]
            except BaseException:
                await self.db.write(lambda c: self._delete_row(c, ns, key, bkey))
                raise
        finally:
            for made_key, task in made:
                if task.done():
                    self._making.discard(made_key)
                else:  # we were cancelled: keep cleanup off it until it is done
                    task.add_done_callback(functools.partial(self._made, made_key))
        self._publish(ns, "/snapshot/prepare", {"key": key, "parent": parent})
        return mounts

    def _made(self, bkey: str, task: asyncio.Task[builtins.list[Mount]]) -> None:
        del task
        self._making.discard(bkey)

    def _delete_row(self, conn: sqlite3.Connection, ns: str, key: str, bkey: str) -> None:
        conn.execute(
            "DELETE FROM snapshots WHERE namespace=? AND snapshotter=? AND key=? AND backend_key=?",
            (ns, self.name, key, bkey),
        )
        self._drop_lease_refs(conn, ns, key)

    async def commit(
        self, ns: str, name: str, key: str, labels: Mapping[str, str] | None = None, lease: str | None = None
    ) -> None:
        if not name:
            raise errdefs.InvalidArgument("snapshot name must not be empty")
        labels = dict(labels or {})
        validate_labels(labels)

        def reserve(conn: sqlite3.Connection) -> tuple[str, str]:
            ensure_namespace(conn, ns)
            if conn.execute(
                "SELECT 1 FROM snapshots WHERE namespace=? AND snapshotter=? AND key=?", (ns, self.name, name)
            ).fetchone():
                raise errdefs.AlreadyExists(f"snapshot {name}: already exists")
            row = self._row(conn, ns, key)
            nbkey = f"{ns}/{self._next_seq(conn)}/{name}"
            ts = now_ns()
            conn.execute(
                _INSERT,
                (ns, self.name, name, nbkey, row["parent"], dumps(labels), ts, ts),
            )
            self._add_lease(conn, ns, lease, name)
            return str(row["backend_key"]), nbkey

        bkey, nbkey = await self.db.write(reserve)
        try:
            await self.backend.commit(nbkey, bkey)
        except BaseException:
            await self.db.write(lambda c: self._delete_row(c, ns, name, nbkey))
            raise

        def finish(conn: sqlite3.Connection) -> None:
            self._delete_row(conn, ns, key, bkey)

        await self.db.write(finish)
        self._publish(ns, "/snapshot/commit", {"key": key, "name": name})

    async def remove(self, ns: str, key: str) -> None:
        def tx(conn: sqlite3.Connection) -> str:
            row = self._row(conn, ns, key)
            if conn.execute(
                "SELECT 1 FROM snapshots WHERE namespace=? AND snapshotter=? AND parent=? LIMIT 1",
                (ns, self.name, key),
            ).fetchone():
                raise errdefs.FailedPrecondition(f"cannot remove snapshot {key} with child")
            self._delete_row(conn, ns, key, row["backend_key"])
            return str(row["backend_key"])

        # as in _create: the backend removal starts before the row's COMMIT (and its sync)
        # returns, so the two stores' syncs overlap; the reply waits for both
        loop = asyncio.get_running_loop()
        removing: builtins.list[asyncio.Task[None]] = []

        def start_backend(bkey: str) -> None:  # on the loop
            removing.append(loop.create_task(self._remove_backend(bkey)))

        def before_commit(bkey: str) -> None:  # on the writer thread
            loop.call_soon_threadsafe(start_backend, bkey)

        try:
            bkey = await self.db.write(tx, before_commit=before_commit)
        finally:
            # a COMMIT that failed after the backend removal started leaves a row without its
            # backend snapshot: hidden by walk, dropped by the next Remove or by reconcile
            for task in removing:
                await asyncio.shield(task)
        if not removing:  # cannot happen (start_backend was scheduled first)
            await self._remove_backend(bkey)
        self.db.notify_deleted()
        self._publish(ns, "/snapshot/remove", {"key": key})

    async def _remove_backend(self, bkey: str) -> None:
        try:
            await self.backend.remove(bkey)
        except errdefs.NotFound:
            pass
        except errdefs.ContainerdError as exc:
            log.warning(
                "snapshotter %s: removing backend snapshot %s failed (left for cleanup): %s",
                self.name,
                bkey,
                exc,
            )

    async def walk(self, ns: str, filters: Sequence[str] = ()) -> builtins.list[Info]:
        rows = await self.db.read(
            lambda c: c.execute(
                "SELECT * FROM snapshots WHERE namespace=? AND snapshotter=? ORDER BY key", (ns, self.name)
            ).fetchall()
        )
        backend = {i.name: i for i in await self.backend.walk()}
        match = match_filters(filters)
        infos = []
        for row in rows:
            binfo = backend.get(row["backend_key"])
            if binfo is None:
                continue  # reserved row whose backend snapshot is being made or went away
            info = self._info(row, binfo)
            if match(info):
                infos.append(info)
        return infos

    async def cleanup(self) -> None:
        """Remove backend snapshots no namespace refers to, then the backend's own leftovers."""
        known = await self.db.read(
            lambda c: {
                r["backend_key"]
                for r in c.execute("SELECT backend_key FROM snapshots WHERE snapshotter=?", (self.name,))
            }
        )
        # children first: a backend snapshot cannot be removed while it has children
        pending = [i for i in await self.backend.walk() if i.name not in known]
        while pending:
            parents = {i.parent for i in pending}
            leaves = [i for i in pending if i.name not in parents]
            if not leaves:
                break
            for info in leaves:
                if info.name in await self._known_now() or info.name in self._making:
                    continue
                try:
                    await self.backend.remove(info.name)
                except errdefs.ContainerdError as exc:
                    log.warning("cleanup of backend snapshot %s: %s", info.name, exc)
            pending = [i for i in pending if i not in leaves]
        await self.backend.cleanup()

    async def reconcile(self) -> builtins.list[tuple[str, str]]:
        """Drop rows whose backend snapshot does not exist; returns their (namespace, key).

        Only for start-up, before anything is served: at run time a row legitimately exists
        for a moment before its backend snapshot (prepare, commit).  After a crash between
        the two, such a row would hide the snapshot from ``walk`` yet make a re-unpack fail
        (``Commit`` → AlreadyExists, then ``Prepare`` on top of it → parent NotFound).
        """
        present = {i.name for i in await self.backend.walk()}

        def tx(conn: sqlite3.Connection) -> builtins.list[tuple[str, str]]:
            rows = conn.execute(
                "SELECT namespace, key, backend_key FROM snapshots WHERE snapshotter=?", (self.name,)
            ).fetchall()
            gone = [r for r in rows if r["backend_key"] not in present]
            for r in gone:
                self._delete_row(conn, r["namespace"], r["key"], r["backend_key"])
            return [(str(r["namespace"]), str(r["key"])) for r in gone]

        gone = await self.db.write(tx)
        for ns, key in gone:
            log.info("snapshotter %s: dropped record of %s/%s (its snapshot was never made)", self.name, ns, key)
        return gone

    async def _known_now(self) -> set[str]:
        return await self.db.read(
            lambda c: {
                r["backend_key"]
                for r in c.execute("SELECT backend_key FROM snapshots WHERE snapshotter=?", (self.name,))
            }
        )


class NamespacedSnapshotter:
    """A ``Snapshotter`` bound to one namespace (and lease): what the contract suite tests."""

    def __init__(self, store: SnapshotStore, namespace: str, lease: str | None = None) -> None:
        self.store = store
        self.namespace = namespace
        self.lease = lease

    async def stat(self, key: str) -> Info:
        return await self.store.stat(self.namespace, key)

    async def update(self, info: Info, fieldpaths: Sequence[str] = ()) -> Info:
        return await self.store.update(self.namespace, info, fieldpaths)

    async def usage(self, key: str) -> Usage:
        return await self.store.usage(self.namespace, key)

    async def mounts(self, key: str) -> builtins.list[Mount]:
        return await self.store.mounts(self.namespace, key)

    async def prepare(
        self, key: str, parent: str = "", labels: Mapping[str, str] | None = None, *,
        with_tx: Callable[[sqlite3.Connection], None] | None = None,
    ) -> builtins.list[Mount]:
        return await self.store.prepare(self.namespace, key, parent, labels, self.lease, with_tx=with_tx)

    async def view(self, key: str, parent: str = "", labels: Mapping[str, str] | None = None) -> builtins.list[Mount]:
        return await self.store.view(self.namespace, key, parent, labels, self.lease)

    async def commit(self, name: str, key: str, labels: Mapping[str, str] | None = None) -> None:
        await self.store.commit(self.namespace, name, key, labels, self.lease)

    async def remove(self, key: str) -> None:
        await self.store.remove(self.namespace, key)

    async def walk(self, filters: Sequence[str] = ()) -> builtins.list[Info]:
        return await self.store.walk(self.namespace, filters)

    async def cleanup(self) -> None:
        await self.store.cleanup()

    async def close(self) -> None:
        return None
