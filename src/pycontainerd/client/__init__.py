"""The pycontainerd client library: containerd's API v1 over gRPC, for pycontainerd and real containerd alike.

    async with Client("/run/pycontainerd/pycontainerd.sock", namespace="default") as c:
        print(await c.version())
        for ns in await c.namespaces.list():
            print(ns.name, ns.labels)

Errors come back as ``pycontainerd.errdefs`` kinds (``NotFound``, ``AlreadyExists`` ...).
``SyncClient`` wraps the same API for scripts that do not run an event loop.
"""

from .core import DEFAULT_ADDRESS, DEFAULT_NAMESPACE, Client, SyncClient, Version

__all__ = ["DEFAULT_ADDRESS", "DEFAULT_NAMESPACE", "Client", "SyncClient", "Version"]
