"""pyctr images pull/ls/tag/rm/label/check/import/export/push."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import errno
import os
import sys
import time
from typing import IO, Any

from ... import errdefs
from ...client import Client
from ...client.images import Image
from ...client.pull import pull, unpack_image
from ...client.push import push
from ...images import archive, blobs, handlers, reference
from ...images import mediatypes as mt
from ...images import platforms as plat
from ...images.models import Descriptor, Platform
from ..common import Progress, add_output_flag, emit, human_size, labels_str, parse_labels, table
from ._registry import add_registry_flags, make_resolver


def register(sub: Any) -> None:
    p = sub.add_parser("images", aliases=["image", "i"], help="manage images")
    s = p.add_subparsers(dest="sub", required=True)

    pl = s.add_parser("pull", help="pull an image from a registry (fetch + unpack, done by this client)")
    pl.add_argument("ref", help="image reference (busybox, docker.io/library/busybox:latest, host:port/repo:tag)")
    pl.add_argument("--platform", action="append", default=[], help="pull content for this platform (repeatable)")
    pl.add_argument("--all-platforms", action="store_true", help="pull content for every platform")
    pl.add_argument("--skip-unpack", action="store_true", help="only fetch, do not unpack into a snapshotter")
    pl.add_argument("--snapshotter", default="", help="snapshotter to unpack into (default: namespace default)")
    pl.add_argument("--label", action="append", default=[], metavar="KEY=VALUE", help="label for the image")
    pl.add_argument("--max-concurrent-downloads", type=int, default=0, help="limit parallel layer downloads")
    pl.add_argument("--print-chainid", action="store_true", help="print the image's chain id after unpacking")
    add_registry_flags(pl)
    pl.set_defaults(func=run_pull)

    ls = s.add_parser("ls", aliases=["list"], help="list images")
    ls.add_argument("filters", nargs="*")
    ls.add_argument("-q", "--quiet", action="store_true")
    add_output_flag(ls)
    ls.set_defaults(func=run_ls)

    tg = s.add_parser("tag", help="tag an image")
    tg.add_argument("source")
    tg.add_argument("targets", nargs="+")
    tg.add_argument("--force", action="store_true", help="replace an existing target")
    tg.set_defaults(func=run_tag)

    rm = s.add_parser("rm", aliases=["remove", "delete", "del"], help="remove images")
    rm.add_argument("names", nargs="+")
    rm.add_argument("--sync", action="store_true", help="wait for garbage collection")
    rm.set_defaults(func=run_rm)

    lb = s.add_parser("label", help="set and clear labels for an image")
    lb.add_argument("name")
    lb.add_argument("labels", nargs="*", metavar="KEY=VALUE")
    lb.set_defaults(func=run_label)

    ck = s.add_parser("check", help="check that images have all their content and are unpacked")
    ck.add_argument("filters", nargs="*")
    ck.add_argument("-q", "--quiet", action="store_true")
    ck.add_argument("--snapshotter", default="")
    ck.set_defaults(func=run_check)

    ex = s.add_parser("export", help="export images to a tar (OCI layout + Docker manifest.json)")
    ex.add_argument("out", help="output file, - for stdout")
    ex.add_argument("names", nargs="+")
    ex.add_argument("--platform", action="append", default=[])
    ex.add_argument("--all-platforms", action="store_true")
    ex.add_argument("--skip-manifest-json", action="store_true")
    ex.add_argument("--skip-non-distributable", action="store_true")
    ex.set_defaults(func=run_export)

    im = s.add_parser("import", help="import images from a tar (OCI layout or docker save)")
    im.add_argument("input", help="input file, - for stdin")
    im.add_argument("--base-name", default="", help="name prefix for images whose archive entry has only a tag")
    im.add_argument("--digests", action="store_true", help="also create <base-name>@<digest> images")
    im.add_argument("--index-name", default="", help="create an image for the archive's index under this name")
    im.add_argument("--platform", action="append", default=[])
    im.add_argument("--all-platforms", action="store_true")
    im.add_argument("--no-unpack", action="store_true")
    im.add_argument("--compress-blobs", action="store_true", help="gzip uncompressed layers (Docker format)")
    im.add_argument("--snapshotter", default="")
    im.set_defaults(func=run_import)

    ps = s.add_parser("push", help="push an image to a registry")
    ps.add_argument("remote", help="destination reference")
    ps.add_argument("local", nargs="?", default="", help="local image name (default: the destination)")
    ps.add_argument("--platform", default="", help="push only this platform's manifest")
    ps.add_argument("--chunked", action="store_true", help="upload blobs in chunks (PATCH)")
    add_registry_flags(ps)
    ps.set_defaults(func=run_push)


# -- pull ------------------------------------------------------------------------------------
async def run_pull(args: argparse.Namespace, client: Client) -> int:
    ref = reference.normalize(args.ref)
    resolver = await make_resolver(args, ref)
    progress = Progress()
    start = time.monotonic()

    def show(key: str, done: int, total: int, status: str) -> None:
        if status in ("resolving", "resolved"):
            progress.update(ref, 0, 0, status)
            return
        progress.update(key, done, total, status)

    try:
        res = await pull(client, ref, resolver=resolver, platforms=args.platform, all_platforms=args.all_platforms,
                         unpack=not args.skip_unpack, snapshotter=args.snapshotter or None, progress=show,
                         max_concurrent=args.max_concurrent_downloads or None, labels=parse_labels(args.label))
    finally:
        progress.finish()
        await resolver.aclose()
    elapsed = time.monotonic() - start
    print(f"{res.image.name}: {res.image.target.digest}")
    print(f"elapsed: {elapsed:.1f} s    fetched: {res.fetched} ({human_size(res.bytes)})    existing: {res.existing}")
    for p, cid in zip(res.platforms, res.chain_ids, strict=True):
        print(f"unpacked {p} {cid}" if args.print_chainid else f"unpacked {p}")
    return 0


# -- ls ----------------------------------------------------------------------------------------
async def _reader(client: Client) -> handlers.ReadBlob:
    async def read(d: Descriptor) -> bytes:
        return await blobs.read_blob(client.content, d)

    return read


async def _image_size_and_platforms(client: Client, img: Image) -> tuple[int | None, list[str]]:
    read = await _reader(client)
    try:
        plats = [str(p) for p in await handlers.platforms_of(read, img.target)]
    except errdefs.ContainerdError:
        plats = []
    try:
        resolved = await handlers.resolve_manifest(read, img.target, plat.default())
        size = resolved.manifest_desc.size + resolved.manifest.config.size + sum(x.size for x in
                                                                              resolved.manifest.layers)
        if mt.is_index(img.target.media_type):
            size += img.target.size
    except errdefs.ContainerdError:
        size = None
    return size, plats


async def run_ls(args: argparse.Namespace, client: Client) -> int:
    imgs = sorted(await client.images.list(args.filters), key=lambda i: i.name)
    if args.quiet:
        for i in imgs:
            print(i.name)
        return 0
    rows, records = [], []
    for i in imgs:
        size, plats = await _image_size_and_platforms(client, i)
        rows.append([i.name, i.target.media_type, i.target.digest, human_size(size) if size is not None else "-",
                     ",".join(plats) or "-", labels_str(i.labels)])
        records.append({"name": i.name, "media_type": i.target.media_type, "digest": i.target.digest,
                        "size": size, "platforms": plats, "labels": dict(i.labels)})
    emit(args.output, ["REF", "TYPE", "DIGEST", "SIZE", "PLATFORMS", "LABELS"], rows, records)
    return 0


# -- tag / rm / label ---------------------------------------------------------------------------
async def run_tag(args: argparse.Namespace, client: Client) -> int:
    src = await client.images.get(args.source)
    for target in args.targets:
        img = Image(target, src.target, dict(src.labels))
        try:
            await client.images.create(img)
        except errdefs.AlreadyExists:
            if not args.force:
                raise errdefs.AlreadyExists(f"image {target!r}: already exists (use --force to replace)") from None
            await client.images.delete(target)
            await client.images.create(img)
        print(target)
    return 0


async def run_rm(args: argparse.Namespace, client: Client) -> int:
    rc = 0
    for name in args.names:
        try:
            await client.images.delete(name, sync=args.sync)
            print(name)
        except errdefs.NotFound:
            print(f"pyctr: image {name!r}: not found", file=sys.stderr)
            rc = 1
    return rc


async def run_label(args: argparse.Namespace, client: Client) -> int:
    img = await client.images.set_labels(args.name, parse_labels(args.labels))
    print(f"{img.name}: {labels_str(img.labels)}")
    return 0


# -- check ----------------------------------------------------------------------------------------
async def run_check(args: argparse.Namespace, client: Client) -> int:
    from ...client.pull import snapshotter_name
    from ...client.snapshots import SnapshotterProxy

    imgs = sorted(await client.images.list(args.filters), key=lambda i: i.name)
    sn = SnapshotterProxy(client, await snapshotter_name(client, args.snapshotter or None))
    read = await _reader(client)
    rows = []
    for img in imgs:
        present = total = 0
        have = need = 0
        status = "complete"
        unpacked = False
        try:
            resolved = await handlers.resolve_manifest(read, img.target, plat.default())
            descs = [resolved.manifest_desc, resolved.manifest.config, *resolved.manifest.layers]
            for d in descs:
                total += 1
                need += d.size
                try:
                    await client.content.info(d.digest)
                    present += 1
                    have += d.size
                except errdefs.NotFound:
                    pass
            if present != total:
                status = "incomplete"
            try:
                await sn.stat(resolved.chain_id)
                unpacked = True
            except errdefs.ContainerdError:
                unpacked = False
        except errdefs.NotFound:
            status = "missing"
        except errdefs.ContainerdError as exc:
            status = f"error: {exc}"
        if args.quiet:
            if status == "complete":
                print(img.name)
            continue
        rows.append([img.name, img.target.media_type, img.target.digest, f"{status} ({present}/{total})",
                     f"{human_size(have)}/{human_size(need)}", str(unpacked).lower()])
    if not args.quiet:
        table(["REF", "TYPE", "DIGEST", "STATUS", "SIZE", "UNPACKED"], rows)
    return 0


# -- export / import -----------------------------------------------------------------------------
async def run_export(args: argparse.Namespace, client: Client) -> int:
    if args.out != "-":
        parent = os.path.dirname(args.out) or "."
        if not await asyncio.to_thread(os.path.isdir, parent):
            raise FileNotFoundError(errno.ENOENT, "no such directory to write the archive in", parent)
    images = []
    for name in args.names:
        img = await client.images.get(name)
        images.append(archive.ExportImage(img.name, img.target))
    matcher = None if args.all_platforms else plat.matcher_for(args.platform)
    out: IO[bytes]
    if args.out == "-":
        out = sys.stdout.buffer
        await archive.export_archive(client.content, out, images, matcher=matcher,
                                     skip_manifest_json=args.skip_manifest_json,
                                     skip_nondistributable=args.skip_non_distributable)
        return 0
    tmp = f"{args.out}.tmp-{os.getpid()}"
    try:
        with open(tmp, "wb") as f:  # noqa: ASYNC230 - writes go through to_thread inside export_archive
            await archive.export_archive(client.content, f, images, matcher=matcher,
                                         skip_manifest_json=args.skip_manifest_json,
                                         skip_nondistributable=args.skip_non_distributable)
        await asyncio.to_thread(os.replace, tmp, args.out)
    finally:
        with contextlib.suppress(FileNotFoundError):
            await asyncio.to_thread(os.unlink, tmp)
    return 0


async def run_import(args: argparse.Namespace, client: Client) -> int:
    from ...client.imports import import_images

    if args.digests and not args.base_name:
        raise errdefs.InvalidArgument("--digests requires --base-name")
    matcher = plat.matcher_for(args.platform, args.all_platforms)
    async with client.leases.lease() as lc:
        if args.input == "-":
            imgs = await import_images(lc, sys.stdin.buffer, base_name=args.base_name, digests=args.digests,
                                       index_name=args.index_name, matcher=matcher,
                                       compress_blobs=args.compress_blobs)
        else:
            with open(args.input, "rb") as f:  # noqa: ASYNC230 - reads go through to_thread inside import
                imgs = await import_images(lc, f, base_name=args.base_name, digests=args.digests,
                                           index_name=args.index_name, matcher=matcher,
                                           compress_blobs=args.compress_blobs)
        for img in imgs:
            if args.no_unpack or (args.index_name and img.name == args.index_name):
                print(img.name)
                continue
            print(f"unpacking {img.name} ({img.target.digest})...", end="", flush=True)
            targets: list[Platform | None] = [plat.parse(p) for p in args.platform] or [None]
            try:
                for p in targets:
                    await unpack_image(lc, img, platform=p, snapshotter=args.snapshotter or None)
            except errdefs.NotFound as exc:
                print(f"skipped: {exc}")
                continue
            print("done")
    return 0


# -- push ----------------------------------------------------------------------------------------
async def run_push(args: argparse.Namespace, client: Client) -> int:
    remote = reference.normalize(args.remote)
    local = args.local or args.remote
    try:
        await client.images.get(local)
    except errdefs.NotFound:
        normalized = reference.normalize(local)
        await client.images.get(normalized)
        local = normalized
    resolver = await make_resolver(args, remote)
    progress = Progress()
    try:
        desc = await push(client, remote, local=local, resolver=resolver, platform=args.platform or None,
                          progress=progress.update, chunked=args.chunked)
    finally:
        progress.finish()
        await resolver.aclose()
    print(f"pushed {remote}: {desc.digest}")
    return 0
