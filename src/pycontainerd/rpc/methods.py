"""The method table of a gRPC server: each method of a service becomes a ``Method``.

A ``Method`` has its path ("/pkg.Service/Name"), its kind (from the client/server streaming
flags), its handler (the servicer's attribute of the method's name, or None: UNIMPLEMENTED) and
its ``Codec``: how its request bytes become the handler's argument and the handler's answers
become bytes.  No generated ``*_pb2_grpc`` module is involved, so serving needs no grpc.

Two ways to build a service's methods:

- ``build``: from a protobuf ServiceDescriptor, every method with a ``ProtobufCodec`` (its request
  class from the descriptor);
- ``from_table``: from a static list of (name, kind), without protobuf: a method is given a codec
  (``rpc.wire.FlatCodec``, hand-written) or none yet, and the server then fills in the protobuf
  codecs from the service's descriptor at the first call that needs one (``protobuf_codecs``,
  which refuses a descriptor that disagrees with the table).  An idle daemon answering only
  calls with hand-written codecs never imports the protobuf runtime (W6, idle PSS).
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from google.protobuf.descriptor import ServiceDescriptor

UNARY = "unary"
SERVER_STREAM = "server_stream"
CLIENT_STREAM = "client_stream"
BIDI_STREAM = "bidi_stream"
KINDS = (UNARY, SERVER_STREAM, CLIENT_STREAM, BIDI_STREAM)


class Codec(Protocol):
    """A method's messages on the wire: its request parsed, its responses serialized."""

    def parse(self, data: bytes) -> Any:
        """The request message in ``data``; raises on bytes that are not one (the call fails INTERNAL)."""

    def serialize(self, message: Any) -> bytes:
        """The bytes of a response message the handler answered or yielded."""


class ProtobufCodec:
    """Generated message classes: ``FromString`` for the request, ``SerializeToString`` for any
    answer (a message, or ``rpc.Encoded`` bytes encoded already)."""

    __slots__ = ("request_type",)

    def __init__(self, request_type: Any) -> None:
        self.request_type = request_type

    def parse(self, data: bytes) -> Any:
        return self.request_type.FromString(data)

    def serialize(self, message: Any) -> bytes:
        data: bytes = message.SerializeToString()
        return data


@dataclasses.dataclass(slots=True, eq=False)
class Method:
    path: str
    service: str  # full name, "containerd.services.version.v1.Version"
    name: str
    kind: str  # one of KINDS (go-grpc-prometheus's grpc_type values)
    handler: Callable[..., Any] | None
    # None until the service's descriptor is loaded (Server.method does it at the first call)
    codec: Codec | None = None
    # an async generator function (server-streaming kinds): the server iterates it
    is_generator: bool = False
    # observers may keep per-method state here (e.g. labelled metric children)
    observer_state: dict[int, Any] = dataclasses.field(default_factory=dict)

    @property
    def client_streaming(self) -> bool:
        return self.kind in (CLIENT_STREAM, BIDI_STREAM)

    @property
    def server_streaming(self) -> bool:
        return self.kind in (SERVER_STREAM, BIDI_STREAM)


def kind_of(client_streaming: bool, server_streaming: bool) -> str:
    if client_streaming:
        return BIDI_STREAM if server_streaming else CLIENT_STREAM
    return SERVER_STREAM if server_streaming else UNARY


def _handler(servicer: Any, name: str) -> Callable[..., Any] | None:
    handler = getattr(servicer, name, None)
    return handler if callable(handler) else None


def from_table(service: str, methods: Iterable[tuple[str, str]], servicer: Any,
               codecs: Mapping[str, Codec] | None = None) -> dict[str, Method]:
    """The methods ``(name, kind)`` of ``service`` served by ``servicer``, by path; those named in
    ``codecs`` have theirs, the others none yet (``protobuf_codecs`` at the first call)."""
    codecs = codecs or {}
    table: dict[str, Method] = {}
    for name, kind in methods:
        if kind not in KINDS:
            raise ValueError(f"{service}/{name}: unknown kind {kind!r}")
        handler = _handler(servicer, name)
        path = f"/{service}/{name}"
        table[path] = Method(path=path, service=service, name=name, kind=kind, handler=handler,
                             codec=codecs.get(name),
                             is_generator=handler is not None and inspect.isasyncgenfunction(handler))
    unknown = set(codecs) - {m.name for m in table.values()}
    if unknown:
        raise ValueError(f"{service}: codecs for methods it does not have: {sorted(unknown)}")
    return table


def table_of(service: ServiceDescriptor) -> list[tuple[str, str]]:
    """``(name, kind)`` of each method of ``service``, in its order (what ``from_table`` takes)."""
    return [(m.name, kind_of(m.client_streaming, m.server_streaming)) for m in service.methods]


def protobuf_codecs(service: ServiceDescriptor, methods: Iterable[tuple[str, str]]) -> dict[str, ProtobufCodec]:
    """A ``ProtobufCodec`` for each method of ``service``, by name, once its descriptor agrees with
    the table the methods were built from (the same names and kinds), else ValueError."""
    from google.protobuf import message_factory  # the protobuf runtime: at the first call needing it

    described = table_of(service)
    if sorted(described) != sorted(methods):
        raise ValueError(f"the method table of {service.full_name} differs from its descriptor: "
                         f"{sorted(set(methods) ^ set(described))}")
    return {m.name: ProtobufCodec(message_factory.GetMessageClass(m.input_type)) for m in service.methods}


def build(service: ServiceDescriptor, servicer: Any) -> dict[str, Method]:
    """The methods of ``service`` served by ``servicer``, by path, each with its protobuf codec."""
    table = table_of(service)
    codecs: Mapping[str, Codec] = protobuf_codecs(service, table)
    return from_table(service.full_name, table, servicer, codecs)
