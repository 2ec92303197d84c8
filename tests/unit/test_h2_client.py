"""client/h2.py (gRPC over HTTP/2 without grpc) and client/wire.py (protobuf by hand).

HPACK is checked on RFC 7541's own examples (Appendix C.4: Huffman strings, dynamic table);
the connection against a real grpc server on a unix socket: large requests (send windows),
large streamed answers (our receive windows), calls in flight together, error statuses with
percent-encoded messages; the hand-written messages against the generated protobuf classes.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
import pytest

from pycontainerd import errdefs
from pycontainerd.api.services.containers.v1 import containers_pb2
from pycontainerd.api.services.tasks.v1 import tasks_pb2
from pycontainerd.client import wire
from pycontainerd.client.h2 import Channel, Hpack, huffman_decode


def test_huffman_decodes_the_rfc_example() -> None:
    assert huffman_decode(bytes.fromhex("f1e3c2e5f23a6ba0ab90f4ff")) == b"www.example.com"
    assert huffman_decode(bytes.fromhex("a8eb10649cbf")) == b"no-cache"
    with pytest.raises(ValueError):
        huffman_decode(b"\x00")  # padding must be ones


def test_hpack_decodes_the_rfc_request_sequence_with_its_dynamic_table() -> None:
    h = Hpack()
    assert h.decode(bytes.fromhex("828684418cf1e3c2e5f23a6ba0ab90f4ff")) == [
        (":method", "GET"), (":scheme", "http"), (":path", "/"), (":authority", "www.example.com")]
    assert h.decode(bytes.fromhex("828684be5886a8eb10649cbf")) == [
        (":method", "GET"), (":scheme", "http"), (":path", "/"), (":authority", "www.example.com"),
        ("cache-control", "no-cache")]
    assert h.decode(bytes.fromhex("828785bf408825a849e95ba97d7f8925a849e95bb8e8b4bf")) == [
        (":method", "GET"), (":scheme", "https"), (":path", "/index.html"), (":authority", "www.example.com"),
        ("custom-key", "custom-value")]
    assert h.size == 164  # RFC 7541 C.4.3: three entries


# -- against a real grpc server -------------------------------------------------------------
def _handlers() -> grpc.GenericRpcHandler:
    def echo(request: bytes, context: Any) -> bytes:
        md = dict(context.invocation_metadata())
        return json.dumps({"n": len(request), "ns": md.get("containerd-namespace"),
                           "lease": md.get("containerd-lease")}).encode() + request[-3:]

    def chunks(request: bytes, context: Any) -> Iterator[bytes]:
        for i in range(int(request)):
            yield bytes([i % 256]) * (1 << 20)

    def fail(request: bytes, context: Any) -> bytes:
        context.abort(grpc.StatusCode.NOT_FOUND, "conteneur « x » introuvable: 100% sûr")
        raise AssertionError("abort returns only by raising")

    ident = None
    return grpc.method_handlers_generic_handler("t.T", {
        "Echo": grpc.unary_unary_rpc_method_handler(echo, ident, ident),
        "Chunks": grpc.unary_stream_rpc_method_handler(chunks, ident, ident),
        "Fail": grpc.unary_unary_rpc_method_handler(fail, ident, ident),
    })


@pytest.fixture(scope="module")
def address() -> Iterator[str]:
    with tempfile.TemporaryDirectory(prefix="pycd-h2-") as d:
        path = str(Path(d) / "s.sock")
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=4),
                             options=[("grpc.max_receive_message_length", 64 << 20),
                                      ("grpc.max_send_message_length", 64 << 20)])
        server.add_generic_rpc_handlers((_handlers(),))
        server.add_insecure_port(f"unix://{path}")
        server.start()
        try:
            yield path
        finally:
            server.stop(None)


def test_unary_calls_carry_namespace_and_lease_and_large_requests(address: str) -> None:
    ch = Channel(address, "ns1")
    try:
        big = b"x" * (3 << 20) + b"end"  # far beyond the 64 KiB initial windows
        answer = ch.call("/t.T/Echo", big, lease="l1")
        assert json.loads(answer[:-3]) == {"n": len(big), "ns": "ns1", "lease": "l1"} and answer[-3:] == b"end"
        assert json.loads(ch.call("/t.T/Echo", b"abc")[:-3])["lease"] is None
    finally:
        ch.close()


def test_streamed_answers_beyond_the_receive_window_and_calls_in_flight_together(address: str) -> None:
    ch = Channel(address)
    try:
        s1 = ch.start("/t.T/Chunks", b"20")  # 20 MiB: more than our 16 MiB window
        s2 = ch.start("/t.T/Echo", b"hello")
        s3 = ch.start("/t.T/Fail", b"")
        assert json.loads(ch.result(s2)[0][:-3])["n"] == 5
        msgs = ch.result(s1)
        assert len(msgs) == 20 and all(m == bytes([i]) * (1 << 20) for i, m in enumerate(msgs))
        with pytest.raises(errdefs.NotFound) as exc:
            ch.result(s3)
        assert str(exc.value) == "conteneur « x » introuvable: 100% sûr"
        ch.settle()
    finally:
        ch.close()


def test_pump_waits_on_the_socket_and_other_fds_together(address: str) -> None:
    import os

    ch = Channel(address)
    r, w = os.pipe()
    try:
        sid = ch.start("/t.T/Chunks", b"3")  # frames arrive split across reads: pump must keep reading
        seen: list[int] = []
        while not ch.done(sid):
            ready, _ = ch.pump([r], [], 10)
            seen += ready
        assert seen == [] and len(ch.result(sid)) == 3
        os.write(w, b"x")
        assert ch.pump([r], [], 10)[0] == [r]
    finally:
        os.close(r)
        os.close(w)
        ch.close()


def test_unreachable_socket_is_said_in_words(tmp_path: Path) -> None:
    with pytest.raises(errdefs.Unavailable, match="no such socket"):
        Channel(str(tmp_path / "none.sock"))


# -- messages by hand ------------------------------------------------------------------------
def test_hand_written_messages_parse_as_the_generated_ones() -> None:
    spec = {"ociVersion": "1.0.2-dev", "process": {"args": ["true"]}}
    rt = wire.string(1, "io.containerd.runc.v2") + wire.message(2, wire.string(1, "containerd.runc.v1.Options"))
    spec_any = wire.string(1, "types.containerd.io/opencontainers/runtime-spec/1/Spec") + wire.string(
        2, json.dumps(spec))
    record = (wire.string(1, "c1") + wire.fmap(2, {"a": "1", "b": ""}) + wire.string(3, "img")
              + wire.message(4, rt) + wire.message(5, spec_any) + wire.string(6, "overlayfs") + wire.string(7, "c1"))
    req = containers_pb2.CreateContainerRequest.FromString(wire.message(1, record))
    c = req.container
    assert (c.id, dict(c.labels), c.image, c.snapshotter, c.snapshot_key) == ("c1", {"a": "1", "b": ""}, "img",
                                                                             "overlayfs", "c1")
    assert c.runtime.name == "io.containerd.runc.v2" and c.runtime.options.type_url == "containerd.runc.v1.Options"
    assert json.loads(c.spec.value) == spec

    mount = wire.string(1, "overlay") + wire.string(2, "overlay") + wire.repeated(4, ["ro", "lowerdir=/a"])
    create = tasks_pb2.CreateTaskRequest.FromString(
        wire.string(1, "c1") + wire.message(3, mount) + wire.string(5, "/f/out") + wire.boolean(7, False))
    assert create.container_id == "c1" and create.stdout == "/f/out" and not create.terminal
    assert [(m.type, list(m.options)) for m in create.rootfs] == [("overlay", ["ro", "lowerdir=/a"])]

    kill = tasks_pb2.KillRequest(container_id="c1", signal=15).SerializeToString()
    f = wire.fields(kill)
    assert wire.get_str(f, 1) == "c1" and wire.get_uint(f, 3) == 15
    assert kill == wire.string(1, "c1") + wire.uint(3, 15)
    wait = tasks_pb2.WaitResponse(exit_status=300).SerializeToString()
    assert wire.get_uint(wire.fields(wait), 1) == 300
