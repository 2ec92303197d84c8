"""pycrictl exec: a command in a running container, streamed like crictl (or ExecSync with --sync).

Streaming (the default): the CRI's Exec answers a URL on the runtime's streaming server and
pycrictl connects to it over SPDY (default) or WebSocket (``--transport``): stdout always,
stdin with -i, a TTY with -t (raw terminal, the window size follows SIGWINCH, ctrl-p ctrl-q
detaches), stderr without -t.  pycrictl exits with the command's exit code.

``-s/--sync`` runs it through ExecSync instead: no stdin, no TTY, output printed at the end.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from ... import errdefs
from ...client.cri import CriClient
from ._stream import add_transport_flag, check_terminal, run_stream


def register(sub: Any) -> None:
    p = sub.add_parser("exec", help="run a command in a running container")
    p.add_argument("-i", "--interactive", action="store_true", help="keep STDIN open")
    p.add_argument("-t", "--tty", action="store_true", help="allocate a pseudo-TTY (needs -i)")
    p.add_argument("-s", "--sync", action="store_true", help="run the command synchronously (ExecSync)")
    p.add_argument("--timeout", dest="exec_timeout", type=int, default=0,
                   help="with --sync: seconds after which the runtime kills the command (default: none)")
    add_transport_flag(p)
    p.add_argument("container", metavar="CONTAINER_ID")
    p.add_argument("cmd", nargs=argparse.REMAINDER, metavar="COMMAND [ARG...]")
    p.set_defaults(func=exec_)


async def exec_(args: argparse.Namespace, client: CriClient) -> int:
    cmd = list(args.cmd)
    if cmd and cmd[0] == "--":
        cmd = cmd[1:]
    if not cmd:
        raise errdefs.InvalidArgument("exec: name a command to run, e.g. pycrictl exec CONTAINER_ID ls /")
    if args.sync:
        if args.interactive or args.tty:
            raise errdefs.InvalidArgument("exec --sync takes no stdin and no TTY: drop -i/-t or --sync")
        resp = await client.exec_sync(args.container, cmd, args.exec_timeout)
        sys.stdout.buffer.write(resp.stdout)
        sys.stdout.buffer.flush()
        sys.stderr.buffer.write(resp.stderr)
        sys.stderr.buffer.flush()
        return resp.exit_code
    check_terminal(stdin=args.interactive, tty_=args.tty)
    url = await client.exec(args.container, cmd, tty=args.tty, stdin=args.interactive, stdout=True,
                            stderr=not args.tty)
    result = await run_stream(url, stdin=args.interactive, tty_=args.tty, transport=args.transport)
    return 0 if result is None else result.exit_code
