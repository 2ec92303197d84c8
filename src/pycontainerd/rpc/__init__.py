"""gRPC on asyncio without grpc: the daemon's server (``server``), its handler context
(``context``), status codes (``status``), method table and codecs (``methods``), the
hand-written codec of flat messages (``wire``) and per-call hooks (``observer``).  Domain-level:
never imports grpc or the generated API, and the protobuf runtime only when a method needs it.

This ``__init__`` re-exports the names servicers use; importing it loads the server too (the
daemon needs it anyway).
"""

from .context import ServicerContext
from .encoded import Encoded, EncodedStream
from .methods import Method
from .observer import Observer
from .server import Server
from .status import AbortError, StatusCode, code_of_kind, status_of

__all__ = ["AbortError", "Encoded", "EncodedStream", "Method", "Observer", "Server", "ServicerContext", "StatusCode",
           "code_of_kind", "status_of"]
