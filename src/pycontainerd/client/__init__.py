"""The pycontainerd client library: containerd's API v1 over gRPC, for pycontainerd and real containerd alike.

    async with Client("/run/pycontainerd/pycontainerd.sock", namespace="default") as c:
        print(await c.version())
        for ns in await c.namespaces.list():
            print(ns.name, ns.labels)

Errors come back as ``pycontainerd.errdefs`` kinds (``NotFound``, ``AlreadyExists`` ...).
``SyncClient`` wraps the same API for scripts that do not run an event loop.

The names are loaded on first use (PEP 562): ``import pycontainerd.client.quick`` (the
grpc-free probes the CLIs use for a fast ``version`` and a dead socket) must not pay for
importing grpc.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

DEFAULT_ADDRESS = "/run/pycontainerd/pycontainerd.sock"
DEFAULT_NAMESPACE = "default"
DEFAULT_RUNTIME = "io.containerd.runc.v2"
LOG_URI_LABEL = "io.pycontainerd.log-uri"  # where a container's output is kept (run -d, --log-uri)
KEEP_LOG_LABEL = "io.pycontainerd.log"  # "daemon": pycontainerd keeps the output of a task made without stdio
DEFAULT_CONF_DIR = "/etc/cni/net.d"  # CNI configs (``run --cni``)
DEFAULT_BIN_DIRS = ("/usr/lib/cni", "/opt/cni/bin")  # CNI plugins

if TYPE_CHECKING:
    from .core import Client, SyncClient, Version

__all__ = ["DEFAULT_ADDRESS", "DEFAULT_NAMESPACE", "Client", "SyncClient", "Version"]


def __getattr__(name: str) -> Any:
    if name in ("Client", "SyncClient", "Version"):
        from . import core

        return getattr(core, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
