"""pycrictl images / pull / rmi / inspecti / imagefsinfo: the CRI ImageService."""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import os
import sys
import time
from collections.abc import AsyncIterator
from typing import Any

from ... import errdefs
from ...client.cri import CriClient, api_pb2, message_to_dict, parse_info
from ..common import human_size, table
from ._format import print_json, trunc

SPINNER = "⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏"


def register(sub: Any) -> None:
    p = sub.add_parser("images", aliases=["image", "img"], help="list images")
    p.add_argument("image", nargs="?", default="", help="only this image (name, tag or id)")
    p.add_argument("-q", "--quiet", action="store_true", help="only image ids")
    p.add_argument("--digests", action="store_true", help="show digests")
    p.add_argument("--no-trunc", action="store_true", help="do not truncate ids")
    p.add_argument("-v", "--verbose", action="store_true", help="one block per image with every field")
    p.add_argument("-o", "--output", choices=["table", "json"], default="table")
    p.set_defaults(func=images)

    p = sub.add_parser("pull", help="pull an image (inside the runtime)")
    p.add_argument("image")
    p.add_argument("--creds", default="", help="registry credentials USERNAME[:PASSWORD]")
    p.add_argument("--auth", default="", help="base64 of USERNAME:PASSWORD")
    p.add_argument("-u", "--username", default="", help="registry user name (password from --creds or prompt)")
    p.add_argument("--pod-config", default="", help="pod config (JSON/YAML) to pull for")
    p.set_defaults(func=pull)

    p = sub.add_parser("rmi", help="remove images")
    p.add_argument("images", nargs="*", help="image ids, names or digests")
    p.add_argument("-a", "--all", action="store_true", help="remove every image")
    p.add_argument("-q", "--prune", action="store_true",
                   help="remove the images no container uses (pinned ones, like the sandbox image, stay)")
    p.set_defaults(func=rmi)

    p = sub.add_parser("inspecti", help="show an image's status and info (JSON)")
    p.add_argument("images", nargs="+")
    p.add_argument("-q", "--quiet", action="store_true", help="only the status, not the verbose info")
    p.set_defaults(func=inspecti)

    p = sub.add_parser("imagefsinfo", help="show the image filesystem's usage (JSON)")
    p.set_defaults(func=imagefsinfo)


def _split_repo_tag(ref: str) -> tuple[str, str]:
    last = ref.rsplit("/", 1)[-1]
    if ":" in last:
        repo, _, tag = ref.rpartition(":")
        return repo, tag
    return ref, "<none>"


def _digest_of(img: api_pb2.Image) -> str:
    for rd in img.repo_digests:
        if "@" in rd:
            return rd.split("@", 1)[1]
    return ""


def image_rows(imgs: list[api_pb2.Image], *, digests: bool, no_trunc: bool) -> list[list[str]]:
    rows: list[list[str]] = []
    for img in sorted(imgs, key=lambda i: (list(i.repo_tags) or list(i.repo_digests) or [i.id])[0]):
        size = human_size(img.size)
        dig = _digest_of(img)
        pairs = [_split_repo_tag(t) for t in img.repo_tags]
        if not pairs:
            pairs = [(rd.split("@", 1)[0], "<none>") for rd in img.repo_digests] or [("<none>", "<none>")]
        for repo, tag in pairs:
            row = [repo, tag]
            if digests:
                row.append(trunc(dig, no_trunc) if dig else "<none>")
            row += [trunc(img.id, no_trunc), size]
            rows.append(row)
    return rows


async def images(args: argparse.Namespace, client: CriClient) -> int:
    imgs = await client.list_images(args.image)
    if args.image and not imgs:
        st = await client.image_status(args.image)
        imgs = [st.image] if st.HasField("image") else []
    if args.output == "json":
        print_json({"images": [message_to_dict(i) for i in imgs]})
        return 0
    if args.quiet:
        for img in imgs:
            print(img.id)
        return 0
    if args.verbose:
        for img in imgs:
            print(f"ID: {img.id}")
            for t in img.repo_tags:
                print(f"RepoTags: {t}")
            for d in img.repo_digests:
                print(f"RepoDigests: {d}")
            print(f"Size: {img.size}")
            if img.username:
                print(f"Username: {img.username}")
            print()
        return 0
    headers = ["IMAGE", "TAG", *(["DIGEST"] if args.digests else []), "IMAGE ID", "SIZE"]
    table(headers, image_rows(imgs, digests=args.digests, no_trunc=args.no_trunc))
    return 0


def pull_auth(args: argparse.Namespace) -> api_pb2.AuthConfig | None:
    if args.auth:
        try:
            user, sep, pw = base64.b64decode(args.auth).decode().partition(":")
        except (ValueError, UnicodeDecodeError):
            raise errdefs.InvalidArgument("--auth must be base64 of USERNAME:PASSWORD") from None
        if not sep:
            raise errdefs.InvalidArgument("--auth must be base64 of USERNAME:PASSWORD")
        return api_pb2.AuthConfig(username=user, password=pw)
    if args.creds:
        user, sep, pw = args.creds.partition(":")
        if not user:
            raise errdefs.InvalidArgument("--creds must be USERNAME[:PASSWORD]")
        if not sep:
            import getpass
            pw = getpass.getpass(f"Password for {user}: ")
        return api_pb2.AuthConfig(username=user, password=pw)
    if args.username:
        import getpass
        return api_pb2.AuthConfig(username=args.username, password=getpass.getpass(f"Password for {args.username}: "))
    return None


@contextlib.asynccontextmanager
async def spinner(text: str) -> AsyncIterator[None]:
    """A spinner with elapsed seconds on a terminal (stderr); nothing otherwise."""
    out = sys.stderr
    if not out.isatty() or os.environ.get("TERM") == "dumb":
        yield
        return
    started = time.monotonic()

    async def spin() -> None:
        i = 0
        while True:
            out.write(f"\r\x1b[2K{SPINNER[i % len(SPINNER)]} {text} {time.monotonic() - started:.1f}s")
            out.flush()
            i += 1
            await asyncio.sleep(0.1)

    task = asyncio.create_task(spin())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        out.write("\r\x1b[2K")
        out.flush()


async def pull(args: argparse.Namespace, client: CriClient) -> int:
    auth = pull_auth(args)
    sandbox = None
    if args.pod_config:
        from ...client.cri import load_config_file, pod_config_from_dict
        sandbox = pod_config_from_dict(await asyncio.to_thread(load_config_file, args.pod_config))
    started = time.monotonic()
    async with spinner(f"Pulling {args.image} ..."):
        ref = await client.pull_image(args.image, auth, sandbox)
    print(f"Image is up to date for {ref}")
    print(f"pulled {args.image} in {time.monotonic() - started:.1f}s", file=sys.stderr)
    return 0


async def rmi(args: argparse.Namespace, client: CriClient) -> int:
    """crictl's rules: -a every image, --prune every image no container uses (pinned images, such
    as the runtime's sandbox image, are kept); named images are removed by id, tag or digest."""
    targets: list[str] = list(args.images)
    if args.all or args.prune:
        keep: set[str] = set()
        if args.prune:
            refs = [r for c in await client.list_containers() for r in (c.image_ref, c.image.image)]
            # the runtime's sandbox image (containerd 1.6 does not mark it pinned): pods need it
            with contextlib.suppress(errdefs.ContainerdError, ValueError, AttributeError):
                cfg = json.loads((await client.status(verbose=True)).info.get("config", "{}"))
                refs.append(str(cfg.get("sandboxImage") or ""))
            for ref in dict.fromkeys(refs):
                    if not ref:
                        continue
                    with contextlib.suppress(errdefs.NotFound):
                        st = await client.image_status(ref)
                        if st.HasField("image"):
                            keep.add(st.image.id)
        for img in await client.list_images():
            if args.prune and (img.pinned or img.id in keep):
                continue
            targets.append(img.id)
        if not targets:
            print("No images to remove", file=sys.stderr)
            return 0
    if not targets:
        raise errdefs.InvalidArgument("rmi: name an image, or use --all / --prune")
    failed = 0
    for name in dict.fromkeys(targets):
        st = await client.image_status(name)
        if not st.HasField("image"):
            print(f"pycrictl: no such image {name}", file=sys.stderr)
            failed += 1
            continue
        try:
            await client.remove_image(st.image.id)
        except errdefs.ContainerdError as exc:
            if name in args.images or not args.prune:  # prune races with pulls and new containers: skip
                print(f"pycrictl: removing image {name}: {exc}", file=sys.stderr)
                failed += 1
            continue
        for tag in st.image.repo_tags or st.image.repo_digests or [st.image.id]:
            print(f"Deleted: {tag}")
    return 1 if failed else 0


async def inspecti(args: argparse.Namespace, client: CriClient) -> int:
    failed = 0
    for name in args.images:
        st = await client.image_status(name, verbose=not args.quiet)
        if not st.HasField("image"):
            print(f"pycrictl: no such image {name} present", file=sys.stderr)
            failed += 1
            continue
        out: dict[str, Any] = {"status": message_to_dict(st.image)}
        out.update(parse_info(st.info))  # like crictl: each info key at the top level
        print_json(out)
    return 1 if failed else 0


async def imagefsinfo(args: argparse.Namespace, client: CriClient) -> int:
    resp = await client.image_fs_info()
    print_json({"status": message_to_dict(resp)})
    return 0
