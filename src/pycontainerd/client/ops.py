"""Clients of the daemon's operator endpoints: the debug socket (pprof, vars) and ``/v1/metrics``.

Plain HTTP, not gRPC: they work while the gRPC side is stuck, which is when an operator
needs them most.
"""

from __future__ import annotations

import json
from typing import Any

import httpx

from .. import errdefs

DEFAULT_DEBUG_ADDRESS = "/run/pycontainerd/debug.sock"


class DebugClient:
    def __init__(self, address: str = DEFAULT_DEBUG_ADDRESS, *, timeout: float = 30.0) -> None:
        self.address = address
        self.timeout = timeout

    async def get(self, path: str, *, wait: float | None = None) -> bytes:
        transport = httpx.AsyncHTTPTransport(uds=self.address)
        try:
            async with httpx.AsyncClient(transport=transport, timeout=wait or self.timeout) as c:
                r = await c.get(f"http://debug{path}")
        except httpx.TransportError as exc:
            from .quick import DaemonUnreachable

            raise DaemonUnreachable(
                f"cannot reach the daemon's debug socket {self.address}: {exc}; is the daemon running "
                "(`systemctl start pycontainerd`, or `pycontainerd` in a shell)? If its [debug] address is "
                "elsewhere, pass -d PATH") from exc
        if r.status_code != 200:
            raise errdefs.from_code(_status_kind(r.status_code), f"{path}: {r.status_code}: {r.text.strip()}")
        return r.content

    async def vars(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(await self.get("/debug/vars"))
        return data


def _status_kind(status: int) -> str:
    return {400: "INVALID_ARGUMENT", 403: "PERMISSION_DENIED", 404: "NOT_FOUND", 501: "UNIMPLEMENTED",
            503: "UNAVAILABLE"}.get(status, "UNKNOWN")


async def fetch_metrics(address: str, *, wait: float = 10.0) -> str:
    """The Prometheus text of ``http://<address>/v1/metrics``."""
    url = address if address.startswith("http") else f"http://{address}/v1/metrics"
    try:
        async with httpx.AsyncClient(timeout=wait) as c:
            r = await c.get(url)
    except httpx.TransportError as exc:
        raise errdefs.Unavailable(f"metrics endpoint {url}: {exc}") from exc
    if r.status_code != 200:
        raise errdefs.Unknown(f"metrics endpoint {url}: {r.status_code}")
    return r.text
