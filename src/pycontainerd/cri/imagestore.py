"""The CRI view of images: image records of the ``k8s.io`` namespace grouped by image id.

CRI names an image by its *id*, the digest of its config blob (``sha256:…``).  containerd
keeps one image record per name the image was pulled under, all in namespace ``k8s.io``
and labelled ``io.cri-containerd.image=managed``:

- the reference as pulled, ``<repo>:<tag>`` or ``<repo>@<digest>`` (a *repo tag* or a
  *repo digest*);
- ``<repo>@<manifest digest>`` (the repo digest of a pull by tag);
- the id itself, ``sha256:<config digest>``.

Every record's target is the manifest (or index) that was resolved, so each is a GC root
for the content and, through the config's ``containerd.io/gc.ref.snapshot.<snapshotter>``
label, the unpacked snapshots: the image is pinned while any of its records exists.

A user reference is resolved like containerd 1.6's ``localResolve``: a valid digest is an
id (``sha256:<hex>``); anything else is normalized (``busybox`` → ``docker.io/library/busybox:latest``)
and looked up by name.  ``RemoveImage`` deletes every record of the image's id — all its
tags, digests and the id record (the last one synchronously, so GC runs).

The view is computed from the records on each call (no in-memory cache yet): each record's
manifest and config are read (small blobs) to find the id.  The pull itself is
``remotes.pull`` (the same code as the client-side pull), run in the daemon under a lease.
"""

from __future__ import annotations

import asyncio
import base64
import builtins
import contextlib
import json
import logging
import os
import re
import time
from collections import OrderedDict
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlsplit

from .. import errdefs
from .. import labels as labelsmod
from ..config.durations import format_duration
from ..images import blobs, handlers, reference
from ..images import digest as digests
from ..images import mediatypes as mt
from ..images import platforms as plat
from ..images.models import Descriptor
from ..metadata import images as mdimages
from ..mount import Mount
from ..remotes import hosts as hostsmod
from ..remotes import pull as shared
from ..remotes.hosts import Endpoint
from ..snapshots.interfaces import Kind

if TYPE_CHECKING:
    from ..remotes.auth import Credentials

log = logging.getLogger("pycontainerd.cri")
T = TypeVar("T")

NAMESPACE = "k8s.io"
IMAGE_LABEL = "io.cri-containerd.image"
IMAGE_LABEL_VALUE = "managed"
LEASE_EXPIRE = 24 * 3600
SNAPSHOT_REF = "containerd.io/snapshot.ref"
DESCRIBED_CACHE = 4096


@dataclass
class PullAuth:
    """CRI's ``AuthConfig``: what the kubelet passes with a pull."""

    username: str = ""
    password: str = ""
    auth: str = ""
    server_address: str = ""
    identity_token: str = ""
    registry_token: str = ""


@dataclass
class RegistrySettings:
    """The CRI plugin's ``registry`` section, as the pull needs it."""

    config_path: str = ""
    mirrors: dict[str, list[str]] = field(default_factory=dict)
    tls: dict[str, hostsmod.MirrorConfig] = field(default_factory=dict)
    auths: dict[str, dict[str, str]] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class CriImage:
    """One image as CRI sees it."""

    id: str
    repo_tags: list[str]
    repo_digests: list[str]
    size: int
    config: dict[str, Any]
    chain_id: str
    references: list[str]  # every record name of this id

    @property
    def user(self) -> tuple[int | None, str]:
        """(uid, username) from the config's ``User`` (``uid[:gid]`` or ``name[:group]``)."""
        user = str((self.config.get("config") or {}).get("User") or "").split(":", 1)[0]
        if not user:
            return None, ""
        if user.isdigit():
            return int(user), ""
        return None, user


@dataclass(frozen=True)
class _Described:
    id: str
    size: int
    config: dict[str, Any]
    chain_id: str


@dataclass
class FsUsage:
    timestamp: int
    mountpoint: str
    used_bytes: int
    inodes_used: int


def _credentials(auth: PullAuth | None, fallback: Credentials) -> Credentials:
    """The request's AuthConfig for the host it names (any host when it names none), else the config's."""

    def lookup(host: str) -> tuple[str, str] | None:
        if auth is not None:
            if auth.server_address:
                addr = auth.server_address if "://" in auth.server_address else "//" + auth.server_address
                target = urlsplit(addr).netloc
                if target != host and not (target == "docker.io" and host == "registry-1.docker.io"):
                    return fallback(host)
            if auth.username:
                return auth.username, auth.password
            if auth.identity_token:
                return "", auth.identity_token
            if auth.auth:
                try:
                    user, sep, pw = base64.b64decode(auth.auth, validate=True).decode().partition(":")
                except (ValueError, UnicodeDecodeError):
                    raise errdefs.InvalidArgument("AuthConfig.auth is not base64 of user:password") from None
                if not sep:
                    raise errdefs.InvalidArgument("AuthConfig.auth is not base64 of user:password")
                return user, pw
            # registry_token is not supported (nor by containerd 1.6): anonymous, or the config's
        return fallback(host)

    return lookup


def rfc3339(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _is_id(ref: str) -> bool:
    try:
        digests.validate(ref)
    except errdefs.ContainerdError:
        return False
    return True


def _by_id_prefix(images: Sequence[CriImage], prefix: str, namespace: str) -> CriImage:
    alg, sep, hexpart = prefix.partition(":")
    if not sep:
        alg, hexpart = "", prefix
    if not re.fullmatch(r"[0-9a-f]*", hexpart) or (sep and not alg):
        raise errdefs.NotFound(f"no such image {prefix!r} in namespace {namespace}")
    found = [i for i in images if i.id.partition(":")[2].startswith(hexpart)
             and (not alg or i.id.partition(":")[0] == alg)]
    if not found:
        raise errdefs.NotFound(f"no such image {prefix!r} in namespace {namespace}")
    if len(found) > 1:
        # containerd answers a plain error (UNKNOWN) for an ambiguous short id
        raise errdefs.Unknown(f"image id prefix {prefix!r} is ambiguous: {len(found)} images match")
    return found[0]


def _copy_image(img: CriImage) -> CriImage:
    """``img`` with lists of its own (its config is the content's, shared as ``_describe`` keeps it)."""
    return replace(img, repo_tags=list(img.repo_tags), repo_digests=list(img.repo_digests),
                   references=list(img.references))


class CriImageStore:
    """Pull, list, resolve and remove CRI images over the daemon's own stores.

    ``content``: metadata ``ContentStore`` (``namespaced(ns, lease)``); ``snapshots``: the
    ``snapshots-service`` (``namespaced(name, ns, lease)``); ``differ``: the ``diff-service``
    (``apply(ns, lease, desc, mounts)``); ``images``: the metadata ``ImageStore``;
    ``leases``: the metadata ``LeaseStore``.
    """

    def __init__(self, *, content: Any, snapshots: Any, differ: Any, images: mdimages.ImageStore, leases: Any,
                 snapshotter: str, snapshotter_root: str, registry: RegistrySettings,
                 max_concurrent_downloads: int = 3, namespace: str = NAMESPACE,
                 other_roots: dict[str, str] | None = None,
                 discard_unpacked_layers: bool = False, pull_progress_timeout: float = 0.0,
                 snapshot_annotations: bool = False) -> None:
        self.content = content
        # containerd.disable_snapshot_annotations = false: the image's cri.* labels on its snapshots
        self.snapshot_annotations = snapshot_annotations
        self.discard_unpacked_layers = discard_unpacked_layers  # containerd.discard_unpacked_layers
        self.pull_progress_timeout = pull_progress_timeout  # image_pull_progress_timeout (0: none)
        self.snapshots = snapshots
        self.differ = differ
        self.images = images
        self.leases = leases
        self.snapshotter = snapshotter
        self.snapshotter_root = snapshotter_root
        # every snapshotter CRI snapshots may live in (runtime handlers' own too), the CRI's first
        self.snapshotter_roots = {snapshotter: snapshotter_root, **(other_roots or {})}
        self.registry = registry
        self.max_concurrent = max_concurrent_downloads or None
        self.ns = namespace
        self._described: OrderedDict[str, _Described] = OrderedDict()
        self._listed: tuple[int, builtins.list[CriImage]] | None = None  # (``images.writes()``, ``list``)

    # -- reading -----------------------------------------------------------------------------
    async def _describe(self, target: mdimages.Descriptor) -> _Described:
        """(id, size, config JSON, chain id) of the image whose record targets ``target``.

        Content is immutable, so the answer for a target digest never changes: it is cached
        (bounded), and listing does not re-read every manifest and config on each call.
        """
        cached = self._described.get(target.digest)
        if cached is not None:
            self._described.move_to_end(target.digest)
            return cached
        store = self.content.namespaced(self.ns)
        root = Descriptor(target.media_type, target.digest, target.size)
        resolved = await handlers.resolve_manifest(shared.reader(store), root, plat.default())
        cfg_desc = resolved.manifest.config
        cfg = json.loads(await blobs.read_blob(store, cfg_desc))
        # containerd's image size: the descriptors walked from the target for this platform
        size = resolved.manifest_desc.size + cfg_desc.size + sum(layer.size for layer in resolved.manifest.layers)
        if root.digest != resolved.manifest_desc.digest:
            size += root.size  # the index
        out = _Described(cfg_desc.digest, size, cfg, resolved.chain_id)
        self._described[target.digest] = out
        while len(self._described) > DESCRIBED_CACHE:
            self._described.popitem(last=False)
        return out

    async def list(self) -> list[CriImage]:
        """Every image of the namespace.  What a list found is kept until an image record
        changes (``ImageStore.writes``: through any store of the database), so CreateContainer's
        and RunPodSandbox's resolve need no read; callers get copies (their lists are theirs to
        change).  A list in which a record's content could not be read is not kept (the
        content may come without a record write); content, once read, is ``_describe``'s."""
        writes = self.images.writes()
        kept = self._listed
        if kept is not None and writes is not None and kept[0] == writes:
            return [_copy_image(i) for i in kept[1]]
        out, complete = await self._list()
        if complete and writes is not None and self.images.writes() == writes:
            self._listed = (writes, out)  # no image write began or ended meanwhile
            return [_copy_image(i) for i in out]
        return out

    async def _list(self) -> tuple[builtins.list[CriImage], bool]:
        """The images, and whether every record's content could be read."""
        complete = True
        records = await self.images.list(self.ns)
        by_id: dict[str, CriImage] = {}
        for rec in records:
            try:
                d = await self._describe(rec.target)
            except errdefs.ContainerdError as exc:
                log.debug("image %s in %s is not usable by CRI: %s", rec.name, self.ns, exc)
                complete = False
                continue
            img = by_id.get(d.id)
            if img is None:
                img = by_id[d.id] = CriImage(d.id, [], [], d.size, d.config, d.chain_id, [])
            img.references.append(rec.name)
            if _is_id(rec.name):
                continue
            try:
                r = reference.parse(rec.name)
            except errdefs.ContainerdError:
                continue
            digest_ref = f"{r.name}@{r.digest or rec.target.digest}"
            if r.tag and not r.digest and rec.name not in img.repo_tags:
                img.repo_tags.append(rec.name)
            if digest_ref not in img.repo_digests:
                img.repo_digests.append(digest_ref)
        for img in by_id.values():
            img.repo_tags.sort()
            img.repo_digests.sort()
        return sorted(by_id.values(), key=lambda i: i.id), complete

    async def resolve(self, ref: str) -> CriImage:
        """The image named by id, tag or digest reference, or by a unique id prefix (``sha256:0646``,
        ``0646157f``, as containerd's digest set); NotFound when there is none."""
        images = await self.list()
        if _is_id(ref):
            for img in images:
                if img.id == ref:
                    return img
            raise errdefs.NotFound(f"no such image {ref!r} in namespace {self.ns}")
        try:
            name = reference.normalize(ref)
        except errdefs.ContainerdError:
            name = ""
        for img in images:
            if name and name in img.references:
                return img
        return _by_id_prefix(images, ref, self.ns)

    # -- pulling -----------------------------------------------------------------------------
    def _hosts(self, host: str) -> Sequence[Endpoint]:
        reg = self.registry
        if reg.config_path:
            return hostsmod.configure(host, hosts_dir=reg.config_path)
        return hostsmod.from_mirrors(host, reg.mirrors, reg.tls)

    async def pull(self, ref: str, auth: PullAuth | None = None, snapshotter: str = "") -> str:
        """Pull and unpack ``ref`` into the CRI namespace; returns the image id.  It is unpacked
        into ``snapshotter`` (a runtime handler's, containerd 1.7+), the CRI's by default."""
        try:
            name = reference.normalize(ref)
        except errdefs.InvalidArgument as exc:
            # containerd 1.6 answers a plain error (UNKNOWN) here, not InvalidArgument
            raise errdefs.Unknown(f"failed to parse image reference {ref!r}: {exc}") from exc
        # the registry client (httpx, ~11 MiB) loads with the first pull, not with the daemon
        from ..remotes.auth import credentials_from_config
        from ..remotes.resolver import Resolver

        creds = _credentials(auth, credentials_from_config(self.registry.auths))
        resolver = Resolver(hosts=self._hosts, credentials=creds, headers=self.registry.headers or None)
        lease = await self.leases.create(self.ns, labels={"containerd.io/gc.expire": rfc3339(
            time.time() + LEASE_EXPIRE)})
        try:
            store = self.content.namespaced(self.ns, lease.id)
            name, root = await resolver.resolve(name)
            matcher = plat.default()
            watch = ProgressWatch(self.pull_progress_timeout, ref)
            fetch = shared.Fetch(store, resolver.fetcher(name), name, matcher, max_concurrent=self.max_concurrent,
                                 gc_layers=not self.discard_unpacked_layers, progress=watch.progress)
            await watch.run(fetch.walk(root))
            snapshotter = snapshotter or self.snapshotter
            extra: dict[str, dict[str, str]] = {}
            if self.snapshot_annotations:
                extra = snapshot_labels(await handlers.resolve_manifest(shared.reader(store), root, matcher), name)
            target = _LayerTarget(self, lease.id, snapshotter, extra)
            resolved, _top = await shared.unpack_layers(store, target, snapshotter, name, root, matcher)
            image_id = resolved.manifest.config.digest
            r = reference.parse(name)
            names = [name]
            if not r.digest:
                names.append(f"{r.name}@{root.digest}")
            names.append(image_id)
            for n in names:
                await self._put_record(n, root)
            return image_id
        finally:
            await resolver.aclose()
            try:
                await self.leases.delete(self.ns, lease.id)
            except errdefs.ContainerdError as exc:
                log.warning("cri pull: could not delete lease %s: %s", lease.id, exc)

    async def unpack(self, image: CriImage, snapshotter: str) -> None:
        """The image's layers into ``snapshotter`` unless its top snapshot is there already: an
        image pulled for another runtime handler is unpacked when a pod or container of a handler
        with its own snapshotter needs it (containerd 1.7's ``WithNewSnapshot``).  Under a lease of
        its own; the config's ``containerd.io/gc.ref.snapshot.<snapshotter>`` label keeps the result."""
        if not image.references:
            raise errdefs.NotFound(f"image {image.id} has no record in namespace {self.ns}")
        lease = await self.leases.create(self.ns, labels={"containerd.io/gc.expire": rfc3339(
            time.time() + LEASE_EXPIRE)})
        try:
            target = _LayerTarget(self, lease.id, snapshotter)
            if await target.exists(image.chain_id):
                return
            rec = await self.images.get(self.ns, image.references[0])
            root = Descriptor(rec.target.media_type, rec.target.digest, rec.target.size)
            await shared.unpack_layers(self.content.namespaced(self.ns, lease.id), target, snapshotter,
                                       rec.name, root, plat.default())
        finally:
            try:
                await self.leases.delete(self.ns, lease.id)
            except errdefs.ContainerdError as exc:
                log.warning("cri unpack: could not delete lease %s: %s", lease.id, exc)

    async def prepare(self, sn: Any, key: str, image: CriImage, snapshotter: str, *,
                      with_tx: Callable[[Any], None] | None = None) -> builtins.list[Mount]:
        """A writable snapshot ``key`` over the image in ``sn`` (of ``snapshotter``); when its
        parent is missing there, the image is unpacked into it first, as containerd does.
        ``with_tx``: the metadata snapshotter's (more writes in the snapshot's transaction)."""
        extra = {"with_tx": with_tx} if with_tx is not None else {}
        try:
            mounts: builtins.list[Mount] = await sn.prepare(key, image.chain_id, {}, **extra)
            return mounts
        except errdefs.NotFound:
            if not image.chain_id:
                raise
        await self.unpack(image, snapshotter)
        mounts = await sn.prepare(key, image.chain_id, {}, **extra)
        return mounts

    async def _put_record(self, name: str, root: Descriptor) -> None:
        rec = mdimages.Image(name, mdimages.Descriptor(root.media_type, root.digest, root.size),
                             {IMAGE_LABEL: IMAGE_LABEL_VALUE})
        try:
            await self.images.create(self.ns, rec)
        except errdefs.AlreadyExists:
            await self.images.update(self.ns, rec, ["target", f"labels.{IMAGE_LABEL}"])

    # -- removing ----------------------------------------------------------------------------
    async def remove(self, ref: str) -> CriImage | None:
        """Delete every record of the image ``ref`` names; None when there is no such image."""
        try:
            img = await self.resolve(ref)
        except errdefs.NotFound:
            return None
        names = sorted(img.references, key=lambda n: n == img.id)  # the id record last
        for i, n in enumerate(names):
            try:
                await self.images.delete(self.ns, n, sync=i == len(names) - 1)
            except errdefs.NotFound:
                pass
        return img

    # -- file system usage -------------------------------------------------------------------
    async def fs_usage(self) -> tuple[FsUsage, FsUsage]:
        """(images, containers): every snapshot of the namespace's snapshotter, as containerd counts
        the image filesystem, and the writable (active) snapshots alone, the containers' layers.

        Both live on the snapshotter's filesystem, so both name its root as the mount point.
        """
        sn = self.snapshots.namespaced(self.snapshotter, self.ns)
        used = inodes = active_used = active_inodes = 0
        for info in await sn.walk():
            try:
                u = await sn.usage(info.name)
            except errdefs.NotFound:
                continue
            used += u.size
            inodes += u.inodes
            if info.kind == Kind.ACTIVE:
                active_used += u.size
                active_inodes += u.inodes
        now = time.time_ns()
        return (FsUsage(now, self.snapshotter_root, used, inodes),
                FsUsage(now, self.snapshotter_root, active_used, active_inodes))


class ProgressWatch:
    """``image_pull_progress_timeout``: a fetch that reads no data for this long is cancelled.

    Every progress report of the fetch (a request starting, bytes read, a blob done) resets the
    clock, as containerd resets it on each byte read from the registry; 0 means no timeout."""

    def __init__(self, timeout: float, ref: str) -> None:
        self.timeout = timeout
        self.ref = ref
        self._last = 0.0
        self._loop: asyncio.AbstractEventLoop | None = None

    def progress(self, key: str, done: int, total: int, status: str) -> None:
        if self._loop is not None:
            self._last = self._loop.time()

    async def run(self, work: Coroutine[Any, Any, T]) -> T:
        if self.timeout <= 0:
            return await work
        loop = self._loop = asyncio.get_running_loop()
        self._last = loop.time()
        task = asyncio.ensure_future(work)
        try:
            while True:
                left = self._last + self.timeout - loop.time()
                if left <= 0:
                    break
                done, _ = await asyncio.wait({task}, timeout=left)
                if done:
                    return task.result()
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
            raise errdefs.DeadlineExceeded(
                f"cancel pulling image {self.ref} because of no progress in {format_duration(self.timeout)} "
                "(image_pull_progress_timeout)")
        finally:
            if not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task


def _image_layers(layers: Sequence[Descriptor]) -> str:
    """``cri.image-layers``: the digests of ``layers``, comma-separated, as many as a label holds."""
    out = ""
    for layer in layers:
        item = f",{layer.digest}" if out else layer.digest
        try:
            labelsmod.validate(labelsmod.CRI_SNAPSHOT_IMAGE_LAYERS, out + item)
        except errdefs.InvalidArgument:
            break
        out += item
    return out


def snapshot_labels(resolved: handlers.ResolvedImage, ref: str) -> dict[str, dict[str, str]]:
    """containerd's snapshot annotations (CRI ``disable_snapshot_annotations = false``), by the chain
    id of each layer's snapshot: the image ref, the manifest's digest, the layer's digest and the
    digests of that layer and those above it; remote snapshotters (stargz) read them."""
    out: dict[str, dict[str, str]] = {}
    layers = [d for d in resolved.manifest.layers if mt.is_layer(d.media_type)]
    chain: list[str] = []
    for i, (layer, diff_id) in enumerate(zip(layers, resolved.config.diff_ids, strict=False)):
        chain.append(diff_id)
        out[handlers.chain_id(chain)] = {
            labelsmod.CRI_SNAPSHOT_IMAGE_REF: ref,
            labelsmod.CRI_SNAPSHOT_MANIFEST_DIGEST: resolved.manifest_desc.digest,
            labelsmod.CRI_SNAPSHOT_LAYER_DIGEST: layer.digest,
            labelsmod.CRI_SNAPSHOT_IMAGE_LAYERS: _image_layers(layers[i:]),
        }
    return out


class _LayerTarget:
    """``remotes.pull.LayerTarget`` over the daemon's snapshot store and differ, under a lease;
    ``extra``: more labels for the snapshot of a chain id (``snapshot_labels``)."""

    def __init__(self, store: CriImageStore, lease: str, snapshotter: str,
                 extra: dict[str, dict[str, str]] | None = None) -> None:
        self.extra = extra or {}
        self.sn = store.snapshots.namespaced(snapshotter, store.ns, lease)
        self.differ = store.differ
        self.ns = store.ns
        self.lease = lease

    async def exists(self, key: str) -> bool:
        try:
            await self.sn.stat(key)
        except errdefs.NotFound:
            return False
        return True

    async def prepare(self, key: str, parent: str) -> list[Mount]:
        # the key is "extract-<nanos>-<rand> <chain id>"; containerd's daemon-side unpacker labels
        # the snapshot with the chain id it becomes (remote snapshotters look it up)
        chain_id = key.rsplit(" ", 1)[-1]
        mounts: list[Mount] = await self.sn.prepare(key, parent, {SNAPSHOT_REF: chain_id,
                                                                  **self.extra.get(chain_id, {})})
        return mounts

    async def apply(self, layer: Descriptor, mounts: Any) -> str:
        from ..diff.walking import Descriptor as DiffDescriptor

        applied = await self.differ.apply(self.ns, self.lease, DiffDescriptor(
            layer.media_type, layer.digest, layer.size, dict(layer.annotations)), mounts)
        return str(applied.digest)

    async def commit(self, name: str, key: str) -> None:
        await self.sn.commit(name, key, {SNAPSHOT_REF: name, **self.extra.get(name, {})})

    async def remove(self, key: str) -> None:
        await self.sn.remove(key)


def registry_settings(cri_registry: Any) -> RegistrySettings:
    """From ``daemon.config.RegistryConfig``."""
    tls: dict[str, hostsmod.MirrorConfig] = {}
    auths: dict[str, dict[str, str]] = {}
    for host, cfg in (cri_registry.configs or {}).items():
        if cfg.tls is not None:
            tls[host] = hostsmod.MirrorConfig(skip_verify=cfg.tls.insecure_skip_verify or None,
                                              ca_file=cfg.tls.ca_file, cert_file=cfg.tls.cert_file,
                                              key_file=cfg.tls.key_file)
        if cfg.auth is not None:
            auths[host] = {"username": cfg.auth.username, "password": cfg.auth.password, "auth": cfg.auth.auth,
                           "identitytoken": cfg.auth.identitytoken}
    return RegistrySettings(
        config_path=cri_registry.config_path,
        mirrors={h: list(m.endpoint) for h, m in (cri_registry.mirrors or {}).items()},
        tls=tls, auths=auths,
        headers={k: ", ".join(v) for k, v in (cri_registry.headers or {}).items()},
    )


def snapshotter_root(daemon_root: str | os.PathLike[str], backend: Any, snapshotter: str) -> str:
    root = getattr(backend, "root", None)
    if root is not None:
        return str(root)
    return str(Path(daemon_root) / f"io.containerd.snapshotter.v1.{snapshotter}")
