"""Leases service: Create, Delete, List, AddResource, DeleteResource, ListResources."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..metadata.gc import Scheduler
from ..metadata.leases import Lease, LeaseStore, Resource
from ..metadata.plugin import Metadata
from ..plugin import InitContext, Registration, types
from ..rpc import Server
from .common import DeferredModule, add_servicer, namespace_of, ts_from_ns

if TYPE_CHECKING:
    from google.protobuf import empty_pb2

    from ..api.services.leases.v1 import leases_pb2 as pb
else:  # imported at the service's first call (W6, idle PSS)
    pb = DeferredModule(globals(), "pb", "..api.services.leases.v1.leases_pb2", package="containerd.services.leases.v1")
    empty_pb2 = DeferredModule(globals(), "empty_pb2", "google.protobuf.empty_pb2")


def lease_pb(lease: Lease) -> pb.Lease:
    return pb.Lease(id=lease.id, created_at=ts_from_ns(lease.created_at), labels=lease.labels)


def _resource(r: pb.Resource) -> Resource:
    return Resource(id=r.id, type=r.type)


class LeasesService:
    def __init__(self, store: LeaseStore) -> None:
        self.store = store

    async def Create(self, request: pb.CreateRequest, context: Any) -> pb.CreateResponse:
        lease = await self.store.create(namespace_of(context), request.id, dict(request.labels))
        return pb.CreateResponse(lease=lease_pb(lease))

    async def Delete(self, request: pb.DeleteRequest, context: Any) -> empty_pb2.Empty:
        await self.store.delete(namespace_of(context), request.id, sync=request.sync)
        return empty_pb2.Empty()

    async def List(self, request: pb.ListRequest, context: Any) -> pb.ListResponse:
        leases = await self.store.list(namespace_of(context), list(request.filters))
        return pb.ListResponse(leases=[lease_pb(lease) for lease in leases])

    async def AddResource(self, request: pb.AddResourceRequest, context: Any) -> empty_pb2.Empty:
        await self.store.add_resource(namespace_of(context), request.id, _resource(request.resource))
        return empty_pb2.Empty()

    async def DeleteResource(self, request: pb.DeleteResourceRequest, context: Any) -> empty_pb2.Empty:
        await self.store.delete_resource(namespace_of(context), request.id, _resource(request.resource))
        return empty_pb2.Empty()

    async def ListResources(self, request: pb.ListResourcesRequest, context: Any) -> pb.ListResourcesResponse:
        res = await self.store.list_resources(namespace_of(context), request.id)
        return pb.ListResourcesResponse(resources=[pb.Resource(id=r.id, type=r.type) for r in res])

    def add_to_server(self, server: Server) -> None:
        add_servicer(server, self, pb, "Leases")


async def _init_manager(ctx: InitContext) -> LeaseStore:
    meta = ctx.require(Metadata, types.METADATA)
    gc = ctx.optional(Scheduler, types.GC, "scheduler")
    return LeaseStore(meta.db, collect=gc.run_now if gc is not None else None)


async def _init_service(ctx: InitContext) -> LeasesService:
    return LeasesService(ctx.get(types.LEASE, "manager"))


REGISTRATIONS = [
    Registration(type=types.LEASE, id="manager", init=_init_manager, requires=(types.METADATA, types.GC)),
    Registration(type=types.GRPC, id="leases", init=_init_service, requires=(types.LEASE,)),
]
