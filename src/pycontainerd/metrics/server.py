"""``/v1/metrics`` over HTTP on ``[metrics] address`` (Prometheus text format), as containerd serves it."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST

from ..debug.http import HTTPServer, Request, Response
from .registry import DaemonMetrics

log = logging.getLogger("pycontainerd.metrics")


class MetricsServer:
    def __init__(self, daemon: Any, host: str, port: int, metrics: DaemonMetrics) -> None:
        self.daemon = daemon
        self.host = host
        self.port = port
        self.metrics = metrics
        self.addresses: list[tuple[str, int]] = []
        self._scrape = asyncio.Lock()
        self.http = HTTPServer({"/v1/metrics": self._serve}, name="metrics server")

    async def start(self) -> None:
        self.addresses = await self.http.start_tcp(self.host, self.port)
        self.metrics.start_lag_probe()
        log.info("metrics served on http://%s:%d/v1/metrics", self.host, self.addresses[0][1])

    async def close(self) -> None:
        await self.http.close()
        await self.metrics.close()

    def _running_tasks(self) -> list[Any]:
        from ..plugin import types

        try:
            manager = self.daemon.plugins.get(types.RUNTIME_V2, "task")
        except Exception:
            return []
        tasks: list[Any] = manager.running_tasks()
        return tasks

    async def _serve(self, req: Request) -> Response:
        async with self._scrape:  # one render at a time; the snapshot is taken on the loop
            self.metrics.set_tasks(self._running_tasks())
            body = await asyncio.to_thread(self.metrics.render)
        return Response(200, body, CONTENT_TYPE_LATEST)
