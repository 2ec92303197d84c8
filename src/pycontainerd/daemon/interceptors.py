"""Server interceptors: per-call timing at debug level (what a slow ``ctr run`` spends where)."""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import grpc

log = logging.getLogger("pycontainerd.grpc")


class TimingInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[type-arg]
    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any]]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any]:
        handler = await continuation(handler_call_details)
        if handler is None or not log.isEnabledFor(logging.DEBUG):
            return handler
        method = handler_call_details.method
        if handler.unary_unary is not None:
            inner = handler.unary_unary

            async def timed(request: Any, context: Any) -> Any:
                start = time.perf_counter()
                try:
                    return await inner(request, context)
                finally:
                    log.debug("rpc %s took %.2f ms", method, (time.perf_counter() - start) * 1000)

            return grpc.unary_unary_rpc_method_handler(
                timed,
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        return handler
