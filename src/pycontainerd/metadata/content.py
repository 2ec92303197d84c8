"""The namespaced content store: per-namespace records over the shared local store.

Bytes live once in ``content.local``; what a namespace sees is its rows in the ``content``
table (digest, size, labels, timestamps).  A blob is visible in a namespace only after a
commit in that namespace, and its labels are that namespace's own.

Ingests are per namespace too: the ``ingests`` table maps a namespace's ref to the local
store's ingest ``<namespace>/<ref>`` (the *backend ref*), so two namespaces writing the same
ref do not collide and ``list_statuses`` shows a namespace only its own ingests.

Writers, as containerd's metadata store has them:

- ``expected`` already committed in this namespace: ``AlreadyExists`` at once (the blob
  is added to the request's lease first, so a pull that skips it still holds it);
- ``expected`` present in the local store but not in this namespace (another namespace
  pulled it): a *shared* writer that writes nothing; its status says the ingest is
  complete and the commit only adds this namespace's record.  Writing to it anyway first
  copies the existing bytes into a real ingest;
- otherwise a local writer on the backend ref.

The commit of a real writer syncs and verifies the bytes first, on a worker thread; only
the rename into ``blobs/`` happens inside the metadata transaction that adds the record
(on the writer thread, where the GC's blob sweep also runs), so a concurrent delete or
sweep can never remove bytes between the two.  The directory is synced after that
transaction, before the caller hears of the commit.  Opening a writer, committing and
updating labels are batched writes (``Database.write(batch=True)``): under a burst of
parallel fetches they share transactions.  With a lease the open ingest is a lease
resource (``ingests``) and the committed blob another (``content``).

Deleting a record publishes ``/content/delete``.  Until the garbage collector runs the
bytes' lifecycle, the bytes are removed when no namespace has a record of the digest and
no lease holds it (``delete_unreferenced_blobs``: set when the store is built without a
garbage collector; with one, the collector removes the bytes).
"""

from __future__ import annotations

import asyncio
import builtins
import sqlite3
from collections.abc import AsyncIterator, Callable, Mapping, Sequence

from .. import errdefs
from ..content.helpers import info_adaptor, status_adaptor, update_labels, validate_digest, validate_labels
from ..content.interfaces import Info, Status
from ..content.local import BlobFile, LocalStore, LocalWriter
from ..events import Exchange
from .db import Database, dumps, ensure_namespace, loads, now_ns


def backend_ref(namespace: str, ref: str) -> str:
    """The local store's ingest ref for a namespace's ref."""
    return f"{namespace}/{ref}"


def _row_info(row: sqlite3.Row) -> Info:
    return Info(
        digest=row["digest"],
        size=row["size"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        labels={str(k): str(v) for k, v in loads(row["labels"]).items()},
    )


def _require_lease(conn: sqlite3.Connection, namespace: str, lease: str) -> None:
    if conn.execute("SELECT 1 FROM leases WHERE namespace=? AND id=?", (namespace, lease)).fetchone() is None:
        raise errdefs.NotFound(f"lease {lease!r}: lease does not exist")


def _add_lease_resource(conn: sqlite3.Connection, namespace: str, lease: str | None, rtype: str, rid: str) -> None:
    if not lease:
        return
    _require_lease(conn, namespace, lease)
    conn.execute(
        "INSERT OR IGNORE INTO lease_resources (namespace, lease, type, id) VALUES (?,?,?,?)",
        (namespace, lease, rtype, rid),
    )


def _remove_lease_resource(conn: sqlite3.Connection, namespace: str, lease: str | None, rtype: str, rid: str) -> None:
    if lease:
        conn.execute(
            "DELETE FROM lease_resources WHERE namespace=? AND lease=? AND type=? AND id=?",
            (namespace, lease, rtype, rid),
        )


def blob_referenced(conn: sqlite3.Connection, digest: str) -> bool:
    """Whether any namespace has a record of ``digest`` or any lease holds it."""
    if conn.execute("SELECT 1 FROM content WHERE digest=? LIMIT 1", (digest,)).fetchone():
        return True
    return (
        conn.execute("SELECT 1 FROM lease_resources WHERE type='content' AND id=? LIMIT 1", (digest,)).fetchone()
        is not None
    )


class ContentStore:
    """All namespaces' content; ``namespaced(ns, lease)`` gives one namespace's view."""

    def __init__(
        self,
        db: Database,
        local: LocalStore,
        exchange: Exchange | None = None,
        *,
        delete_unreferenced_blobs: bool = True,
    ) -> None:
        self.db = db
        self.local = local
        self.exchange = exchange
        self.delete_unreferenced_blobs = delete_unreferenced_blobs
        self._locks: set[tuple[str, str]] = set()
        # called with (bytes, seconds from open to commit) for each new blob (the metrics endpoint)
        self.ingest_observers: list[Callable[[int, float], None]] = []

    def namespaced(self, namespace: str, lease: str | None = None) -> NamespacedContentStore:
        return NamespacedContentStore(self, namespace, lease)

    def _lock(self, namespace: str, ref: str) -> None:
        key = (namespace, ref)
        if key in self._locks:
            raise errdefs.Unavailable(f"ref {ref} locked")
        self._locks.add(key)

    def _unlock(self, namespace: str, ref: str) -> None:
        self._locks.discard((namespace, ref))


class NamespacedContentStore:
    """One namespace's content, optionally under a lease; implements the content ``Store``."""

    def __init__(self, parent: ContentStore, namespace: str, lease: str | None = None) -> None:
        self._p = parent
        self.namespace = namespace
        self.lease = lease

    # -- Manager ----------------------------------------------------------------------------
    async def info(self, digest: str) -> Info:
        validate_digest(digest)
        ns = self.namespace
        row = await self._p.db.read(
            lambda c: c.execute("SELECT * FROM content WHERE namespace=? AND digest=?", (ns, digest)).fetchone()
        )
        if row is None:
            raise errdefs.NotFound(f"content digest {digest}: not found")
        return _row_info(row)

    async def update(self, info: Info, fieldpaths: Sequence[str] = ()) -> Info:
        validate_digest(info.digest)
        ns = self.namespace

        def tx(conn: sqlite3.Connection) -> Info:
            row = conn.execute("SELECT * FROM content WHERE namespace=? AND digest=?", (ns, info.digest)).fetchone()
            if row is None:
                raise errdefs.NotFound(f"content digest {info.digest}: not found")
            current = _row_info(row)
            labels = update_labels(current.labels, info.labels, fieldpaths, f"content info {info.digest!r}")
            updated = max(now_ns(), current.updated_at + 1)
            conn.execute(
                "UPDATE content SET labels=?, updated_at=? WHERE namespace=? AND digest=?",
                (dumps(labels), updated, ns, info.digest),
            )
            current.labels, current.updated_at = labels, updated
            return current

        return await self._p.db.write(tx, batch=True)

    async def list(self, filters_: Sequence[str] = ()) -> builtins.list[Info]:
        from .. import filters  # the filter language (and regexp) at the first filtered call: W6, idle PSS
        flt = filters.parse_all(list(filters_))
        ns = self.namespace
        rows = await self._p.db.read(
            lambda c: c.execute("SELECT * FROM content WHERE namespace=? ORDER BY digest", (ns,)).fetchall()
        )
        return [i for i in map(_row_info, rows) if flt.match(info_adaptor(i))]

    async def delete(self, digest: str) -> None:
        validate_digest(digest)
        ns, lease, p = self.namespace, self.lease, self._p

        def tx(conn: sqlite3.Connection) -> None:
            cur = conn.execute("DELETE FROM content WHERE namespace=? AND digest=?", (ns, digest))
            if cur.rowcount == 0:
                raise errdefs.NotFound(f"content digest {digest}: not found")
            _remove_lease_resource(conn, ns, lease, "content", digest)
            if p.delete_unreferenced_blobs and not blob_referenced(conn, digest):
                # inside the transaction: no commit can add a record meanwhile
                try:
                    p.local.delete_sync(digest)
                except errdefs.NotFound:
                    pass

        await p.db.write(tx)
        p.db.notify_deleted()
        if p.exchange is not None:
            p.exchange.publish(ns, "/content/delete", {"digest": digest})

    # -- Provider ---------------------------------------------------------------------------
    async def open_blob(self, digest: str) -> BlobFile:
        """The blob opened for blocking reads in a worker thread (see ``LocalStore.open_blob``)."""
        await self.info(digest)  # visible in this namespace?
        return await self._p.local.open_blob(digest)

    async def read(self, digest: str, offset: int = 0, size: int = 0, *, checked: bool = False) -> AsyncIterator[bytes]:
        """The blob's bytes; ``checked``: the caller has just seen it with ``info`` (one lookup less)."""
        if not checked:
            await self.info(digest)  # visible in this namespace?
        async for chunk in self._p.local.read(digest, offset, size):
            yield chunk

    # -- IngestManager ----------------------------------------------------------------------
    async def _bref(self, ref: str) -> tuple[str, str]:
        ns = self.namespace
        row = await self._p.db.read(
            lambda c: c.execute("SELECT expected FROM ingests WHERE namespace=? AND ref=?", (ns, ref)).fetchone()
        )
        if row is None:
            raise errdefs.NotFound(f"reference {ref}: not found")
        return backend_ref(ns, ref), row["expected"]

    async def status(self, ref: str) -> Status:
        bref, _ = await self._bref(ref)
        st = await self._p.local.status(bref)
        st.ref = ref
        return st

    async def list_statuses(self, filters_: Sequence[str] = ()) -> builtins.list[Status]:
        from .. import filters  # at first use (W6, idle PSS)
        flt = filters.parse_all(list(filters_))
        ns = self.namespace
        rows = await self._p.db.read(
            lambda c: c.execute("SELECT ref FROM ingests WHERE namespace=? ORDER BY ref", (ns,)).fetchall()
        )
        out: builtins.list[Status] = []
        for row in rows:
            try:
                st = await self._p.local.status(backend_ref(ns, row["ref"]))
            except errdefs.NotFound:
                continue  # shared ingests have no bytes; finished ones may vanish meanwhile
            st.ref = row["ref"]
            if flt.match(status_adaptor(st)):
                out.append(st)
        return out

    async def abort(self, ref: str) -> None:
        ns, lease = self.namespace, self.lease

        def tx(conn: sqlite3.Connection) -> str:
            row = conn.execute("SELECT expected FROM ingests WHERE namespace=? AND ref=?", (ns, ref)).fetchone()
            if row is None:
                raise errdefs.NotFound(f"reference {ref}: not found")
            conn.execute("DELETE FROM ingests WHERE namespace=? AND ref=?", (ns, ref))
            _remove_lease_resource(conn, ns, lease, "ingests", ref)
            return str(row["expected"])

        await self._p.db.write(tx)
        try:
            await self._p.local.abort(backend_ref(ns, ref))
        except errdefs.NotFound:
            pass  # a shared ingest, or no bytes written yet

    # -- Ingester ---------------------------------------------------------------------------
    async def writer(self, ref: str, total: int = 0, expected: str = "") -> NamespacedWriter:
        if not ref:
            raise errdefs.InvalidArgument("ref must not be empty")
        if expected:
            validate_digest(expected)
        ns, lease, p = self.namespace, self.lease, self._p
        p._lock(ns, ref)
        try:
            shared_size = None
            if expected:
                shared_size = await asyncio.to_thread(p.local.exists_sync, expected)
                if shared_size is not None and total and total != shared_size:
                    shared_size = None  # the caller must resolve the mismatch on commit

            def tx(conn: sqlite3.Connection) -> bool:
                if (
                    expected
                    and conn.execute("SELECT 1 FROM content WHERE namespace=? AND digest=?", (ns, expected)).fetchone()
                ):
                    _add_lease_resource(conn, ns, lease, "content", expected)
                    return True
                ensure_namespace(conn, ns)
                conn.execute(
                    "INSERT INTO ingests (namespace, ref, expected, created_at) VALUES (?,?,?,?)"
                    " ON CONFLICT (namespace, ref) DO UPDATE SET expected=excluded.expected",
                    (ns, ref, expected if shared_size is not None else "", now_ns()),
                )
                _add_lease_resource(conn, ns, lease, "ingests", ref)
                return False

            if await p.db.write(tx, batch=True):
                raise errdefs.AlreadyExists(f"content {expected}: already exists")
            w: LocalWriter | None = None
            size = total
            if shared_size is None:
                w = await p.local.writer(backend_ref(ns, ref), total)
            else:
                size = shared_size
            return NamespacedWriter(self, ref, w, expected, size)
        except BaseException:
            p._unlock(ns, ref)
            raise


class NamespacedWriter:
    """A writer in one namespace; a *shared* writer (no local writer) only records a commit."""

    def __init__(
        self, store: NamespacedContentStore, ref: str, w: LocalWriter | None, expected: str, size: int
    ) -> None:
        self._s = store
        self._ref = ref
        self._w = w
        self._expected = expected
        self._size = size
        self._started = now_ns()
        self._closed = False

    @property
    def ref(self) -> str:
        return self._ref

    async def status(self) -> Status:
        if self._w is not None:
            st = await self._w.status()
            st.ref = self._ref
            st.expected = st.expected or self._expected
            return st
        return Status(
            ref=self._ref,
            offset=self._size,
            total=self._size,
            expected=self._expected,
            started_at=self._started,
            updated_at=self._started,
        )

    async def _unshare(self, size: int) -> LocalWriter:
        """Turn a shared writer into a real one holding the blob's first ``size`` bytes."""
        p = self._s._p
        w = await p.local.writer(backend_ref(self._s.namespace, self._ref), self._size)
        try:
            if w.offset:
                await w.truncate(0)
            if size > 0:
                async for chunk in p.local.read(self._expected, 0, size):
                    await w.write(chunk)
        except BaseException:
            await w.close()
            raise
        self._w = w
        return w

    async def write(self, data: bytes) -> int:
        self._check_open()
        w = self._w
        if w is None:
            if not data:
                return self._size
            w = await self._unshare(self._size)
        return await w.write(data)

    async def truncate(self, size: int) -> None:
        self._check_open()
        if self._w is not None:
            await self._w.truncate(size)
        else:
            await self._unshare(size)

    def digest(self) -> str:
        if self._w is not None:
            return self._w.digest()
        return self._expected

    def _check_open(self) -> None:
        if self._closed:
            raise errdefs.FailedPrecondition(f"writer for ref {self._ref} is closed")

    async def commit(self, size: int, expected: str, labels: Mapping[str, str] | None = None) -> str:
        self._check_open()
        if expected:
            validate_digest(expected)
        labels = {k: v for k, v in (labels or {}).items() if v}
        validate_labels(labels)
        ns, lease, p = self._s.namespace, self._s.lease, self._s._p
        w = self._w

        def tx(conn: sqlite3.Connection) -> tuple[str, bool]:
            conn.execute("DELETE FROM ingests WHERE namespace=? AND ref=?", (ns, self._ref))
            _remove_lease_resource(conn, ns, lease, "ingests", self._ref)
            if w is None:
                if size and size != self._size:
                    raise errdefs.FailedPrecondition(f"unexpected commit size {self._size}, expected {size}")
                if expected and expected != self._expected:
                    raise errdefs.FailedPrecondition(f"unexpected commit digest {self._expected}, expected {expected}")
                if p.local.exists_sync(self._expected) is None:
                    raise errdefs.FailedPrecondition(
                        f"content {self._expected} was removed while committing ref {self._ref}; retry"
                    )
                actual, actual_size = self._expected, self._size
            else:
                actual_size = w.offset
                try:
                    actual = w.publish_sync()  # the rename; prepared outside the transaction
                except errdefs.AlreadyExists:
                    actual = w.digest()
            if conn.execute("SELECT 1 FROM content WHERE namespace=? AND digest=?", (ns, actual)).fetchone():
                return actual, True
            ensure_namespace(conn, ns)
            ts = now_ns()
            conn.execute(
                "INSERT INTO content (namespace, digest, size, labels, created_at, updated_at) VALUES (?,?,?,?,?,?)",
                (ns, actual, actual_size, dumps(labels), ts, ts),
            )
            _add_lease_resource(conn, ns, lease, "content", actual)
            return actual, False

        try:
            if w is not None:
                # fsync, size and digest checks on a worker thread: the transaction (shared
                # with other batched writes) only renames and records
                await w.prepare_commit(size, expected)
            actual, exists = await p.db.write(tx, batch=True)
        finally:
            # committed or not, this writer is done; a failed verification leaves the
            # ingest in place for a new writer to resume or abort
            if w is not None:
                await w.finish_commit()
            self._release()
        if exists:
            raise errdefs.AlreadyExists(f"content {actual}: already exists")
        if w is not None:
            for observe in p.ingest_observers:
                observe(w.offset, (now_ns() - self._started) / 1e9)
        return actual

    def _release(self) -> None:
        if not self._closed:
            self._closed = True
            self._s._p._unlock(self._s.namespace, self._ref)

    async def close(self) -> None:
        if self._closed:
            return
        try:
            if self._w is not None:
                await self._w.close()
        finally:
            self._release()
