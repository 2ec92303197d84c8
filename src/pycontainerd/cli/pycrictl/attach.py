"""pycrictl attach: connect to a running container's main process (its stdio), like crictl attach.

-i streams our stdin to it (the container must have been created with ``stdin``), -t says it
has a TTY (created with ``tty``; raw terminal here, SIGWINCH resizes, ctrl-p ctrl-q detaches).
"""

from __future__ import annotations

import argparse
from typing import Any

from ...client.cri import CriClient
from ._stream import add_transport_flag, check_terminal, run_stream


def register(sub: Any) -> None:
    p = sub.add_parser("attach", help="attach to a running container")
    p.add_argument("-i", "--stdin", "--interactive", dest="interactive", action="store_true", help="keep STDIN open")
    p.add_argument("-t", "--tty", action="store_true", help="the container has a TTY (needs -i)")
    add_transport_flag(p)
    p.add_argument("container", metavar="CONTAINER_ID")
    p.set_defaults(func=attach)


async def attach(args: argparse.Namespace, client: CriClient) -> int:
    check_terminal(stdin=args.interactive, tty_=args.tty)
    url = await client.attach(args.container, tty=args.tty, stdin=args.interactive, stdout=True,
                              stderr=not args.tty)
    result = await run_stream(url, stdin=args.interactive, tty_=args.tty, transport=args.transport)
    return 0 if result is None else result.exit_code
