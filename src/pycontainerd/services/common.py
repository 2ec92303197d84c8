"""What every servicer shares: namespace/lease headers, error mapping, protobuf helpers.

Servicer methods raise ``errdefs`` kinds; ``wrap_servicer`` (applied once when a servicer is
added to the server) turns them into gRPC status codes with their message, so no method
calls ``context.abort`` itself.  Unexpected exceptions become UNKNOWN with the exception
text and are logged with a traceback, never a silent hang.
"""

from __future__ import annotations

import functools
import inspect
import logging
from collections.abc import Callable
from typing import Any

import grpc
from google.protobuf import timestamp_pb2

from .. import errdefs, identifiers

log = logging.getLogger("pycontainerd.services")

NAMESPACE_HEADER = "containerd-namespace"
LEASE_HEADER = "containerd-lease"

_CODES: dict[str, grpc.StatusCode] = {c.name: c for c in grpc.StatusCode}


def status_code(exc: errdefs.ContainerdError) -> grpc.StatusCode:
    return _CODES.get(exc.code, grpc.StatusCode.UNKNOWN)


def _header(context: grpc.aio.ServicerContext[Any, Any], name: str) -> str | None:
    for key, value in context.invocation_metadata() or ():
        if key == name:
            return value if isinstance(value, str) else value.decode()
    return None


def namespace_of(context: grpc.aio.ServicerContext[Any, Any]) -> str:
    """The request's namespace; InvalidArgument when missing or malformed, like containerd."""
    ns = _header(context, NAMESPACE_HEADER)
    if not ns:
        raise errdefs.FailedPrecondition("namespace is required: set the containerd-namespace header (ctr -n)")
    identifiers.validate(ns)
    return ns


def lease_of(context: grpc.aio.ServicerContext[Any, Any]) -> str | None:
    return _header(context, LEASE_HEADER) or None


def _abort_args(exc: BaseException, method: str) -> tuple[grpc.StatusCode, str]:
    if isinstance(exc, errdefs.ContainerdError):
        return status_code(exc), str(exc)
    log.exception("unexpected error in %s", method)
    return grpc.StatusCode.UNKNOWN, f"{type(exc).__name__}: {exc}"


def _wrap(method: Callable[..., Any], name: str) -> Callable[..., Any]:
    if inspect.isasyncgenfunction(method):
        # Served as a coroutine that writes each item, not as a generator handed to grpc: when
        # the client goes away grpc cancels the handler's task, and only a coroutine gets that
        # CancelledError inside our code.  A generator suspended at ``yield`` would just be
        # dropped, its ``finally`` (releasing an ingest lock, a subscription) left to whenever
        # the garbage collector finalizes it.
        @functools.wraps(method)
        async def stream(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> None:
            gen = method(request, context)
            try:
                async for item in gen:
                    await context.write(item)
            except grpc.aio.AbortError:
                raise
            except Exception as exc:
                code, msg = _abort_args(exc, name)
                await context.abort(code, msg)
            finally:
                await gen.aclose()

        return stream

    @functools.wraps(method)
    async def unary(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        try:
            return await method(request, context)
        except grpc.aio.AbortError:
            raise
        except Exception as exc:
            code, msg = _abort_args(exc, name)
            await context.abort(code, msg)

    return unary


def wrap_servicer(servicer: Any, service_names: list[str]) -> Any:
    """Wrap each RPC method of ``servicer`` so errdefs kinds become status codes."""
    for name in service_names:
        method = getattr(servicer, name, None)
        if method is not None and (inspect.iscoroutinefunction(method) or inspect.isasyncgenfunction(method)):
            setattr(servicer, name, _wrap(method, f"{type(servicer).__name__}.{name}"))
    return servicer


def add_servicer(
    server: grpc.aio.Server, add_fn: Callable[[Any, Any], None], servicer: Any, pb2_module: Any, service: str
) -> None:
    """Register a servicer after wrapping its methods for error translation."""
    methods = list(pb2_module.DESCRIPTOR.services_by_name[service].methods_by_name)
    add_fn(wrap_servicer(servicer, methods), server)


# -- protobuf helpers ---------------------------------------------------------------------
def ts_from_ns(ns: int) -> timestamp_pb2.Timestamp:
    ts = timestamp_pb2.Timestamp()
    ts.seconds, ts.nanos = divmod(ns, 1_000_000_000)
    return ts


def ns_from_ts(ts: timestamp_pb2.Timestamp) -> int:
    return ts.seconds * 1_000_000_000 + ts.nanos


def field_paths(mask: Any) -> list[str]:
    """The paths of a FieldMask (empty list when unset)."""
    return list(mask.paths) if mask is not None else []


