"""CPU per unary call of ``http2.ServerConnection`` alone (no sockets, no event loop): the HTTP/2 floor
of our own gRPC server.

    python -m bench.http2_unary [CALLS]

One connection; each call is what grpc-go sends for a unary call (HEADERS with the request
headers encoded by an indexing, Huffman-coding HPACK encoder, DATA with the 5-byte prefixed
message and END_STREAM, in one read), then the server's side: ``consumed``, the constant response
HEADERS, the message as DATA, the constant trailers with END_STREAM, one ``data_to_send``.
Printed: microseconds per call for a block that repeats (grpc-go after its first call of a
method: the decoder's cache), and for one that changes every call (a new grpc-timeout each time).
"""

from __future__ import annotations

import struct
import sys
import time

import hpack as hyper_hpack

from pycontainerd.http2 import frames as f
from pycontainerd.http2.hpack import encode_block
from pycontainerd.http2.server import DataReceived, RequestReceived, ServerConnection

RESPONSE = encode_block([(":status", "200"), ("content-type", "application/grpc")])
TRAILERS = encode_block([("grpc-status", "0"), ("grpc-message", "")])
ANSWER = b"\x00" + struct.pack(">I", 40) + b"\x0a\x06v2.2.0\x12\x20" + b"r" * 32


def _request_headers(timeout: str | None) -> list[tuple[str, str]]:
    h = [(":method", "POST"), (":scheme", "http"), (":path", "/containerd.services.version.v1.Version/Version"),
         (":authority", "/run/containerd/containerd.sock"), ("content-type", "application/grpc"),
         ("user-agent", "grpc-go/1.72.0"), ("te", "trailers"), ("containerd-namespace", "default")]
    if timeout:
        h.append(("grpc-timeout", timeout))
    return h


def run(calls: int, varying: bool) -> float:
    enc = hyper_hpack.Encoder()
    wires = []
    for i in range(calls):
        sid = 1 + 2 * i
        block = enc.encode(_request_headers(f"{9000 + i}m" if varying else None), huffman=True)
        wires.append(f.frame(f.HEADERS, f.END_HEADERS, sid, block) + f.frame(f.DATA, f.END_STREAM, sid, b"\0" * 5))
    conn = ServerConnection()
    conn.initiate()
    conn.receive_data(f.PREFACE + f.frame(f.SETTINGS, 0, 0))
    conn.data_to_send()
    out = 0
    start = time.process_time()
    for wire in wires:
        for ev in conn.receive_data(wire):
            if type(ev) is DataReceived:
                sid = ev.stream_id
                conn.consumed(sid, ev.flow_length)
                if ev.end_stream:
                    conn.send_headers(sid, RESPONSE)
                    conn.send_data(sid, ANSWER)
                    conn.send_headers(sid, TRAILERS, end_stream=True)
            elif type(ev) is RequestReceived:
                pass
        out += len(conn.data_to_send())
    elapsed = time.process_time() - start
    assert out > 0 and conn.open_streams == 0
    return elapsed / calls * 1e6


def main() -> None:
    calls = int(sys.argv[1]) if len(sys.argv) > 1 else 100_000
    for varying in (False, True):
        best = min(run(calls, varying) for _ in range(3))
        print(f"{'changing' if varying else 'repeated'} header block: {best:.2f} us/call "
              f"(receive_data + consumed + send_headers/data/trailers + data_to_send; best of 3, {calls} calls)")


if __name__ == "__main__":
    main()
