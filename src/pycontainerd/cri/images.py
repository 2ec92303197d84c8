"""runtime.v1.ImageService: ListImages ImageStatus PullImage RemoveImage ImageFsInfo (translation only)."""

from __future__ import annotations

import json
from typing import Any

import grpc

from .. import errdefs
from ..api.cri.runtime.v1 import api_pb2 as pb
from ..api.cri.runtime.v1 import api_pb2_grpc as pb_grpc
from ..services.common import add_servicer
from .imagestore import CriImage, CriImageStore, PullAuth


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


class ImageService(pb_grpc.ImageServiceServicer):
    def __init__(self, store: CriImageStore) -> None:
        self.store = store

    async def ListImages(self, request: pb.ListImagesRequest, context: Any) -> pb.ListImagesResponse:
        # like containerd (1.6 and later), the filter is not applied: every image is listed
        return pb.ListImagesResponse(images=[image_pb(i) for i in await self.store.list()])

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
        auth = auth_from_pb(request.auth) if request.HasField("auth") else None
        image_id = await self.store.pull(request.image.image, auth)
        return pb.PullImageResponse(image_ref=image_id)

    async def RemoveImage(self, request: pb.RemoveImageRequest, context: Any) -> pb.RemoveImageResponse:
        await self.store.remove(request.image.image)  # a missing image is not an error
        return pb.RemoveImageResponse()

    async def ImageFsInfo(self, request: pb.ImageFsInfoRequest, context: Any) -> pb.ImageFsInfoResponse:
        u = await self.store.fs_usage()
        fs = pb.FilesystemUsage(timestamp=u.timestamp, fs_id=pb.FilesystemIdentifier(mountpoint=u.mountpoint),
                                used_bytes=pb.UInt64Value(value=u.used_bytes),
                                inodes_used=pb.UInt64Value(value=u.inodes_used))
        return pb.ImageFsInfoResponse(image_filesystems=[fs])

    def add_to_server(self, server: grpc.aio.Server) -> None:
        add_servicer(server, pb_grpc.add_ImageServiceServicer_to_server, self, pb, "ImageService")
