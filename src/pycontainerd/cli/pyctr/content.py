"""pyctr content fetch/ls/get/rm/label/ingest/active."""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from typing import Any

from ... import errdefs, timestamps
from ...client import Client
from ...client.pull import fetch
from ...images import blobs, reference
from ...images import digest as digests
from ...images import platforms as plat
from ..common import Progress, add_output_flag, emit, human_size, labels_str, parse_labels, table
from ._registry import add_registry_flags, make_resolver


def register(sub: Any) -> None:
    p = sub.add_parser("content", help="manage content")
    s = p.add_subparsers(dest="sub", required=True)

    f = s.add_parser("fetch", help="fetch all content for an image into the content store (no unpack)")
    f.add_argument("ref")
    f.add_argument("--platform", action="append", default=[])
    f.add_argument("--all-platforms", action="store_true")
    add_registry_flags(f)
    f.set_defaults(func=run_fetch)

    ls = s.add_parser("ls", aliases=["list"], help="list all blobs in the store")
    ls.add_argument("filters", nargs="*")
    ls.add_argument("-q", "--quiet", action="store_true")
    add_output_flag(ls)
    ls.set_defaults(func=run_ls)

    g = s.add_parser("get", help="write a blob's content to stdout")
    g.add_argument("digest")
    g.set_defaults(func=run_get)

    rm = s.add_parser("rm", aliases=["delete", "del", "remove"], help="permanently delete blobs")
    rm.add_argument("digests", nargs="+")
    rm.set_defaults(func=run_rm)

    lb = s.add_parser("label", help="add or remove labels of a blob")
    lb.add_argument("digest")
    lb.add_argument("labels", nargs="*", metavar="KEY=VALUE")
    lb.set_defaults(func=run_label)

    ing = s.add_parser("ingest", help="accept content into the store from stdin")
    ing.add_argument("ref")
    ing.add_argument("--expected-size", type=int, default=0)
    ing.add_argument("--expected-digest", default="")
    ing.set_defaults(func=run_ingest)

    act = s.add_parser("active", help="display active transfers (ingests)")
    act.add_argument("filters", nargs="*")
    act.set_defaults(func=run_active)


def _age(ns: int) -> str:
    if not ns:
        return "-"
    secs = max(0.0, time.time() - ns / 1e9)
    if secs < 1:
        return "Less than a second"
    for unit, n in (("days", 86400), ("hours", 3600), ("minutes", 60)):
        if secs >= n:
            return f"{int(secs // n)} {unit}"
    return f"{int(secs)} seconds"


async def run_fetch(args: argparse.Namespace, client: Client) -> int:
    ref = reference.normalize(args.ref)
    resolver = await make_resolver(args, ref)
    progress = Progress()
    try:
        async with client.leases.lease() as lc:
            img, _ = await fetch(lc, resolver, ref, matcher=plat.matcher_for(args.platform, args.all_platforms),
                                 progress=progress.update)
    finally:
        progress.finish()
        await resolver.aclose()
    print(f"{img.name}: {img.target.digest}")
    return 0


async def run_ls(args: argparse.Namespace, client: Client) -> int:
    infos = sorted(await client.content.list(args.filters), key=lambda i: i.digest)
    if args.quiet:
        for i in infos:
            print(i.digest)
        return 0
    emit(args.output, ["DIGEST", "SIZE", "AGE", "LABELS"],
         [[i.digest, human_size(i.size), _age(i.created_at), labels_str(i.labels)] for i in infos],
         [{"digest": i.digest, "size": i.size, "labels": dict(i.labels),
           "created_at": timestamps.format_ns(i.created_at) if i.created_at else None,
           "updated_at": timestamps.format_ns(i.updated_at) if i.updated_at else None} for i in infos])
    return 0


async def run_get(args: argparse.Namespace, client: Client) -> int:
    digests.validate(args.digest)
    out = sys.stdout.buffer
    async for chunk in client.content.read(args.digest):
        await asyncio.to_thread(out.write, chunk)
    await asyncio.to_thread(out.flush)
    return 0


async def run_rm(args: argparse.Namespace, client: Client) -> int:
    rc = 0
    for d in args.digests:
        try:
            await client.content.delete(d)
            print(d)
        except errdefs.NotFound:
            print(f"pyctr: content {d}: not found", file=sys.stderr)
            rc = 1
    return rc


async def run_label(args: argparse.Namespace, client: Client) -> int:
    info = await client.content.set_labels(args.digest, parse_labels(args.labels))
    print(f"{info.digest}: {labels_str(info.labels)}")
    return 0


async def run_ingest(args: argparse.Namespace, client: Client) -> int:
    if args.expected_digest:
        digests.validate(args.expected_digest)

    async def chunks() -> Any:
        while True:
            data = await asyncio.to_thread(sys.stdin.buffer.read, 1 << 20)
            if not data:
                return
            yield data

    w = await blobs.open_writer(client.content, args.ref, args.expected_size, args.expected_digest)
    try:
        st = await w.status()
        if st.offset:
            await w.truncate(0)
        n = 0
        async for c in chunks():
            await w.write(c)
            n += len(c)
        if args.expected_size and n != args.expected_size:
            raise errdefs.FailedPrecondition(f"read {n} bytes from stdin, expected {args.expected_size}")
        got = await w.commit(n, args.expected_digest)
    finally:
        await w.close()
    print(got)
    return 0


async def run_active(args: argparse.Namespace, client: Client) -> int:
    sts = await client.content.list_statuses(args.filters)
    table(["REF", "SIZE", "AGE"],
          [[s.ref, f"{human_size(s.offset)}/{human_size(s.total)}", _age(s.started_at)] for s in sts])
    return 0
