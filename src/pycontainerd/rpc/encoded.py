"""A message already encoded: a handler may answer (or yield) ``Encoded(data)`` where it would
answer a protobuf message; the server sends ``data`` as is (it only ever calls
``SerializeToString()`` on what a handler gives it)."""

from __future__ import annotations


class Encoded:
    __slots__ = ("data",)

    def __init__(self, data: bytes) -> None:
        self.data = data

    def SerializeToString(self) -> bytes:
        return self.data
