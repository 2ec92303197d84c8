"""Sans-IO framing of the daemon <-> fork server control channel, messages, timestamps."""

from __future__ import annotations

import struct

import pytest

from pycontainerd import timestamps
from pycontainerd.shim import protocol


def test_frames_split_anywhere_reassemble() -> None:
    frames = (
        protocol.request(1, "start_v2", {"id": "c"})
        + protocol.reply(1, {"pid": 3})
        + protocol.error(2, "NOT_FOUND", "bundle /b does not exist")
    )
    for cut in range(len(frames) + 1):
        d = protocol.Decoder()
        msgs = d.feed(frames[:cut]) + d.feed(frames[cut:])
        assert msgs == [
            {"id": 1, "method": "start_v2", "params": {"id": "c"}},
            {"id": 1, "result": {"pid": 3}},
            {"id": 2, "error": {"code": "NOT_FOUND", "message": "bundle /b does not exist"}},
        ]
        assert d.pending == 0


def test_byte_at_a_time() -> None:
    frame = protocol.error(7, "NOT_FOUND", "process already finished")
    d = protocol.Decoder()
    out = []
    for b in frame:
        out += d.feed(bytes([b]))
    assert out == [{"id": 7, "error": {"code": "NOT_FOUND", "message": "process already finished"}}]


def test_oversized_and_garbage_frames_are_errors() -> None:
    with pytest.raises(protocol.ProtocolError):
        protocol.Decoder().feed(struct.pack(">I", protocol.MAX_FRAME + 1))
    with pytest.raises(protocol.ProtocolError):
        protocol.Decoder().feed(struct.pack(">I", 3) + b"{{{")
    with pytest.raises(protocol.ProtocolError):
        protocol.Decoder().feed(struct.pack(">I", 2) + b"[]")


def test_rfc3339_roundtrip_with_nanoseconds() -> None:
    ns = 1_700_000_000_123_456_789
    text = timestamps.format_ns(ns)
    assert text == "2023-11-14T22:13:20.123456789Z"
    assert timestamps.parse_ns(text) == ns
