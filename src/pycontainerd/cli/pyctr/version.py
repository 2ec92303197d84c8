"""pyctr version: client and server versions (and the server's UUID).

Answered over one hand-written HTTP/2 connection (``client/quick.py``) without importing
grpc, which is most of the time a gRPC client takes to start; when that path cannot answer
(an error status, an address that is not a unix socket) the full client asks again.
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from ... import __version__

if TYPE_CHECKING:
    from ...client import Client


def register(sub: Any) -> None:
    p = sub.add_parser("version", help="print the client and server versions")
    p.set_defaults(func=run, quick=quick)


def _print(version: str, revision: str, uuid: str) -> None:
    print("Client:")
    print(f"  Version:  {__version__}")
    print("  Revision: pycontainerd")
    print("")
    print("Server:")
    print(f"  Version:  {version}")
    print(f"  Revision: {revision}")
    print(f"  UUID: {uuid}")


def quick(args: argparse.Namespace) -> int | None:
    from ...client import quick as q

    if q.unix_path(args.address) is None:
        return None
    try:
        answer = q.version_and_uuid(args.address, args.namespace, args.connect_timeout)
    except q.DaemonUnreachable:
        raise
    except (OSError, ValueError, IndexError):
        return None  # a conversation we do not understand: the full client will
    if answer is None:
        return None
    _print(*answer)
    return 0


async def run(args: argparse.Namespace, client: Client) -> int:
    v = await client.version()
    uuid = await client.server_uuid()
    _print(v.version, v.revision, uuid)
    return 0
