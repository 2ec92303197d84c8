"""The sans-IO ttrpc layer: framing, stream ids, request/response matching, status codes."""

from __future__ import annotations

import struct

import pytest

from pycontainerd import errdefs
from pycontainerd.ttrpc import protocol as p


def _frame(sid: int, type_: int, data: bytes, flags: int = 0) -> bytes:
    return struct.pack(">IIBB", len(data), sid, type_, flags) + data


def test_header_layout() -> None:
    raw = p.encode_frame(0x01020304, p.MessageType.RESPONSE, b"abc", flags=0x05)
    assert raw == b"\x00\x00\x00\x03" + b"\x01\x02\x03\x04" + b"\x02" + b"\x05" + b"abc"
    assert p.HEADER_LENGTH == 10
    assert p.MAX_MESSAGE_LENGTH == 4 * 1024 * 1024


def test_request_wire_bytes() -> None:
    # hand-assembled protobuf: fields 1-5 of ttrpc.Request, metadata as a KeyValue submessage
    req = p.Request("s", "m", b"p", 1, (("k", "v"),))
    assert req.encode() == b"\n\x01s\x12\x01m\x1a\x01p \x01*\x06\n\x01k\x12\x01v"
    assert p.Request.decode(req.encode()) == req


def test_response_wire_bytes() -> None:
    assert p.Response(payload=b"x").encode() == b"\x12\x01x"  # OK: no status field at all
    err = p.Response(p.Status(5, "gone"))
    assert err.encode() == b"\n\x08\x08\x05\x12\x04gone"
    assert p.Response.decode(err.encode()) == err


def test_decoder_round_trip_and_several_frames_in_one_chunk() -> None:
    dec = p.FrameDecoder()
    raw = p.encode_frame(1, 1, b"one") + p.encode_frame(3, 1, b"") + p.encode_frame(5, 2, b"three", 1)
    assert dec.feed(raw) == [p.Frame(1, 1, 0, b"one"), p.Frame(3, 1, 0, b""), p.Frame(5, 2, 1, b"three")]
    assert dec.buffered == 0


def test_decoder_partial_reads_byte_by_byte() -> None:
    dec = p.FrameDecoder()
    raw = p.encode_frame(7, 1, b"hello world") + p.encode_frame(9, 1, b"x")
    frames: list[p.Frame | p.OversizedFrame] = []
    for i in range(len(raw)):
        got = dec.feed(raw[i : i + 1])
        if i < p.HEADER_LENGTH + 11 - 1:
            assert got == []
        frames += got
    assert frames == [p.Frame(7, 1, 0, b"hello world"), p.Frame(9, 1, 0, b"x")]


def test_decoder_keeps_a_partial_frame() -> None:
    dec = p.FrameDecoder()
    raw = p.encode_frame(1, 1, b"abcdef")
    assert dec.feed(raw[:12]) == []
    assert dec.buffered == 12
    assert dec.feed(raw[12:]) == [p.Frame(1, 1, 0, b"abcdef")]


def test_oversized_frame_is_skipped_and_the_stream_goes_on() -> None:
    dec = p.FrameDecoder(limit=16)
    big = _frame(1, 1, b"z" * 40)
    after = p.encode_frame(3, 1, b"ok")
    out = dec.feed(big[:20])  # header + part of the body
    assert out == [p.OversizedFrame(1, 1, 0, 40)]
    assert dec.feed(big[20:30]) == []
    assert dec.feed(big[30:] + after) == [p.Frame(3, 1, 0, b"ok")]


def test_exactly_the_limit_is_accepted() -> None:
    data = b"a" * p.MAX_MESSAGE_LENGTH
    raw = p.encode_frame(1, 1, data)
    assert p.FrameDecoder().feed(raw) == [p.Frame(1, 1, 0, data)]
    with pytest.raises(errdefs.ResourceExhausted):
        p.encode_frame(1, 1, data + b"a")


def test_client_stream_ids_are_odd_and_increasing() -> None:
    c = p.ClientConnection()
    ids = [c.send_request(p.Request("s", "m"))[0] for _ in range(4)]
    assert ids == [1, 3, 5, 7]
    sid, raw = c.send_request(p.Request("svc", "M", b"in"))
    assert sid == 9
    fr = p.FrameDecoder().feed(raw)
    assert fr == [p.Frame(9, p.MessageType.REQUEST, 0, p.Request("svc", "M", b"in").encode())]


def test_client_refuses_an_oversized_request_without_using_an_id() -> None:
    c = p.ClientConnection(limit=32)
    with pytest.raises(errdefs.ResourceExhausted):
        c.send_request(p.Request("s", "m", b"x" * 64))
    assert c.send_request(p.Request("s", "m"))[0] == 1
    assert c.pending == {1}


def _resp(sid: int, payload: bytes, status: p.Status | None = None) -> bytes:
    return p.encode_frame(sid, p.MessageType.RESPONSE, p.Response(status or p.Status(), payload).encode())


def test_client_matches_out_of_order_responses() -> None:
    c = p.ClientConnection()
    for _ in range(3):
        c.send_request(p.Request("s", "m"))
    evs = c.receive_data(_resp(5, b"five") + _resp(1, b"one") + _resp(3, b"", p.Status(5, "nope")))
    assert evs == [
        p.ResponseReceived(5, p.Response(payload=b"five")),
        p.ResponseReceived(1, p.Response(payload=b"one")),
        p.ResponseReceived(3, p.Response(p.Status(5, "nope"))),
    ]
    assert c.pending == set()


def test_client_ignores_unknown_and_forgotten_streams() -> None:
    c = p.ClientConnection()
    sid, _ = c.send_request(p.Request("s", "m"))
    c.forget(sid)  # e.g. timed out
    evs = c.receive_data(_resp(sid, b"late") + _resp(99, b"?") + p.encode_frame(1, p.MessageType.DATA, b""))
    assert [type(e) for e in evs] == [p.FrameIgnored, p.FrameIgnored, p.FrameIgnored]
    assert [e.stream_id for e in evs] == [1, 99, 1]


def test_client_oversized_or_malformed_response_fails_only_that_call() -> None:
    c = p.ClientConnection(limit=16)
    c.send_request(p.Request("s", "m"))
    c.send_request(p.Request("s", "m"))
    evs = c.receive_data(_frame(1, 2, b"q" * 100) + _frame(3, 2, b"\xff\xff"))
    assert isinstance(evs[0], p.ResponseReceived)
    assert evs[0].response.status.code_name == "RESOURCE_EXHAUSTED"
    assert isinstance(evs[1], p.ResponseReceived)
    assert evs[1].response.status.code_name == "INTERNAL"


def test_server_receives_requests_and_answers_in_any_order() -> None:
    s = p.ServerConnection()
    r1, r3 = p.Request("svc", "A", b"1", 5, (("k", "a"), ("k", "b"))), p.Request("svc", "B")
    evs = s.receive_data(_frame(1, 1, r1.encode()) + _frame(3, 1, r3.encode()))
    assert evs == [p.RequestReceived(1, r1), p.RequestReceived(3, r3)]
    assert r1.metadata_dict() == {"k": ["a", "b"]}
    out = s.send_response(3, p.Response(payload=b"b")) + s.send_response(1, p.Response(payload=b"a"))
    c = p.ClientConnection()
    c.send_request(r1)
    c.send_request(r3)
    assert c.receive_data(out) == [
        p.ResponseReceived(3, p.Response(payload=b"b")),
        p.ResponseReceived(1, p.Response(payload=b"a")),
    ]
    with pytest.raises(errdefs.FailedPrecondition):
        s.send_response(1, p.Response())  # already answered


def test_server_refusals() -> None:
    s = p.ServerConnection(limit=64)
    ok = p.Request("s", "m").encode()
    evs = s.receive_data(
        _frame(2, 1, ok)  # even id
        + _frame(5, 1, b"x" * 100)  # oversized
        + _frame(7, 1, ok, flags=p.FLAG_REMOTE_OPEN)  # streaming
        + _frame(9, 1, b"\xff\xff")  # not a Request
        + _frame(11, p.MessageType.DATA, b"")  # data frame
        + _frame(13, 1, ok)
        + _frame(13, 1, ok)  # 13 still active
    )
    codes = [(e.stream_id, e.status.code_name) for e in evs if isinstance(e, p.RequestRefused)]
    assert codes == [
        (2, "INVALID_ARGUMENT"),
        (5, "RESOURCE_EXHAUSTED"),
        (7, "UNIMPLEMENTED"),
        (9, "INVALID_ARGUMENT"),
    ]
    assert [e.stream_id for e in evs if isinstance(e, p.FrameIgnored)] == [11, 13]
    assert [e.stream_id for e in evs if isinstance(e, p.RequestReceived)] == [13]
    # a refused request is answered like any other
    raw = s.send_response(5, p.Response(p.Status(8, "too big")))
    assert p.FrameDecoder().feed(raw)[0] == p.Frame(5, 2, 0, p.Response(p.Status(8, "too big")).encode())


def test_server_replaces_an_oversized_response_by_a_status() -> None:
    s = p.ServerConnection(limit=64)
    s.receive_data(_frame(1, 1, p.Request("s", "m").encode()))
    raw = s.send_response(1, p.Response(payload=b"y" * 100))
    (fr,) = p.FrameDecoder().feed(raw)
    assert isinstance(fr, p.Frame)
    assert p.Response.decode(fr.data).status.code_name == "RESOURCE_EXHAUSTED"


def test_status_codes_are_grpc_codes() -> None:
    pinned = {
        "CANCELLED": 1,
        "UNKNOWN": 2,
        "INVALID_ARGUMENT": 3,
        "DEADLINE_EXCEEDED": 4,
        "NOT_FOUND": 5,
        "ALREADY_EXISTS": 6,
        "PERMISSION_DENIED": 7,
        "RESOURCE_EXHAUSTED": 8,
        "FAILED_PRECONDITION": 9,
        "UNIMPLEMENTED": 12,
        "UNAVAILABLE": 14,
    }
    for name, code in pinned.items():
        assert p.status_of(name, "").code == code
        assert p.Status(code).code_name == name


@pytest.mark.parametrize(
    ("exc", "code"),
    [
        (errdefs.NotFound("c1"), 5),
        (errdefs.AlreadyExists("c1"), 6),
        (errdefs.Conflict("busy"), 9),
        (errdefs.Unimplemented("no"), 12),
        (errdefs.Unavailable("x"), 14),
        (ValueError("boom"), 2),
    ],
)
def test_status_from_and_to_errors(exc: BaseException, code: int) -> None:
    st = p.Status.from_error(exc)
    assert st.code == code
    err = st.to_error()
    if isinstance(exc, errdefs.ContainerdError):
        assert err.code == exc.code
        assert str(err) == str(exc)
    else:
        assert isinstance(err, errdefs.Unknown)
        assert "boom" in str(err)


def test_unmapped_codes_become_unknown() -> None:
    assert isinstance(p.Status(13, "internal").to_error(), errdefs.Unknown)
    assert isinstance(p.Status(99, "future").to_error(), errdefs.Unknown)
    assert p.Status(99).code_name == "UNKNOWN"
