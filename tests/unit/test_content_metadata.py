"""Namespaced content: isolation, shared blobs, leases, byte lifetime, events."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

from pycontainerd import errdefs
from pycontainerd.content.local import LocalStore
from pycontainerd.events import Envelope, Exchange
from pycontainerd.metadata.content import ContentStore
from pycontainerd.metadata.db import Database
from pycontainerd.metadata.leases import LeaseStore, Resource
from tests.fixtures.procs import wait_for_async
from tests.suites.content_suite import digest_of, expect, put, read_all


@dataclass
class Env:
    db: Database
    local: LocalStore
    content: ContentStore
    leases: LeaseStore
    events: list[Envelope]


@asynccontextmanager
async def env(tmp: Path) -> AsyncIterator[Env]:
    db = Database(tmp / "meta.db")
    await db.open()
    local = LocalStore(tmp / "content")
    await asyncio.to_thread(local.setup_sync)
    exchange = Exchange()
    events: list[Envelope] = []
    ready = asyncio.Event()

    async def collect() -> None:
        agen = exchange.subscribe()
        ready.set()
        async for e in agen:
            events.append(e)

    # subscribe() registers on first iteration; start it and let it register
    task = asyncio.create_task(collect())
    await ready.wait()
    await asyncio.sleep(0)
    try:
        yield Env(db, local, ContentStore(db, local, exchange), LeaseStore(db), events)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await asyncio.to_thread(db.close)


def run(tmp: Path, fn: Callable[[Env], Awaitable[None]]) -> None:
    async def main() -> None:
        async with env(tmp) as e:
            await fn(e)

    asyncio.run(main())


def test_namespaces_are_isolated(tmp_path: Path) -> None:
    async def body(e: Env) -> None:
        a, b = e.content.namespaced("ns-a"), e.content.namespaced("ns-b")
        dgst = await put(a, "blob", b"only in a", labels={"x": "1"})
        await expect(errdefs.NotFound, b.info(dgst))
        await expect(errdefs.NotFound, read_all(b, dgst))
        assert await b.list() == []
        # ingests too
        w = await a.writer("open-in-a", 100)
        await w.write(b"abc")
        await w.close()
        assert [s.ref for s in await a.list_statuses()] == ["open-in-a"]
        assert await b.list_statuses() == []
        await expect(errdefs.NotFound, b.status("open-in-a"))
        # the same ref in two namespaces does not collide
        wb = await b.writer("open-in-a", 100)
        assert (await wb.status()).offset == 0
        await wb.close()

    run(tmp_path, body)


def test_shared_blob_is_committed_without_bytes(tmp_path: Path) -> None:
    async def body(e: Env) -> None:
        a, b = e.content.namespaced("ns-a"), e.content.namespaced("ns-b")
        data = b"shared between namespaces"
        dgst = await put(a, "blob", data)
        w = await b.writer("layer-x", len(data), dgst)
        st = await w.status()
        assert st.offset == len(data)
        assert st.total == len(data)
        assert await w.commit(len(data), dgst, {"in": "b"}) == dgst
        await w.close()
        assert (await b.info(dgst)).labels == {"in": "b"}
        assert (await a.info(dgst)).labels == {}
        assert await read_all(b, dgst) == data
        # now b has it: AlreadyExists
        await expect(errdefs.AlreadyExists, b.writer("layer-y", len(data), dgst))

    run(tmp_path, body)


def test_shared_writer_rewritten_from_zero(tmp_path: Path) -> None:
    async def body(e: Env) -> None:
        a, b = e.content.namespaced("ns-a"), e.content.namespaced("ns-b")
        data = b"0123456789" * 10
        dgst = await put(a, "blob", data)
        w = await b.writer("rewrite", len(data), dgst)
        await w.truncate(0)  # a client that starts over (WRITE at offset 0)
        await w.write(data)
        assert await w.commit(len(data), dgst) == dgst
        await w.close()
        assert (await b.info(dgst)).size == len(data)

    run(tmp_path, body)


def test_commit_and_ingest_are_leased(tmp_path: Path) -> None:
    async def body(e: Env) -> None:
        await e.leases.create("default", "pull-1")
        cs = e.content.namespaced("default", "pull-1")
        w = await cs.writer("layer-sha256:1", 5)
        await w.write(b"hello")
        res = await e.leases.list_resources("default", "pull-1")
        assert [(r.type, r.id) for r in res] == [("ingests", "layer-sha256:1")]
        dgst = await w.commit(5, digest_of(b"hello"))
        await w.close()
        res = await e.leases.list_resources("default", "pull-1")
        assert [(r.type, r.id) for r in res] == [("content", dgst)]
        # an AlreadyExists on open still adds the blob to the (new) lease
        await e.leases.create("default", "pull-2")
        cs2 = e.content.namespaced("default", "pull-2")
        await expect(errdefs.AlreadyExists, cs2.writer("again", 5, dgst))
        res = await e.leases.list_resources("default", "pull-2")
        assert [(r.type, r.id) for r in res] == [("content", dgst)]
        # a lease that does not exist
        await expect(errdefs.NotFound, e.content.namespaced("default", "nope").writer("r", 0))

    run(tmp_path, body)


def test_bytes_removed_when_unreferenced(tmp_path: Path) -> None:
    async def body(e: Env) -> None:
        a, b = e.content.namespaced("ns-a"), e.content.namespaced("ns-b")
        data = b"refcounted bytes"
        dgst = await put(a, "x", data)
        w = await b.writer("x", len(data), dgst)
        await w.commit(len(data), dgst)
        await w.close()
        path = e.local.blob_path(dgst)
        await a.delete(dgst)
        assert path.exists()  # b still has it
        await e.leases.create("ns-b", "hold")
        await e.leases.add_resource("ns-b", "hold", Resource(dgst, "content"))
        await b.delete(dgst)
        assert path.exists()  # the lease holds it
        await e.leases.delete("ns-b", "hold")
        dgst2 = await put(a, "y", b"other bytes")
        await a.delete(dgst2)
        assert not e.local.blob_path(dgst2).exists()

        def topics() -> list[tuple[str, str, dict[str, object]]]:
            return [(ev.namespace, ev.topic, dict(ev.payload)) for ev in e.events]

        await wait_for_async(lambda: ("ns-a", "/content/delete", {"digest": dgst2}) in topics(), 5, "/content/delete")
        assert ("ns-a", "/content/delete", {"digest": dgst}) in topics()
        assert ("ns-b", "/content/delete", {"digest": dgst}) in topics()

    run(tmp_path, body)


def test_second_writer_unavailable_across_instances_of_namespace(tmp_path: Path) -> None:
    async def body(e: Env) -> None:
        w = await e.content.namespaced("ns").writer("ref", 0)
        await expect(errdefs.Unavailable, e.content.namespaced("ns").writer("ref", 0))
        other = await e.content.namespaced("ns2").writer("ref", 0)
        await other.close()
        await w.close()

    run(tmp_path, body)
