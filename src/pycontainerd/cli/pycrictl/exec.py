"""pycrictl exec (through ExecSync) and port-forward (not yet).

Interactive exec (-i/-t) and port-forward need the runtime's streaming server (an HTTP/SPDY
or WebSocket URL that Exec/PortForward return); pycrictl does not speak that protocol yet, so
`exec` runs the command with ExecSync: it waits for the command, then prints its stdout and
stderr and exits with its exit code."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from ... import errdefs
from ...client.cri import CriClient


def register(sub: Any) -> None:
    p = sub.add_parser("exec", help="run a command in a container (ExecSync: no stdin, no TTY)")
    p.add_argument("-i", "--interactive", action="store_true", help="not supported yet (needs the streaming server)")
    p.add_argument("-t", "--tty", action="store_true", help="not supported yet (needs the streaming server)")
    p.add_argument("-s", "--sync", action="store_true", help="run synchronously (always the case in pycrictl)")
    p.add_argument("--timeout", dest="exec_timeout", type=int, default=0,
                   help="seconds after which the runtime kills the command (default: none)")
    p.add_argument("container", metavar="CONTAINER_ID")
    p.add_argument("cmd", nargs=argparse.REMAINDER, metavar="COMMAND [ARG...]")
    p.set_defaults(func=exec_)

    p = sub.add_parser("port-forward", help="forward local ports to a pod (not yet supported)")
    p.add_argument("pod", metavar="POD_ID")
    p.add_argument("ports", nargs="*", metavar="[LOCAL:]REMOTE")
    p.set_defaults(func=port_forward)


async def exec_(args: argparse.Namespace, client: CriClient) -> int:
    if args.interactive or args.tty:
        raise errdefs.Unimplemented(
            "interactive exec (-i/-t) needs the runtime's streaming server, which pycrictl does not speak yet; "
            "run the command without -i/-t (it goes through ExecSync: no stdin, output printed when it ends)")
    cmd = list(args.cmd)
    if cmd and cmd[0] == "--":
        cmd = cmd[1:]
    if not cmd:
        raise errdefs.InvalidArgument("exec: name a command to run, e.g. pycrictl exec CONTAINER_ID ls /")
    resp = await client.exec_sync(args.container, cmd, args.exec_timeout)
    sys.stdout.buffer.write(resp.stdout)
    sys.stdout.buffer.flush()
    sys.stderr.buffer.write(resp.stderr)
    sys.stderr.buffer.flush()
    return resp.exit_code


async def port_forward(args: argparse.Namespace, client: CriClient) -> int:
    raise errdefs.Unimplemented(
        "port-forward is not supported yet: it needs the runtime's streaming server, which pycrictl does not speak")
