"""The Diff service through the client: compare two mounts into a layer, apply a layer onto mounts."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from ..api.services.diff.v1 import diff_pb2, diff_pb2_grpc
from ..images.models import Descriptor
from ..mount import Mount
from .images import desc_from_pb, desc_to_pb
from .snapshots import mounts_to_pb

if TYPE_CHECKING:
    from .core import Client


class Diff:
    """``client.diff``: the daemon's differ (``ctr snapshots diff``, layer unpack)."""

    def __init__(self, client: Client) -> None:
        self.client = client
        self.raw: Any = diff_pb2_grpc.DiffStub(client.channel)

    async def compare(
        self,
        lower: Sequence[Mount],
        upper: Sequence[Mount],
        *,
        media_type: str = "",
        ref: str = "",
        labels: Mapping[str, str] | None = None,
    ) -> Descriptor:
        """Write the changes from ``lower`` to ``upper`` as a layer into the content store; its descriptor."""
        req = diff_pb2.DiffRequest(left=mounts_to_pb(lower), right=mounts_to_pb(upper), media_type=media_type,
                                   ref=ref, labels=dict(labels or {}))
        resp = await self.client.unary(self.raw.Diff, req)
        return desc_from_pb(resp.diff)

    async def apply(self, layer: Descriptor, mounts: Sequence[Mount]) -> Descriptor:
        """Apply ``layer`` (from the content store) onto ``mounts``; the uncompressed layer's descriptor."""
        req = diff_pb2.ApplyRequest(diff=desc_to_pb(layer), mounts=mounts_to_pb(mounts))
        resp = await self.client.unary(self.raw.Apply, req)
        return desc_from_pb(resp.applied)
