"""ttrpc: the light RPC protocol containerd speaks with its runtime v2 shims.

``protocol`` is the sans-IO part (frames, stream ids, Request/Response, status codes);
``aio`` is the asyncio ``Client`` and ``Server`` over unix sockets.  The package needs
protobuf but never grpc (import-linter contract ``ttrpc-free-of-grpc``).

``aio`` is imported on first use of one of its names: the shim, which runs its own small
loop (``pycontainerd.shim.loop``) over ``protocol``, never loads asyncio.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .protocol import (
    MAX_MESSAGE_LENGTH,
    ClientConnection,
    Frame,
    FrameDecoder,
    FrameIgnored,
    MessageType,
    OversizedFrame,
    Request,
    RequestReceived,
    RequestRefused,
    Response,
    ResponseReceived,
    ServerConnection,
    Status,
    encode_frame,
)

if TYPE_CHECKING:
    from .aio import CallContext, Client, Handler, Method, Server, socket_path

_AIO_NAMES = frozenset({"CallContext", "Client", "Handler", "Method", "Server", "socket_path"})


def __getattr__(name: str) -> Any:
    if name in _AIO_NAMES:
        from . import aio

        return getattr(aio, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "MAX_MESSAGE_LENGTH",
    "CallContext",
    "Client",
    "ClientConnection",
    "Frame",
    "FrameDecoder",
    "FrameIgnored",
    "Handler",
    "MessageType",
    "Method",
    "OversizedFrame",
    "Request",
    "RequestReceived",
    "RequestRefused",
    "Response",
    "ResponseReceived",
    "Server",
    "ServerConnection",
    "Status",
    "encode_frame",
    "socket_path",
]
