"""grpc.health.v1 (``client.IsServing``; kubelet and dockerd probe it): Check and Watch.

The service "" (the whole daemon) is SERVING once the plugins have started; other names
are unknown (NOT_FOUND on Check, SERVICE_UNKNOWN on Watch, as grpc's own servicer answers).
Check (what kubelet, dockerd and load balancers probe) has a hand-written codec (``rpc.wire``):
a daemon probed only by health checks never imports protobuf (W6, idle PSS).  Watch imports
``grpc_health.v1.health_pb2`` (the message module only: it does not import grpc) at its first call.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from .. import errdefs
from ..plugin import InitContext, Registration, types
from ..rpc import Server, ServicerContext, wire
from .common import DeferredModule, add_servicer

if TYPE_CHECKING:
    from grpc_health.v1 import health_pb2
else:
    health_pb2 = DeferredModule(globals(), "health_pb2", "grpc_health.v1.health_pb2", package="grpc.health.v1")

# grpc.health.v1.HealthCheckResponse.ServingStatus
UNKNOWN, SERVING, NOT_SERVING, SERVICE_UNKNOWN = 0, 1, 2, 3

CHECK = wire.FlatCodec(wire.Schema("grpc.health.v1.HealthCheckRequest", (1, "service", wire.STRING)),
                       wire.Schema("grpc.health.v1.HealthCheckResponse", (1, "status", wire.ENUM)))


class HealthService:
    def __init__(self) -> None:
        self.statuses: dict[str, int] = {}
        self._changed = asyncio.Event()  # set and replaced on each change: wakes the watchers

    def set(self, service: str, status: int) -> None:
        self.statuses[service] = status
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    async def Check(self, request: Any, context: ServicerContext) -> dict[str, int]:
        """``request``: ``CHECK``'s HealthCheckRequest (``.service``); answers its response's fields."""
        status = self.statuses.get(request.service)
        if status is None:
            raise errdefs.NotFound("unknown service")
        return {"status": status}

    async def Watch(self, request: health_pb2.HealthCheckRequest, context: ServicerContext
                    ) -> AsyncIterator[health_pb2.HealthCheckResponse]:
        last = None
        while True:
            changed = self._changed
            status = self.statuses.get(request.service, SERVICE_UNKNOWN)
            if status != last:
                yield health_pb2.HealthCheckResponse(status=status)
                last = status
            await changed.wait()

    def add_to_server(self, server: Server) -> None:
        add_servicer(server, self, health_pb2, "Health", {"Check": CHECK})

    async def start(self) -> None:
        self.set("", SERVING)

    async def close(self) -> None:
        self.set("", NOT_SERVING)


async def _init(ctx: InitContext) -> HealthService:
    return HealthService()


REGISTRATIONS = [Registration(type=types.GRPC, id="healthcheck", init=_init)]
