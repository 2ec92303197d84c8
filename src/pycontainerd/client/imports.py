"""Client-side image import and export (``pyctr images import/export``), like ctr's.

Import reads the tar here and writes every blob through the Content service
(``images.archive.import_index``), then names images from the archive's index: the
``io.containerd.image.name`` annotation, else the ``org.opencontainers.image.ref.name``
with ``base_name`` prefixed when it is only a tag; ``digests`` adds ``<base>@<digest>``
names, ``index_name`` names the whole index.  Only manifests matching the platform get GC
labels from the index.  Existing images are re-pointed (Update of ``target``) or created.
"""

from __future__ import annotations

from typing import IO, TYPE_CHECKING

from .. import errdefs
from ..content.interfaces import Info
from ..images import archive, blobs, handlers
from ..images import mediatypes as mt
from ..images.models import Descriptor, parse_index
from ..images.platforms import Matcher
from .images import Image

if TYPE_CHECKING:
    from .core import Client

__all__ = ["export_images", "import_images"]


def _ref_prefix(base: str, ref: str) -> str:
    if any(c in ref for c in "/:@"):
        return ref
    return f"{base}:{ref}" if base else ""


async def import_images(client: Client, fileobj: IO[bytes], *, base_name: str = "", digests: bool = False,
                        index_name: str = "", matcher: Matcher | None = None, compress_blobs: bool = False,
                        ) -> list[Image]:
    """Import an archive; the caller should hold a lease (``client.leases.lease()``)."""
    content = client.content
    result = await archive.import_index(content, fileobj, compress_blobs=compress_blobs)
    index = result.index
    idx = parse_index(await blobs.read_blob(content, index), index.media_type)
    wanted: list[Image] = []
    if index_name:
        wanted.append(Image(index_name, index))
    kids: list[Descriptor] = []
    for m in idx.manifests:
        if matcher is not None and m.platform is not None and not matcher.match(m.platform):
            continue
        kids.append(m)
        name = m.annotations.get(mt.ANNOTATION_IMAGE_NAME, "")
        if not name:
            ref = m.annotations.get(mt.ANNOTATION_REF_NAME, "")
            name = _ref_prefix(base_name, ref) if ref else ""
        if name:
            wanted.append(Image(name, m))
        if digests and base_name:
            wanted.append(Image(f"{base_name}@{m.digest}", m))
    # GC labels: the index references the kept manifests; each manifest its config and layers
    await _label_tree(client, index, kids)
    out = []
    for img in wanted:
        try:
            out.append(await client.images.update(img, ["target"]))
        except errdefs.NotFound:
            out.append(await client.images.create(img))
    if not out and not idx.manifests:
        raise errdefs.InvalidArgument("the archive's index names no manifests")
    return out


async def _label_tree(client: Client, index: Descriptor, kids: list[Descriptor]) -> None:
    content = client.content

    async def set_labels(d: Descriptor, children: list[Descriptor]) -> None:
        labels = handlers.child_gc_labels(children)
        if labels:
            await content.update(Info(d.digest, d.size, labels=labels), [f"labels.{k}" for k in labels])

    await set_labels(index, kids)
    for m in kids:
        if not (mt.is_manifest(m.media_type) or mt.is_index(m.media_type)):
            continue
        try:
            data = await blobs.read_blob(content, m)
        except errdefs.NotFound:
            continue
        children = handlers.children(m, data)
        await set_labels(m, children)
        if mt.is_index(m.media_type):
            await _label_tree(client, m, children)


async def export_images(client: Client, out: IO[bytes], names: list[str], *, matcher: Matcher | None,
                        skip_manifest_json: bool = False, skip_nondistributable: bool = False) -> None:
    imgs = []
    for n in names:
        img = await client.images.get(n)
        imgs.append(archive.ExportImage(img.name, img.target))
    await archive.export_archive(client.content, out, imgs, matcher=matcher, skip_manifest_json=skip_manifest_json,
                                 skip_nondistributable=skip_nondistributable)
