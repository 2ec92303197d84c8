"""What every servicer shares: namespace/lease headers, registration, protobuf helpers.

Servicer methods raise ``errdefs`` kinds and never call ``context.abort`` themselves: the
server (``rpc.server``, through ``rpc.status.status_of``) turns a kind into its gRPC status
with the kind's message, and anything unexpected into UNKNOWN with the exception text and a
logged traceback, never a silent hang.  Servicers are plain classes (no generated
``*_pb2_grpc`` base): a method a servicer lacks answers UNIMPLEMENTED.
"""

from __future__ import annotations

import importlib
from typing import Any

from google.protobuf import timestamp_pb2

from .. import errdefs, identifiers
from ..rpc import Server, ServicerContext, StatusCode, code_of_kind

NAMESPACE_HEADER = "containerd-namespace"
LEASE_HEADER = "containerd-lease"


def status_code(exc: errdefs.ContainerdError) -> StatusCode:
    return code_of_kind(exc.code)


def _header(context: ServicerContext, name: str) -> str | None:
    for key, value in context.invocation_metadata():
        if key == name:
            return value if isinstance(value, str) else value.decode()
    return None


def namespace_of(context: ServicerContext) -> str:
    """The request's namespace; InvalidArgument when missing or malformed, like containerd."""
    ns = _header(context, NAMESPACE_HEADER)
    if not ns:
        raise errdefs.FailedPrecondition("namespace is required: set the containerd-namespace header (ctr -n)")
    identifiers.validate(ns)
    return ns


def lease_of(context: ServicerContext) -> str | None:
    return _header(context, LEASE_HEADER) or None


class DeferredModule:
    """A generated module a servicer's module names at import (``pb = DeferredModule(globals(),
    "pb", "..api.x.v1.x_pb2", package="containerd.x.v1")``) but imports at first use, usually the
    service's first call (``add_servicer`` registers a deferred module with the server's
    loader): an idle daemon does not hold the protobuf modules of services nobody called (W6,
    idle PSS).  On first attribute access the module is imported (``name`` relative to the
    owner's package) and takes the proxy's place among the owner's globals, so later lookups
    cost nothing.  ``package`` (the module's protobuf package) names its services without
    importing it."""

    def __init__(self, owner: dict[str, Any], alias: str, name: str, *, package: str = "") -> None:
        self.deferred_name = name
        self.deferred_package = package
        self._owner = owner
        self._alias = alias

    def __getattr__(self, attr: str) -> Any:
        if attr.startswith("__"):  # copy, pickle and friends probing: not the module's
            raise AttributeError(attr)
        module = importlib.import_module(self.deferred_name, self._owner.get("__package__"))
        if self._owner.get(self._alias) is self:
            self._owner[self._alias] = module
        return getattr(module, attr)


def add_servicer(server: Server, servicer: Any, pb2_module: Any, service: str) -> None:
    """Serve ``pb2_module``'s ``service`` with ``servicer``'s methods of the same names; a
    ``DeferredModule`` is imported at the service's first call."""
    if isinstance(pb2_module, DeferredModule):
        deferred = pb2_module
        if not deferred.deferred_package:
            raise ValueError(f"{deferred.deferred_name}: a served module is deferred with its protobuf package")
        server.add_service_loader(f"{deferred.deferred_package}.{service}",
                                  lambda: (deferred.DESCRIPTOR.services_by_name[service], servicer))
        return
    server.add_service(pb2_module.DESCRIPTOR.services_by_name[service], servicer)


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


