"""pyctr plugins ls [-d] [filters...]: what the daemon loaded, like ``ctr plugins ls``."""

from __future__ import annotations

import argparse
from typing import Any

from ...client import Client
from ..common import add_output_flag, emit, table


def register(sub: Any) -> None:
    p = sub.add_parser("plugins", aliases=["plugin"], help="provides information about daemon plugins")
    s = p.add_subparsers(dest="sub", required=True)
    ls = s.add_parser("ls", aliases=["list"], help="list plugins")
    ls.add_argument("-q", "--quiet", action="store_true", help="print only the plugin ids")
    ls.add_argument("-d", "--detailed", action="store_true", help="print detailed information about each plugin")
    ls.add_argument("filters", nargs="*")
    add_output_flag(ls)
    ls.set_defaults(func=run_ls)


async def run_ls(args: argparse.Namespace, client: Client) -> int:
    plugins = await client.introspection.plugins(args.filters)
    if args.quiet:
        for pl in plugins:
            print(pl.id)
        return 0
    if args.output != "table":
        emit(args.output, [], [], [vars(pl) for pl in plugins])
        return 0
    if args.detailed:
        for pl in plugins:
            print(f"Type:          {pl.type}")
            print(f"ID:            {pl.id}")
            if pl.requires:
                print("Requires:")
                for r in pl.requires:
                    print(f"               {r}")
            if pl.platforms:
                print("Platforms:     " + ",".join(pl.platforms))
            if pl.exports:
                print("Exports:")
                for k, v in sorted(pl.exports.items()):
                    print(f"               {k:<16}{v}")
            if pl.capabilities:
                print("Capabilities:  " + ",".join(pl.capabilities))
            if pl.error:
                print(f"Error:\n               {pl.error}")
            print()
        return 0
    table(["TYPE", "ID", "PLATFORMS", "STATUS"],
          [[pl.type, pl.id, ",".join(pl.platforms) or "-", pl.status] for pl in plugins])
    return 0
