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
"""

from __future__ import annotations

import asyncio
import base64
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .. import errdefs
from ..api.services.diff.v1 import diff_pb2, diff_pb2_grpc
from ..api.services.snapshots.v1 import snapshots_pb2, snapshots_pb2_grpc
from ..api.types import mount_pb2
from ..content.interfaces import Info
from ..images import blobs, handlers, reference
from ..images import mediatypes as mt
from ..images import platforms as plat
from ..images.models import Descriptor, Platform
from ..remotes.resolver import Resolver
from .images import Image, desc_to_pb

if TYPE_CHECKING:
    from .content import Content
    from .core import Client

__all__ = ["PullResult", "distribution_source_label", "fetch", "pull", "unpack"]

ProgressFn = Callable[[str, int, int, str], None]
"""``progress(key, done_bytes, total_bytes, status)``; status: resolving, downloading, done, exists,
failed, unpacking, unpacked."""

DISTRIBUTION_SOURCE_PREFIX = "containerd.io/distribution.source."
UNCOMPRESSED = "containerd.io/uncompressed"
GC_REF_SNAPSHOT = "containerd.io/gc.ref.snapshot."
DEFAULT_SNAPSHOTTER = "overlayfs"
DEFAULT_SNAPSHOTTER_LABEL = "containerd.io/defaults/snapshotter"
LEASE_EXPIRE = 24 * 3600
_SNAPSHOTS_STUB: Any = snapshots_pb2_grpc.SnapshotsStub
_DIFF_STUB: Any = diff_pb2_grpc.DiffStub


def _noop(key: str, done: int, total: int, status: str) -> None:
    return None


def distribution_source_label(ref: reference.Reference) -> str:
    """``containerd.io/distribution.source.<registry hostname>`` (port dropped, as containerd does)."""
    host = ref.domain
    if host.startswith("["):
        host = host[1:].split("]", 1)[0]
    elif ":" in host:
        host = host.rsplit(":", 1)[0]
    return DISTRIBUTION_SOURCE_PREFIX + host


def ingest_ref(desc: Descriptor) -> str:
    return f"{mt.kind(desc.media_type)}-{desc.digest}"


def _merge_source(existing: str, repo: str) -> str:
    repos = [r for r in existing.split(",") if r] if existing else []
    if repo not in repos:
        repos.append(repo)
    return ",".join(sorted(repos))


@dataclass
class PullResult:
    image: Image
    platforms: list[Platform] = field(default_factory=list)
    chain_ids: list[str] = field(default_factory=list)
    fetched: int = 0
    existing: int = 0
    bytes: int = 0


class _Fetch:
    def __init__(self, client: Client, resolver: Resolver, name: str, matcher: plat.Matcher,
                 progress: ProgressFn, max_concurrent: int | None) -> None:
        self.content: Content = client.content
        self.fetcher = resolver.fetcher(name)
        r = reference.parse(name)
        self.source_key = distribution_source_label(r)
        self.repo = r.path
        self.matcher = matcher
        self.progress = progress
        self.sem = asyncio.Semaphore(max_concurrent) if max_concurrent else None
        self.fetched = self.existing = self.bytes = 0

    async def _label_existing(self, desc: Descriptor, extra: dict[str, str]) -> None:
        try:
            info = await self.content.info(desc.digest)
        except errdefs.NotFound:
            return
        labels = dict(extra)
        labels[self.source_key] = _merge_source(info.labels.get(self.source_key, ""), self.repo)
        changed = {k: v for k, v in labels.items() if info.labels.get(k) != v}
        if changed:
            await self.content.update(Info(desc.digest, desc.size, labels=changed),
                                      [f"labels.{k}" for k in changed])

    def _children(self, desc: Descriptor, data: bytes) -> list[Descriptor]:
        kids = handlers.children(desc, data)
        if mt.is_index(desc.media_type):
            kids = handlers.filter_platforms(desc, kids, self.matcher, limit=0 if self.matcher.all else 1)
            if not kids:
                raise errdefs.NotFound(f"manifest {desc.digest}: no match for platform {self.matcher} in manifest")
        return kids

    async def small(self, desc: Descriptor) -> list[Descriptor]:
        """Manifests, indexes, configs: fetch into memory, verify, store with labels; return children."""
        key = ingest_ref(desc)
        if not (mt.is_manifest(desc.media_type) or mt.is_index(desc.media_type) or mt.is_config(desc.media_type)):
            raise errdefs.InvalidArgument(f"unknown media type {desc.media_type!r} for {desc.digest}")
        try:
            w = await blobs.open_writer(self.content, key, desc.size, desc.digest)
        except errdefs.AlreadyExists:
            self.existing += 1
            self.progress(key, desc.size, desc.size, "exists")
            kids: list[Descriptor] = []
            if not mt.is_config(desc.media_type):
                kids = self._children(desc, await blobs.read_blob(self.content, desc))
            await self._label_existing(desc, handlers.child_gc_labels(kids))
            return kids
        try:
            self.progress(key, 0, desc.size, "downloading")
            data = await self.fetcher.fetch_bytes(desc)
            kids = [] if mt.is_config(desc.media_type) else self._children(desc, data)
            labels = handlers.child_gc_labels(kids)
            labels[self.source_key] = self.repo
            st = await w.status()
            if st.offset:
                await w.truncate(0)
            await w.write(data)
            try:
                await w.commit(desc.size, desc.digest, labels)
            except errdefs.AlreadyExists:
                await self._label_existing(desc, labels)
            self.fetched += 1
            self.bytes += desc.size
            self.progress(key, desc.size, desc.size, "done")
            return kids
        except BaseException:
            self.progress(key, 0, desc.size, "failed")
            await w.close()
            await _abort_quietly(self.content, key)
            raise
        finally:
            await w.close()

    async def layer(self, desc: Descriptor) -> None:
        key = ingest_ref(desc)
        if self.sem is not None:
            await self.sem.acquire()
        try:
            try:
                w = await blobs.open_writer(self.content, key, desc.size, desc.digest)
            except errdefs.AlreadyExists:
                self.existing += 1
                self.progress(key, desc.size, desc.size, "exists")
                await self._label_existing(desc, {})
                return
            ok = False
            try:
                st = await w.status()
                offset = st.offset
                if offset > desc.size:
                    await w.truncate(0)
                    offset = 0
                self.progress(key, offset, desc.size, "downloading")

                def on_progress(n: int) -> None:
                    self.progress(key, n, desc.size, "downloading")

                await self.fetcher.copy_blob(desc, w.write, offset=offset, progress=on_progress)
                try:
                    await w.commit(desc.size, desc.digest, {self.source_key: self.repo})
                except errdefs.AlreadyExists:
                    await self._label_existing(desc, {})
                except errdefs.FailedPrecondition as exc:
                    raise errdefs.FailedPrecondition(
                        f"layer {desc.digest} from {self.repo} failed verification: {exc}") from exc
                ok = True
                self.fetched += 1
                self.bytes += desc.size - offset
                self.progress(key, desc.size, desc.size, "done")
            except (errdefs.FailedPrecondition, errdefs.InvalidArgument):
                # corrupt content must not linger; an interrupted transfer keeps its ingest to resume
                await w.close()
                await _abort_quietly(self.content, key)
                raise
            finally:
                await w.close()
                if not ok:
                    self.progress(key, 0, desc.size, "failed")
        finally:
            if self.sem is not None:
                self.sem.release()

    async def walk(self, desc: Descriptor) -> None:
        if mt.is_layer(desc.media_type) or not (
                mt.is_manifest(desc.media_type) or mt.is_index(desc.media_type) or mt.is_config(desc.media_type)):
            await self.layer(desc)
            return
        kids = await self.small(desc)
        if kids:
            async with asyncio.TaskGroup() as tg:
                for k in kids:
                    tg.create_task(self.walk(k))


async def _abort_quietly(content: Content, ref: str) -> None:
    try:
        await content.abort(ref)
    except errdefs.ContainerdError:
        pass


def _unwrap(exc: BaseException) -> BaseException:
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) >= 1:
        exc = exc.exceptions[0]
    return exc


async def fetch(client: Client, resolver: Resolver, ref: str, *, matcher: plat.Matcher | None = None,
                progress: ProgressFn | None = None, max_concurrent: int | None = None,
                labels: dict[str, str] | None = None) -> tuple[Image, _Fetch]:
    """Resolve and fetch ``ref`` into the content store (no unpack); returns the image record.

    The caller should hold a lease (``client.with_lease``); ``pull`` does.
    """
    matcher = matcher or plat.default()
    progress = progress or _noop
    progress(ref, 0, 0, "resolving")
    name, root = await resolver.resolve(ref)
    progress(ref, 0, 0, "resolved")
    f = _Fetch(client, resolver, name, matcher, progress, max_concurrent)
    try:
        await f.walk(root)
    except BaseExceptionGroup as eg:
        raise _unwrap(eg) from None
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
                    todo = await handlers.platforms_of(_reader(lc.content), img.target)
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


def _reader(content: Content) -> handlers.ReadBlob:
    async def read(d: Descriptor) -> bytes:
        return await blobs.read_blob(content, d)

    return read


def _unpack_key(chain_id: str) -> str:
    rand = base64.urlsafe_b64encode(os.urandom(9)).decode().rstrip("=")
    return f"extract-{time.time_ns() % 1_000_000_000}-{rand} {chain_id}"


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
    progress = progress or _noop
    sn_name = await snapshotter_name(client, snapshotter)
    matcher = plat.only(platform) if platform is not None else plat.default()
    resolved = await handlers.resolve_manifest(_reader(client.content), img.target, matcher)
    layers = resolved.manifest.layers
    diff_ids = resolved.config.diff_ids
    if len(layers) != len(diff_ids):
        raise errdefs.InvalidArgument(
            f"image {img.name}: mismatched image rootfs and manifest layers ({len(diff_ids)} diff ids, "
            f"{len(layers)} layers)")
    label = f"unpack-{resolved.manifest_desc.digest}"
    progress(label, 0, len(layers), "unpacking")
    snaps: Any = _SNAPSHOTS_STUB(client.channel)
    differ: Any = _DIFF_STUB(client.channel)
    chain: list[str] = []
    parent = ""
    for i, (layer, diff_id) in enumerate(zip(layers, diff_ids, strict=True)):
        chain.append(diff_id)
        cid = handlers.chain_id(chain)
        applied = await _apply_layer(client, snaps, differ, sn_name, layer, diff_id, cid, parent)
        if applied:
            await client.content.update(Info(layer.digest, layer.size, labels={UNCOMPRESSED: diff_id}),
                                        [f"labels.{UNCOMPRESSED}"])
        parent = cid
        progress(label, i + 1, len(layers), "unpacking")
    top = parent
    if top:
        key = GC_REF_SNAPSHOT + sn_name
        await client.content.update(Info(resolved.manifest.config.digest, resolved.manifest.config.size,
                                         labels={key: top}), [f"labels.{key}"])
    progress(label, len(layers), len(layers), "unpacked")
    return top


async def _apply_layer(client: Client, snaps: Any, differ: Any, sn: str, layer: Descriptor, diff_id: str,
                       cid: str, parent: str) -> bool:
    """Make snapshot ``cid`` exist; True when this call applied the layer."""
    try:
        await client.unary(snaps.Stat, snapshots_pb2.StatSnapshotRequest(snapshotter=sn, key=cid))
        return False
    except errdefs.NotFound:
        pass
    key = _unpack_key(cid)
    try:
        resp = await client.unary(snaps.Prepare, snapshots_pb2.PrepareSnapshotRequest(
            snapshotter=sn, key=key, parent=parent))
    except errdefs.AlreadyExists:
        try:
            await client.unary(snaps.Stat, snapshots_pb2.StatSnapshotRequest(snapshotter=sn, key=cid))
            return False
        except errdefs.NotFound:
            raise errdefs.AlreadyExists(f"unpack key {key!r} exists but snapshot {cid} does not") from None
    ok = False
    try:
        mounts = [mount_pb2.Mount(type=m.type, source=m.source, target=m.target, options=list(m.options))
                  for m in resp.mounts]
        applied = await client.unary(differ.Apply, diff_pb2.ApplyRequest(diff=desc_to_pb(layer), mounts=mounts))
        if applied.applied.digest != diff_id:
            raise errdefs.FailedPrecondition(
                f"wrong diff id calculated on extraction of layer {layer.digest}: got {applied.applied.digest}, "
                f"expected {diff_id}")
        try:
            await client.unary(snaps.Commit, snapshots_pb2.CommitSnapshotRequest(snapshotter=sn, name=cid, key=key))
        except errdefs.AlreadyExists:
            ok = True
            await _remove_quietly(client, snaps, sn, key)
            return False
        ok = True
        return True
    finally:
        if not ok:
            await _remove_quietly(client, snaps, sn, key)


async def _remove_quietly(client: Client, snaps: Any, sn: str, key: str) -> None:
    try:
        await client.unary(snaps.Remove, snapshots_pb2.RemoveSnapshotRequest(snapshotter=sn, key=key))
    except errdefs.ContainerdError:
        pass


async def unpack(client: Client, name: str, *, snapshotter: str | None = None,
                 platform: Platform | str | None = None, progress: ProgressFn | None = None) -> str:
    """Unpack the image record ``name`` (already fetched) under a temporary lease; returns the chain id."""
    p = plat.parse(platform) if isinstance(platform, str) else platform
    async with client.leases.lease(expire=LEASE_EXPIRE) as lc:
        img = await lc.images.get(name)
        return await unpack_image(lc, img, platform=p, snapshotter=snapshotter, progress=progress)
