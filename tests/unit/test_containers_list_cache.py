"""The encoded container list an unfiltered List/ListStream answers from (``ctr containers ls``,
W5): kept per namespace while the database generation stands, so a repeated list needs no
metadata read and no encoding; any write (through any store) makes the next list read again."""

from __future__ import annotations

import asyncio
import sqlite3
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from pycontainerd.api.services.containers.v1 import containers_pb2 as pb
from pycontainerd.metadata.containers import Container, ContainerStore, TypedValue
from pycontainerd.metadata.db import Database
from pycontainerd.rpc import EncodedStream
from pycontainerd.services import containers as svc

T = TypeVar("T")
SPEC = TypedValue("types.containerd.io/opencontainers/runtime-spec/1/Spec", b'{"ociVersion":"1.0.2"}')


class CountingDatabase(Database):
    """Counts the read transactions; ``during_read`` runs before each (e.g. a write)."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.reads = 0
        self.during_read: Callable[[], Any] | None = None

    async def read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        self.reads += 1
        if self.during_read is not None:
            hook, self.during_read = self.during_read, None
            await hook()
        return await super().read(fn)


def _c(cid: str, **kw: Any) -> Container:
    return Container(id=cid, runtime_name="io.containerd.runc.v2", spec=SPEC, **kw)


def _messages(item: Any) -> list[bytes]:
    """What one yielded item puts on the wire, as messages: an ``EncodedStream`` is several,
    each behind its gRPC prefix (uncompressed; ``count`` of them, the largest ``largest``)."""
    if not isinstance(item, EncodedStream):
        return [item.SerializeToString()]
    out, pos, data = [], 0, item.data
    while pos < len(data):
        flag, length = struct.unpack_from(">BL", data, pos)
        assert flag == 0
        out.append(data[pos + 5:pos + 5 + length])
        pos += 5 + length
    assert pos == len(data) and len(out) == item.count and max(map(len, out)) == item.largest
    return out


async def _stream(service: svc.ContainersService, ns: str, filters: tuple[str, ...] = ()) -> list[pb.Container]:
    ctx = _Ctx(ns)
    return [pb.ListContainerMessage.FromString(m).container
            async for item in service.ListStream(pb.ListContainersRequest(filters=list(filters)), ctx)
            for m in _messages(item)]


class _Ctx:
    """The handler context as far as ``namespace_of`` reads it."""

    def __init__(self, ns: str) -> None:
        self.ns = ns

    def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
        return (("containerd-namespace", self.ns),)


def _run(tmp_path: Path, body: Callable[[CountingDatabase, ContainerStore, svc.ContainersService], Any]) -> None:
    async def run() -> None:
        db = CountingDatabase(tmp_path / "meta.db")
        await db.open()
        try:
            store = ContainerStore(db)
            await body(db, store, svc.ContainersService(store))
        finally:
            db.close()

    asyncio.run(run())


def test_repeated_unfiltered_list_reads_the_database_once(tmp_path: Path) -> None:
    async def body(db: CountingDatabase, store: ContainerStore, service: svc.ContainersService) -> None:
        for i in range(5):
            await store.create("ns", _c(f"c{i}", labels={"i": str(i)}))
        first = await _stream(service, "ns")
        reads = db.reads
        assert await _stream(service, "ns") == first
        resp = pb.ListContainersResponse.FromString(
            (await service.List(pb.ListContainersRequest(), _Ctx("ns"))).SerializeToString())
        assert list(resp.containers) == first
        assert db.reads == reads  # answered from what the first list encoded
        items = [i async for i in service.ListStream(pb.ListContainersRequest(), _Ctx("ns"))]
        assert len(items) == 1 and isinstance(items[0], EncodedStream)  # the five framed, one piece
        # what the uncached path builds, field for field
        assert first == [svc.to_pb(c) for c in await store.list("ns")]
        # a filter still reads and filters
        assert [c.id for c in await _stream(service, "ns", ("labels.i==3",))] == ["c3"]
        # List first, then ListStream, in a fresh list: the same containers either way
        await store.create("ns", _c("c5"))
        resp = pb.ListContainersResponse.FromString(
            (await service.List(pb.ListContainersRequest(), _Ctx("ns"))).SerializeToString())
        assert list(resp.containers) == await _stream(service, "ns")
        assert [c.id for c in resp.containers] == [f"c{i}" for i in range(6)]

    _run(tmp_path, body)


def test_an_empty_namespace_streams_nothing(tmp_path: Path) -> None:
    async def body(db: CountingDatabase, store: ContainerStore, service: svc.ContainersService) -> None:
        assert [i async for i in service.ListStream(pb.ListContainersRequest(), _Ctx("none"))] == []
        resp = await service.List(pb.ListContainersRequest(), _Ctx("none"))
        assert resp.SerializeToString() == b""

    _run(tmp_path, body)


def test_a_write_through_another_store_is_seen_by_the_next_list(tmp_path: Path) -> None:
    async def body(db: CountingDatabase, store: ContainerStore, service: svc.ContainersService) -> None:
        other = ContainerStore(db)  # as the task manager's own store
        await store.create("ns", _c("a"))
        assert [c.id for c in await _stream(service, "ns")] == ["a"]
        await other.create("ns", _c("b"))
        assert [c.id for c in await _stream(service, "ns")] == ["a", "b"]
        await other.update("ns", _c("a", labels={"x": "y"}), ["labels"])
        assert dict((await _stream(service, "ns"))[0].labels) == {"x": "y"}
        await other.delete("ns", "a")
        assert [c.id for c in await _stream(service, "ns")] == ["b"]

    _run(tmp_path, body)


def test_a_list_overlapped_by_a_write_is_not_kept(tmp_path: Path) -> None:
    async def body(db: CountingDatabase, store: ContainerStore, service: svc.ContainersService) -> None:
        await store.create("ns", _c("a"))
        db.during_read = lambda: store.create("ns", _c("b"))  # commits before the read starts
        assert [c.id for c in await _stream(service, "ns")] == ["a", "b"]
        reads = db.reads
        await _stream(service, "ns")
        assert db.reads == reads + 1  # the overlapped result was not kept: read again ...
        await _stream(service, "ns")
        assert db.reads == reads + 1  # ... and that one was

    _run(tmp_path, body)


def test_kept_lists_are_bounded(tmp_path: Path) -> None:
    async def body(db: CountingDatabase, store: ContainerStore, service: svc.ContainersService) -> None:
        for i in range(svc.KEEP_NAMESPACES + 3):
            await store.create(f"ns{i}", _c("a"))
        for i in range(svc.KEEP_NAMESPACES + 3):
            await _stream(service, f"ns{i}")
        assert len(service._encoded) == svc.KEEP_NAMESPACES
        await store.delete("ns0", "a")
        await _stream(service, "ns1")
        assert list(service._encoded) == ["ns1"]  # a write leaves every older list stale: dropped

    _run(tmp_path, body)
