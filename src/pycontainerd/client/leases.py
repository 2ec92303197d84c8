"""The Leases service over gRPC: leases keep content and snapshots alive while work is in flight.

    lease = await client.leases.create(expire=24 * 3600)       # ctr's default for pulls
    leased = client.with_lease(lease.id)                        # every call carries containerd-lease
    ...
    await client.leases.delete(lease.id)

``lease()`` is the same as an async context manager.  A lease with the label
``containerd.io/gc.expire`` (RFC 3339) is removed by the GC after that time, so an
interrupted pull does not pin its blobs forever.
"""

from __future__ import annotations

import base64
import builtins
import os
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from google.protobuf import timestamp_pb2

from .. import timestamps
from ..api.services.leases.v1 import leases_pb2, leases_pb2_grpc

if TYPE_CHECKING:
    from .core import Client

__all__ = ["GC_EXPIRE", "Lease", "Leases", "Resource", "random_id"]

GC_EXPIRE = "containerd.io/gc.expire"
GC_FLAT = "containerd.io/gc.flat"


def random_id() -> str:
    """``<nanoseconds>-<4 random base64url chars>``, the shape containerd's WithRandomID makes."""
    return f"{time.time_ns() % 1_000_000_000}-{base64.urlsafe_b64encode(os.urandom(3)).decode()}"


def _dt(ts: timestamp_pb2.Timestamp) -> datetime | None:
    if not ts.seconds and not ts.nanos:
        return None
    return datetime.fromtimestamp(ts.seconds + ts.nanos / 1e9, UTC)


@dataclass
class Lease:
    id: str
    created_at: datetime | None = None
    labels: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Resource:
    id: str
    type: str  # "content", "snapshots/<snapshotter>", "ingests"


class Leases:
    stub_cls: Any = leases_pb2_grpc.LeasesStub
    pb = leases_pb2

    def __init__(self, client: Client) -> None:
        self.client = client
        self.raw = self.stub_cls(client.channel)

    async def create(self, id: str | None = None, labels: Mapping[str, str] | None = None, *,
                     expire: float | timedelta | None = None) -> Lease:
        """Create a lease (random id unless given); ``expire`` seconds adds ``gc.expire``."""
        lbls = dict(labels or {})
        if expire is not None:
            delta = expire if isinstance(expire, timedelta) else timedelta(seconds=expire)
            lbls[GC_EXPIRE] = timestamps.format_seconds(datetime.now(UTC) + delta)
        req = leases_pb2.CreateRequest(id=id or random_id(), labels=lbls)
        resp = await self.client.unary(self.raw.Create, req)
        return Lease(resp.lease.id, _dt(resp.lease.created_at), dict(resp.lease.labels))

    async def delete(self, id: str, sync: bool = False) -> None:
        await self.client.unary(self.raw.Delete, leases_pb2.DeleteRequest(id=id, sync=sync))

    async def list(self, filters: Sequence[str] = ()) -> builtins.list[Lease]:
        resp = await self.client.unary(self.raw.List, leases_pb2.ListRequest(filters=list(filters)))
        return [Lease(x.id, _dt(x.created_at), dict(x.labels)) for x in resp.leases]

    async def add_resource(self, id: str, resource: Resource) -> None:
        await self.client.unary(self.raw.AddResource, leases_pb2.AddResourceRequest(
            id=id, resource=leases_pb2.Resource(id=resource.id, type=resource.type)))

    async def delete_resource(self, id: str, resource: Resource) -> None:
        await self.client.unary(self.raw.DeleteResource, leases_pb2.DeleteResourceRequest(
            id=id, resource=leases_pb2.Resource(id=resource.id, type=resource.type)))

    async def list_resources(self, id: str) -> builtins.list[Resource]:
        resp = await self.client.unary(self.raw.ListResources, leases_pb2.ListResourcesRequest(id=id))
        return [Resource(r.id, r.type) for r in resp.resources]

    @asynccontextmanager
    async def lease(self, *, expire: float | None = 24 * 3600, labels: Mapping[str, str] | None = None,
                    ) -> AsyncIterator[Client]:
        """A temporary lease; yields a client whose calls carry it, deletes it on exit."""
        existing = self.client.lease
        if existing:
            yield self.client
            return
        lease = await self.create(labels=labels, expire=expire)
        try:
            yield self.client.with_lease(lease.id)
        finally:
            from .. import errdefs

            try:
                await self.delete(lease.id)
            except errdefs.NotFound:
                pass
