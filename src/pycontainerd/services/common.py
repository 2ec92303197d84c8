"""What every servicer shares: namespace/lease headers, registration, protobuf helpers.

Servicer methods raise ``errdefs`` kinds and never call ``context.abort`` themselves: the
server (``rpc.server``, through ``rpc.status.status_of``) turns a kind into its gRPC status
with the kind's message, and anything unexpected into UNKNOWN with the exception text and a
logged traceback, never a silent hang.  Servicers are plain classes (no generated
``*_pb2_grpc`` base): a method a servicer lacks answers UNIMPLEMENTED.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from .. import errdefs, identifiers
from ..rpc import Server, ServicerContext, StatusCode, code_of_kind
from ..rpc.methods import Codec
from .tables import SERVICES

if TYPE_CHECKING:
    from google.protobuf import timestamp_pb2

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
    service's first call needing its protobuf classes (``add_servicer`` serves the service from
    its static method table, ``tables.SERVICES``, and asks the deferred module for its descriptor
    then): an idle daemon does not hold the protobuf modules of services nobody called, nor the
    protobuf runtime while no call needed it (W6, idle PSS).  Modules of the protobuf runtime
    (``google.protobuf.empty_pb2``) are deferred the same way.  On first attribute access the
    module is imported (``name`` relative to the owner's package) and takes the proxy's place
    among the owner's globals, so later lookups cost nothing.  ``package`` (the module's
    protobuf package) names its services without importing it."""

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


def add_servicer(server: Server, servicer: Any, pb2_module: Any, service: str,
                 codecs: Mapping[str, Codec] | None = None) -> None:
    """Serve ``pb2_module``'s ``service`` with ``servicer``'s methods of the same names.  A service
    with a static method table (``tables.SERVICES``; every one a ``DeferredModule`` names) is
    served from it: the methods in ``codecs`` with theirs (``rpc.wire``, no protobuf at all), the
    others with the module's protobuf classes, a deferred module imported at the first call of
    one of them.  Others (the CRI's) are served from their descriptor at once."""
    if isinstance(pb2_module, DeferredModule):
        if not pb2_module.deferred_package:
            raise ValueError(f"{pb2_module.deferred_name}: a served module is deferred with its protobuf package")
        full_name = f"{pb2_module.deferred_package}.{service}"
    else:  # imported already (a deferred one used before, in a process serving twice: tests)
        full_name = f"{pb2_module.DESCRIPTOR.package}.{service}"
    methods = SERVICES.get(full_name)
    if methods is not None:
        server.add_service_table(full_name, methods, servicer,
                                 lambda: pb2_module.DESCRIPTOR.services_by_name[service], codecs)
    elif isinstance(pb2_module, DeferredModule) or codecs:
        raise ValueError(f"{full_name}: no static method table in services.tables")
    else:
        server.add_service(pb2_module.DESCRIPTOR.services_by_name[service], servicer)


# -- protobuf helpers ---------------------------------------------------------------------
if not TYPE_CHECKING:  # the protobuf runtime: imported by the first call needing a Timestamp
    timestamp_pb2 = DeferredModule(globals(), "timestamp_pb2", "google.protobuf.timestamp_pb2")


def ts_from_ns(ns: int) -> timestamp_pb2.Timestamp:
    ts = timestamp_pb2.Timestamp()
    ts.seconds, ts.nanos = divmod(ns, 1_000_000_000)
    return ts


def ns_from_ts(ts: timestamp_pb2.Timestamp) -> int:
    return ts.seconds * 1_000_000_000 + ts.nanos


def field_paths(mask: Any) -> list[str]:
    """The paths of a FieldMask (empty list when unset)."""
    return list(mask.paths) if mask is not None else []


