"""Images service: Get, List, Create, Update, Delete over the namespaced image store."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .. import errdefs
from ..metadata.gc import Scheduler
from ..metadata.images import Descriptor, Image, ImageStore
from ..metadata.plugin import Metadata
from ..plugin import InitContext, Registration, types
from ..rpc import Server
from .common import DeferredModule, add_servicer, field_paths, namespace_of, ns_from_ts, ts_from_ns

if TYPE_CHECKING:
    from google.protobuf import empty_pb2

    from ..api.services.images.v1 import images_pb2 as pb
    from ..api.types import descriptor_pb2
else:  # imported at the service's first call (W6, idle PSS)
    pb = DeferredModule(globals(), "pb", "..api.services.images.v1.images_pb2", package="containerd.services.images.v1")
    descriptor_pb2 = DeferredModule(globals(), "descriptor_pb2", "..api.types.descriptor_pb2")
    empty_pb2 = DeferredModule(globals(), "empty_pb2", "google.protobuf.empty_pb2")


def from_pb(im: pb.Image) -> Image:
    t = im.target
    return Image(
        name=im.name,
        target=Descriptor(media_type=t.media_type, digest=t.digest, size=t.size, annotations=dict(t.annotations)),
        labels=dict(im.labels),
        created_at=ns_from_ts(im.created_at) if im.HasField("created_at") else 0,
        updated_at=ns_from_ts(im.updated_at) if im.HasField("updated_at") else 0,
    )


def to_pb(im: Image) -> pb.Image:
    t = im.target
    return pb.Image(
        name=im.name,
        labels=im.labels,
        target=descriptor_pb2.Descriptor(
            media_type=t.media_type, digest=t.digest, size=t.size, annotations=t.annotations
        ),
        created_at=ts_from_ns(im.created_at),
        updated_at=ts_from_ns(im.updated_at),
    )


class ImagesService:
    def __init__(self, store: ImageStore) -> None:
        self.store = store

    async def Get(self, request: pb.GetImageRequest, context: Any) -> pb.GetImageResponse:
        return pb.GetImageResponse(image=to_pb(await self.store.get(namespace_of(context), request.name)))

    async def List(self, request: pb.ListImagesRequest, context: Any) -> pb.ListImagesResponse:
        ims = await self.store.list(namespace_of(context), list(request.filters))
        return pb.ListImagesResponse(images=[to_pb(i) for i in ims])

    async def Create(self, request: pb.CreateImageRequest, context: Any) -> pb.CreateImageResponse:
        if not request.image.name:
            raise errdefs.InvalidArgument("Image.Name required")
        im = await self.store.create(namespace_of(context), from_pb(request.image))
        return pb.CreateImageResponse(image=to_pb(im))

    async def Update(self, request: pb.UpdateImageRequest, context: Any) -> pb.UpdateImageResponse:
        if not request.image.name:
            raise errdefs.InvalidArgument("Image.Name required")
        paths = field_paths(request.update_mask) if request.HasField("update_mask") else []
        im = await self.store.update(namespace_of(context), from_pb(request.image), paths)
        return pb.UpdateImageResponse(image=to_pb(im))

    async def Delete(self, request: pb.DeleteImageRequest, context: Any) -> empty_pb2.Empty:
        await self.store.delete(namespace_of(context), request.name, sync=request.sync)
        return empty_pb2.Empty()

    def add_to_server(self, server: Server) -> None:
        add_servicer(server, self, pb, "Images")


async def _init_store(ctx: InitContext) -> ImageStore:
    meta = ctx.require(Metadata, types.METADATA)
    gc = ctx.optional(Scheduler, types.GC, "scheduler")
    return ImageStore(meta.db, ctx.daemon.exchange, collect=gc.run_now if gc is not None else None)


async def _init_service(ctx: InitContext) -> ImagesService:
    return ImagesService(ctx.get(types.SERVICE, "images-service"))


REGISTRATIONS = [
    Registration(type=types.SERVICE, id="images-service", init=_init_store, requires=(types.METADATA, types.GC)),
    Registration(type=types.GRPC, id="images", init=_init_service, requires=(types.SERVICE,)),
]
