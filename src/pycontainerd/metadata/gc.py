"""Garbage collection: mark and sweep over the metadata, following containerd's model.

Theory of operation.  Everything collectable is a node ``(namespace, kind, id)`` where kind
is ``content`` (id = digest), ``snapshots/<snapshotter>`` (id = key) or ``lease``.  Roots:

- every image → its target content;
- every container → its snapshot (``snapshotter``/``snapshot_key``) and the content and
  snapshots named by its ``containerd.io/gc.ref.*`` labels;
- every lease that has not expired (``containerd.io/gc.expire``, RFC 3339) → each
  resource it lists (content, snapshots, ingests); expired leases are deleted first;
- every content blob or snapshot labelled ``containerd.io/gc.root``.

Edges: a content blob's labels ``containerd.io/gc.ref.content[.<anything>]`` name content
digests and ``containerd.io/gc.ref.snapshot.<snapshotter>[/<anything>]`` name snapshot
keys, in the same namespace; a snapshot references its parent and, through the same labels,
content and other snapshots.

The mark phase is pure (``mark``) over rows read in one transaction; the sweep deletes
unmarked content and snapshot rows in that same write transaction.  Only once that has
committed are the bytes removed: a second pass on the database's writer thread deletes
the blobs no namespace records any more.  Content commits also finish on that thread, so a
blob being committed can never be swept between its rename and its record, and a crash
(``kill -9``) in either pass leaves at worst unrecorded blobs — never a record without its
blob.  Backend snapshots whose rows were swept are removed afterwards by each snapshot
store's ``cleanup`` (children first), which is safe because every backend snapshot gets its
row before it is created.

At start-up (``Scheduler.start``, before the daemon serves) the collection first drops
snapshot rows whose backend snapshot a crash kept from being made (``reconcile``); its
``cleanup`` then removes backend directories without rows (a crashed prepare or remove).

The scheduler (``io.containerd.gc.v1.scheduler``) follows containerd's: a collection is due
after a deletion (or ``deletion_threshold`` of them, when set) or ``mutation_threshold``
mutations (the database's row-changing writes, which it reports through ``Database.subscribe``),
and runs ``schedule_delay`` later — but never sooner than the *pause interval*
after the previous one, ``avg/pause_threshold - avg`` with ``avg`` the mean collection time,
so that collections take at most ``pause_threshold`` (default 2 %) of the time.  A busy
daemon (``ctr run --rm`` in a loop deletes a lease, a snapshot and a container every
~100 ms) thus collects every few hundred ms instead of after every deletion, off the
requests' path.  containerd collects once ``startup_delay`` after its scheduler starts;
here that first collection is the start-up pass, which runs before the daemon serves (so
crash leftovers never meet a request): ``start`` waits until ``startup_delay`` has passed
since the scheduler was made (the other plugins' start-up usually covers it), then
collects.  On-demand collections (``Images.Delete``/``Leases.Delete`` with ``sync``,
``run_now``) are not held back.  The WAL is folded back and truncated only once it has grown
past ``WAL_TRUNCATE_BYTES``.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import sqlite3
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from ..config import GCSchedulerConfig
from ..plugin import InitContext, Registration, types
from .db import Database, loads

log = logging.getLogger("pycontainerd.gc")

GC_ROOT = "containerd.io/gc.root"
GC_EXPIRE = "containerd.io/gc.expire"
REF_CONTENT = "containerd.io/gc.ref.content"
REF_SNAPSHOT = "containerd.io/gc.ref.snapshot."

Node = tuple[str, str, str]  # (namespace, kind, id)

# SQLite's passive auto-checkpoints keep reusing a WAL of about this size (1000 pages)
WAL_TRUNCATE_BYTES = 4 << 20


def parse_expire(value: str) -> float | None:
    """RFC 3339 → epoch seconds; None when unparseable (such a lease never expires)."""
    text = value.strip()
    if not text:
        return None
    if text.endswith("Z"):
        text = text[:-1] + "+00:00"
    # Python's fromisoformat takes at most microseconds
    if "." in text:
        head, _, rest = text.partition(".")
        frac = ""
        i = 0
        while i < len(rest) and rest[i].isdigit():
            frac += rest[i]
            i += 1
        text = head + "." + (frac[:6] or "0") + rest[i:]
    try:
        return datetime.fromisoformat(text).timestamp()
    except ValueError:
        return None


def label_refs(namespace: str, labels: dict[str, str]) -> Iterable[Node]:
    """The nodes a set of labels references (gc.ref.content*, gc.ref.snapshot.<name>*)."""
    for key, value in labels.items():
        if not value:
            continue
        if key == REF_CONTENT or key.startswith(REF_CONTENT + "."):
            yield (namespace, "content", value)
        elif key.startswith(REF_SNAPSHOT):
            # "<prefix><snapshotter>" or "<prefix><snapshotter>/<anything>"
            snapshotter = key[len(REF_SNAPSHOT):].split("/", 1)[0]
            if snapshotter:
                yield (namespace, f"snapshots/{snapshotter}", value)


@dataclass
class Graph:
    """What the mark phase needs, read from the database in one transaction."""

    roots: set[Node] = field(default_factory=set)
    edges: dict[Node, list[Node]] = field(default_factory=dict)
    nodes: set[Node] = field(default_factory=set)  # every collectable node that exists


def mark(graph: Graph) -> set[Node]:
    """Every node reachable from the roots."""
    seen: set[Node] = set()
    stack = [r for r in graph.roots]
    while stack:
        node = stack.pop()
        if node in seen:
            continue
        seen.add(node)
        stack.extend(graph.edges.get(node, ()))
    return seen


def read_graph(conn: sqlite3.Connection, now: float) -> tuple[Graph, list[tuple[str, str]]]:
    """Build the graph; returns it and the (namespace, lease id) pairs that have expired."""
    g = Graph()
    expired: list[tuple[str, str]] = []
    live_leases: set[tuple[str, str]] = set()
    for row in conn.execute("SELECT namespace, id, labels FROM leases"):
        labels = loads(row["labels"])
        exp = parse_expire(labels.get(GC_EXPIRE, ""))
        if exp is not None and exp <= now:
            expired.append((row["namespace"], row["id"]))
        else:
            live_leases.add((row["namespace"], row["id"]))
    for row in conn.execute("SELECT namespace, lease, type, id FROM lease_resources"):
        if (row["namespace"], row["lease"]) not in live_leases:
            continue
        kind = row["type"]
        if kind == "ingests":
            continue  # ingests are not swept by this collector
        g.roots.add((row["namespace"], kind, row["id"]))
    for row in conn.execute("SELECT namespace, digest FROM images"):
        g.roots.add((row["namespace"], "content", row["digest"]))
    for row in conn.execute("SELECT namespace, labels, snapshotter, snapshot_key FROM containers"):
        ns = row["namespace"]
        if row["snapshotter"] and row["snapshot_key"]:
            g.roots.add((ns, f"snapshots/{row['snapshotter']}", row["snapshot_key"]))
        g.roots.update(label_refs(ns, loads(row["labels"])))
    for row in conn.execute("SELECT namespace, digest, labels FROM content"):
        node = (row["namespace"], "content", row["digest"])
        labels = loads(row["labels"])
        g.nodes.add(node)
        if labels.get(GC_ROOT):
            g.roots.add(node)
        refs = list(label_refs(row["namespace"], labels))
        if refs:
            g.edges[node] = refs
    for row in conn.execute("SELECT namespace, snapshotter, key, parent, labels FROM snapshots"):
        kind = f"snapshots/{row['snapshotter']}"
        node = (row["namespace"], kind, row["key"])
        labels = loads(row["labels"])
        g.nodes.add(node)
        if labels.get(GC_ROOT):
            g.roots.add(node)
        refs = list(label_refs(row["namespace"], labels))
        if row["parent"]:
            refs.append((row["namespace"], kind, row["parent"]))
        if refs:
            g.edges[node] = refs
    return g, expired


@dataclass
class Stats:
    leases: int = 0
    content: int = 0
    snapshots: int = 0
    blobs: int = 0
    blob_bytes: int = 0  # disk space the removed blobs held
    seconds: float = 0.0


class Collector:
    """One mark-and-sweep pass over the database, the content bytes and the snapshotters."""

    def __init__(
        self,
        db: Database,
        delete_blob: Callable[[str], int | None] | None,
        list_blobs: Callable[[], Iterable[str]] | None,
        snapshot_cleanups: dict[str, Callable[[], Awaitable[None]]],
        snapshot_reconcilers: dict[str, Callable[[], Awaitable[object]]] | None = None,
    ) -> None:
        self.db = db
        self.delete_blob = delete_blob
        self.list_blobs = list_blobs
        self.snapshot_cleanups = snapshot_cleanups
        self.snapshot_reconcilers = snapshot_reconcilers or {}
        self._lock = asyncio.Lock()
        self.observers: list[Callable[[Stats], None]] = []  # told of each pass (the metrics endpoint)

    def _sweep(self, conn: sqlite3.Connection) -> tuple[Stats, set[str]]:
        """Phase 1 (one write transaction): expired leases and unmarked records go."""
        stats = Stats()
        g, expired = read_graph(conn, time.time())
        for ns, lease in expired:
            conn.execute("DELETE FROM lease_resources WHERE namespace=? AND lease=?", (ns, lease))
            conn.execute("DELETE FROM leases WHERE namespace=? AND id=?", (ns, lease))
            stats.leases += 1
        marked = mark(g)
        swept_snapshotters: set[str] = set()
        for node in g.nodes - marked:
            ns, kind, ident = node
            if kind == "content":
                conn.execute("DELETE FROM content WHERE namespace=? AND digest=?", (ns, ident))
                stats.content += 1
            else:
                snapshotter = kind.split("/", 1)[1]
                conn.execute(
                    "DELETE FROM snapshots WHERE namespace=? AND snapshotter=? AND key=?", (ns, snapshotter, ident)
                )
                swept_snapshotters.add(snapshotter)
                stats.snapshots += 1
        return stats, swept_snapshotters

    def _sweep_blobs(self, conn: sqlite3.Connection, stats: Stats | None = None) -> int:
        """Phase 2 (after phase 1 committed): bytes that no namespace records go.

        It runs as a write transaction only to hold the writer thread — content commits
        finish there, so a blob renamed into place is never seen here without its record.
        It changes no rows: a crash half-way leaves only unrecorded blobs, which the next
        collection (the one at start-up) removes.  Deleting bytes inside phase 1 instead
        would lose blobs whose records a crash rolls back."""
        if self.delete_blob is None or self.list_blobs is None:
            return 0
        removed = 0
        referenced = {r[0] for r in conn.execute("SELECT DISTINCT digest FROM content")}
        expected = {r[0] for r in conn.execute("SELECT DISTINCT expected FROM ingests WHERE expected != ''")}
        for digest in list(self.list_blobs()):
            if digest not in referenced and digest not in expected:
                try:
                    freed = self.delete_blob(digest)
                    removed += 1
                    if stats is not None and freed:
                        stats.blob_bytes += freed
                except Exception as exc:  # a blob we cannot remove now is retried next time
                    log.warning("gc: cannot remove blob %s: %s", digest, exc)
        return removed

    async def collect(self, *, startup: bool = False) -> Stats:
        async with self._lock:
            start = time.monotonic()
            if startup:
                # records of snapshots a crash kept from being made (nothing is in flight yet)
                for name, reconcile in self.snapshot_reconcilers.items():
                    try:
                        await reconcile()
                    except Exception as exc:
                        log.warning("gc: snapshotter %s reconcile failed: %s", name, exc)
            stats, _swept = await self.db.write(self._sweep)
            stats.blobs = await self.db.write(functools.partial(self._sweep_blobs, stats=stats))
            if stats.content or stats.snapshots or stats.leases:
                # give the space back once the WAL has grown: fold it into the file and truncate it
                await self.db.checkpoint(min_wal_bytes=WAL_TRUNCATE_BYTES)
            # backend snapshots without rows (swept now, or left by a crash) go children first
            for name, cleanup in self.snapshot_cleanups.items():
                try:
                    await cleanup()
                except Exception as exc:
                    log.warning("gc: snapshotter %s cleanup failed: %s", name, exc)
            stats.seconds = time.monotonic() - start
            if stats.leases or stats.content or stats.snapshots or stats.blobs:
                log.info(
                    "garbage collected: %d leases, %d content records, %d snapshots, %d blobs in %.3fs",
                    stats.leases, stats.content, stats.snapshots, stats.blobs, stats.seconds,
                )
            for observe in self.observers:
                observe(stats)
            return stats


class Scheduler:
    """Runs the collector after deletions/mutations (thresholds, delay, pause interval) and on demand."""

    def __init__(
        self,
        collector: Collector,
        *,
        deletion_threshold: int = 0,
        mutation_threshold: int = 100,
        schedule_delay: float = 0.0,
        startup_delay: float = 0.1,
        pause_threshold: float = 0.02,
    ) -> None:
        self.collector = collector
        self.deletion_threshold = deletion_threshold
        self.mutation_threshold = mutation_threshold
        self.schedule_delay = schedule_delay
        self.startup_delay = startup_delay
        self.pause_threshold = min(max(pause_threshold, 0.0), 0.5)
        self._deletions = 0
        self._mutations = 0
        self._wake = asyncio.Event()
        self._task: asyncio.Task[Any] | None = None
        self._waiters: list[asyncio.Future[Stats]] = []
        self._gc_time = 0.0
        self._collections = 0
        self._not_before = 0.0  # loop time before which a due collection waits
        self.next_due: float | None = None  # loop time of the collection being waited for
        self._made = time.monotonic()  # startup_delay counts from here
        self.last: Stats | None = None

    @staticmethod
    def _now() -> float:
        """The event loop's clock: the one ``asyncio.wait_for`` times the hold-off with."""
        return asyncio.get_running_loop().time()

    def deleted(self) -> None:
        """A deletion happened (called from any thread)."""
        self._deletions += 1
        self._poke()

    def mutated(self) -> None:
        self._mutations += 1
        if self.mutation_threshold and self._mutations == self.mutation_threshold:
            self._poke()  # once: the run loop then waits for the collection to be allowed

    def _poke(self) -> None:
        loop = getattr(self, "_loop", None)
        if loop is not None:
            loop.call_soon_threadsafe(self._wake.set)

    def interval(self) -> float:
        """The pause interval after a collection: collections take ``pause_threshold`` of the time."""
        if self.pause_threshold <= 0 or not self._collections:
            return 0.0
        avg = self._gc_time / self._collections
        return avg / self.pause_threshold - avg

    def _due(self) -> bool:
        if self.deletion_threshold > 0:
            by_deletions = self._deletions >= self.deletion_threshold
        else:
            by_deletions = self._deletions > 0
        return by_deletions or bool(self.mutation_threshold and self._mutations >= self.mutation_threshold)

    async def run_now(self) -> Stats:
        """Collect now (``sync`` deletes) and return what was removed."""
        fut: asyncio.Future[Stats] = asyncio.get_running_loop().create_future()
        self._waiters.append(fut)
        self._wake.set()
        if self._task is None:
            return await self._collect()
        return await fut

    async def _collect(self, *, startup: bool = False) -> Stats:
        self._deletions = 0
        self._mutations = 0
        start = self._now()
        try:
            stats = await self.collector.collect(startup=startup)
        finally:
            end = self._now()
            if not startup:  # the start-up pass (reconcile, cold caches) says little about the rest
                self._gc_time += end - start
                self._collections += 1
            self._not_before = end + self.interval()
        self.last = stats
        return stats

    async def start(self) -> None:
        """The start-up pass once ``startup_delay`` has passed since the scheduler was made
        (leftovers of a crash go before anything is served), then collections on triggers."""
        self._loop = asyncio.get_running_loop()
        wait = self._made + self.startup_delay - time.monotonic()
        if wait > 0:
            self.next_due = self._made + self.startup_delay
            try:
                await asyncio.sleep(wait)  # a timer, as containerd's startup delay
            finally:
                self.next_due = None
        try:
            await self._collect(startup=True)
        except Exception:
            log.exception("garbage collection at start-up failed")
        self._task = asyncio.create_task(self._run(), name="gc-scheduler")

    async def _hold_off(self, delay: float) -> None:
        """Wait ``delay`` seconds, or less if an on-demand collection is asked for."""
        deadline = self._now() + delay
        while not self._waiters:
            left = deadline - self._now()
            if left <= 0:
                return
            self._wake.clear()
            try:
                await asyncio.wait_for(self._wake.wait(), left)
            except TimeoutError:
                return

    async def _wait(self, delay: float) -> None:
        self.next_due = self._now() + delay
        try:
            await self._hold_off(delay)
        finally:
            self.next_due = None

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            if not self._waiters:
                if not self._due():
                    continue
                delay = max(self.schedule_delay, self._not_before - self._now())
                if delay > 0:
                    await self._wait(delay)
            await self._collect_for_waiters()

    async def _collect_for_waiters(self) -> None:
        waiters, self._waiters = self._waiters, []
        try:
            stats = await self._collect()
        except Exception as exc:
            log.exception("garbage collection failed")
            for w in waiters:
                if not w.done():
                    w.set_exception(exc)
            return
        for w in waiters:
            if not w.done():
                w.set_result(stats)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except (asyncio.CancelledError, Exception):
                pass
            self._task = None


# -- plugin -------------------------------------------------------------------------------
async def _init(ctx: InitContext) -> Scheduler:
    from ..content.local import LocalStore
    from .plugin import Metadata

    cfg = ctx.typed_config(GCSchedulerConfig)
    meta = ctx.require(Metadata, types.METADATA)
    local = ctx.require(LocalStore, types.CONTENT, "content")
    collector = Collector(
        meta.db,
        delete_blob=local.delete_sync,
        list_blobs=local.blob_digests_sync,
        snapshot_cleanups={name: store.cleanup for name, store in meta.snapshotters.items()},
        snapshot_reconcilers={name: store.reconcile for name, store in meta.snapshotters.items()},
    )
    scheduler = Scheduler(
        collector,
        deletion_threshold=cfg.deletion_threshold,
        mutation_threshold=cfg.mutation_threshold,
        schedule_delay=cfg.schedule_delay,
        startup_delay=cfg.startup_delay,
        pause_threshold=cfg.pause_threshold,
    )
    meta.db.subscribe(on_delete=scheduler.deleted, on_mutation=scheduler.mutated)
    return scheduler


# The stores that delete (content, images, leases) require this plugin and get the scheduler
# at construction, as containerd's images service requires the GC plugin.
REGISTRATION = Registration(
    type=types.GC, id="scheduler", init=_init, requires=(types.METADATA, types.CONTENT), config=GCSchedulerConfig
)
