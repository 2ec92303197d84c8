"""pyctr namespaces ls/create/label/rm."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from ... import errdefs
from ...client import Client
from ..common import add_output_flag, emit, labels_str, parse_labels


def register(sub: Any) -> None:
    p = sub.add_parser("namespaces", aliases=["namespace", "ns"], help="manage namespaces")
    s = p.add_subparsers(dest="sub", required=True)
    ls = s.add_parser("ls", aliases=["list"], help="list namespaces")
    ls.add_argument("-q", "--quiet", action="store_true")
    add_output_flag(ls)
    ls.set_defaults(func=run_ls)
    c = s.add_parser("create", aliases=["c"], help="create a new namespace")
    c.add_argument("name")
    c.add_argument("labels", nargs="*", metavar="KEY=VALUE")
    c.set_defaults(func=run_create)
    lb = s.add_parser("label", help="set and clear labels for a namespace")
    lb.add_argument("name")
    lb.add_argument("labels", nargs="*", metavar="KEY=VALUE")
    lb.set_defaults(func=run_label)
    rm = s.add_parser("rm", aliases=["remove"], help="remove one or more namespaces")
    rm.add_argument("names", nargs="+")
    rm.set_defaults(func=run_rm)


async def run_ls(args: argparse.Namespace, client: Client) -> int:
    nss = await client.namespaces.list()
    if args.quiet:
        for n in nss:
            print(n.name)
        return 0
    emit(args.output, ["NAME", "LABELS"], [[n.name, labels_str(n.labels) if n.labels else ""] for n in nss],
         [{"name": n.name, "labels": dict(n.labels)} for n in nss])
    return 0


async def run_create(args: argparse.Namespace, client: Client) -> int:
    await client.namespaces.create(args.name, parse_labels(args.labels))
    return 0


async def run_label(args: argparse.Namespace, client: Client) -> int:
    await client.namespaces.set_labels(args.name, parse_labels(args.labels))
    return 0


async def run_rm(args: argparse.Namespace, client: Client) -> int:
    rc = 0
    for name in args.names:
        try:
            await client.namespaces.delete(name)
            print(name)
        except errdefs.ContainerdError as exc:
            print(f"pyctr: unable to delete namespace {name}: {exc}", file=sys.stderr)
            rc = 1
    return rc
