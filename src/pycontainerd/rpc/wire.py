"""A hand-written protobuf codec for flat messages (scalar fields only), so that the few calls an
idle daemon answers (``ctr version``: Version and Introspection.Server; health checks) need no
protobuf runtime (W6, idle PSS: it costs ~3 MiB of private memory once imported).

A ``Schema`` names a message's fields (number, name, kind: ``STRING``, ``UINT64`` or ``ENUM``, an
int32 on the wire).  ``Schema.parse`` reads bytes as protobuf's upb parser does for proto3: the
last occurrence of a field wins, fields it does not know or whose wire type differs from the
schema's are skipped (groups included), malformed input raises ``DecodeError`` (a truncated
field, a bad tag, wire types 6/7, an unmatched end of group, invalid UTF-8 in a string).
``Schema.serialize`` writes what protobuf's ``SerializeToString`` writes: the set fields in
number order, defaults ("" and 0) left out.  ``FlatCodec`` is a method's ``rpc.methods.Codec``
made of a request and a response schema; ``tests/unit/test_rpc_wire.py`` checks both directions
against the generated classes.
"""

from __future__ import annotations

import types
from collections.abc import Mapping
from typing import Any

from .encoded import Encoded

STRING = "string"
UINT64 = "uint64"
ENUM = "enum"  # int32 on the wire (negative values as ten-byte varints)

_VARINT, _I64, _LEN, _SGROUP, _EGROUP, _I32 = range(6)
_WIRE_OF = {STRING: _LEN, UINT64: _VARINT, ENUM: _VARINT}
_MAX_DEPTH = 100  # nested groups, as upb's default recursion limit
_U64 = (1 << 64) - 1


class DecodeError(ValueError):
    """Bytes that are not a valid encoding of the message."""


def _varint(data: bytes, pos: int, end: int) -> tuple[int, int]:
    """(value, next position) of the varint at ``pos``: at most ten bytes; bits past 64 are dropped."""
    result = shift = 0
    for i in range(pos, min(pos + 10, end)):
        b = data[i]
        result |= (b & 0x7F) << shift
        if b < 0x80:
            return result & _U64, i + 1
        shift += 7
    raise DecodeError("truncated or overlong varint")


def _tag(data: bytes, pos: int, end: int) -> tuple[int, int, int]:
    """(field number, wire type, next position) of the tag at ``pos``."""
    if data[pos] < 0x80:  # one byte: fields 1-15
        tag, pos = data[pos], pos + 1
    else:
        tag, nxt = _varint(data, pos, end)
        if nxt - pos > 5 or tag > 0xFFFFFFFF:
            raise DecodeError("tag out of range")
        pos = nxt
    number, wire = tag >> 3, tag & 7
    if number == 0 or wire > _I32:
        raise DecodeError(f"invalid tag {tag}")
    return number, wire, pos


def _skip(data: bytes, pos: int, end: int, number: int, wire: int, depth: int) -> int:
    """The position after the value of a field with ``wire`` type whose tag ended at ``pos``."""
    if wire == _VARINT:
        return _varint(data, pos, end)[1]
    if wire == _I64:
        pos += 8
    elif wire == _I32:
        pos += 4
    elif wire == _LEN:
        length, pos = _varint(data, pos, end)
        pos += length
    elif wire == _SGROUP:
        if depth >= _MAX_DEPTH:
            raise DecodeError("groups nested too deep")
        while True:
            if pos >= end:
                raise DecodeError("unterminated group")
            inner, inner_wire, pos = _tag(data, pos, end)
            if inner_wire == _EGROUP:
                if inner != number:
                    raise DecodeError("mismatched end of group")
                return pos
            pos = _skip(data, pos, end, inner, inner_wire, depth + 1)
    else:  # an end of group outside its group
        raise DecodeError("unexpected end of group")
    if pos > end:
        raise DecodeError("truncated field")
    return pos


def _put_varint(out: bytearray, value: int) -> None:
    value &= _U64
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)


class Schema:
    """A flat message: ``Schema("pkg.Name", (1, "field", STRING), ...)``."""

    __slots__ = ("_by_number", "defaults", "fields", "full_name")

    def __init__(self, full_name: str, *fields: tuple[int, str, str]) -> None:
        for _, _, kind in fields:
            if kind not in _WIRE_OF:
                raise ValueError(f"{full_name}: unsupported field kind {kind!r}")
        self.full_name = full_name
        self.fields = tuple(sorted(fields))
        self._by_number = {number: (name, kind) for number, name, kind in fields}
        self.defaults = {name: "" if kind == STRING else 0 for _, name, kind in fields}

    def parse(self, data: bytes) -> types.SimpleNamespace:
        """The message in ``data``, its fields as attributes (unset ones at their default)."""
        values = dict(self.defaults)
        by_number = self._by_number
        pos, end = 0, len(data)
        while pos < end:
            number, wire, pos = _tag(data, pos, end)
            field = by_number.get(number)
            if field is None or _WIRE_OF[field[1]] != wire:
                pos = _skip(data, pos, end, number, wire, 0)
                continue
            name, kind = field
            if kind == STRING:
                length, pos = _varint(data, pos, end)
                if pos + length > end:
                    raise DecodeError("truncated string")
                try:
                    values[name] = data[pos:pos + length].decode()
                except UnicodeDecodeError:
                    raise DecodeError(f"{self.full_name}.{name}: invalid UTF-8") from None
                pos += length
            else:
                value, pos = _varint(data, pos, end)
                if kind == ENUM:
                    value &= 0xFFFFFFFF
                    if value >= 1 << 31:
                        value -= 1 << 32
                values[name] = value
        return types.SimpleNamespace(**values)

    def serialize(self, message: Mapping[str, Any] | types.SimpleNamespace) -> bytes:
        """The encoding of ``message`` (a mapping or an object with the fields as attributes);
        a field it lacks is at its default."""
        get = message.get if isinstance(message, Mapping) else lambda name, default: getattr(message, name, default)
        out = bytearray()
        for number, name, kind in self.fields:
            value = get(name, None)
            if not value:
                continue
            if kind == STRING:
                raw = value.encode()
                _put_varint(out, number << 3 | _LEN)
                _put_varint(out, len(raw))
                out += raw
            else:
                _put_varint(out, number << 3 | _VARINT)
                _put_varint(out, value)
        return bytes(out)


class FlatCodec:
    """A method's codec (``rpc.methods.Codec``) from two schemas: the request is parsed into an
    object with its fields as attributes, the handler answers a mapping (or ``Encoded``)."""

    __slots__ = ("request", "response")

    def __init__(self, request: Schema, response: Schema) -> None:
        self.request = request
        self.response = response

    def parse(self, data: bytes) -> types.SimpleNamespace:
        return self.request.parse(data)

    def serialize(self, message: Any) -> bytes:
        if isinstance(message, Encoded):
            return message.data
        return self.response.serialize(message)


EMPTY = Schema("google.protobuf.Empty")
