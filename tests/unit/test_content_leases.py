"""Leases: create/list/delete, resources, expiry labels."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from pycontainerd import errdefs
from pycontainerd.metadata.db import Database
from pycontainerd.metadata.leases import Lease, LeaseStore, Resource, parse_expire

D1 = "sha256:" + "a" * 64


def run(tmp: Path, fn: Callable[[LeaseStore], Awaitable[None]]) -> None:
    async def main() -> None:
        db = Database(tmp / "meta.db")
        await db.open()
        try:
            await fn(LeaseStore(db))
        finally:
            await asyncio.to_thread(db.close)

    asyncio.run(main())


async def _raises(kind: type[errdefs.ContainerdError], aw: Awaitable[object]) -> errdefs.ContainerdError:
    try:
        await aw
    except kind as exc:
        return exc
    raise AssertionError(f"expected {kind.__name__}")


def test_parse_expire() -> None:
    assert parse_expire("1970-01-01T00:00:01Z") == 1_000_000_000
    assert parse_expire("1970-01-01T00:00:01.5Z") == 1_500_000_000
    assert parse_expire("1970-01-01T01:00:00+01:00") == 0
    assert parse_expire("2024-05-01T10:00:00.123456789Z") == 1714557600_123456789
    assert parse_expire("not a time") is None
    assert parse_expire("") is None
    assert Lease("x", {"containerd.io/gc.expire": "2000-01-01T00:00:00Z"}).expired()
    assert not Lease("x", {"containerd.io/gc.expire": "2999-01-01T00:00:00Z"}).expired()
    assert not Lease("x").expired()


def test_lease_lifecycle(tmp_path: Path) -> None:
    async def body(store: LeaseStore) -> None:
        ns = "default"
        a = await store.create(ns, "lease-a", {"containerd.io/gc.expire": "2000-01-01T00:00:00Z"})
        assert a.created_at > 0
        b = await store.create(ns, "", {"team": "x"})
        assert b.id
        assert b.id != "lease-a"
        exc = await _raises(errdefs.AlreadyExists, store.create(ns, "lease-a"))
        assert str(exc) == 'lease "lease-a": already exists'
        await _raises(errdefs.InvalidArgument, store.create(ns, "big", {"k": "v" * 5000}))
        # expired leases are still listed (GC removes them)
        assert sorted(lease.id for lease in await store.list(ns)) == sorted(["lease-a", b.id])
        assert [lease.id for lease in await store.list(ns, ["id==lease-a"])] == ["lease-a"]
        assert [lease.id for lease in await store.list(ns, ["labels.team==x"])] == [b.id]
        assert await store.list("other") == []

        await store.add_resource(ns, "lease-a", Resource(D1, "content"))
        await store.add_resource(ns, "lease-a", Resource(D1, "content"))  # idempotent
        await store.add_resource(ns, "lease-a", Resource("extract-1 sha256:x", "snapshots/overlayfs"))
        await store.add_resource(ns, "lease-a", Resource("layer-sha256:1", "ingests"))
        got = [(r.type, r.id) for r in await store.list_resources(ns, "lease-a")]
        assert got == [("content", D1), ("ingests", "layer-sha256:1"), ("snapshots/overlayfs", "extract-1 sha256:x")]
        await _raises(errdefs.InvalidArgument, store.add_resource(ns, "lease-a", Resource("nodigest", "content")))
        await _raises(errdefs.InvalidArgument, store.add_resource(ns, "lease-a", Resource("k", "snapshots")))
        await _raises(errdefs.Unimplemented, store.add_resource(ns, "lease-a", Resource("k", "containers")))
        await _raises(errdefs.NotFound, store.add_resource(ns, "nope", Resource(D1, "content")))
        await store.delete_resource(ns, "lease-a", Resource(D1, "content"))
        assert [r.type for r in await store.list_resources(ns, "lease-a")] == ["ingests", "snapshots/overlayfs"]
        await _raises(errdefs.NotFound, store.list_resources(ns, "nope"))

        await store.delete(ns, "lease-a", sync=True)
        exc = await _raises(errdefs.NotFound, store.delete(ns, "lease-a"))
        assert str(exc) == 'lease "lease-a": not found'
        # resources went with it
        await store.create(ns, "lease-a")
        assert await store.list_resources(ns, "lease-a") == []

    run(tmp_path, body)


@pytest.mark.parametrize("rtype", ["content/x", "ingests/y"])
def test_bad_resource_types(tmp_path: Path, rtype: str) -> None:
    async def body(store: LeaseStore) -> None:
        await store.create("ns", "l")
        await _raises(errdefs.InvalidArgument, store.add_resource("ns", "l", Resource("id", rtype)))

    run(tmp_path, body)
