"""Messages already encoded.

A handler may answer (or yield) ``Encoded(data)`` where it would answer a message; the server
sends ``data`` as is (every method's codec does: protobuf's calls ``SerializeToString()``,
``rpc.wire``'s takes ``data``).

A server-streaming handler may also yield an ``EncodedStream``: several of its messages at
once, already framed as gRPC's length-prefixed messages, which the server sends as one piece
(a list kept encoded, e.g. ``ctr containers ls``, goes out without a step per message).
"""

from __future__ import annotations

import struct
from collections.abc import Sequence

_PREFIX = struct.Struct(">BL")  # gRPC's message prefix: compressed flag, length


class Encoded:
    __slots__ = ("data",)

    def __init__(self, data: bytes) -> None:
        self.data = data

    def SerializeToString(self) -> bytes:
        return self.data


class EncodedStream:
    """``count`` messages of a server stream, each with its gRPC prefix (uncompressed), in
    ``data``; ``largest`` is the length of the largest (the server's send limit applies to
    each message, as if they were sent one by one)."""

    __slots__ = ("count", "data", "largest")

    def __init__(self, data: bytes, count: int, largest: int) -> None:
        self.data = data
        self.count = count
        self.largest = largest

    @classmethod
    def of(cls, messages: Sequence[bytes]) -> EncodedStream:
        """The stream of ``messages`` (each one message's encoding)."""
        framed = b"".join(_PREFIX.pack(0, len(m)) + m for m in messages)
        return cls(framed, len(messages), max(map(len, messages), default=0))
