"""grpc.health.v1 (``client.IsServing``; kubelet and dockerd probe it): Check and Watch.

The service "" (the whole daemon) is SERVING once the plugins have started; other names
are unknown (NOT_FOUND on Check, SERVICE_UNKNOWN on Watch, as grpc's own servicer answers).
``grpc_health.v1.health_pb2`` is the message module only: it does not import grpc.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from grpc_health.v1 import health_pb2

from .. import errdefs
from ..plugin import InitContext, Registration, types
from ..rpc import Server, ServicerContext
from .common import add_servicer

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
SERVICE_UNKNOWN = health_pb2.HealthCheckResponse.SERVICE_UNKNOWN


class HealthService:
    def __init__(self) -> None:
        self.statuses: dict[str, health_pb2.HealthCheckResponse.ServingStatus.ValueType] = {}
        self._changed = asyncio.Event()  # set and replaced on each change: wakes the watchers

    def set(self, service: str, status: health_pb2.HealthCheckResponse.ServingStatus.ValueType) -> None:
        self.statuses[service] = status
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    async def Check(self, request: health_pb2.HealthCheckRequest, context: ServicerContext
                    ) -> health_pb2.HealthCheckResponse:
        status = self.statuses.get(request.service)
        if status is None:
            raise errdefs.NotFound("unknown service")
        return health_pb2.HealthCheckResponse(status=status)

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
        add_servicer(server, self, health_pb2, "Health")

    async def start(self) -> None:
        self.set("", SERVING)

    async def close(self) -> None:
        self.set("", NOT_SERVING)


async def _init(ctx: InitContext) -> HealthService:
    return HealthService()


REGISTRATIONS = [Registration(type=types.GRPC, id="healthcheck", init=_init)]
