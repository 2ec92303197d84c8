"""Fetch an image from a registry into a content store, and unpack it into a snapshotter.

One library for both pulls containerd has: the client-side pull of ``ctr`` 1.6
(``client/pull.py``: the content store and the snapshotter are gRPC proxies to the daemon)
and the daemon-side pull of CRI's ``PullImage`` (``cri/images.py``: the daemon's own
namespaced stores).  Both hold a lease while they run, so nothing is collected half-way.

**Fetch** (``Fetch.walk`` from the resolved root): manifests, indexes and configs are
fetched into memory, verified and committed (ingest ref ``<kind>-<digest>``) with their
``containerd.io/gc.ref.content.*`` child labels and
``containerd.io/distribution.source.<host>=<repo>``; of an index only the manifest best
matching the platform (or all) is followed; layers are streamed concurrently, resuming an
ingest left by an interrupted pull at its offset; a blob already in the store is skipped
(its labels completed).

**Unpack** (``unpack_layers``): for each layer, chain id ``C``: ``stat(C)`` — present: next;
else ``prepare("extract-<nanos>-<rand> C", parent)`` → ``apply(layer, mounts)`` (the result
must be the layer's diff id) → ``commit(C)``; label the layer blob
``containerd.io/uncompressed``; finally label the config
``containerd.io/gc.ref.snapshot.<snapshotter>=<top chain id>``.  AlreadyExists from prepare or
commit means someone else unpacked that layer concurrently.  The snapshotter and differ are
reached through the small ``LayerTarget`` Protocol, which each side implements over its own
transport.
"""

from __future__ import annotations

import asyncio
import base64
import os
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from .. import errdefs
from ..content.interfaces import Info, Ingester, Provider
from ..images import blobs, handlers, reference
from ..images import mediatypes as mt
from ..images import platforms as plat
from ..images.models import Descriptor

if TYPE_CHECKING:  # the fetcher brings httpx (~11 MiB): a daemon that never pulls does not load it
    from .fetcher import Fetcher

ProgressFn = Callable[[str, int, int, str], None]
"""``progress(key, done_bytes, total_bytes, status)``; status: resolving, downloading, done, exists,
failed, unpacking, unpacked."""

DISTRIBUTION_SOURCE_PREFIX = "containerd.io/distribution.source."
UNCOMPRESSED = "containerd.io/uncompressed"
GC_REF_SNAPSHOT = "containerd.io/gc.ref.snapshot."


class ContentStore(Ingester, Provider, Protocol):
    """What a pull needs of a content store (the metadata store, or the client's proxy)."""

    async def info(self, digest: str) -> Info: ...

    async def update(self, info: Info, fieldpaths: Sequence[str] = ()) -> Info: ...

    async def abort(self, ref: str) -> None: ...


class LayerTarget(Protocol):
    """A snapshotter plus a differ, as the unpacker uses them."""

    async def exists(self, key: str) -> bool:
        """Whether the committed snapshot ``key`` exists."""
        ...

    async def prepare(self, key: str, parent: str) -> Any:
        """An active snapshot; returns its mounts (opaque here, handed to ``apply``)."""
        ...

    async def apply(self, layer: Descriptor, mounts: Any) -> str:
        """Apply the layer blob onto the mounts; returns the digest of the uncompressed tar."""
        ...

    async def commit(self, name: str, key: str) -> None: ...

    async def remove(self, key: str) -> None: ...


def noop(key: str, done: int, total: int, status: str) -> None:
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


def merge_source(existing: str, repo: str) -> str:
    repos = [r for r in existing.split(",") if r] if existing else []
    if repo not in repos:
        repos.append(repo)
    return ",".join(sorted(repos))


def unwrap_group(exc: BaseException) -> BaseException:
    """The first error of a (nested) exception group: what a failed TaskGroup walk reports."""
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) >= 1:
        exc = exc.exceptions[0]
    return exc


class Fetch:
    """One image's fetch into ``content``; counts what it fetched and what already existed."""

    def __init__(self, content: ContentStore, fetcher: Fetcher, name: str, matcher: plat.Matcher,
                 progress: ProgressFn | None = None, max_concurrent: int | None = None,
                 gc_layers: bool = True) -> None:
        self.content = content
        self.gc_layers = gc_layers  # False: manifests do not reference their layers (discard after unpack)
        self.fetcher = fetcher
        r = reference.parse(name)
        self.source_key = distribution_source_label(r)
        self.repo = r.path
        self.matcher = matcher
        self.progress = progress or noop
        self.sem = asyncio.Semaphore(max_concurrent) if max_concurrent else None
        self.fetched = self.existing = self.bytes = 0

    async def _label_existing(self, desc: Descriptor, extra: dict[str, str]) -> None:
        try:
            info = await self.content.info(desc.digest)
        except errdefs.NotFound:
            return
        labels = dict(extra)
        labels[self.source_key] = merge_source(info.labels.get(self.source_key, ""), self.repo)
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
            await self._label_existing(desc, handlers.child_gc_labels(kids, layers=self.gc_layers))
            return kids
        try:
            self.progress(key, 0, desc.size, "downloading")
            data = await self.fetcher.fetch_bytes(desc)
            kids = [] if mt.is_config(desc.media_type) else self._children(desc, data)
            labels = handlers.child_gc_labels(kids, layers=self.gc_layers)
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
        """Fetch ``desc`` and everything below it; the first failure is raised (not a group)."""
        try:
            await self._walk(desc)
        except BaseExceptionGroup as eg:
            raise unwrap_group(eg) from None

    async def _walk(self, desc: Descriptor) -> None:
        if mt.is_layer(desc.media_type) or not (
                mt.is_manifest(desc.media_type) or mt.is_index(desc.media_type) or mt.is_config(desc.media_type)):
            await self.layer(desc)
            return
        kids = await self.small(desc)
        if kids:
            async with asyncio.TaskGroup() as tg:
                for k in kids:
                    tg.create_task(self._walk(k))


async def _abort_quietly(content: ContentStore, ref: str) -> None:
    try:
        await content.abort(ref)
    except errdefs.ContainerdError:
        pass


def reader(content: Provider) -> handlers.ReadBlob:
    async def read(d: Descriptor) -> bytes:
        return await blobs.read_blob(content, d)

    return read


def unpack_key(chain_id: str) -> str:
    rand = base64.urlsafe_b64encode(os.urandom(9)).decode().rstrip("=")
    return f"extract-{time.time_ns() % 1_000_000_000}-{rand} {chain_id}"


async def unpack_layers(content: ContentStore, target: LayerTarget, snapshotter: str, image_name: str,
                        root: Descriptor, matcher: plat.Matcher, progress: ProgressFn | None = None
                        ) -> tuple[handlers.ResolvedImage, str]:
    """Unpack the manifest of ``root`` matching ``matcher``; returns it and the top chain id."""
    progress = progress or noop
    resolved = await handlers.resolve_manifest(reader(content), root, matcher)
    layers = resolved.manifest.layers
    diff_ids = resolved.config.diff_ids
    if len(layers) != len(diff_ids):
        raise errdefs.InvalidArgument(
            f"image {image_name}: mismatched image rootfs and manifest layers ({len(diff_ids)} diff ids, "
            f"{len(layers)} layers)")
    label = f"unpack-{resolved.manifest_desc.digest}"
    progress(label, 0, len(layers), "unpacking")
    chain: list[str] = []
    parent = ""
    for i, (layer, diff_id) in enumerate(zip(layers, diff_ids, strict=True)):
        chain.append(diff_id)
        cid = handlers.chain_id(chain)
        if await apply_layer(target, layer, diff_id, cid, parent):
            await content.update(Info(layer.digest, layer.size, labels={UNCOMPRESSED: diff_id}),
                                 [f"labels.{UNCOMPRESSED}"])
        parent = cid
        progress(label, i + 1, len(layers), "unpacking")
    top = parent
    if top:
        key = GC_REF_SNAPSHOT + snapshotter
        await content.update(Info(resolved.manifest.config.digest, resolved.manifest.config.size,
                                  labels={key: top}), [f"labels.{key}"])
    progress(label, len(layers), len(layers), "unpacked")
    return resolved, top


async def apply_layer(target: LayerTarget, layer: Descriptor, diff_id: str, cid: str, parent: str) -> bool:
    """Make snapshot ``cid`` exist; True when this call applied the layer."""
    if await target.exists(cid):
        return False
    key = unpack_key(cid)
    try:
        mounts = await target.prepare(key, parent)
    except errdefs.AlreadyExists:
        if await target.exists(cid):
            return False
        raise errdefs.AlreadyExists(f"unpack key {key!r} exists but snapshot {cid} does not") from None
    ok = False
    try:
        applied = await target.apply(layer, mounts)
        if applied != diff_id:
            raise errdefs.FailedPrecondition(
                f"wrong diff id calculated on extraction of layer {layer.digest}: got {applied}, "
                f"expected {diff_id}")
        try:
            await target.commit(cid, key)
        except errdefs.AlreadyExists:
            ok = True
            await _remove_quietly(target, key)
            return False
        ok = True
        return True
    finally:
        if not ok:
            await _remove_quietly(target, key)


async def _remove_quietly(target: LayerTarget, key: str) -> None:
    try:
        await target.remove(key)
    except errdefs.ContainerdError:
        pass
