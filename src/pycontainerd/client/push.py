"""Client-side push (``pyctr images push``): content store → registry.

The image's tree is read from the daemon's content store (Content.Info/Read) and pushed
children first — layers and configs concurrently, then manifests by digest, then the
root under the reference's tag — so the registry never sees a manifest whose blobs are
missing.  Blobs the registry has are skipped (HEAD); blobs whose
``containerd.io/distribution.source.<host>`` label names another repository on the same
registry are cross-mounted instead of uploaded.  Pushed blobs get the distribution
source label for the destination, as containerd does.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING

from .. import errdefs
from ..content.interfaces import Info
from ..images import blobs, handlers, reference
from ..images import mediatypes as mt
from ..images import platforms as plat
from ..images.models import Descriptor
from ..remotes.resolver import Resolver
from .pull import _merge_source, distribution_source_label, ingest_ref

if TYPE_CHECKING:
    from .core import Client

__all__ = ["push"]

ProgressFn = Callable[[str, int, int, str], None]


def _noop(key: str, done: int, total: int, status: str) -> None:
    return None


async def push(client: Client, ref: str, *, local: str | None = None, resolver: Resolver | None = None,
               platform: str | None = None, progress: ProgressFn | None = None, chunked: bool = False,
               max_concurrent: int = 4) -> Descriptor:
    """Push the local image ``local`` (default: ``ref``) to ``ref``; returns the pushed root descriptor."""
    progress = progress or _noop
    remote = reference.parse_normalized(ref).with_default_tag()
    img = await client.images.get(local or ref)
    root = img.target
    content = client.content

    async def read(d: Descriptor) -> bytes:
        return await blobs.read_blob(content, d)

    if platform:
        resolved = await handlers.resolve_manifest(read, root, plat.only(plat.parse(platform)))
        root = resolved.manifest_desc

    # collect the tree, children after parents; check everything is present first
    order: list[Descriptor] = []
    parents: dict[str, list[Descriptor]] = {}

    async def visit(d: Descriptor, kids: list[Descriptor]) -> list[Descriptor] | None:
        order.append(d)
        parents[d.digest] = kids
        return None

    try:
        await handlers.walk(read, root, visit)
    except errdefs.NotFound as exc:
        raise errdefs.NotFound(f"cannot push {img.name}: content missing from the store ({exc}); "
                               f"pull it with --all-platforms or push one --platform") from None
    for d in order:
        await content.info(d.digest)  # NotFound early, before touching the registry

    own = resolver is None
    res = resolver or Resolver()
    try:
        pusher = res.pusher(str(remote))
        pusher.chunked = chunked
        src_key = distribution_source_label(remote)
        sem = asyncio.Semaphore(max_concurrent)

        async def push_blob(d: Descriptor) -> None:
            key = ingest_ref(d)
            async with sem:
                info = await content.info(d.digest)
                mount_from = [r for r in info.labels.get(src_key, "").split(",") if r and r != remote.path]

                def opener(offset: int) -> AsyncIterator[bytes]:
                    return blobs.iter_read(content, d.digest, offset)

                progress(key, 0, d.size, "uploading")
                how = await pusher.push_blob(d, opener, mount_from=mount_from,
                                             progress=lambda n: progress(key, n, d.size, "uploading"))
                progress(key, d.size, d.size, "exists" if how == "exists" else "done")
                merged = _merge_source(info.labels.get(src_key, ""), remote.path)
                if merged != info.labels.get(src_key):
                    await content.update(Info(d.digest, d.size, labels={src_key: merged}), [f"labels.{src_key}"])

        leaves = [d for d in order if not (mt.is_manifest(d.media_type) or mt.is_index(d.media_type))]
        async with asyncio.TaskGroup() as tg:
            for d in leaves:
                tg.create_task(push_blob(d))
        # manifests deepest first, the root last under the tag
        for d in reversed([d for d in order if mt.is_manifest(d.media_type) or mt.is_index(d.media_type)]):
            key = ingest_ref(d)
            progress(key, 0, d.size, "uploading")
            data = await read(d)
            tag = remote.tag if d.digest == root.digest else ""
            await pusher.push_manifest(d, data, tag)
            progress(key, d.size, d.size, "done")
        return root
    except BaseExceptionGroup as eg:
        first: BaseException = eg
        while isinstance(first, BaseExceptionGroup):
            first = first.exceptions[0]
        raise first from None
    finally:
        if own:
            await res.aclose()


