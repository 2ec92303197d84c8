"""ttrpc: the light RPC protocol containerd speaks with its runtime v2 shims.

``protocol`` is the sans-IO part (frames, stream ids, Request/Response, status codes);
``aio`` is the asyncio ``Client`` and ``Server`` over unix sockets.  The package needs
protobuf but never grpc (import-linter contract ``ttrpc-free-of-grpc``).
"""

from __future__ import annotations

from .aio import CallContext, Client, Handler, Method, Server, socket_path
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
