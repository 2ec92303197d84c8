"""One table of every gRPC method the daemon serves, given to the server as one handler.

The generated ``add_*Servicer_to_server`` functions register a service twice: as a generic
handler and as "registered methods" (which grpc.aio prefers when both exist).  With the
daemon's ~15 services and ~90 methods, the registered-method path costs each call more than
a plain lookup does: a Version call took ~35 µs (7 %) more server time than with one generic
handler, and the cost grows with the number of services (``bench/rpc_latency.py``, see
HACKING.md "gRPC server").  So plugins add their services to a ``MethodTable`` instead of
the server; the table keeps each method's handler by its full name (``/pkg.Service/Method``)
and ``install`` gives the server one generic handler: one dict lookup a call.

A generic handler added on its own (without registered methods: hand-written or older
generated code) is kept and asked after the table, in the order it was added.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any, NoReturn

import grpc

if TYPE_CHECKING:  # generic only in grpc-stubs
    Handler = grpc.RpcMethodHandler[Any, Any]
    Wrapper = Callable[[str, Handler], Handler]
    """``wrap(full_method, handler) -> handler``: what the daemon wraps around every method."""


class MethodTable(grpc.aio.Server):
    """Stands in for the ``grpc.aio.Server`` while plugins add their services to it; it
    serves nothing itself (``add_insecure_port``, ``start``... are refused)."""

    def __init__(self) -> None:
        self.handlers: dict[str, grpc.RpcMethodHandler[Any, Any]] = {}
        self._generic: list[grpc.GenericRpcHandler[Any, Any]] = []

    # -- what the generated add_*Servicer_to_server functions call ----------------------------
    def add_generic_rpc_handlers(self, generic_rpc_handlers: Iterable[grpc.GenericRpcHandler[Any, Any]]) -> None:
        self._generic.extend(generic_rpc_handlers)

    def add_registered_method_handlers(self, service_name: str,
                                       method_handlers: dict[str, grpc.RpcMethodHandler[Any, Any]]) -> None:
        for name, handler in method_handlers.items():
            method = f"/{service_name}/{name}"
            if method in self.handlers:
                raise ValueError(f"gRPC method {method} is added twice")
            self.handlers[method] = handler

    def install(self, server: grpc.aio.Server, wrappers: Sequence[Wrapper] = ()) -> None:
        """Give ``server`` the table (first) and the generic handlers that came on their own.

        Each of ``wrappers`` (``wrap(full_method, handler) -> handler``: metrics, timing) is
        applied to each method's handler here, once, the first one outermost; a method of a
        generic handler that came alone is wrapped on its first call."""
        handlers = {method: _wrapped(method, h, wrappers) for method, h in self.handlers.items()}
        fallback: list[grpc.GenericRpcHandler[Any, Any]] = []
        if self._generic:
            fallback = [_Wrapping(self._generic, wrappers)] if wrappers else list(self._generic)
        server.add_generic_rpc_handlers([_Lookup(handlers), *fallback])

    # -- a MethodTable serves nothing ----------------------------------------------------------
    def _refuse(self, what: str) -> NoReturn:
        raise TypeError(f"MethodTable only collects method handlers: {what} belongs to the daemon's server")

    def add_insecure_port(self, address: str) -> int:
        self._refuse("add_insecure_port")

    def add_secure_port(self, address: str, server_credentials: grpc.ServerCredentials) -> int:
        self._refuse("add_secure_port")

    async def start(self) -> None:
        self._refuse("start")

    async def stop(self, grace: float | None = None) -> None:
        self._refuse("stop")

    async def wait_for_termination(self, timeout: float | None = None) -> bool:  # noqa: ASYNC109 - the Server API
        self._refuse("wait_for_termination")


def _wrapped(method: str, handler: Handler, wrappers: Sequence[Wrapper]) -> Handler:
    for wrap in reversed(wrappers):
        handler = wrap(method, handler)
    return handler


class _Wrapping(grpc.GenericRpcHandler):  # type: ignore[type-arg]
    """Generic handlers whose methods get the wrappers, each method on its first call."""

    def __init__(self, generic: Sequence[grpc.GenericRpcHandler[Any, Any]], wrappers: Sequence[Wrapper]) -> None:
        self._generic = list(generic)
        self._wrappers = list(wrappers)
        self._done: dict[str, Handler] = {}  # only methods that exist: unknown names are not kept

    def service(self, handler_call_details: grpc.HandlerCallDetails) -> Handler | None:
        method = handler_call_details.method
        handler = self._done.get(method)
        if handler is not None:
            return handler
        for generic in self._generic:
            found = generic.service(handler_call_details)
            if found is not None:
                handler = self._done[method] = _wrapped(method, found, self._wrappers)
                return handler
        return None


class _Lookup(grpc.GenericRpcHandler):  # type: ignore[type-arg]
    def __init__(self, handlers: dict[str, grpc.RpcMethodHandler[Any, Any]]) -> None:
        self._get = handlers.get

    def service(self, handler_call_details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler[Any, Any] | None:
        return self._get(handler_call_details.method)

