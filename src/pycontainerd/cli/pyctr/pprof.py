"""pyctr pprof goroutines|heap|profile: the daemon's profiles from its debug socket, as ``ctr pprof``.

Text (``--debug 1``/``2``) goes to stdout; the pprof protobuf (no ``--debug``) to ``-o FILE``
or stdout, for ``go tool pprof``.  Only the debug socket is used, not gRPC: it answers
while the daemon is stuck.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from pathlib import Path
from typing import Any

from ...client.ops import DEFAULT_DEBUG_ADDRESS, DebugClient


def add_debug_socket_flag(p: Any) -> None:
    p.add_argument("-d", "--debug-socket", default=os.environ.get("PYCONTAINERD_DEBUG_SOCKET", ""),
                   help=f"the daemon's debug socket (default: debug.sock beside the -a socket, {DEFAULT_DEBUG_ADDRESS} "
                        "for the default one)")


def debug_socket(args: Any) -> str:
    """``--debug-socket``, else ``debug.sock`` in the directory of the daemon's socket (its state dir)."""
    if args.debug_socket:
        return str(args.debug_socket)
    from ...client.quick import unix_path

    path = unix_path(args.address)
    return os.path.join(os.path.dirname(path), "debug.sock") if path and os.path.isabs(path) else DEFAULT_DEBUG_ADDRESS


def register(sub: Any) -> None:
    p = sub.add_parser("pprof", help="the daemon's stacks, heap and CPU profiles (pprof format)")
    add_debug_socket_flag(p)
    s = p.add_subparsers(dest="sub", required=True)
    g = s.add_parser("goroutines", aliases=["goroutine", "stacks"], help="every thread's and task's stack")
    g.add_argument("--debug", type=int, default=2, help="2: every stack; 1: counted; 0: pprof protobuf")
    h = s.add_parser("heap", help="live Python allocations (starts tracemalloc on first use)")
    h.add_argument("--debug", type=int, default=0, help="1: text; 0: pprof protobuf")
    pr = s.add_parser("profile", help="CPU profile of every thread")
    pr.add_argument("-s", "--seconds", type=float, default=30.0, help="how long to sample (default 30)")
    pr.add_argument("--debug", type=int, default=0, help="1: text; 0: pprof protobuf")
    for q in (g, h, pr):
        q.add_argument("-o", "--output", default="", help="write to FILE instead of stdout")
        q.set_defaults(func=run, no_client=True)


async def run(args: argparse.Namespace, client: Any) -> int:
    dc = DebugClient(debug_socket(args))
    name = {"goroutine": "goroutines", "stacks": "goroutines"}.get(args.sub, args.sub)
    if name == "goroutines":
        data = await dc.get(f"/debug/pprof/goroutine?debug={args.debug}")
    elif name == "heap":
        data = await dc.get(f"/debug/pprof/heap?debug={args.debug}")
    else:
        data = await dc.get(f"/debug/pprof/profile?seconds={args.seconds:g}&debug={args.debug}",
                            wait=args.seconds + 30)
    if args.output:
        await asyncio.to_thread(Path(args.output).write_bytes, data)
    else:
        sys.stdout.buffer.write(data)
        sys.stdout.flush()
    return 0
