"""Snapshots over gRPC: a ``Snapshotter`` (snapshots.interfaces) for one named snapshotter.

    sn = client.snapshots.snapshotter("overlayfs")      # or: await client.snapshots.default()
    mounts = await sn.prepare("my-key", parent=chain_id)
    info = await sn.stat("my-key")
    await sn.remove("my-key")

The proxy satisfies the same Protocol as the daemon's own snapshotters, so the snapshotter
contract suite can run against it; errors arrive as ``errdefs`` kinds.
"""

from __future__ import annotations

import builtins
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from google.protobuf import field_mask_pb2, timestamp_pb2

from ..api.services.snapshots.v1 import snapshots_pb2, snapshots_pb2_grpc
from ..api.types import mount_pb2
from ..mount import Mount
from ..snapshots.interfaces import Info, Kind, Usage

if TYPE_CHECKING:
    from .core import Client

DEFAULT_SNAPSHOTTER = "overlayfs"
_STUB: Any = snapshots_pb2_grpc.SnapshotsStub
DEFAULT_SNAPSHOTTER_LABEL = "containerd.io/defaults/snapshotter"

__all__ = ["DEFAULT_SNAPSHOTTER", "Info", "Kind", "Snapshots", "SnapshotterProxy", "Usage"]


def _ns(ts: timestamp_pb2.Timestamp) -> int:
    return int(ts.seconds) * 1_000_000_000 + int(ts.nanos)


def mounts_from_pb(items: Sequence[mount_pb2.Mount]) -> list[Mount]:
    return [Mount(m.type, m.source, list(m.options), m.target) for m in items]


def mounts_to_pb(items: Sequence[Mount]) -> list[mount_pb2.Mount]:
    return [mount_pb2.Mount(type=m.type, source=m.source, target=m.target, options=list(m.options)) for m in items]


def info_from_pb(i: snapshots_pb2.Info) -> Info:
    return Info(name=i.name, kind=Kind(int(i.kind)), parent=i.parent, labels=dict(i.labels),
                created_at=_ns(i.created_at), updated_at=_ns(i.updated_at))


class SnapshotterProxy:
    """One snapshotter of the daemon, addressed by name on every call."""

    def __init__(self, client: Client, name: str) -> None:
        self.client = client
        self.name = name
        self.raw: Any = _STUB(client.channel)

    async def prepare(self, key: str, parent: str = "", labels: Mapping[str, str] | None = None) -> list[Mount]:
        req = snapshots_pb2.PrepareSnapshotRequest(snapshotter=self.name, key=key, parent=parent,
                                                   labels=dict(labels or {}))
        resp = await self.client.unary(self.raw.Prepare, req)
        return mounts_from_pb(resp.mounts)

    async def view(self, key: str, parent: str = "", labels: Mapping[str, str] | None = None) -> list[Mount]:
        req = snapshots_pb2.ViewSnapshotRequest(snapshotter=self.name, key=key, parent=parent,
                                                labels=dict(labels or {}))
        resp = await self.client.unary(self.raw.View, req)
        return mounts_from_pb(resp.mounts)

    async def mounts(self, key: str) -> list[Mount]:
        resp = await self.client.unary(self.raw.Mounts, snapshots_pb2.MountsRequest(snapshotter=self.name, key=key))
        return mounts_from_pb(resp.mounts)

    async def commit(self, name: str, key: str, labels: Mapping[str, str] | None = None) -> None:
        req = snapshots_pb2.CommitSnapshotRequest(snapshotter=self.name, name=name, key=key, labels=dict(labels or {}))
        await self.client.unary(self.raw.Commit, req)

    async def remove(self, key: str) -> None:
        await self.client.unary(self.raw.Remove, snapshots_pb2.RemoveSnapshotRequest(snapshotter=self.name, key=key))

    async def stat(self, key: str) -> Info:
        resp = await self.client.unary(self.raw.Stat, snapshots_pb2.StatSnapshotRequest(snapshotter=self.name, key=key))
        return info_from_pb(resp.info)

    async def update(self, info: Info, fieldpaths: Sequence[str] = ()) -> Info:
        req = snapshots_pb2.UpdateSnapshotRequest(
            snapshotter=self.name,
            info=snapshots_pb2.Info(name=info.name, kind=int(info.kind), parent=info.parent,  # type: ignore[arg-type]
                                    labels=dict(info.labels)),
            update_mask=field_mask_pb2.FieldMask(paths=list(fieldpaths)) if fieldpaths else None,
        )
        resp = await self.client.unary(self.raw.Update, req)
        return info_from_pb(resp.info)

    async def set_labels(self, key: str, labels: Mapping[str, str]) -> Info:
        """Set (or with an empty value, remove) each given label, like ``ctr snapshots label``."""
        info = Info(name=key, kind=Kind.UNKNOWN, labels={k: v for k, v in labels.items() if v})
        return await self.update(info, [f"labels.{k}" for k in labels])

    async def usage(self, key: str) -> Usage:
        resp = await self.client.unary(self.raw.Usage, snapshots_pb2.UsageRequest(snapshotter=self.name, key=key))
        return Usage(size=int(resp.size), inodes=int(resp.inodes))

    async def list(self, filters: Sequence[str] = ()) -> AsyncIterator[Info]:
        req = snapshots_pb2.ListSnapshotsRequest(snapshotter=self.name, filters=list(filters))
        async for resp in self.client.stream(self.raw.List, req):
            for i in resp.info:
                yield info_from_pb(i)

    async def walk(self, filters: Sequence[str] = ()) -> builtins.list[Info]:
        return [i async for i in self.list(filters)]

    async def cleanup(self) -> None:
        await self.client.unary(self.raw.Cleanup, snapshots_pb2.CleanupRequest(snapshotter=self.name))

    async def close(self) -> None:
        return None


class Snapshots:
    """The Snapshots service: pick a snapshotter by name (``snapshotter(name)``) or the namespace default."""

    stub_cls: Any = snapshots_pb2_grpc.SnapshotsStub
    pb = snapshots_pb2

    def __init__(self, client: Client) -> None:
        self.client = client
        self.raw = self.stub_cls(client.channel)

    def snapshotter(self, name: str = "") -> SnapshotterProxy:
        return SnapshotterProxy(self.client, name or DEFAULT_SNAPSHOTTER)

    __getitem__ = snapshotter

    async def default_name(self) -> str:
        """The namespace's default snapshotter (label ``containerd.io/defaults/snapshotter``), else overlayfs."""
        ns = await self.client.namespaces.get(self.client.namespace)
        return ns.labels.get(DEFAULT_SNAPSHOTTER_LABEL) or DEFAULT_SNAPSHOTTER

    async def resolve(self, name: str = "") -> SnapshotterProxy:
        return self.snapshotter(name or await self.default_name())
