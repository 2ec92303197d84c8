"""Per-call timing at debug level (what a slow ``ctr run`` spends where).

A handler wrapper (``MethodTable.install(server, wrappers)`` applies it to each method once),
not a grpc.aio interceptor, which would run again for every call.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import grpc

log = logging.getLogger("pycontainerd.grpc")


def timed(method: str, handler: grpc.RpcMethodHandler[Any, Any]) -> grpc.RpcMethodHandler[Any, Any]:
    """``handler`` logging how long each unary call of ``method`` took (others unchanged)."""
    if handler.unary_unary is None:
        return handler
    inner = handler.unary_unary

    async def call(request: Any, context: Any) -> Any:
        start = time.perf_counter()
        try:
            return await inner(request, context)
        finally:
            log.debug("rpc %s took %.2f ms", method, (time.perf_counter() - start) * 1000)

    return grpc.unary_unary_rpc_method_handler(
        call,
        request_deserializer=handler.request_deserializer,
        response_serializer=handler.response_serializer,
    )
