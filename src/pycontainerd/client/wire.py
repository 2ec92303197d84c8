"""Protobuf wire format by hand, for the few containerd API messages ``fastrun.py`` sends.

The generated modules (``pycontainerd.api``) cost more to import than a whole ``run --rm``
spends talking to the daemon; these helpers write and read the same bytes (proto3: default
values are not written).  Field numbers are those of the ``.proto`` files in ``proto/``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from .quick import proto_fields, proto_string

__all__ = ["boolean", "fields", "fmap", "get_bytes", "get_map", "get_msgs", "get_str", "get_strs", "get_uint",
           "message", "repeated", "string", "uint"]

fields = proto_fields
get_str = proto_string


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _len_field(num: int, data: bytes) -> bytes:
    return _varint(num << 3 | 2) + _varint(len(data)) + data


def string(num: int, value: str | bytes) -> bytes:
    data = value.encode() if isinstance(value, str) else value
    return _len_field(num, data) if data else b""


def message(num: int, body: bytes) -> bytes:
    """An embedded message (written even when empty: its presence can matter)."""
    return _len_field(num, body)


def uint(num: int, value: int) -> bytes:
    return _varint(num << 3) + _varint(value) if value else b""


def boolean(num: int, value: bool) -> bytes:
    return uint(num, 1 if value else 0)


def fmap(num: int, values: Mapping[str, str]) -> bytes:
    """A ``map<string, string>`` field: one entry message (key 1, value 2) per item."""
    return b"".join(message(num, string(1, k) + string(2, v)) for k, v in values.items())


def repeated(num: int, values: Iterable[str]) -> bytes:
    return b"".join(_len_field(num, v.encode()) for v in values)


def get_uint(f: dict[int, list[bytes | int]], num: int) -> int:
    values = f.get(num) or [0]
    v = values[-1]
    return v if isinstance(v, int) else 0


def get_bytes(f: dict[int, list[bytes | int]], num: int) -> bytes:
    values = f.get(num) or [b""]
    v = values[-1]
    return v if isinstance(v, bytes) else b""


def get_msgs(f: dict[int, list[bytes | int]], num: int) -> list[dict[int, list[bytes | int]]]:
    return [proto_fields(v) for v in f.get(num, []) if isinstance(v, bytes)]


def get_map(f: dict[int, list[bytes | int]], num: int) -> dict[str, str]:
    out: dict[str, str] = {}
    for entry in get_msgs(f, num):
        out[get_str(entry, 1)] = get_str(entry, 2)
    return out


def get_strs(f: dict[int, list[bytes | int]], num: int) -> list[str]:
    return [v.decode(errors="replace") for v in f.get(num, []) if isinstance(v, bytes)]
