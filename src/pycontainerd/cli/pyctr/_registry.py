"""Registry flags shared by ``images pull/push`` and ``content fetch`` (like ctr's resolver flags)."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import os
from typing import Any

from ...remotes.resolver import Resolver


def add_registry_flags(p: Any) -> None:
    p.add_argument("-u", "--user", default=os.environ.get("PYCTR_USER", ""),
                   help="user[:password] for the registry (prompted when the password is missing)")
    p.add_argument("--plain-http", action="store_true", help="use plain HTTP (no TLS) for the registry")
    p.add_argument("-k", "--skip-verify", action="store_true", help="skip TLS certificate verification")
    p.add_argument("--hosts-dir", default=os.environ.get("PYCTR_HOSTS_DIR", ""),
                   help="directory with <host>/hosts.toml registry configuration (mirrors, TLS, headers)")
    p.add_argument("--header", action="append", default=[], metavar="NAME:VALUE",
                   help="extra HTTP header to send to the registry")


async def make_resolver(args: argparse.Namespace) -> Resolver:
    user, password = "", ""
    if args.user:
        user, sep, password = args.user.partition(":")
        if not sep:
            password = await asyncio.to_thread(getpass.getpass, f"Password for {user}: ")
    creds = (user, password) if (user or password) else None
    headers = {}
    for h in args.header:
        k, _, v = h.partition(":")
        headers[k.strip()] = v.strip()

    def credentials(host: str) -> tuple[str, str] | None:
        return creds

    return Resolver(hosts_dir=args.hosts_dir or None, plain_http=args.plain_http,
                    skip_verify=True if args.skip_verify else None, credentials=credentials, headers=headers)
