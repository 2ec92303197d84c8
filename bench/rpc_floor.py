"""A minimal gRPC server answering containerd's Version and nothing else: the floor of a
Python gRPC server on this machine, to compare the daemon's per-call cost against.

    python -m bench.rpc_floor SOCKET aio          # grpc.aio, asyncio's default loop
    python -m bench.rpc_floor SOCKET aio-uvloop   # grpc.aio on uvloop (what the daemon uses)
    python -m bench.rpc_floor SOCKET sync         # grpc.server with a thread pool

It prints ``ready`` on stdout once it serves, and stops on SIGTERM.
"""

from __future__ import annotations

import asyncio
import signal
import sys
import threading
from concurrent import futures
from typing import Any

import grpc
from google.protobuf import empty_pb2

from pycontainerd.api.services.version.v1 import version_pb2, version_pb2_grpc

KINDS = ("aio", "aio-uvloop", "sync")
# server options to try, by name: KIND+PRESET (e.g. ``aio-uvloop+nochannelz``)
PRESETS: dict[str, list[tuple[str, Any]]] = {
    "": [],
    "nochannelz": [("grpc.enable_channelz", 0)],
    "nobdp": [("grpc.http2.bdp_probe", 0)],
    "latency": [("grpc.optimization_target", "latency")],
    # the daemon's own (daemon/server.py)
    "daemon": [("grpc.max_receive_message_length", 16 << 20), ("grpc.max_send_message_length", 16 << 20),
               ("grpc.so_reuseport", 0), ("grpc.server.max_pending_requests", 1 << 20),
               ("grpc.server.max_pending_requests_hard_limit", 1 << 20),
               ("grpc.server_max_unrequested_time_in_server", 3600)],
    "all": [("grpc.enable_channelz", 0), ("grpc.http2.bdp_probe", 0), ("grpc.optimization_target", "latency")],
}


class _AsyncVersion(version_pb2_grpc.VersionServicer):
    async def Version(self, request: empty_pb2.Empty, context: Any) -> version_pb2.VersionResponse:
        return version_pb2.VersionResponse(version="floor", revision="floor")


class _SyncVersion(version_pb2_grpc.VersionServicer):
    def Version(self, request: empty_pb2.Empty, context: Any) -> version_pb2.VersionResponse:
        return version_pb2.VersionResponse(version="floor", revision="floor")


async def _serve_aio(address: str, options: list[tuple[str, Any]]) -> None:
    server = grpc.aio.server(options=options)
    version_pb2_grpc.add_VersionServicer_to_server(_AsyncVersion(), server)
    server.add_insecure_port(f"unix:{address}")
    await server.start()
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    print("ready", flush=True)
    await stop.wait()
    await server.stop(0)


def _serve_sync(address: str, options: list[tuple[str, Any]]) -> None:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4), options=options)
    version_pb2_grpc.add_VersionServicer_to_server(_SyncVersion(), server)
    server.add_insecure_port(f"unix:{address}")
    server.start()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    print("ready", flush=True)
    stop.wait()
    server.stop(0)


def main(argv: list[str]) -> None:
    address, spec = argv
    kind, _, preset = spec.partition("+")
    options = PRESETS[preset]
    if kind == "sync":
        _serve_sync(address, options)
    elif kind == "aio":
        asyncio.run(_serve_aio(address, options))
    elif kind == "aio-uvloop":
        import uvloop

        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            runner.run(_serve_aio(address, options))
    else:
        raise SystemExit(f"kind must be one of {KINDS}")


if __name__ == "__main__":
    main(sys.argv[1:])
