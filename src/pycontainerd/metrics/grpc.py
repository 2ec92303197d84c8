"""gRPC server metrics with go-grpc-prometheus's names, as containerd exports them.

``grpc_server_started_total`` and ``grpc_server_handled_total`` (by ``grpc_type``,
``grpc_service``, ``grpc_method``, and ``grpc_code`` for handled), ``grpc_server_msg_received_total``
and ``grpc_server_msg_sent_total`` (unary calls: one each), and with ``[metrics] grpc_histogram``
``grpc_server_handling_seconds`` (Go's default buckets).  Counting is a dict lookup and an
increment per call, on the loop.
"""

from __future__ import annotations

import inspect
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
from prometheus_client import CollectorRegistry, Counter, Histogram

from .. import errdefs

GO_DEFAULT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_LABELS = ("grpc_type", "grpc_service", "grpc_method")


def split_method(full: str) -> tuple[str, str]:
    service, _, method = full.lstrip("/").rpartition("/")
    return service or "unknown", method or full


def _code_of(exc: BaseException | None, context: Any) -> str:
    """The status code of a finished call, in Go's spelling ("OK", "NotFound", "Canceled")."""
    if isinstance(exc, errdefs.ContainerdError):
        return _camel(exc.code)
    if exc is not None and not isinstance(exc, grpc.aio.AbortError):
        return "Canceled" if type(exc).__name__ == "CancelledError" else "Unknown"
    code: Any = None
    try:
        code = context.code()
    except Exception:
        code = None
    if isinstance(code, grpc.StatusCode):
        return _camel(code.name)
    if isinstance(code, int) and code:
        return _by_number(code)
    return "OK" if exc is None else "Unknown"


def _by_number(n: int) -> str:
    for sc in grpc.StatusCode:
        if sc.value[0] == n:
            return _camel(sc.name)
    return "Unknown"


def _camel(name: str) -> str:
    # go-grpc-prometheus labels codes by Go's codes.Code.String(): "OK", "NotFound", "Canceled"
    if name in ("OK", "CANCELLED", "CANCELED"):
        return "OK" if name == "OK" else "Canceled"
    return "".join(p.capitalize() for p in name.lower().split("_"))


class GRPCMetrics:
    def __init__(self, registry: CollectorRegistry, *, histogram: bool) -> None:
        self.started = Counter("grpc_server_started", "Total number of RPCs started on the server.",
                               _LABELS, registry=registry)
        self.handled = Counter("grpc_server_handled",
                               "Total number of RPCs completed on the server, regardless of success or failure.",
                               (*_LABELS, "grpc_code"), registry=registry)
        self.received = Counter("grpc_server_msg_received", "Total number of RPC stream messages received on the "
                                "server.", _LABELS, registry=registry)
        self.sent = Counter("grpc_server_msg_sent", "Total number of gRPC stream messages sent by the server.",
                            _LABELS, registry=registry)
        self.seconds: Histogram | None = None
        if histogram:
            self.seconds = Histogram("grpc_server_handling_seconds", "Histogram of response latency (seconds) of "
                                     "gRPC that had been application-level handled by the server.", _LABELS,
                                     buckets=GO_DEFAULT_BUCKETS, registry=registry)


class MetricsInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[type-arg]
    def __init__(self, registry: CollectorRegistry, *, histogram: bool) -> None:
        self.m = GRPCMetrics(registry, histogram=histogram)
        # the labelled children of each method (and code), made once: ``labels()`` costs microseconds
        self._children: dict[tuple[str, str, str], tuple[Any, Any, Any, Any]] = {}
        self._handled: dict[tuple[str, str, str, str], Any] = {}

    def _method(self, labels: tuple[str, str, str]) -> tuple[Any, Any, Any, Any]:
        c = self._children.get(labels)
        if c is None:
            m = self.m
            hist = m.seconds.labels(*labels) if m.seconds is not None else None
            c = self._children[labels] = (m.started.labels(*labels), m.sent.labels(*labels),
                                          m.received.labels(*labels), hist)
        return c

    def _handled_child(self, labels: tuple[str, str, str], code: str) -> Any:
        key = (*labels, code)
        c = self._handled.get(key)
        if c is None:
            c = self._handled[key] = self.m.handled.labels(*key)
        return c

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any]]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any]:
        handler = await continuation(handler_call_details)
        if handler is None:
            return handler
        service, method = split_method(handler_call_details.method)
        if handler.unary_unary is not None:
            kind, inner, make = "unary", handler.unary_unary, grpc.unary_unary_rpc_method_handler
        elif handler.unary_stream is not None:
            kind, inner, make = "server_stream", handler.unary_stream, grpc.unary_stream_rpc_method_handler
        elif handler.stream_unary is not None:
            kind, inner, make = "client_stream", handler.stream_unary, grpc.stream_unary_rpc_method_handler
        elif handler.stream_stream is not None:
            kind, inner, make = "bidi_stream", handler.stream_stream, grpc.stream_stream_rpc_method_handler
        else:  # pragma: no cover - every handler has one of the four
            return handler
        labels = (kind, service, method)
        started, sent, received, hist = self._method(labels)

        def done(exc: BaseException | None, context: Any, t0: float) -> None:
            self._handled_child(labels, _code_of(exc, context)).inc()
            if hist is not None:
                hist.observe(time.perf_counter() - t0)

        if inspect.isasyncgenfunction(inner):
            gen_inner = inner

            async def gen(request: Any, context: Any) -> AsyncIterator[Any]:
                started.inc()
                if kind == "server_stream":
                    received.inc()
                t0 = time.perf_counter()
                exc: BaseException | None = None
                try:
                    async for item in gen_inner(request, context):
                        sent.inc()
                        yield item
                except BaseException as e:
                    exc = e
                    raise
                finally:
                    done(exc, context, t0)

            wrapped: Any = gen
        else:
            co_inner = inner

            async def call(request: Any, context: Any) -> Any:
                started.inc()
                if kind in ("unary", "server_stream"):
                    received.inc()
                t0 = time.perf_counter()
                exc: BaseException | None = None
                try:
                    result = await co_inner(request, context)
                    if kind in ("unary", "client_stream"):
                        sent.inc()
                    return result
                except BaseException as e:
                    exc = e
                    raise
                finally:
                    done(exc, context, t0)

            wrapped = call
        return make(wrapped, request_deserializer=handler.request_deserializer,
                    response_serializer=handler.response_serializer)
