"""Type URLs: unpacking a protobuf ``Any`` into the plain fields of the message it carries.

Like containerd's ``typeurl`` package, this sits below both sides of the wire: the daemon's
Events service needs an event's fields for ``event.<field>`` filters, and the client library
needs them to print events.  Neither layer may import the other, so the one decoder lives
here (it needs protobuf, never grpc or the generated API).

A type is known when its generated module has been imported somewhere in the process (that
registers it in protobuf's default symbol database); callers import the modules they expect.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from google.protobuf import any_pb2

# an OCI runtime's ``features`` document (runtime-spec features.md) in an Any, as JSON: how containerd's
# typeurl names it (a shim's ``-info`` answer carries one; runtime.v2.info reads it, the shim writes it)
OCI_FEATURES = "types.containerd.io/opencontainers/runtime-spec/1/features/Features"


def message_name(type_url: str) -> str:
    """The full message name in a type URL: the part after the last ``/`` (all of it if none)."""
    return type_url.rsplit("/", 1)[-1]


def to_dict(packed: any_pb2.Any) -> dict[str, Any] | None:
    """The fields of the message in ``packed`` keyed by their proto names, or None when its
    type is not registered in this process (each caller decides what an unknown event shows)."""
    from google.protobuf import symbol_database  # the protobuf runtime: not at start-up (W6, idle PSS)

    try:
        cls = symbol_database.Default().GetSymbol(message_name(packed.type_url))
    except KeyError:
        return None
    from google.protobuf import json_format  # on first use, not at start-up (W6, idle PSS)

    msg = cls()
    msg.ParseFromString(packed.value)
    fields: dict[str, Any] = json_format.MessageToDict(msg, preserving_proto_field_name=True)
    return fields
