"""pyctr leases ls/create/rm."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from ... import errdefs
from ...client import Client
from ..common import add_output_flag, emit, labels_str, parse_labels


def _duration(s: str) -> float:
    """``24h``, ``30m``, ``90s``, ``1h30m`` or plain seconds; 0 = never expires."""
    if not s or s == "0":
        return 0.0
    total, num = 0.0, ""
    units = {"h": 3600.0, "m": 60.0, "s": 1.0}
    for ch in s:
        if ch.isdigit() or ch == ".":
            num += ch
        elif ch in units and num:
            total += float(num) * units[ch]
            num = ""
        else:
            raise argparse.ArgumentTypeError(f"invalid duration {s!r}")
    if num:
        total += float(num)
    return total


def register(sub: Any) -> None:
    p = sub.add_parser("leases", aliases=["lease"], help="manage leases")
    s = p.add_subparsers(dest="sub", required=True)
    ls = s.add_parser("ls", aliases=["list"], help="list leases")
    ls.add_argument("filters", nargs="*")
    ls.add_argument("-q", "--quiet", action="store_true")
    add_output_flag(ls)
    ls.set_defaults(func=run_ls)
    c = s.add_parser("create", help="create a lease")
    c.add_argument("labels", nargs="*", metavar="KEY=VALUE")
    c.add_argument("--id", default="", help="lease id (random when empty)")
    c.add_argument("-x", "--expires", type=_duration, default=24 * 3600.0,
                   help="expiration (e.g. 24h, 30m; 0 = never)")
    c.set_defaults(func=run_create)
    rm = s.add_parser("rm", aliases=["delete", "remove"], help="remove leases")
    rm.add_argument("ids", nargs="+")
    rm.add_argument("--sync", action="store_true", help="synchronously remove leases and all unreferenced resources")
    rm.set_defaults(func=run_rm)


async def run_ls(args: argparse.Namespace, client: Client) -> int:
    leases = await client.leases.list(args.filters)
    if args.quiet:
        for lease in leases:
            print(lease.id)
        return 0

    def created(x: Any) -> str | None:
        return x.created_at.strftime("%Y-%m-%dT%H:%M:%SZ") if x.created_at else None

    emit(args.output, ["ID", "CREATED AT", "LABELS"],
         [[x.id, created(x) or "-", labels_str(x.labels)] for x in leases],
         [{"id": x.id, "created_at": created(x), "labels": dict(x.labels)} for x in leases])
    return 0


async def run_create(args: argparse.Namespace, client: Client) -> int:
    lease = await client.leases.create(args.id or None, parse_labels(args.labels),
                                       expire=args.expires if args.expires > 0 else None)
    print(lease.id)
    return 0


async def run_rm(args: argparse.Namespace, client: Client) -> int:
    rc = 0
    for lid in args.ids:
        try:
            await client.leases.delete(lid, sync=args.sync)
            print(lid)
        except errdefs.NotFound:
            print(f"pyctr: lease {lid!r}: not found", file=sys.stderr)
            rc = 1
    return rc
