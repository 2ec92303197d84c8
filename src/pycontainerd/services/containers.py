"""Containers service: Get, List, ListStream, Create, Update, Delete over the container store."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from google.protobuf import any_pb2, empty_pb2

from .. import errdefs
from ..api.services.containers.v1 import containers_pb2 as pb
from ..metadata.containers import Container, ContainerStore, TypedValue
from ..plugin import InitContext, Registration, types
from ..rpc import Server
from .common import add_servicer, field_paths, namespace_of, ns_from_ts, ts_from_ns


def _typed(a: any_pb2.Any) -> TypedValue:
    return TypedValue(a.type_url, a.value)


def _any(v: TypedValue) -> any_pb2.Any:
    return any_pb2.Any(type_url=v.type_url, value=v.value)


def from_pb(c: pb.Container) -> Container:
    return Container(
        id=c.id,
        runtime_name=c.runtime.name if c.HasField("runtime") else "",
        spec=_typed(c.spec) if c.HasField("spec") else None,
        runtime_options=(
            _typed(c.runtime.options) if c.HasField("runtime") and c.runtime.HasField("options") else None
        ),
        labels=dict(c.labels),
        image=c.image,
        snapshotter=c.snapshotter,
        snapshot_key=c.snapshot_key,
        sandbox=c.sandbox,
        extensions={k: _typed(v) for k, v in c.extensions.items()},
        created_at_ns=ns_from_ts(c.created_at) if c.HasField("created_at") else 0,
        updated_at_ns=ns_from_ts(c.updated_at) if c.HasField("updated_at") else 0,
    )


def to_pb(c: Container) -> pb.Container:
    out = pb.Container(
        id=c.id,
        labels=c.labels,
        image=c.image,
        snapshotter=c.snapshotter,
        snapshot_key=c.snapshot_key,
        sandbox=c.sandbox,
        created_at=ts_from_ns(c.created_at_ns),
        updated_at=ts_from_ns(c.updated_at_ns),
    )
    out.runtime.name = c.runtime_name
    if c.runtime_options is not None:
        out.runtime.options.CopyFrom(_any(c.runtime_options))
    if c.spec is not None:
        out.spec.CopyFrom(_any(c.spec))
    for k, v in c.extensions.items():
        out.extensions[k].CopyFrom(_any(v))
    return out


class ContainersService:
    def __init__(self, store: ContainerStore) -> None:
        self.store = store

    async def Get(self, request: pb.GetContainerRequest, context: Any) -> pb.GetContainerResponse:
        c = await self.store.get(namespace_of(context), request.id)
        return pb.GetContainerResponse(container=to_pb(c))

    async def List(self, request: pb.ListContainersRequest, context: Any) -> pb.ListContainersResponse:
        cs = await self.store.list(namespace_of(context), list(request.filters))
        return pb.ListContainersResponse(containers=[to_pb(c) for c in cs])

    async def ListStream(
        self, request: pb.ListContainersRequest, context: Any
    ) -> AsyncIterator[pb.ListContainerMessage]:
        for c in await self.store.list(namespace_of(context), list(request.filters)):
            yield pb.ListContainerMessage(container=to_pb(c))

    async def Create(self, request: pb.CreateContainerRequest, context: Any) -> pb.CreateContainerResponse:
        if not request.HasField("container"):
            raise errdefs.InvalidArgument("container must be set")
        c = await self.store.create(namespace_of(context), from_pb(request.container))
        return pb.CreateContainerResponse(container=to_pb(c))

    async def Update(self, request: pb.UpdateContainerRequest, context: Any) -> pb.UpdateContainerResponse:
        if not request.container.id:
            raise errdefs.InvalidArgument("Container.ID required")
        paths = field_paths(request.update_mask) if request.HasField("update_mask") else []
        c = await self.store.update(namespace_of(context), from_pb(request.container), paths)
        return pb.UpdateContainerResponse(container=to_pb(c))

    async def Delete(self, request: pb.DeleteContainerRequest, context: Any) -> empty_pb2.Empty:
        await self.store.delete(namespace_of(context), request.id)
        return empty_pb2.Empty()

    def add_to_server(self, server: Server) -> None:
        add_servicer(server, self, pb, "Containers")


async def _init_store(ctx: InitContext) -> ContainerStore:
    return ContainerStore(ctx.daemon.db, ctx.daemon.exchange)


async def _init_service(ctx: InitContext) -> ContainersService:
    return ContainersService(ctx.get(types.SERVICE, "containers-service"))


REGISTRATIONS = [
    Registration(type=types.SERVICE, id="containers-service", init=_init_store, requires=(types.METADATA,)),
    Registration(type=types.GRPC, id="containers", init=_init_service, requires=(types.SERVICE,)),
]
