"""What every servicer shares: namespace/lease headers, registration, protobuf helpers.

Servicer methods raise ``errdefs`` kinds and never call ``context.abort`` themselves: the
server (``rpc.server``, through ``rpc.status.status_of``) turns a kind into its gRPC status
with the kind's message, and anything unexpected into UNKNOWN with the exception text and a
logged traceback, never a silent hang.  Servicers are plain classes (no generated
``*_pb2_grpc`` base): a method a servicer lacks answers UNIMPLEMENTED.
"""

from __future__ import annotations

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


def add_servicer(server: Server, servicer: Any, pb2_module: Any, service: str) -> None:
    """Serve ``pb2_module``'s ``service`` with ``servicer``'s methods of the same names."""
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


