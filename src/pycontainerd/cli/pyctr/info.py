"""pyctr info: what an operator asks first — versions, plugins, config, roots, disk use, shims.

Versions and plugins come over gRPC; the config file, directories and shim count from the
debug socket (``/debug/vars``); disk use is measured here, walking the content store and
each snapshotter's directory (pyctr runs on the daemon's host, as root).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from typing import Any

from ... import __version__, errdefs
from ...client import Client
from ...client.ops import DebugClient
from ..common import human_size, table
from .pprof import add_debug_socket_flag, debug_socket


def register(sub: Any) -> None:
    p = sub.add_parser("info", help="versions, plugins, config, roots, disk usage and shims of the daemon")
    add_debug_socket_flag(p)
    p.set_defaults(func=run)


def disk_usage(path: str) -> tuple[int, int]:
    """(bytes allocated, files) below ``path``; hard links counted once; no symlinks followed."""
    seen: set[tuple[int, int]] = set()
    total = files = 0
    stack = [path]
    while stack:
        d = stack.pop()
        try:
            it = os.scandir(d)
        except OSError:
            continue
        with it:
            for e in it:
                try:
                    st = e.stat(follow_symlinks=False)
                except OSError:
                    continue
                key = (st.st_dev, st.st_ino)
                if key in seen:
                    continue
                seen.add(key)
                total += st.st_blocks * 512
                if e.is_dir(follow_symlinks=False):
                    stack.append(e.path)
                else:
                    files += 1
    return total, files


async def run(args: argparse.Namespace, client: Client) -> int:
    v = await client.version()
    print(f"Client:   pyctr {__version__}")
    print(f"Server:   {v.version} (revision {v.revision}), uuid {await client.server_uuid()}")
    info: dict[str, Any] = {}
    try:
        info = await DebugClient(debug_socket(args)).vars()
    except errdefs.ContainerdError as exc:
        print(f"(debug socket unavailable: {exc})", file=sys.stderr)
    if info:
        print(f"Python:   {info.get('python', '?')}, pid {info.get('pid', '?')}, "
              f"up {float(info.get('uptime_seconds', 0)):.0f}s")
        print(f"Config:   {info.get('config_file') or 'none (defaults)'}")
        print(f"Root:     {info.get('root', '')}")
        print(f"State:    {info.get('state', '')}")
        print(f"Socket:   {info.get('address', '')}")
        print(f"Metrics:  {info.get('metrics_address') or 'off'}")
        print(f"Shims:    {info.get('shims', 0)} running for {info.get('tasks', 0)} tasks")
        print(f"Memory:   {human_size(float(info.get('rss_bytes', 0)))} resident, "
              f"{info.get('open_fds', 0)} open fds, {info.get('event_subscribers', 0)} event subscribers, "
              f"metadata {human_size(float(info.get('db_size_bytes', 0)))}")
    plugins = await client.introspection.plugins([])
    root = str(info.get("root", ""))
    if root:
        print("\nDisk usage:")
        dirs = [("content", os.path.join(root, "io.containerd.content.v1.content"))]
        dirs += [(f"snapshots ({pl.id})", os.path.join(root, f"{pl.type}.{pl.id}"))
                 for pl in plugins if pl.type == "io.containerd.snapshotter.v1" and pl.status == "ok"]
        rows = []
        for name, path in dirs:
            size, files = await asyncio.to_thread(disk_usage, path)
            rows.append([name, human_size(size), files, path])
        table(["WHAT", "SIZE", "FILES", "PATH"], rows)
    print("\nPlugins:")
    table(["TYPE", "ID", "STATUS", "ERROR"],
          [[pl.type, pl.id, pl.status, (pl.error or "").splitlines()[0][:80] if pl.error else ""] for pl in plugins])
    return 0
