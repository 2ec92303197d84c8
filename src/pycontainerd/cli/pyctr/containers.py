"""pyctr containers ls/info/create/rm/label (alias ``c``), like ``ctr containers``."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from typing import Any

from ... import errdefs
from ...client import Client
from ...client.run import LOG_URI_LABEL, delete_container
from ..common import add_output_flag, emit, json_safe, labels_str, parse_labels
from .run import add_container_flags, create_container, default_log_path


def register(sub: Any) -> None:
    p = sub.add_parser("containers", aliases=["container", "c"], help="manage containers")
    s = p.add_subparsers(dest="sub", required=True)

    ls = s.add_parser("ls", aliases=["list"], help="list containers")
    ls.add_argument("-q", "--quiet", action="store_true", help="print only the container id")
    ls.add_argument("filters", nargs="*", help="filters, e.g. labels.x==y or image~=busybox")
    add_output_flag(ls)
    ls.set_defaults(func=run_ls)

    info = s.add_parser("info", help="get info about a container")
    info.add_argument("--spec", action="store_true", help="only display the spec")
    info.add_argument("id", metavar="ID")
    info.add_argument("-o", "--output", choices=["json", "yaml"], default="json", help="output format")
    info.set_defaults(func=run_info)

    c = s.add_parser("create", help="create a container")
    add_container_flags(c, cpu_shares=0)
    c.add_argument("image", metavar="IMAGE")
    c.add_argument("id", metavar="ID")
    c.add_argument("args", nargs=argparse.REMAINDER, metavar="CMD")
    c.set_defaults(func=run_create)

    rm = s.add_parser("rm", aliases=["delete", "del", "remove"], help="delete one or more containers")
    rm.add_argument("--keep-snapshot", action="store_true", help="do not remove the container's snapshot")
    rm.add_argument("-f", "--force", action="store_true", help="kill and delete a running task first")
    rm.add_argument("ids", nargs="+", metavar="ID")
    rm.set_defaults(func=run_rm)

    lb = s.add_parser("label", help="set and clear labels for a container")
    lb.add_argument("id", metavar="ID")
    lb.add_argument("labels", nargs="*", metavar="KEY=VALUE")
    lb.set_defaults(func=run_label)


async def run_ls(args: argparse.Namespace, client: Client) -> int:
    containers = await client.containers.list(args.filters)
    if args.quiet:
        for c in containers:
            print(c.id)
        return 0
    emit(args.output, ["CONTAINER", "IMAGE", "RUNTIME"], [[c.id, c.image or "-", c.runtime] for c in containers],
         [{"id": c.id, "image": c.image, "runtime": c.runtime, "labels": dict(c.labels)} for c in containers])
    return 0


async def run_info(args: argparse.Namespace, client: Client) -> int:
    c = await client.containers.get(args.id)
    doc = c.spec if args.spec else c.info()
    if args.output == "yaml":
        import yaml

        print(yaml.safe_dump(json_safe(doc), sort_keys=False), end="")
    else:
        print(json.dumps(doc, indent=4))
    return 0


async def run_create(args: argparse.Namespace, client: Client) -> int:
    await create_container(args, client)
    return 0


async def _force_stop(client: Client, container_id: str) -> None:
    try:
        proc = await client.tasks.get(container_id)
    except errdefs.NotFound:
        return
    if proc.status in ("stopped", "created"):
        return
    if proc.status in ("paused", "pausing"):
        await client.tasks.resume(container_id)
    await client.tasks.kill(container_id, 9, all=True)
    await client.tasks.wait(container_id)


async def run_rm(args: argparse.Namespace, client: Client) -> int:
    rc = 0
    for cid in args.ids:
        try:
            if args.force:
                await _force_stop(client, cid)
            log_uri = (await client.containers.get(cid)).labels.get(LOG_URI_LABEL, "")
            await delete_container(client, cid, keep_snapshot=args.keep_snapshot)
            if log_uri == "file://" + default_log_path(args, cid):  # the log run -d made, not one the user named
                with contextlib.suppress(OSError):
                    os.unlink(log_uri[len("file://"):])
        except errdefs.ContainerdError as exc:
            print(f"pyctr: failed to delete container {cid}: {exc}", file=sys.stderr)
            rc = 1
    return rc


async def run_label(args: argparse.Namespace, client: Client) -> int:
    c = await client.containers.set_labels(args.id, parse_labels(args.labels))
    print(labels_str(c.labels))
    return 0
