"""runtime.v1.ImageService: ListImages StreamImages ImageStatus PullImage RemoveImage ImageFsInfo (translation only).

Methods the servicer does not define answer UNIMPLEMENTED by name (``runtime.unimplemented_methods``).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Mapping
from typing import Any

from .. import errdefs
from ..api.cri.runtime.v1 import api_pb2 as pb
from ..rpc import Server
from ..services.common import add_servicer
from .imagestore import CriImage, CriImageStore, FsUsage, PullAuth
from .runtime import batches, fill_unimplemented

RUNTIME_HANDLER_ANNOTATION = "io.containerd.cri.runtime-handler"


def image_pb(img: CriImage) -> pb.Image:
    out = pb.Image(id=img.id, repo_tags=img.repo_tags, repo_digests=img.repo_digests, size=img.size)
    uid, username = img.user
    if uid is not None:
        out.uid.value = uid
    out.username = username
    return out


def auth_from_pb(a: pb.AuthConfig) -> PullAuth:
    return PullAuth(username=a.username, password=a.password, auth=a.auth, server_address=a.server_address,
                    identity_token=a.identity_token, registry_token=a.registry_token)


class ImageService:
    def __init__(self, store: CriImageStore, runtime_snapshotters: Mapping[str, str] | None = None) -> None:
        self.store = store
        # runtime handler name -> the snapshotter its images unpack into ("" = the CRI default)
        self.runtime_snapshotters = dict(runtime_snapshotters or {})

    async def ListImages(self, request: pb.ListImagesRequest, context: Any) -> pb.ListImagesResponse:
        # like containerd (1.6 and later), the filter is not applied: every image is listed
        return pb.ListImagesResponse(images=[image_pb(i) for i in await self.store.list()])

    async def StreamImages(self, request: pb.StreamImagesRequest, context: Any
                           ) -> AsyncIterator[pb.StreamImagesResponse]:
        for chunk in batches([image_pb(i) for i in await self.store.list()]):
            yield pb.StreamImagesResponse(images=chunk)

    def _snapshotter_for(self, request: pb.PullImageRequest) -> str:
        """Where a pull unpacks: the snapshotter of ImageSpec.runtime_handler (1.29+), else of the
        sandbox config's ``io.containerd.cri.runtime-handler`` annotation (containerd 1.7's way), when
        that handler names one; "" for the CRI's.  A handler that is not configured is refused."""
        handler = (request.image.runtime_handler
                   or request.sandbox_config.annotations.get(RUNTIME_HANDLER_ANNOTATION, ""))
        if not handler:
            return ""
        if handler not in self.runtime_snapshotters:
            raise errdefs.NotFound(f"no runtime for {handler!r} is configured: cannot pull an image for it")
        return self.runtime_snapshotters[handler]

    async def ImageStatus(self, request: pb.ImageStatusRequest, context: Any) -> pb.ImageStatusResponse:
        try:
            img = await self.store.resolve(request.image.image)
        except errdefs.NotFound:
            return pb.ImageStatusResponse()  # containerd: OK with no image
        info: dict[str, str] = {}
        if request.verbose:
            info["info"] = json.dumps({"chainID": img.chain_id, "imageSpec": img.config})
        return pb.ImageStatusResponse(image=image_pb(img), info=info)

    async def PullImage(self, request: pb.PullImageRequest, context: Any) -> pb.PullImageResponse:
        snapshotter = self._snapshotter_for(request)
        auth = auth_from_pb(request.auth) if request.HasField("auth") else None
        image_id = await self.store.pull(request.image.image, auth, snapshotter=snapshotter)
        return pb.PullImageResponse(image_ref=image_id)

    async def RemoveImage(self, request: pb.RemoveImageRequest, context: Any) -> pb.RemoveImageResponse:
        await self.store.remove(request.image.image)  # a missing image is not an error
        return pb.RemoveImageResponse()

    async def ImageFsInfo(self, request: pb.ImageFsInfoRequest, context: Any) -> pb.ImageFsInfoResponse:
        images, containers = await self.store.fs_usage()
        return pb.ImageFsInfoResponse(image_filesystems=[_fs_pb(images)], container_filesystems=[_fs_pb(containers)])

    def add_to_server(self, server: Server) -> None:
        fill_unimplemented(self, "ImageService")
        add_servicer(server, self, pb, "ImageService")


def _fs_pb(u: FsUsage) -> pb.FilesystemUsage:
    return pb.FilesystemUsage(timestamp=u.timestamp, fs_id=pb.FilesystemIdentifier(mountpoint=u.mountpoint),
                              used_bytes=pb.UInt64Value(value=u.used_bytes),
                              inodes_used=pb.UInt64Value(value=u.inodes_used))
