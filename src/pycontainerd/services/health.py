"""grpc.health.v1 (``client.IsServing``; kubelet and dockerd probe it)."""

from __future__ import annotations

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from ..plugin import InitContext, Registration, types


class HealthService:
    def __init__(self) -> None:
        self.servicer = health.aio.HealthServicer() if hasattr(health, "aio") else health.HealthServicer()

    def add_to_server(self, server: grpc.aio.Server) -> None:
        health_pb2_grpc.add_HealthServicer_to_server(self.servicer, server)

    async def start(self) -> None:
        res = self.servicer.set("", health_pb2.HealthCheckResponse.SERVING)
        if res is not None:
            await res


async def _init(ctx: InitContext) -> HealthService:
    return HealthService()


REGISTRATIONS = [Registration(type=types.GRPC, id="healthcheck", init=_init)]
