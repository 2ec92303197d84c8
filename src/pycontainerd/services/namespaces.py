"""Namespaces service: create, get, list, update labels, delete (``ctr namespaces``)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..metadata.namespaces import Namespace, NamespaceStore
from ..plugin import InitContext, Registration, types
from ..rpc import Server
from .common import DeferredModule, add_servicer, field_paths

if TYPE_CHECKING:
    from google.protobuf import empty_pb2

    from ..api.services.namespaces.v1 import namespaces_pb2 as pb
else:  # imported at the service's first call (W6, idle PSS)
    pb = DeferredModule(
        globals(), "pb", "..api.services.namespaces.v1.namespaces_pb2",
        package="containerd.services.namespaces.v1",
    )
    empty_pb2 = DeferredModule(globals(), "empty_pb2", "google.protobuf.empty_pb2")


def _pb(ns: Namespace) -> pb.Namespace:
    return pb.Namespace(name=ns.name, labels=ns.labels)


class NamespacesService:
    def __init__(self, store: NamespaceStore) -> None:
        self.store = store

    async def Get(self, request: pb.GetNamespaceRequest, context: Any) -> pb.GetNamespaceResponse:
        return pb.GetNamespaceResponse(namespace=_pb(await self.store.get(request.name)))

    async def List(self, request: pb.ListNamespacesRequest, context: Any) -> pb.ListNamespacesResponse:
        return pb.ListNamespacesResponse(namespaces=[_pb(n) for n in await self.store.list()])

    async def Create(self, request: pb.CreateNamespaceRequest, context: Any) -> pb.CreateNamespaceResponse:
        ns = await self.store.create(request.namespace.name, dict(request.namespace.labels))
        return pb.CreateNamespaceResponse(namespace=_pb(ns))

    async def Update(self, request: pb.UpdateNamespaceRequest, context: Any) -> pb.UpdateNamespaceResponse:
        paths = field_paths(request.update_mask) if request.HasField("update_mask") else []
        ns = await self.store.update(request.namespace.name, dict(request.namespace.labels), paths)
        return pb.UpdateNamespaceResponse(namespace=_pb(ns))

    async def Delete(self, request: pb.DeleteNamespaceRequest, context: Any) -> empty_pb2.Empty:
        await self.store.delete(request.name)
        return empty_pb2.Empty()

    def add_to_server(self, server: Server) -> None:
        add_servicer(server, self, pb, "Namespaces")


async def _init(ctx: InitContext) -> NamespacesService:
    return NamespacesService(NamespaceStore(ctx.daemon.db, ctx.daemon.exchange))


REGISTRATIONS = [Registration(type=types.GRPC, id="namespaces", init=_init, requires=(types.METADATA,))]
