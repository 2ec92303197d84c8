"""Registry flags shared by ``images pull/push`` and ``content fetch`` (like ctr's resolver flags)."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import os
import socket
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


LOCAL_HOSTS = ("localhost", "127.0.0.1", "[::1]")


def speaks_plain_http(host: str, timeout: float = 2.0) -> bool:
    """True when a local registry does not speak TLS (ctr falls back to plain HTTP for localhost).

    A TLS handshake is tried: a plain-HTTP server answers it with an HTTP error (or hangs up), which
    fails the handshake; a server that completes it speaks TLS.  An unreachable host is left to the
    pull to report.
    """
    import ssl

    name, _, port = host.rpartition(":") if not host.endswith("]") else (host, "", "")
    if not name or not port.isdigit():
        name, port = host, "443"
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    try:
        with socket.create_connection((name.strip("[]"), int(port)), timeout=timeout) as sock, \
                ctx.wrap_socket(sock, server_hostname=name.strip("[]")):
            return False
    except ssl.SSLError:
        return True
    except OSError:
        return False


async def make_resolver(args: argparse.Namespace, ref: str = "") -> Resolver:
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

    plain_http = args.plain_http
    host = ref.split("/", 1)[0] if "/" in ref else ""
    if (not plain_http and not args.hosts_dir and host.rsplit(":", 1)[0] in LOCAL_HOSTS
            and await asyncio.to_thread(speaks_plain_http, host)):
        plain_http = True
    return Resolver(hosts_dir=args.hosts_dir or None, plain_http=plain_http,
                    skip_verify=True if args.skip_verify else None, credentials=credentials, headers=headers)
