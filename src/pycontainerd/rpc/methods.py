"""The method table of a gRPC server, built from protobuf ServiceDescriptors.

Each method of a service becomes a ``Method``: its path ("/pkg.Service/Name"), its kind
(from the descriptor's client/server streaming flags), its request class and its handler
(the servicer's attribute of the method's name, or None: UNIMPLEMENTED).  No generated
``*_pb2_grpc`` module is involved, so serving needs no grpc.
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable
from typing import Any

from google.protobuf import message_factory
from google.protobuf.descriptor import ServiceDescriptor

UNARY = "unary"
SERVER_STREAM = "server_stream"
CLIENT_STREAM = "client_stream"
BIDI_STREAM = "bidi_stream"


@dataclasses.dataclass(slots=True, eq=False)
class Method:
    path: str
    service: str  # full name, "containerd.services.version.v1.Version"
    name: str
    kind: str  # one of the four above (go-grpc-prometheus's grpc_type values)
    request_type: Any  # the protobuf message class
    handler: Callable[..., Any] | None
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


def build(service: ServiceDescriptor, servicer: Any) -> dict[str, Method]:
    """The methods of ``service`` served by ``servicer``, by path."""
    table: dict[str, Method] = {}
    for m in service.methods:
        handler = getattr(servicer, m.name, None)
        if handler is not None and not callable(handler):
            handler = None
        table[f"/{service.full_name}/{m.name}"] = Method(
            path=f"/{service.full_name}/{m.name}",
            service=service.full_name,
            name=m.name,
            kind=kind_of(m.client_streaming, m.server_streaming),
            request_type=message_factory.GetMessageClass(m.input_type),
            handler=handler,
            is_generator=handler is not None and inspect.isasyncgenfunction(handler),
        )
    return table
