"""Kubernetes remotecommand vocabulary (streaming/remotecommand.py): Status, resize, channels."""

from __future__ import annotations

import json

import pytest

from pycontainerd import errdefs
from pycontainerd.streaming import remotecommand as rc


def test_status_success_and_exit_code_roundtrip():
    assert json.loads(rc.status_success()) == {"metadata": {}, "status": "Success"}
    doc = json.loads(rc.status_exit_code(3))
    assert doc["reason"] == "NonZeroExitCode"
    assert doc["details"]["causes"] == [{"reason": "ExitCode", "message": "3"}]
    assert rc.parse_status(rc.status_exit_code(3)) == rc.Outcome(3, doc["message"])
    assert rc.parse_status(rc.status_success()).success
    assert rc.parse_status(b"").success


def test_status_as_kubelet_writes_it():
    # what containerd 1.6's streaming server writes for `sh -c 'exit 7'`
    raw = (
        b'{"metadata":{},"status":"Failure","message":"command terminated with non-zero exit code: '
        b'error executing command [sh -c exit 7], exit code 7","reason":"NonZeroExitCode",'
        b'"details":{"causes":[{"reason":"ExitCode","message":"7"}]}}'
    )
    assert rc.parse_status(raw).exit_code == 7


def test_status_error_and_pre_v4_text():
    out = rc.parse_status(rc.status_error("container not found"))
    assert out.exit_code is None and out.message == "container not found"
    assert rc.parse_status(b"some failure", rc.STREAM_PROTOCOL_V3) == rc.Outcome(None, "some failure")
    assert rc.encode_status(rc.STREAM_PROTOCOL_V2, 0) == b""
    assert rc.encode_status(rc.STREAM_PROTOCOL_V2, 1).startswith(b"command terminated")
    assert rc.parse_status(rc.encode_status(rc.WS_V4_BASE64_CHANNEL, 5), rc.WS_V4_BASE64_CHANNEL).exit_code == 5
    assert rc.parse_status(rc.encode_status(rc.STREAM_PROTOCOL_V4, 0, "boom")).exit_code is None


@pytest.mark.parametrize(
    "raw",
    [b"not json", b"[1]", b'{"status":"Weird"}', b'{"status":"Failure","reason":"NonZeroExitCode"}',
     b'{"status":"Failure","reason":"NonZeroExitCode","details":{"causes":[{"reason":"ExitCode","message":"x"}]}}'],
)
def test_status_parse_rejects_garbage(raw):
    with pytest.raises(errdefs.InvalidArgument):
        rc.parse_status(raw)


def test_resize_encode_parse_and_stream_decoder():
    assert rc.encode_resize(80, 24) == b'{"Width":80,"Height":24}'
    assert rc.parse_resize(b'{"Width":100,"Height":30}') == (100, 30)
    dec = rc.ResizeDecoder()
    assert dec.feed(b'{"Width":1,"Height":2}{"Wid') == [(1, 2)]
    assert dec.feed(b'th":3,"Height":4}\n{"Width":5,"Height":6}') == [(3, 4), (5, 6)]
    with pytest.raises(errdefs.InvalidArgument):
        rc.parse_resize(b'{"Width":-1,"Height":2}')
    with pytest.raises(errdefs.InvalidArgument):
        rc.ResizeDecoder(limit=10).feed(b"{" + b" " * 20 + b'"x')


def test_channel_frames_binary_and_base64():
    assert rc.encode_channel_frame(rc.CHANNEL_STDIN, b"hi") == b"\x00hi"
    assert rc.decode_channel_frame(b"\x01out") == (1, b"out")
    text = rc.encode_channel_frame(rc.CHANNEL_STDERR, b"\xff\x00", base64_variant=True)
    assert text == "2/wA="
    assert rc.decode_channel_frame(text) == (2, b"\xff\x00")
    assert rc.encode_close_channel(rc.CHANNEL_STDIN) == b"\xff\x00"
    for bad in (b"", "", "x", "1!!!"):
        with pytest.raises(errdefs.InvalidArgument):
            rc.decode_channel_frame(bad)


def test_port_prefix_is_little_endian():
    assert rc.encode_port_prefix(8080) == b"\x90\x1f"
    assert rc.decode_port_prefix(b"\x90\x1frest") == (8080, b"rest")
    with pytest.raises(errdefs.InvalidArgument):
        rc.decode_port_prefix(b"\x01")


def test_protocol_lists():
    assert rc.SPDY_REMOTECOMMAND_PROTOCOLS[0] == "v4.channel.k8s.io"
    assert rc.SPDY_REMOTECOMMAND_PROTOCOLS[-1] == "channel.k8s.io"
    assert rc.WS_REMOTECOMMAND_PROTOCOLS[0] == "v5.channel.k8s.io"
    assert rc.status_uses_json("v4.base64.channel.k8s.io") and not rc.status_uses_json("base64.channel.k8s.io")
    assert rc.ws_supports_close("v5.channel.k8s.io") and not rc.ws_supports_close("v4.channel.k8s.io")
