"""``rpc.wire``, the hand-written codec of the messages an idle daemon answers without protobuf
(Version, Introspection.Server, Health.Check): both directions checked against the generated
classes, unknown fields, empty messages and malformed input included."""

from __future__ import annotations

import struct
from typing import Any

import pytest
from google.protobuf import empty_pb2
from google.protobuf.message import DecodeError as ProtobufDecodeError
from grpc_health.v1 import health_pb2
from hypothesis import given, settings
from hypothesis import strategies as st

from pycontainerd.api.services.introspection.v1 import introspection_pb2
from pycontainerd.api.services.version.v1 import version_pb2
from pycontainerd.rpc import Encoded, wire
from pycontainerd.services.health import CHECK
from pycontainerd.services.introspection import SERVER
from pycontainerd.services.version import VERSION

# (schema, the generated class it stands for)
SCHEMAS: list[tuple[wire.Schema, Any]] = [
    (VERSION.request, empty_pb2.Empty),
    (VERSION.response, version_pb2.VersionResponse),
    (SERVER.request, empty_pb2.Empty),
    (SERVER.response, introspection_pb2.ServerResponse),
    (CHECK.request, health_pb2.HealthCheckRequest),
    (CHECK.response, health_pb2.HealthCheckResponse),
]
IDS = [f"{s.full_name}" for s, _ in SCHEMAS]
# the messages we parse as well as write: ServerResponse is only written (its field 4, the
# deprecations, a message we never send, is not in its schema)
PARSED = [(s, cls) for s, cls in SCHEMAS if cls is not introspection_pb2.ServerResponse]


def _varint(n: int) -> bytes:
    n &= (1 << 64) - 1
    out = bytearray()
    while n >= 0x80:
        out.append(n & 0x7F | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _tag(number: int, wire_type: int) -> bytes:
    return _varint(number << 3 | wire_type)


def _real(cls: Any, data: bytes, schema: wire.Schema) -> dict[str, Any] | None:
    """The values of ``schema``'s fields in ``data`` as the generated class reads them."""
    try:
        msg = cls.FromString(data)
    except ProtobufDecodeError:
        return None
    return {name: getattr(msg, name) for _, name, _ in schema.fields}


def _ours(schema: wire.Schema, data: bytes) -> dict[str, Any] | None:
    try:
        return vars(schema.parse(data))
    except wire.DecodeError:
        return None


def _same(schema: wire.Schema, cls: Any, data: bytes) -> None:
    """``data`` reads the same with ours and with protobuf's (upb), or both refuse it; except
    that upb reads some tags of field number 0 in a message without fields (``Empty``: b"\\0\\1"
    but not b"\\0") as unknown fields, where ours refuses them, as Go's protobuf does."""
    ours, real = _ours(schema, data), _real(cls, data, schema)
    if cls is empty_pb2.Empty and ours is None and real is not None:
        with pytest.raises(wire.DecodeError, match=r"invalid tag [0-7]$"):
            schema.parse(data)
        return
    assert ours == real, data


def test_schemas_name_the_generated_messages_fields() -> None:
    for schema, cls in SCHEMAS:
        assert schema.full_name == cls.DESCRIPTOR.full_name
        described = {(f.number, f.name) for f in cls.DESCRIPTOR.fields}
        ours = {(n, name) for n, name, _ in schema.fields}
        if cls is introspection_pb2.ServerResponse:
            assert described - ours == {(4, "deprecations")}  # never sent by us
        else:
            assert ours == described


VALUES: dict[str, list[dict[str, Any]]] = {
    "containerd.services.version.v1.VersionResponse": [
        {}, {"version": "1.2.3"}, {"revision": "r"}, {"version": "v" * 300, "revision": "ünïcode ☃"},
    ],
    "containerd.services.introspection.v1.ServerResponse": [
        {}, {"uuid": "fdf8f6a0-af1d-43df-b789-ea3bbd3317d6", "pid": 1, "pidns": 4026531836},
        {"pid": (1 << 64) - 1}, {"pidns": 127}, {"pidns": 128}, {"uuid": "x" * 200},
    ],
    "grpc.health.v1.HealthCheckRequest": [{}, {"service": ""}, {"service": "containerd"}],
    "grpc.health.v1.HealthCheckResponse": [{}, {"status": 0}, {"status": 1}, {"status": 3}, {"status": -1},
                                           {"status": (1 << 31) - 1}, {"status": -(1 << 31)}],
    "google.protobuf.Empty": [{}],
}


@pytest.mark.parametrize(("schema", "cls"), SCHEMAS, ids=IDS)
def test_serialize_writes_what_protobuf_writes_and_parse_reads_it_back(schema: wire.Schema, cls: Any) -> None:
    for values in VALUES[schema.full_name]:
        real = cls(**values).SerializeToString()
        assert schema.serialize(values) == real, values
        assert schema.serialize(schema.parse(real)) == real  # an object with the fields as attributes
        assert _ours(schema, real) == _real(cls, real, schema) == {**schema.defaults, **values}


@pytest.mark.parametrize(("schema", "cls"), SCHEMAS, ids=IDS)
def test_unknown_fields_and_wire_types_the_schema_does_not_expect_are_skipped(schema: wire.Schema, cls: Any) -> None:
    known = {n: kind for n, _, kind in schema.fields}
    unknown = [
        _tag(9, 0) + _varint(300),
        _tag(10, 1) + struct.pack("<q", -5),
        _tag(11, 2) + _varint(3) + b"abc",
        _tag(12, 5) + struct.pack("<i", 7),
        _tag(13, 3) + _tag(1, 0) + _varint(1) + _tag(14, 3) + _tag(14, 4) + _tag(13, 4),  # nested groups
        _tag(536870911, 0) + _varint(1),  # the largest field number
        _tag(1, 3) + _tag(1, 2) + _varint(1) + b"\xff" + _tag(1, 4),  # a group with a known field's number
    ]
    for n, kind in known.items():  # a known field with another wire type than its own
        unknown.append(_tag(n, 0) + _varint(1) if kind == wire.STRING else _tag(n, 2) + _varint(1) + b"\x05")
        unknown.append(_tag(n, 5) + b"\x00\x00\x00\x01")
    for values in VALUES[schema.full_name]:
        real = cls(**values).SerializeToString()
        for extra in unknown:
            for data in (extra + real, real + extra):
                assert _ours(schema, data) == _real(cls, data, schema) == {**schema.defaults, **values}, data


@pytest.mark.parametrize(("schema", "cls"), SCHEMAS, ids=IDS)
def test_malformed_input_is_refused_as_protobuf_refuses_it(schema: wire.Schema, cls: Any) -> None:
    bad = [
        b"\x00",  # field number 0
        b"\x00\x01",
        _tag(3, 6), _tag(3, 7),  # wire types 6 and 7
        _tag(3, 4),  # an end of group outside any group
        _tag(3, 3) + _tag(4, 4),  # a group ended with another number
        _tag(3, 3) + _tag(1, 0) + b"\x01",  # a group never ended
        _tag(3, 0),  # a tag without its value
        _tag(3, 0) + b"\xff" * 10 + b"\x01",  # a varint longer than ten bytes
        _tag(3, 1) + b"1234567",  # fixed64 cut short
        _tag(3, 5) + b"123",  # fixed32 cut short
        _tag(3, 2) + _varint(5) + b"ab",  # length past the end
        _tag(3, 2),
        b"\x80\x80\x80\x80\x10\x00",  # a tag past 32 bits
        b"\x8a\x80\x80\x80\x80\x00\x01a",  # a tag of six bytes
        _tag(3, 3) * 150 + _tag(3, 4) * 150,  # groups nested too deep
    ]
    for n, _, kind in schema.fields:
        bad.append(_tag(n, 2) + _varint(4) + b"ab")
        if kind == wire.STRING:
            bad.append(_tag(n, 2) + _varint(2) + b"\xff\xfe")  # not UTF-8
    for data in bad:
        if cls is not empty_pb2.Empty or data[:1] != b"\x00":
            assert _real(cls, data, schema) is None, data
        assert _ours(schema, data) is None, data


@pytest.mark.parametrize(("schema", "cls"), SCHEMAS, ids=IDS)
def test_varints_as_protobuf_reads_them(schema: wire.Schema, cls: Any) -> None:
    """Overlong (non-minimal) encodings, ten-byte values whose last byte carries bits past 64,
    enums past 32 bits, a field seen twice (the last one wins), a tag written in five bytes."""
    numeric = [n for n, _, kind in schema.fields if kind != wire.STRING]
    strings = [n for n, _, kind in schema.fields if kind == wire.STRING]
    cases = []
    for n in numeric:
        cases += [
            _tag(n, 0) + b"\x85\x00",
            _tag(n, 0) + b"\xff" * 9 + b"\x7f",
            _tag(n, 0) + _varint(1 << 32),
            _tag(n, 0) + _varint((1 << 32) + 5),
            _tag(n, 0) + _varint(1 << 31),
            _tag(n, 0) + _varint(7) + _tag(n, 0) + _varint(0),
            bytes([n << 3 | 0x80, 0x80, 0x80, 0x80, 0x00]) + _varint(9),
        ]
    for n in strings:
        cases += [_tag(n, 2) + b"\x01a" + _tag(n, 2) + b"\x02bc", _tag(n, 2) + b"\x81\x00a"]
    for data in cases:
        _same(schema, cls, data)


_FIELD = st.tuples(
    st.integers(1, 6),
    st.sampled_from([0, 1, 2, 5]),
    st.one_of(st.integers(-(1 << 63), (1 << 64) - 1), st.binary(max_size=12),
              st.text(max_size=6).map(str.encode)),
)


def _encode(fields: list[tuple[int, int, Any]]) -> bytes:
    out = bytearray()
    for number, wire_type, value in fields:
        out += _tag(number, wire_type)
        if wire_type == 0:
            out += _varint(value if isinstance(value, int) else len(value))
        elif wire_type == 1:
            out += struct.pack("<Q", (value if isinstance(value, int) else len(value)) & ((1 << 64) - 1))
        elif wire_type == 5:
            out += struct.pack("<I", (value if isinstance(value, int) else len(value)) & 0xFFFFFFFF)
        else:
            raw = value if isinstance(value, bytes) else _varint(value)
            out += _varint(len(raw)) + raw
    return bytes(out)


@settings(max_examples=300, deadline=None)
@given(st.lists(_FIELD, max_size=8), st.sampled_from(PARSED))
def test_well_formed_messages_of_any_fields_read_as_protobuf_reads_them(fields: list[tuple[int, int, Any]],
                                                                        which: tuple[wire.Schema, Any]) -> None:
    _same(*which, _encode(fields))


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=24), st.sampled_from(PARSED))
def test_any_bytes_read_as_protobuf_reads_them(data: bytes, which: tuple[wire.Schema, Any]) -> None:
    _same(*which, data)


def test_flat_codec_parses_requests_and_serializes_answers_or_encoded_bytes() -> None:
    req = CHECK.parse(health_pb2.HealthCheckRequest(service="x").SerializeToString())
    assert req.service == "x"
    assert CHECK.serialize({"status": 1}) == health_pb2.HealthCheckResponse(status=1).SerializeToString()
    assert CHECK.serialize(Encoded(b"\x08\x02")) == b"\x08\x02"
    assert VERSION.parse(b"").__dict__ == {}
    with pytest.raises(ValueError, match="unsupported field kind"):
        wire.Schema("x.Y", (1, "a", "double"))
