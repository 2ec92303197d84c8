"""pycrictl port-forward POD [LOCAL:]REMOTE...: listen on 127.0.0.1 and carry each connection into the pod.

SPDY (default): one PortForward URL, one SPDY session, a stream pair per connection.
WebSocket (``--transport websocket``): the URL is single-use, so each connection asks the
runtime for a new one.  Prints ``Forwarding from 127.0.0.1:LOCAL -> REMOTE`` per port (as
crictl/kubectl) and runs until interrupted.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import re
import sys
from typing import Any

from ... import errdefs
from ...client.cri import CriClient
from ...client.streaming import SpdyPortForward, websocket_port_forward
from ._stream import add_transport_flag


def register(sub: Any) -> None:
    p = sub.add_parser("port-forward", help="forward local ports to a pod")
    add_transport_flag(p)
    p.add_argument("--address", default="127.0.0.1", help="local address to listen on (default 127.0.0.1)")
    p.add_argument("pod", metavar="POD_ID")
    p.add_argument("ports", nargs="+", metavar="[LOCAL:]REMOTE")
    p.set_defaults(func=port_forward)


def parse_ports(specs: list[str]) -> list[tuple[int, int]]:
    """``8080:80`` / ``80`` / ``:80`` (a free local port) → (local, remote) pairs."""
    out = []
    for spec in specs:
        m = re.fullmatch(r"(?:(\d*):)?(\d+)", spec)
        if not m:
            raise errdefs.InvalidArgument(f"port-forward: bad port {spec!r}: want [LOCAL:]REMOTE")
        remote = int(m.group(2))
        local = remote if m.group(1) is None else int(m.group(1) or 0)
        if not (0 < remote < 65536 and 0 <= local < 65536):
            raise errdefs.InvalidArgument(f"port-forward: port out of range in {spec!r}")
        out.append((local, remote))
    return out


async def port_forward(args: argparse.Namespace, client: CriClient) -> int:
    pairs = parse_ports(args.ports)
    remotes = sorted({r for _, r in pairs})
    spdy: SpdyPortForward | None = None
    if args.transport == "spdy":
        spdy = await SpdyPortForward.connect(await client.port_forward(args.pod, remotes))
    tasks: set[asyncio.Task[None]] = set()

    def report(remote: int, err: str) -> None:
        if err:
            print(f"E port-forward to {remote}: {err}", file=sys.stderr, flush=True)

    def handler(remote: int) -> Any:
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            task = asyncio.current_task()
            if task is not None:
                tasks.add(task)
            try:
                print(f"Handling connection for {remote}", file=sys.stderr, flush=True)
                if spdy is not None:
                    report(remote, await spdy.forward(remote, reader, writer))
                else:
                    url = await client.port_forward(args.pod, [remote])
                    report(remote, await websocket_port_forward(url, remote, reader, writer))
            except errdefs.ContainerdError as exc:
                report(remote, str(exc))
            finally:
                writer.close()
                if task is not None:
                    tasks.discard(task)
        return handle

    servers = []
    try:
        for local, remote in pairs:
            server = await asyncio.start_server(handler(remote), args.address, local)
            servers.append(server)
            port = server.sockets[0].getsockname()[1]
            print(f"Forwarding from {args.address}:{port} -> {remote}", flush=True)
        if spdy is not None:
            await spdy.session.wait_closed()
            raise errdefs.Unavailable(f"port-forward: the streaming connection ended ({spdy.session.lost})")
        await asyncio.Future()
        return 0
    finally:
        for server in servers:
            server.close()
        for task in list(tasks):
            task.cancel()
        if spdy is not None:
            with contextlib.suppress(Exception):
                await spdy.aclose()
