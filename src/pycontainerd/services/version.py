"""Version service: the daemon's version and revision."""

from __future__ import annotations

from typing import Any

from google.protobuf import empty_pb2

from .. import __version__
from ..api.services.version.v1 import version_pb2
from ..plugin import InitContext, Registration, types
from ..rpc import Server
from .common import add_servicer

REVISION = "pycontainerd"


class VersionService:
    async def Version(self, request: empty_pb2.Empty, context: Any) -> version_pb2.VersionResponse:
        return version_pb2.VersionResponse(version=__version__, revision=REVISION)

    def add_to_server(self, server: Server) -> None:
        add_servicer(server, self, version_pb2, "Version")


async def _init(ctx: InitContext) -> VersionService:
    return VersionService()


REGISTRATIONS = [Registration(type=types.GRPC, id="version", init=_init)]
