"""Version service: the daemon's version and revision.

``ctr version`` asks it (and ``Introspection.Server``) of every daemon, so it is answered with a
hand-written codec (``rpc.wire``): an idle daemon answering it never imports protobuf (W6, idle
PSS).  ``version_pb2`` is imported only by a call needing its descriptor (none: the service has one
method)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .. import __version__
from ..plugin import InitContext, Registration, types
from ..rpc import Server, wire
from .common import DeferredModule, add_servicer

if TYPE_CHECKING:
    from ..api.services.version.v1 import version_pb2
else:
    version_pb2 = DeferredModule(globals(), "version_pb2", "..api.services.version.v1.version_pb2",
                                 package="containerd.services.version.v1")

REVISION = "pycontainerd"

# containerd.services.version.v1.VersionResponse; the request is google.protobuf.Empty
VERSION = wire.FlatCodec(wire.EMPTY, wire.Schema("containerd.services.version.v1.VersionResponse",
                                                  (1, "version", wire.STRING), (2, "revision", wire.STRING)))


class VersionService:
    async def Version(self, request: Any, context: Any) -> dict[str, str]:
        return {"version": __version__, "revision": REVISION}

    def add_to_server(self, server: Server) -> None:
        add_servicer(server, self, version_pb2, "Version", {"Version": VERSION})


async def _init(ctx: InitContext) -> VersionService:
    return VersionService()


REGISTRATIONS = [Registration(type=types.GRPC, id="version", init=_init)]
