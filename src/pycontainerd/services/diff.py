"""Diff service: Apply (layer blob → snapshot mounts) and Diff (two mounts → layer blob).

Apply answers with the *applied* descriptor: media type
``application/vnd.oci.image.layer.v1.tar``, the uncompressed digest (the diffID that ctr
compares with the image config) and size.  Blobs are read from, and diffs written to, the
caller's namespace of the content store (``content-service``), under the caller's lease.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .. import errdefs
from ..diff.walking import Descriptor, WalkingDiffer
from ..metadata.content import ContentStore
from ..mount import Mount
from ..plugin import InitContext, Registration, types
from ..rpc import Server
from .common import DeferredModule, add_servicer, lease_of, namespace_of
from .snapshots import mounts_from_pb

if TYPE_CHECKING:
    from ..api.services.diff.v1 import diff_pb2 as pb
    from ..api.types import descriptor_pb2
else:  # imported at the service's first call (W6, idle PSS)
    pb = DeferredModule(globals(), "pb", "..api.services.diff.v1.diff_pb2", package="containerd.services.diff.v1")
    descriptor_pb2 = DeferredModule(globals(), "descriptor_pb2", "..api.types.descriptor_pb2")


class Differ:
    """The walking differ over the namespaced content store (plugin ``diff-service``)."""

    def __init__(
        self, differ: WalkingDiffer, content: ContentStore, *, after_apply: Callable[[], None] | None = None
    ) -> None:
        self.differ = differ
        self.content = content
        # the daemon's memory trimmer: an apply churns through the layer in 1 MiB buffers
        self._after_apply = after_apply

    def _store(self, namespace: str, lease: str | None) -> Any:
        return self.content.namespaced(namespace, lease)

    async def apply(self, namespace: str, lease: str | None, desc: Descriptor, mounts: Sequence[Mount]) -> Descriptor:
        try:
            return await self.differ.apply(desc, mounts, self._store(namespace, lease))
        finally:
            if self._after_apply is not None:
                self._after_apply()

    async def compare(
        self,
        namespace: str,
        lease: str | None,
        lower: Sequence[Mount],
        upper: Sequence[Mount],
        *,
        media_type: str = "",
        ref: str = "",
        labels: Mapping[str, str] | None = None,
    ) -> Descriptor:
        return await self.differ.compare(
            lower, upper, self._store(namespace, lease), media_type=media_type, ref=ref, labels=labels
        )


def desc_pb(d: Descriptor) -> descriptor_pb2.Descriptor:
    return descriptor_pb2.Descriptor(media_type=d.media_type, digest=d.digest, size=d.size, annotations=d.annotations)


class DiffService:
    def __init__(self, differ: Differ) -> None:
        self.differ = differ

    async def Apply(self, request: pb.ApplyRequest, context: Any) -> pb.ApplyResponse:
        d = request.diff
        if not d.digest:
            raise errdefs.InvalidArgument("diff descriptor digest is required")
        desc = Descriptor(d.media_type, d.digest, d.size, dict(d.annotations))
        applied = await self.differ.apply(
            namespace_of(context), lease_of(context), desc, mounts_from_pb(request.mounts)
        )
        return pb.ApplyResponse(applied=desc_pb(applied))

    async def Diff(self, request: pb.DiffRequest, context: Any) -> pb.DiffResponse:
        desc = await self.differ.compare(
            namespace_of(context),
            lease_of(context),
            mounts_from_pb(request.left),
            mounts_from_pb(request.right),
            media_type=request.media_type,
            ref=request.ref,
            labels=dict(request.labels),
        )
        return pb.DiffResponse(diff=desc_pb(desc))

    def add_to_server(self, server: Server) -> None:
        add_servicer(server, self, pb, "Diff")


def _other_than_walking(differs: tuple[str, ...]) -> bool:
    return any(d != "walking" for d in differs)


@dataclass(frozen=True)
class DiffServiceConfig:
    """``[plugins."io.containerd.service.v1.diff-service"]``: the differs to use, in order."""

    default: tuple[str, ...] = field(
        default=("walking",),
        metadata={"unsupported": (_other_than_walking, "the walking differ is the only one here")},
    )


async def _init_differ(ctx: InitContext) -> Differ:
    return Differ(
        ctx.require(WalkingDiffer, types.DIFF, "walking"),
        ctx.require(ContentStore, types.SERVICE, "content-service"),
        after_apply=ctx.daemon.trimmer.request,
    )


async def _init_service(ctx: InitContext) -> DiffService:
    return DiffService(ctx.get(types.SERVICE, "diff-service"))


REGISTRATIONS = [
    Registration(type=types.SERVICE, id="diff-service", init=_init_differ,
                 # the content service: blobs are read from and diffs written to the caller's namespace
                 requires=(types.DIFF, types.METADATA, types.SERVICE), config=DiffServiceConfig),
    Registration(type=types.GRPC, id="diff", init=_init_service, requires=(types.SERVICE,)),
]
