"""Client-side pull and unpack, the way ctr 1.6 does it.

``pull`` (``pyctr images pull``):

1. creates a lease (``containerd.io/gc.expire`` = now + 24 h) that every following call
   carries as ``containerd-lease``, so nothing is collected half-way;
2. resolves the reference at the registry (``remotes.Resolver``) — the daemon is not
   involved in HTTP at all;
3. walks the image from the root: manifests, indexes and configs are fetched, verified,
   and written through the Content service (ref ``<kind>-<digest>``) with their
   ``containerd.io/gc.ref.content.*`` child labels and
   ``containerd.io/distribution.source.<host>=<repo>``; for an index only the manifest
   best matching the platform (or all, with ``--all-platforms``) is followed; layers are
   streamed concurrently in 1 MiB messages, resuming an ingest left by an interrupted
   pull at its offset; a blob already in the store (``AlreadyExists`` on STAT) is skipped;
4. creates the image record (or replaces it on AlreadyExists);
5. unpacks (``unpack``) each platform into the snapshotter; 6. deletes the lease.

``unpack`` (also used by ``pyctr run`` for an image not yet unpacked): for each layer,
chain id ``C``: ``Snapshots.Stat(C)`` — present: next; else ``Prepare("extract-<nanos>-<rand>
C", parent)`` → ``Diff.Apply(layer, mounts)`` (the returned digest must be the layer's
diff id) → ``Commit(C)``; label the layer blob ``containerd.io/uncompressed``; finally label
the config ``containerd.io/gc.ref.snapshot.<snapshotter>=<top chain id>``.  AlreadyExists
from Prepare/Commit means someone else unpacked that layer concurrently.

The fetch and unpack algorithms are ``remotes.pull``, shared with the daemon's CRI pull;
this module supplies the gRPC side (content proxy, Snapshots/Diff services).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .. import errdefs
from ..api.services.diff.v1 import diff_pb2, diff_pb2_grpc
from ..api.services.snapshots.v1 import snapshots_pb2, snapshots_pb2_grpc
from ..api.types import mount_pb2
from ..images import handlers, reference
from ..images import platforms as plat
from ..images.models import Descriptor, Platform
from ..remotes import pull as shared
from ..remotes.resolver import Resolver
from .images import Image, desc_to_pb

if TYPE_CHECKING:
    from .core import Client

__all__ = ["PullResult", "distribution_source_label", "fetch", "pull", "unpack"]

ProgressFn = shared.ProgressFn
DISTRIBUTION_SOURCE_PREFIX = shared.DISTRIBUTION_SOURCE_PREFIX
UNCOMPRESSED = shared.UNCOMPRESSED
GC_REF_SNAPSHOT = shared.GC_REF_SNAPSHOT
DEFAULT_SNAPSHOTTER = "overlayfs"
DEFAULT_SNAPSHOTTER_LABEL = "containerd.io/defaults/snapshotter"
LEASE_EXPIRE = 24 * 3600
_SNAPSHOTS_STUB: Any = snapshots_pb2_grpc.SnapshotsStub
_DIFF_STUB: Any = diff_pb2_grpc.DiffStub

distribution_source_label = shared.distribution_source_label
ingest_ref = shared.ingest_ref
_merge_source = shared.merge_source


@dataclass
class PullResult:
    image: Image
    platforms: list[Platform] = field(default_factory=list)
    chain_ids: list[str] = field(default_factory=list)
    fetched: int = 0
    existing: int = 0
    bytes: int = 0


async def fetch(client: Client, resolver: Resolver, ref: str, *, matcher: plat.Matcher | None = None,
                progress: ProgressFn | None = None, max_concurrent: int | None = None,
                labels: dict[str, str] | None = None) -> tuple[Image, shared.Fetch]:
    """Resolve and fetch ``ref`` into the content store (no unpack); returns the image record.

    The caller should hold a lease (``client.with_lease``); ``pull`` does.
    """
    matcher = matcher or plat.default()
    progress = progress or shared.noop
    progress(ref, 0, 0, "resolving")
    name, root = await resolver.resolve(ref)
    progress(ref, 0, 0, "resolved")
    f = shared.Fetch(client.content, resolver.fetcher(name), name, matcher, progress, max_concurrent)
    await f.walk(root)
    img = await client.images.create_or_update(Image(name, root, dict(labels or {})))
    return img, f


async def pull(client: Client, ref: str, *, resolver: Resolver | None = None, platforms: Sequence[str] = (),
               all_platforms: bool = False, unpack: bool = True, snapshotter: str | None = None,
               progress: ProgressFn | None = None, max_concurrent: int | None = None,
               labels: dict[str, str] | None = None) -> PullResult:
    """Pull ``ref`` (normalized: ``busybox`` → ``docker.io/library/busybox:latest``) and unpack it."""
    ref = reference.normalize(ref)
    matcher = plat.matcher_for(platforms, all_platforms)
    own_resolver = resolver is None
    res = resolver or Resolver()
    try:
        async with client.leases.lease(expire=LEASE_EXPIRE) as lc:
            img, f = await fetch(lc, res, ref, matcher=matcher, progress=progress, max_concurrent=max_concurrent,
                                 labels=labels)
            result = PullResult(img, fetched=f.fetched, existing=f.existing, bytes=f.bytes)
            if unpack:
                if all_platforms:
                    todo = await handlers.platforms_of(shared.reader(lc.content), img.target)
                elif platforms:
                    todo = [plat.parse(p) for p in platforms]
                else:
                    todo = [plat.host()]
                for p in todo:
                    chain = await unpack_image(lc, img, platform=p, snapshotter=snapshotter, progress=progress)
                    result.platforms.append(p)
                    result.chain_ids.append(chain)
            return result
    finally:
        if own_resolver:
            await res.aclose()


async def snapshotter_name(client: Client, snapshotter: str | None) -> str:
    if snapshotter:
        return snapshotter
    try:
        ns = await client.namespaces.get(client.namespace)
    except errdefs.NotFound:
        return DEFAULT_SNAPSHOTTER
    return ns.labels.get(DEFAULT_SNAPSHOTTER_LABEL) or DEFAULT_SNAPSHOTTER


async def unpack_image(client: Client, img: Image, *, platform: Platform | None = None,
                       snapshotter: str | None = None, progress: ProgressFn | None = None) -> str:
    """Unpack ``img`` for ``platform`` (default: this host) into ``snapshotter``; returns the top chain id."""
    sn_name = await snapshotter_name(client, snapshotter)
    matcher = plat.only(platform) if platform is not None else plat.default()
    target = _GrpcLayerTarget(client, sn_name)
    _, top = await shared.unpack_layers(client.content, target, sn_name, img.name, img.target, matcher, progress)
    return top


class _GrpcLayerTarget:
    """``remotes.pull.LayerTarget`` over the daemon's Snapshots and Diff services."""

    def __init__(self, client: Client, snapshotter: str) -> None:
        self.client = client
        self.sn = snapshotter
        self.snaps: Any = _SNAPSHOTS_STUB(client.channel)
        self.differ: Any = _DIFF_STUB(client.channel)

    async def exists(self, key: str) -> bool:
        try:
            await self.client.unary(self.snaps.Stat, snapshots_pb2.StatSnapshotRequest(snapshotter=self.sn, key=key))
            return True
        except errdefs.NotFound:
            return False

    async def prepare(self, key: str, parent: str) -> Any:
        resp = await self.client.unary(self.snaps.Prepare, snapshots_pb2.PrepareSnapshotRequest(
            snapshotter=self.sn, key=key, parent=parent))
        return [mount_pb2.Mount(type=m.type, source=m.source, target=m.target, options=list(m.options))
                for m in resp.mounts]

    async def apply(self, layer: Descriptor, mounts: Any) -> str:
        applied = await self.client.unary(self.differ.Apply, diff_pb2.ApplyRequest(diff=desc_to_pb(layer),
                                                                                   mounts=mounts))
        return str(applied.applied.digest)

    async def commit(self, name: str, key: str) -> None:
        await self.client.unary(self.snaps.Commit, snapshots_pb2.CommitSnapshotRequest(
            snapshotter=self.sn, name=name, key=key))

    async def remove(self, key: str) -> None:
        await self.client.unary(self.snaps.Remove, snapshots_pb2.RemoveSnapshotRequest(snapshotter=self.sn, key=key))


async def unpack(client: Client, name: str, *, snapshotter: str | None = None,
                 platform: Platform | str | None = None, progress: ProgressFn | None = None) -> str:
    """Unpack the image record ``name`` (already fetched) under a temporary lease; returns the chain id."""
    p = plat.parse(platform) if isinstance(platform, str) else platform
    async with client.leases.lease(expire=LEASE_EXPIRE) as lc:
        img = await lc.images.get(name)
        return await unpack_image(lc, img, platform=p, snapshotter=snapshotter, progress=progress)
