"""pycrictl version / info: the runtime's name and versions, its status and config (JSON)."""

from __future__ import annotations

import argparse
from typing import Any

from ... import __version__
from ...client.cri import CriClient, message_to_dict, parse_info
from ._format import print_json


def register(sub: Any) -> None:
    p = sub.add_parser("version", help="print the runtime's name and versions")
    p.set_defaults(func=version)
    p = sub.add_parser("info", help="print the runtime's status (conditions) and config as JSON")
    p.add_argument("-q", "--quiet", action="store_true", help="only the status, not the verbose info")
    p.set_defaults(func=info)


async def version(args: argparse.Namespace, client: CriClient) -> int:
    v = await client.version()
    print(f"Version:  {v.version}")
    print(f"RuntimeName:  {v.runtime_name}")
    print(f"RuntimeVersion:  {v.runtime_version}")
    print(f"RuntimeApiVersion:  {v.runtime_api_version}")
    print(f"ClientVersion:  pycrictl {__version__}")
    return 0


async def info(args: argparse.Namespace, client: CriClient) -> int:
    resp = await client.status(verbose=not args.quiet)
    out: dict[str, Any] = {"status": message_to_dict(resp.status)}
    out.update(parse_info(resp.info))
    print_json(out)
    return 0
