"""Containers.ListStream (what ``ctr containers ls`` calls) over the daemon's gRPC server and grpc's client: one
message per record, filters, updates seen by the next list; List and Get beside it."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import grpc
import pytest

from pycontainerd.api.services.containers.v1 import containers_pb2 as pb
from pycontainerd.api.services.containers.v1 import containers_pb2_grpc as pb_grpc
from pycontainerd.metadata.containers import Container, ContainerStore, TypedValue
from pycontainerd.metadata.db import Database
from pycontainerd.rpc import Server
from pycontainerd.services.containers import ContainersService

SPEC = TypedValue("types.containerd.io/opencontainers/runtime-spec/1/Spec", b'{"ociVersion":"1.0.2"}')


def _c(cid: str = "c1", created: int = 10, updated: int = 10, **kw: object) -> Container:
    base: dict[str, object] = {"id": cid, "runtime_name": "io.containerd.runc.v2", "spec": SPEC,
                               "created_at_ns": created, "updated_at_ns": updated}
    base.update(kw)
    return Container(**base)  # type: ignore[arg-type]


def test_liststream_over_grpc_sends_each_record_and_follows_updates(tmp_path: Path) -> None:
    async def run() -> None:
        db = Database(tmp_path / "meta.db")
        await db.open()
        store = ContainerStore(db)
        server = Server()
        service = ContainersService(store)
        service.add_to_server(server)
        sock = f"/tmp/pycd-unit-ls-{os.getpid()}.sock"  # tmp_path may be too long for a socket path
        await server.serve_unix(sock)
        try:
            for i in range(3):
                await store.create("ns", _c(f"c{i}", labels={"i": str(i)}))
            md = (("containerd-namespace", "ns"),)
            async with grpc.aio.insecure_channel(f"unix:{sock}") as ch:
                stub = pb_grpc.ContainersStub(ch)

                async def listed() -> list[pb.Container]:
                    return [m.container async for m in stub.ListStream(pb.ListContainersRequest(), metadata=md)]

                got = await listed()
                assert [c.id for c in got] == ["c0", "c1", "c2"]
                assert [c.labels["i"] for c in got] == ["0", "1", "2"]
                assert got[0].runtime.name == "io.containerd.runc.v2" and got[0].spec.value == SPEC.value
                # an update is seen on the next list
                await store.update("ns", _c("c1", labels={"i": "changed"}), ["labels"])
                assert [c.labels["i"] for c in await listed()] == ["0", "changed", "2"]
                filtered = [m.container.id async for m in
                            stub.ListStream(pb.ListContainersRequest(filters=["labels.i==2"]), metadata=md)]
                assert filtered == ["c2"]
                resp = await stub.List(pb.ListContainersRequest(), metadata=md)
                assert [c.id for c in resp.containers] == ["c0", "c1", "c2"]
                with pytest.raises(grpc.aio.AioRpcError) as err:
                    await stub.Get(pb.GetContainerRequest(id="nope"), metadata=md)
                assert err.value.code() == grpc.StatusCode.NOT_FOUND
        finally:
            await server.stop(None)
            db.close()
            if os.path.exists(sock):
                os.unlink(sock)

    asyncio.run(run())
