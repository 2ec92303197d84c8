"""pyctr version: client and server versions (and the server's UUID)."""

from __future__ import annotations

import argparse
from typing import Any

from ... import __version__
from ...client import Client


def register(sub: Any) -> None:
    p = sub.add_parser("version", help="print the client and server versions")
    p.set_defaults(func=run)


async def run(args: argparse.Namespace, client: Client) -> int:
    print("Client:")
    print(f"  Version:  {__version__}")
    print("  Revision: pycontainerd")
    print("")
    v = await client.version()
    uuid = await client.server_uuid()
    print("Server:")
    print(f"  Version:  {v.version}")
    print(f"  Revision: {v.revision}")
    print(f"  UUID: {uuid}")
    return 0
