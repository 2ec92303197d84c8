"""Walking an image's tree of blobs: children, platform filtering, GC labels, chain ids.

An image is a root descriptor; ``children`` names the blobs it refers to (an index's
manifests, a manifest's config and layers).  Storing a parent blob with labels that name
its children (``containerd.io/gc.ref.content.m.<i>`` for manifests, ``.config`` for the
config, ``.l.<i>`` for layers) keeps the children alive under the garbage collector for as
long as the parent is referenced.

Snapshots of unpacked layers are keyed by *chain id*: the first layer's chain id is its
diff id (digest of the uncompressed tar); each next one is
``sha256(<parent chain id> + " " + <diff id>)``, so a chain id names a whole stack.
"""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from .. import errdefs
from . import mediatypes as mt
from .models import Descriptor, ImageConfig, Manifest, Platform, parse_config, parse_index, parse_manifest
from .platforms import Matcher

ReadBlob = Callable[[Descriptor], Awaitable[bytes]]
"""Reads a (small) blob fully; raises NotFound when the store does not have it."""

GC_REF_CONTENT = "containerd.io/gc.ref.content"


def children(desc: Descriptor, data: bytes) -> list[Descriptor]:
    """The blobs a manifest or index refers to; nothing for configs and layers."""
    if mt.is_index(desc.media_type):
        return list(parse_index(data, desc.media_type).manifests)
    if mt.is_manifest(desc.media_type):
        m = parse_manifest(data, desc.media_type)
        return [m.config, *m.layers]
    if mt.is_schema1(desc.media_type):
        parse_manifest(data, desc.media_type)  # raises the schema 1 message
    return []


def child_gc_label_prefix(child: Descriptor) -> str:
    """The label (prefix, when ending in '.') a parent uses to reference a child of this type."""
    if mt.is_config(child.media_type):
        return f"{GC_REF_CONTENT}.config"
    if mt.is_manifest(child.media_type):
        return f"{GC_REF_CONTENT}.m."
    if mt.is_layer(child.media_type):
        return f"{GC_REF_CONTENT}.l."
    return f"{GC_REF_CONTENT}."


def child_gc_labels(kids: Sequence[Descriptor], *, layers: bool = True) -> dict[str, str]:
    """Labels for the parent of ``kids``: one numbered key per child, counted per kind.

    ``layers`` False leaves the layers out (containerd's ``ChildGCLabelsFilterLayers``, CRI's
    ``discard_unpacked_layers``): nothing references them, so once the pull's lease is gone the
    garbage collector removes their blobs; the unpacked snapshots stay, referenced by the config."""
    counts: dict[str, int] = {}
    out: dict[str, str] = {}
    for child in kids:
        if not layers and mt.is_layer(child.media_type):
            continue
        key = child_gc_label_prefix(child)
        if key.endswith("."):
            n = counts.get(key, 0)
            counts[key] = n + 1
            key = f"{key}{n}"
        out[key] = child.digest
    return out


def filter_platforms(parent: Descriptor, kids: list[Descriptor], matcher: Matcher, limit: int = 1
                     ) -> list[Descriptor]:
    """For an index: the children matching ``matcher`` (best first, at most ``limit`` unless all)."""
    if matcher.all or not mt.is_index(parent.media_type):
        return kids
    keep = [d for d in kids if d.platform is None or matcher.match(d.platform)]

    def order(d: Descriptor) -> int:
        r = matcher.rank(d.platform)
        return r if r is not None else 1 << 20

    keep.sort(key=order)  # stable: registry order among equals
    manifests = [d for d in keep if mt.is_manifest(d.media_type) or mt.is_index(d.media_type)]
    others = [d for d in keep if d not in manifests]
    if limit > 0 and len(manifests) > limit:
        manifests = manifests[:limit]
    return manifests + others


def chain_ids(diff_ids: Sequence[str]) -> list[str]:
    out: list[str] = []
    for d in diff_ids:
        if not out:
            out.append(d)
        else:
            out.append("sha256:" + hashlib.sha256(f"{out[-1]} {d}".encode()).hexdigest())
    return out


def chain_id(diff_ids: Sequence[str]) -> str:
    ids = chain_ids(diff_ids)
    if not ids:
        raise errdefs.InvalidArgument("an image without layers has no chain id")
    return ids[-1]


async def walk(read: ReadBlob, root: Descriptor,
               visit: Callable[[Descriptor, list[Descriptor]], Awaitable[list[Descriptor] | None]] | None = None,
               ) -> list[Descriptor]:
    """Depth-first walk from ``root``; returns every descriptor reached (parents before children).

    ``visit(desc, children)`` may return a filtered list of children to descend into.
    """
    seen: set[str] = set()
    order: list[Descriptor] = []

    async def go(d: Descriptor) -> None:
        if d.digest in seen:
            return
        seen.add(d.digest)
        order.append(d)
        kids: list[Descriptor] = []
        if mt.is_index(d.media_type) or mt.is_manifest(d.media_type) or mt.is_schema1(d.media_type):
            kids = children(d, await read(d))
        if visit is not None:
            chosen = await visit(d, kids)
            if chosen is not None:
                kids = chosen
        for k in kids:
            await go(k)

    await go(root)
    return order


@dataclass
class ResolvedImage:
    manifest_desc: Descriptor
    manifest: Manifest
    config: ImageConfig

    @property
    def platform(self) -> Platform:
        return self.config.platform

    @property
    def chain_id(self) -> str:
        return chain_id(self.config.diff_ids)


async def resolve_manifest(read: ReadBlob, root: Descriptor, matcher: Matcher) -> ResolvedImage:
    """The manifest (and config) of ``root`` best matching ``matcher`` (containerd's images.Manifest)."""
    candidates: list[tuple[int, int, Descriptor]] = []
    counter = 0

    async def consider(d: Descriptor, depth: int) -> None:
        nonlocal counter
        if depth > 8:
            raise errdefs.InvalidArgument(f"index nesting too deep at {d.digest}")
        if mt.is_index(d.media_type):
            idx = parse_index(await read(d), d.media_type)
            for child in idx.manifests:
                if child.platform is not None and not matcher.match(child.platform):
                    continue
                await consider(child, depth + 1)
        elif mt.is_manifest(d.media_type):
            rank = matcher.rank(d.platform) if d.platform is not None else None
            counter += 1
            candidates.append((rank if rank is not None else 1 << 20, counter, d))
        elif mt.is_schema1(d.media_type):
            parse_manifest(await read(d), d.media_type)
        else:
            raise errdefs.InvalidArgument(f"unexpected media type {d.media_type!r} for image target {d.digest}")

    await consider(root, 0)
    candidates.sort(key=lambda c: (c[0], c[1]))
    for _, _, d in candidates:
        m = parse_manifest(await read(d), d.media_type)
        cfg = parse_config(await read(m.config))
        if d.platform is None and not matcher.all and cfg.os and not matcher.match(cfg.platform):
            continue
        return ResolvedImage(d, m, cfg)
    raise errdefs.NotFound(f"manifest {root.digest}: no match for platform {matcher} in manifest")


async def platforms_of(read: ReadBlob, root: Descriptor) -> list[Platform]:
    """Every platform an image provides (from index entries, or a lone manifest's config)."""
    out: list[Platform] = []

    async def go(d: Descriptor) -> None:
        if mt.is_index(d.media_type):
            for child in parse_index(await read(d), d.media_type).manifests:
                if child.platform is not None and mt.is_manifest(child.media_type):
                    if child.platform not in out:
                        out.append(child.platform)
                else:
                    await go(child)
        elif mt.is_manifest(d.media_type):
            m = parse_manifest(await read(d), d.media_type)
            p = parse_config(await read(m.config)).platform
            if p.os and p not in out:
                out.append(p)

    await go(root)
    return out
