"""Each GC scheduler option has an effect (``[plugins."io.containerd.gc.v1.scheduler"]``), the
plugin gets them typed from the config, and the stores that delete are built knowing the
collector (``pause_threshold``'s pacing is in test_gc_scheduler.py)."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from pathlib import Path
from typing import Any

from pycontainerd.config import parse_config
from pycontainerd.daemon.memory import Trimmer
from pycontainerd.events import Exchange
from pycontainerd.metadata.content import ContentStore
from pycontainerd.metadata.db import Database
from pycontainerd.metadata.gc import Scheduler, Stats
from pycontainerd.metadata.images import ImageStore
from pycontainerd.metadata.leases import LeaseStore
from pycontainerd.plugin import Registration, types
from pycontainerd.plugin import registry as plugin_registry
from tests.fixtures.procs import wait_for_async


class Counting:
    """Stands in for ``Collector``: counts collections (each finishes at once)."""

    def __init__(self) -> None:
        self.runs: list[float] = []

    async def collect(self, *, startup: bool = False) -> Stats:
        del startup
        self.runs.append(time.monotonic())
        return Stats()


def _scheduler(c: Counting, **kw: Any) -> Scheduler:
    kw.setdefault("startup_delay", 0.0)
    kw.setdefault("pause_threshold", 0.0)
    return Scheduler(c, **kw)  # type: ignore[arg-type]


def test_deletion_threshold() -> None:
    async def run() -> None:
        c = Counting()
        s = _scheduler(c, deletion_threshold=3)
        await s.start()
        s.deleted()
        s.deleted()
        assert not s._due()  # two deletions: below the threshold
        s.deleted()
        assert s._due()
        await wait_for_async(lambda: len(c.runs) == 2, 3, "the condition")  # the start-up pass, then this one
        await s.close()

        c = Counting()
        s = _scheduler(c)  # 0: every deletion makes a collection due
        await s.start()
        s.deleted()
        assert s._due()
        await wait_for_async(lambda: len(c.runs) == 2, 3, "the condition")
        await s.close()

    asyncio.run(run())


def test_mutation_threshold_counts_the_database_writes(tmp_path: Path) -> None:
    async def run() -> None:
        db = Database(tmp_path / "meta.db")
        await db.open()
        c = Counting()
        s = _scheduler(c, mutation_threshold=5)
        db.subscribe(on_delete=s.deleted, on_mutation=s.mutated)
        await s.start()

        def insert(i: int) -> Any:
            return lambda conn: conn.execute(
                "INSERT INTO namespaces (name, labels, created_at, updated_at) VALUES (?, '{}', 0, 0)", (f"ns{i}",)
            )

        def nothing(conn: sqlite3.Connection) -> None:
            conn.execute("SELECT 1")

        for i in range(4):
            await db.write(insert(i))
        await db.write(nothing)  # changes no row: not a mutation
        assert s._mutations == 4 and not s._due()
        assert len(c.runs) == 1  # the start-up pass only
        await db.write(insert(4), batch=True)  # batched writes count too
        await wait_for_async(lambda: len(c.runs) == 2, 3, "the condition")
        assert s._mutations == 0
        await s.close()

        c = Counting()
        s = _scheduler(c, mutation_threshold=0)  # 0: mutations never make a collection due
        s.mutated()
        assert not s._due()
        await asyncio.to_thread(db.close)

    asyncio.run(run())


def test_schedule_delay() -> None:
    async def run() -> None:
        c = Counting()
        s = _scheduler(c, schedule_delay=0.3)
        await s.start()
        t0 = time.monotonic()
        s.deleted()
        await wait_for_async(lambda: s.next_due is not None, 3, "the condition")
        assert s.next_due is not None and 0.25 < s.next_due - t0 < 0.35
        await wait_for_async(lambda: len(c.runs) == 2, 3, "the condition")
        assert c.runs[-1] - t0 >= 0.3
        await s.close()

    asyncio.run(run())


def test_startup_delay() -> None:
    async def run() -> None:
        c = Counting()
        s = _scheduler(c, startup_delay=0.3)
        made = time.monotonic()
        start = asyncio.create_task(s.start())
        await wait_for_async(lambda: s.next_due is not None, 3, "the condition")
        assert s.next_due is not None and 0.25 < s.next_due - made <= 0.3
        assert c.runs == []  # the start-up pass waits for the delay ...
        await start
        assert len(c.runs) == 1 and c.runs[0] - made >= 0.3  # ... then runs, before start() returns
        assert s.next_due is None
        await s.close()

        c = Counting()
        s = _scheduler(c, startup_delay=0.0)
        made = time.monotonic()
        await s.start()
        assert len(c.runs) == 1 and c.runs[0] - made < 0.25  # no delay
        await s.close()

        c = Counting()
        s = _scheduler(c, startup_delay=0.2)
        await asyncio.sleep(0.2)  # the other plugins' start-up took that long: no more waiting
        t0 = time.monotonic()
        await s.start()
        assert len(c.runs) == 1 and c.runs[0] - t0 < 0.1
        await s.close()

    asyncio.run(run())


# -- the plugin: config in, stores wired at construction ------------------------------------------
class _Daemon:
    def __init__(self, db: Database) -> None:
        self.db = db
        self.exchange = Exchange()
        self.trimmer = Trimmer()


def _regs() -> list[Registration]:
    from pycontainerd.content import local
    from pycontainerd.metadata import gc
    from pycontainerd.metadata import plugin as metadata
    from pycontainerd.services import content, images, leases

    return [*local.REGISTRATIONS, metadata.REGISTRATION, gc.REGISTRATION, *content.REGISTRATIONS[:1],
            *images.REGISTRATIONS[:1], *leases.REGISTRATIONS[:1]]


def _load(tmp_path: Path, toml: str, disabled: tuple[str, ...] = ()) -> tuple[plugin_registry.PluginSet, Database]:
    cfg = parse_config("version = 2\n" + toml, "config.toml")

    async def run() -> tuple[plugin_registry.PluginSet, Database]:
        db = Database(tmp_path / "meta.db")
        await db.open()
        plugins = await plugin_registry.load(
            _regs(), root=tmp_path, state=tmp_path / "state",
            plugin_config=lambda reg: cfg.plugin_config(reg.uri, reg.config)[0],
            daemon=_Daemon(db), disabled=disabled, required=[r.uri for r in _regs() if r.uri not in disabled],
        )
        return plugins, db

    return asyncio.run(run())


def test_the_plugin_gets_its_options_and_the_stores_get_the_scheduler(tmp_path: Path) -> None:
    plugins, db = _load(
        tmp_path,
        '[plugins."io.containerd.gc.v1.scheduler"]\npause_threshold = 0.1\ndeletion_threshold = 4\n'
        'mutation_threshold = 50\nschedule_delay = "20ms"\nstartup_delay = "0s"\n',
    )
    try:
        s = plugins.get(types.GC, "scheduler")
        assert isinstance(s, Scheduler)
        assert (s.pause_threshold, s.deletion_threshold, s.mutation_threshold, s.schedule_delay, s.startup_delay) == (
            0.1, 4, 50, 0.02, 0.0
        )
        assert s.deleted in db.on_delete and s.mutated in db.on_mutation
        content = plugins.get(types.SERVICE, "content-service")
        assert isinstance(content, ContentStore) and content.delete_unreferenced_blobs is False
        image_store = plugins.get(types.SERVICE, "images-service")
        assert isinstance(image_store, ImageStore) and image_store.gc_hook == s.run_now
        lease_store = plugins.get(types.LEASE, "manager")
        assert isinstance(lease_store, LeaseStore) and lease_store.gc_hook == s.run_now
    finally:
        db.close()


def test_without_the_collector_deleting_content_removes_the_bytes(tmp_path: Path) -> None:
    plugins, db = _load(tmp_path, "", disabled=("io.containerd.gc.v1.scheduler",))
    try:
        content = plugins.get(types.SERVICE, "content-service")
        assert content.delete_unreferenced_blobs is True
        assert plugins.get(types.SERVICE, "images-service").gc_hook is None
        assert plugins.get(types.LEASE, "manager").gc_hook is None
    finally:
        db.close()
