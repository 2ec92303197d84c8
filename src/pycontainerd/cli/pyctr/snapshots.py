"""pyctr snapshots ls/tree/info/usage/mounts/prepare/view/commit/diff/rm/label (alias ``snapshot``).

    pyctr snapshots --snapshotter overlayfs ls
    pyctr snapshots prepare --target /mnt/x my-key sha256:<chainid>   # prints the mount command
    pyctr snapshots diff my-key > layer.tar.gz                         # the changes as a layer blob
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import sys
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime
from typing import Any

from ... import errdefs, timestamps
from ...client import Client
from ...client.run import temporary_lease
from ...client.snapshots import Info, Kind, SnapshotterProxy
from ...mount import Mount
from ..common import add_output_flag, emit, human_size, labels_str, parse_labels, table

GZIP_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"


def register(sub: Any) -> None:
    p = sub.add_parser("snapshots", aliases=["snapshot"], help="manage snapshots", description=__doc__,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--snapshotter", default=os.environ.get("CONTAINERD_SNAPSHOTTER", ""),
                   help="snapshotter name (default: the namespace's default, else overlayfs)")
    s = p.add_subparsers(dest="sub", required=True)

    ls = s.add_parser("ls", aliases=["list"], help="list snapshots")
    ls.add_argument("filters", nargs="*", help="filters, e.g. kind==committed or labels.x==y")
    add_output_flag(ls)
    ls.set_defaults(func=run_ls)

    tr = s.add_parser("tree", help="display the snapshots as a tree")
    tr.set_defaults(func=run_tree)

    info = s.add_parser("info", help="get info about a snapshot")
    info.add_argument("key", metavar="KEY")
    info.set_defaults(func=run_info)

    us = s.add_parser("usage", help="disk usage of snapshots")
    us.add_argument("-b", "--bytes", action="store_true", help="sizes in bytes")
    us.add_argument("keys", nargs="*", metavar="KEY")
    us.set_defaults(func=run_usage)

    mt = s.add_parser("mounts", aliases=["m", "mount"], help="print the mount commands for an active snapshot")
    mt.add_argument("target", metavar="TARGET")
    mt.add_argument("key", metavar="KEY")
    mt.set_defaults(func=run_mounts)

    for name, fn, hlp in (("prepare", run_prepare, "create a writable snapshot from a committed one"),
                          ("view", run_view, "create a read-only snapshot from a committed one")):
        q = s.add_parser(name, help=hlp)
        q.add_argument("--target", default="", help="print the mount command for this target")
        q.add_argument("--label", action="append", default=[], metavar="KEY=VALUE")
        q.add_argument("key", metavar="KEY")
        q.add_argument("parent", nargs="?", default="", metavar="PARENT")
        q.set_defaults(func=fn)

    c = s.add_parser("commit", help="commit an active snapshot under a name")
    c.add_argument("--label", action="append", default=[], metavar="KEY=VALUE")
    c.add_argument("name", metavar="NAME")
    c.add_argument("key", metavar="KEY")
    c.set_defaults(func=run_commit)

    d = s.add_parser("diff", help="write the changes of a snapshot (vs its parent, or vs KEY_B) to stdout")
    d.add_argument("--media-type", default=GZIP_LAYER, help="media type of the diff")
    d.add_argument("--ref", default="", help="content upload reference")
    d.add_argument("--keep", action="store_true", help="keep the diff blob in the content store (gc root)")
    d.add_argument("--label", action="append", default=[], metavar="KEY=VALUE")
    d.add_argument("key", metavar="KEY")
    d.add_argument("key_b", nargs="?", default="", metavar="KEY_B")
    d.set_defaults(func=run_diff)

    rm = s.add_parser("rm", aliases=["delete", "del", "remove"], help="remove snapshots")
    rm.add_argument("keys", nargs="+", metavar="KEY")
    rm.set_defaults(func=run_rm)

    lb = s.add_parser("label", help="set and clear labels for a snapshot")
    lb.add_argument("key", metavar="KEY")
    lb.add_argument("labels", nargs="*", metavar="KEY=VALUE")
    lb.set_defaults(func=run_label)


async def _sn(args: argparse.Namespace, client: Client) -> SnapshotterProxy:
    return await client.snapshots.resolve(args.snapshotter)


def _ts(ns: int) -> str:
    if not ns:
        return "0001-01-01T00:00:00Z"
    return datetime.fromtimestamp(ns / 1e9, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f") + "Z"


def info_json(info: Info) -> dict[str, Any]:
    """Info in the shape ``ctr snapshots info`` prints."""
    out: dict[str, Any] = {"Kind": str(info.kind), "Name": info.name}
    if info.parent:
        out["Parent"] = info.parent
    if info.labels:
        out["Labels"] = info.labels
    out["Created"] = _ts(info.created_at)
    out["Updated"] = _ts(info.updated_at)
    return out


def mount_commands(mounts: Sequence[Mount], target: str) -> list[str]:
    return [f"mount -t {m.type} {m.source} {target} -o {','.join(m.options)}" for m in mounts]


async def run_ls(args: argparse.Namespace, client: Client) -> int:
    sn = await _sn(args, client)
    infos = await sn.walk(args.filters)
    emit(args.output, ["KEY", "PARENT", "KIND"], [[i.name, i.parent or "", str(i.kind)] for i in infos],
         [{"key": i.name, "parent": i.parent, "kind": str(i.kind), "labels": dict(i.labels),
           "created_at": timestamps.format_ns(i.created_at) if i.created_at else None,
           "updated_at": timestamps.format_ns(i.updated_at) if i.updated_at else None} for i in infos])
    return 0


def tree_lines(infos: Sequence[Info]) -> list[str]:
    children: dict[str, list[str]] = {}
    names = {i.name for i in infos}
    for i in sorted(infos, key=lambda i: i.name):
        parent = i.parent if i.parent in names else ""
        children.setdefault(parent, []).append(i.name)
    lines: list[str] = []

    def walk(name: str, prefix: str) -> None:
        lines.append(f"{prefix}\\_ {name}")
        for child in children.get(name, []):
            walk(child, prefix + "  ")

    for root in children.get("", []):
        walk(root, " ")
    return lines


async def run_tree(args: argparse.Namespace, client: Client) -> int:
    sn = await _sn(args, client)
    for line in tree_lines(await sn.walk()):
        print(line)
    return 0


async def run_info(args: argparse.Namespace, client: Client) -> int:
    sn = await _sn(args, client)
    print(json.dumps(info_json(await sn.stat(args.key)), indent=4))
    return 0


async def run_usage(args: argparse.Namespace, client: Client) -> int:
    sn = await _sn(args, client)
    keys = args.keys or [i.name for i in await sn.walk()]
    rows = []
    for key in keys:
        u = await sn.usage(key)
        rows.append([key, str(u.size) if args.bytes else human_size(u.size), u.inodes])
    table(["KEY", "SIZE", "INODES"], rows)
    return 0


async def run_mounts(args: argparse.Namespace, client: Client) -> int:
    sn = await _sn(args, client)
    for line in mount_commands(await sn.mounts(args.key), args.target):
        print(line)
    return 0


def _rooted(labels: dict[str, str]) -> dict[str, str]:
    """A snapshot made by hand is a GC root (as ctr's prepare makes it): else the next collection
    takes it, since nothing else refers to it.  ``ctr``'s view forgets this; ours does not."""
    labels.setdefault("containerd.io/gc.root", timestamps.format_seconds())
    return labels


async def run_prepare(args: argparse.Namespace, client: Client) -> int:
    sn = await _sn(args, client)
    mounts = await sn.prepare(args.key, args.parent, _rooted(parse_labels(args.label)))
    if args.target:
        for line in mount_commands(mounts, args.target):
            print(line)
    return 0


async def run_view(args: argparse.Namespace, client: Client) -> int:
    sn = await _sn(args, client)
    mounts = await sn.view(args.key, args.parent, _rooted(parse_labels(args.label)))
    if args.target:
        for line in mount_commands(mounts, args.target):
            print(line)
    return 0


async def run_commit(args: argparse.Namespace, client: Client) -> int:
    sn = await _sn(args, client)
    await sn.commit(args.name, args.key, parse_labels(args.label))
    return 0


@contextlib.asynccontextmanager
async def _mounts_of(sn: SnapshotterProxy, key: str) -> AsyncIterator[list[Mount]]:
    """Mounts for a snapshot: its own if active, else those of a temporary view on it."""
    if not key:
        yield []
        return
    info = await sn.stat(key)
    if info.kind == Kind.ACTIVE:
        yield await sn.mounts(key)
        return
    view = f"{key}-view-{secrets.token_hex(6)}"
    mounts = await sn.view(view, key)
    try:
        yield mounts
    finally:
        with contextlib.suppress(errdefs.ContainerdError):
            await sn.remove(view)


async def run_diff(args: argparse.Namespace, client: Client) -> int:
    labels = parse_labels(args.label)
    if args.keep:
        labels["containerd.io/gc.root"] = timestamps.format_seconds()
    async with temporary_lease(client) as leased:
        sn = await _sn(args, leased)
        if args.key_b:
            lower_key, upper_key = args.key, args.key_b
        else:
            lower_key, upper_key = (await sn.stat(args.key)).parent, args.key
        async with _mounts_of(sn, lower_key) as lower, _mounts_of(sn, upper_key) as upper:
            layer = await leased.diff.compare(lower, upper, media_type=args.media_type, ref=args.ref, labels=labels)
        out = sys.stdout.buffer
        async for chunk in leased.content.read(layer.digest):
            out.write(chunk)
        out.flush()
    return 0


async def run_rm(args: argparse.Namespace, client: Client) -> int:
    sn = await _sn(args, client)
    rc = 0
    for key in args.keys:
        try:
            await sn.remove(key)
        except errdefs.ContainerdError as exc:
            print(f"pyctr: failed to remove snapshot {key}: {exc}", file=sys.stderr)
            rc = 1
    return rc


async def run_label(args: argparse.Namespace, client: Client) -> int:
    sn = await _sn(args, client)
    info = await sn.set_labels(args.key, parse_labels(args.labels))
    print(labels_str(info.labels))
    return 0
