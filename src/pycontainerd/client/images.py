"""The Images service over gRPC: image records (a name → a root descriptor, plus labels).

    img = await client.images.get("docker.io/library/busybox:latest")
    print(img.target.digest, img.labels)
    await client.images.create(Image(name, target))          # AlreadyExists if present
    await client.images.update(img, ["labels.foo"])           # only the named fields

The record holds no content: blobs live in the content store and stay alive through the
image (a GC root) and the ``gc.ref.content`` labels of their parents.
"""

from __future__ import annotations

import builtins
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from google.protobuf import field_mask_pb2, timestamp_pb2

from ..api.services.images.v1 import images_pb2, images_pb2_grpc
from ..api.types import descriptor_pb2
from ..images.models import Descriptor

if TYPE_CHECKING:
    from .core import Client

__all__ = ["Image", "Images", "desc_from_pb", "desc_to_pb"]


def desc_to_pb(d: Descriptor) -> descriptor_pb2.Descriptor:
    return descriptor_pb2.Descriptor(media_type=d.media_type, digest=d.digest, size=d.size,
                                     annotations=dict(d.annotations))


def desc_from_pb(d: descriptor_pb2.Descriptor) -> Descriptor:
    return Descriptor(media_type=d.media_type, digest=d.digest, size=int(d.size), annotations=dict(d.annotations))


def _dt(ts: timestamp_pb2.Timestamp) -> datetime | None:
    if not ts.seconds and not ts.nanos:
        return None
    return datetime.fromtimestamp(ts.seconds + ts.nanos / 1e9, UTC)


@dataclass
class Image:
    name: str
    target: Descriptor
    labels: dict[str, str] = field(default_factory=dict)
    created_at: datetime | None = None
    updated_at: datetime | None = None

    def to_pb(self) -> images_pb2.Image:
        return images_pb2.Image(name=self.name, labels=dict(self.labels), target=desc_to_pb(self.target))

    @staticmethod
    def from_pb(i: images_pb2.Image) -> Image:
        return Image(i.name, desc_from_pb(i.target), dict(i.labels), _dt(i.created_at), _dt(i.updated_at))


class Images:
    stub_cls: Any = images_pb2_grpc.ImagesStub
    pb = images_pb2

    def __init__(self, client: Client) -> None:
        self.client = client
        self.raw = self.stub_cls(client.channel)

    async def get(self, name: str) -> Image:
        resp = await self.client.unary(self.raw.Get, images_pb2.GetImageRequest(name=name))
        return Image.from_pb(resp.image)

    async def list(self, filters: Sequence[str] = ()) -> builtins.list[Image]:
        resp = await self.client.unary(self.raw.List, images_pb2.ListImagesRequest(filters=list(filters)))
        return [Image.from_pb(i) for i in resp.images]

    async def create(self, image: Image) -> Image:
        resp = await self.client.unary(self.raw.Create, images_pb2.CreateImageRequest(image=image.to_pb()))
        return Image.from_pb(resp.image)

    async def update(self, image: Image, fieldpaths: Sequence[str] = ()) -> Image:
        req = images_pb2.UpdateImageRequest(
            image=image.to_pb(),
            update_mask=field_mask_pb2.FieldMask(paths=list(fieldpaths)) if fieldpaths else None)
        resp = await self.client.unary(self.raw.Update, req)
        return Image.from_pb(resp.image)

    async def create_or_update(self, image: Image) -> Image:
        """ctr's pull/import: Create, and on AlreadyExists replace the record (target + labels)."""
        from .. import errdefs

        try:
            return await self.create(image)
        except errdefs.AlreadyExists:
            return await self.update(image)

    async def set_labels(self, name: str, labels: Mapping[str, str]) -> Image:
        """Set (empty value: remove) the given labels, like ``ctr images label``."""
        img = Image(name, Descriptor("", "", 0), {k: v for k, v in labels.items() if v})
        return await self.update(img, [f"labels.{k}" for k in labels])

    async def delete(self, name: str, sync: bool = False) -> None:
        await self.client.unary(self.raw.Delete, images_pb2.DeleteImageRequest(name=name, sync=sync))


