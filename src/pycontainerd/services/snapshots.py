"""Snapshots service: Prepare View Mounts Commit Remove Stat Update List* Usage Cleanup.

The request's ``snapshotter`` picks the backend (``overlayfs``, ``native``); an empty name
is InvalidArgument, as containerd answers ("snapshotter argument missing").  Every call
works in the caller's namespace and, for writes, its lease (``metadata.snapshots``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import TYPE_CHECKING, Any

from .. import errdefs
from ..metadata.plugin import Metadata
from ..metadata.snapshots import NamespacedSnapshotter, SnapshotStore
from ..mount import Mount
from ..plugin import InitContext, Registration, types
from ..rpc import Server
from ..snapshots.interfaces import Info, Kind
from .common import DeferredModule, add_servicer, field_paths, lease_of, namespace_of, ts_from_ns

if TYPE_CHECKING:
    from google.protobuf import empty_pb2

    from ..api.services.snapshots.v1 import snapshots_pb2 as pb
    from ..api.types import mount_pb2
else:  # imported at the service's first call (W6, idle PSS)
    pb = DeferredModule(
        globals(), "pb", "..api.services.snapshots.v1.snapshots_pb2",
        package="containerd.services.snapshots.v1",
    )
    mount_pb2 = DeferredModule(globals(), "mount_pb2", "..api.types.mount_pb2")
    empty_pb2 = DeferredModule(globals(), "empty_pb2", "google.protobuf.empty_pb2")

LIST_BATCH = 100


class Snapshotters:
    """The namespaced stores of every loaded snapshotter (plugin ``snapshots-service``)."""

    def __init__(self, stores: dict[str, SnapshotStore]) -> None:
        self.stores = stores

    def get(self, name: str) -> SnapshotStore:
        if not name:
            raise errdefs.InvalidArgument("snapshotter argument missing")
        store = self.stores.get(name)
        if store is None:
            raise errdefs.InvalidArgument(f"snapshotter not loaded: {name}")
        return store

    def namespaced(self, name: str, namespace: str, lease: str | None = None) -> NamespacedSnapshotter:
        return self.get(name).namespaced(namespace, lease)


def mounts_pb(mounts: Sequence[Mount]) -> list[mount_pb2.Mount]:
    return [mount_pb2.Mount(type=m.type, source=m.source, target=m.target, options=m.options) for m in mounts]


def mounts_from_pb(mounts: Sequence[mount_pb2.Mount]) -> list[Mount]:
    return [Mount(type=m.type, source=m.source, options=list(m.options), target=m.target) for m in mounts]


def info_pb(info: Info) -> pb.Info:
    return pb.Info(
        name=info.name,
        parent=info.parent,
        kind=int(info.kind),  # type: ignore[arg-type]
        created_at=ts_from_ns(info.created_at),
        updated_at=ts_from_ns(info.updated_at),
        labels=info.labels,
    )


class SnapshotsService:
    def __init__(self, snapshotters: Snapshotters) -> None:
        self.snapshotters = snapshotters

    def _sn(self, name: str, context: Any) -> NamespacedSnapshotter:
        store = self.snapshotters.get(name)
        return store.namespaced(namespace_of(context), lease_of(context))

    async def Prepare(self, request: pb.PrepareSnapshotRequest, context: Any) -> pb.PrepareSnapshotResponse:
        mounts = await self._sn(request.snapshotter, context).prepare(request.key, request.parent, dict(request.labels))
        return pb.PrepareSnapshotResponse(mounts=mounts_pb(mounts))

    async def View(self, request: pb.ViewSnapshotRequest, context: Any) -> pb.ViewSnapshotResponse:
        mounts = await self._sn(request.snapshotter, context).view(request.key, request.parent, dict(request.labels))
        return pb.ViewSnapshotResponse(mounts=mounts_pb(mounts))

    async def Mounts(self, request: pb.MountsRequest, context: Any) -> pb.MountsResponse:
        mounts = await self._sn(request.snapshotter, context).mounts(request.key)
        return pb.MountsResponse(mounts=mounts_pb(mounts))

    async def Commit(self, request: pb.CommitSnapshotRequest, context: Any) -> empty_pb2.Empty:
        await self._sn(request.snapshotter, context).commit(request.name, request.key, dict(request.labels))
        return empty_pb2.Empty()

    async def Remove(self, request: pb.RemoveSnapshotRequest, context: Any) -> empty_pb2.Empty:
        await self._sn(request.snapshotter, context).remove(request.key)
        return empty_pb2.Empty()

    async def Stat(self, request: pb.StatSnapshotRequest, context: Any) -> pb.StatSnapshotResponse:
        info = await self._sn(request.snapshotter, context).stat(request.key)
        return pb.StatSnapshotResponse(info=info_pb(info))

    async def Update(self, request: pb.UpdateSnapshotRequest, context: Any) -> pb.UpdateSnapshotResponse:
        paths = field_paths(request.update_mask) if request.HasField("update_mask") else []
        want = Info(
            name=request.info.name,
            kind=Kind(request.info.kind) if request.info.kind in (0, 1, 2, 3) else Kind.UNKNOWN,
            parent=request.info.parent,
            labels=dict(request.info.labels),
        )
        info = await self._sn(request.snapshotter, context).update(want, paths)
        return pb.UpdateSnapshotResponse(info=info_pb(info))

    async def List(self, request: pb.ListSnapshotsRequest, context: Any) -> AsyncIterator[pb.ListSnapshotsResponse]:
        infos = await self._sn(request.snapshotter, context).walk(list(request.filters))
        for i in range(0, len(infos), LIST_BATCH):
            yield pb.ListSnapshotsResponse(info=[info_pb(x) for x in infos[i : i + LIST_BATCH]])

    async def Usage(self, request: pb.UsageRequest, context: Any) -> pb.UsageResponse:
        usage = await self._sn(request.snapshotter, context).usage(request.key)
        return pb.UsageResponse(size=usage.size, inodes=usage.inodes)

    async def Cleanup(self, request: pb.CleanupRequest, context: Any) -> empty_pb2.Empty:
        await self.snapshotters.get(request.snapshotter).cleanup()
        return empty_pb2.Empty()

    def add_to_server(self, server: Server) -> None:
        add_servicer(server, self, pb, "Snapshots")


async def _init_store(ctx: InitContext) -> Snapshotters:
    return Snapshotters(dict(ctx.require(Metadata, types.METADATA).snapshotters))


async def _init_service(ctx: InitContext) -> SnapshotsService:
    return SnapshotsService(ctx.get(types.SERVICE, "snapshots-service"))


REGISTRATIONS = [
    Registration(
        type=types.SERVICE,
        id="snapshots-service",
        init=_init_store,
        requires=(types.METADATA,),
    ),
    Registration(type=types.GRPC, id="snapshots", init=_init_service, requires=(types.SERVICE,)),
]
