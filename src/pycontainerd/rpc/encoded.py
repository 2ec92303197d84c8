"""A message already encoded: a handler may answer (or yield) ``Encoded(data)`` where it would
answer a message; the server sends ``data`` as is (every method's codec does: protobuf's
calls ``SerializeToString()``, ``rpc.wire``'s takes ``data``)."""

from __future__ import annotations


class Encoded:
    __slots__ = ("data",)

    def __init__(self, data: bytes) -> None:
        self.data = data

    def SerializeToString(self) -> bytes:
        return self.data
