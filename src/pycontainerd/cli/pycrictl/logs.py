"""pycrictl logs [-f] [--tail N] [--timestamps]: a container's log, from the CRI log file on this host.

The runtime writes `<rfc3339nano> <stream> <P|F> <msg>` records to ContainerStatus.log_path;
we print the messages (stdout to stdout, stderr to stderr) with partial records joined."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
from collections import deque
from typing import Any, BinaryIO

from ... import errdefs
from ...client.cri import CONTAINER_STATES, CriClient, LogLine, LogParser

POLL = 0.2  # seconds between looks at the log file when following
CHUNK = 1 << 20


def register(sub: Any) -> None:
    p = sub.add_parser("logs", help="print a container's log")
    p.add_argument("container", metavar="CONTAINER_ID")
    p.add_argument("-f", "--follow", action="store_true", help="keep printing until the container exits")
    p.add_argument("--tail", type=int, default=-1, help="only the last N lines (default: all)")
    p.add_argument("-t", "--timestamps", action="store_true", help="prefix each line with its timestamp")
    p.add_argument("--stream", choices=["stdout", "stderr"], default="", help="only this stream")
    p.set_defaults(func=logs)


class _Printer:
    def __init__(self, timestamps: bool, stream: str) -> None:
        self.timestamps, self.stream = timestamps, stream

    def write(self, lines: list[LogLine]) -> None:
        touched: set[BinaryIO] = set()
        for ln in lines:
            if self.stream and ln.stream != self.stream:
                continue
            out = sys.stderr.buffer if ln.stream == "stderr" else sys.stdout.buffer
            prefix = (ln.timestamp + " ").encode() if self.timestamps and ln.timestamp else b""
            out.write(prefix + ln.content + b"\n")
            touched.add(out)
        for out in touched:
            out.flush()


def _read_from(path: str, offset: int) -> tuple[bytes, int, int]:
    """Bytes of `path` from `offset` (at most CHUNK), the new offset and the file's inode."""
    with open(path, "rb") as fh:
        st = os.fstat(fh.fileno())
        if st.st_size < offset:  # truncated or replaced: start over
            offset = 0
        fh.seek(offset)
        data = fh.read(CHUNK)
        return data, offset + len(data), st.st_ino


def _read_all(path: str) -> bytes:
    with open(path, "rb") as fh:
        return fh.read()


async def logs(args: argparse.Namespace, client: CriClient) -> int:
    st = (await client.container_status(args.container)).status
    path = st.log_path
    if not path:
        raise errdefs.NotFound(f"container {args.container} has no log file (its pod has no log_directory)")
    printer = _Printer(args.timestamps, args.stream)
    parser = LogParser()
    try:
        data = await asyncio.to_thread(_read_all, path)
    except FileNotFoundError:
        data = b""
    except OSError as exc:
        raise errdefs.from_oserror(exc, f"read the log of container {args.container}") from exc
    offset = len(data)
    lines = parser.feed(data)
    if not args.follow:
        lines += parser.flush()
    if args.stream:
        lines = [ln for ln in lines if ln.stream == args.stream]
    if args.tail >= 0:
        lines = list(deque(lines, maxlen=args.tail)) if args.tail else []
    printer.write(lines)
    if not args.follow:
        return 0
    inode: int | None = None
    with contextlib.suppress(FileNotFoundError):
        inode = await asyncio.to_thread(lambda: os.stat(path).st_ino)
    while True:
        try:
            chunk, new_offset, ino = await asyncio.to_thread(_read_from, path, offset)
        except FileNotFoundError:
            chunk, new_offset, ino = b"", offset, inode or 0
        if inode is None:
            inode = ino
        elif ino and ino != inode:  # rotated: read the new file from its start
            inode, offset = ino, 0
            continue
        offset = new_offset
        if chunk:
            printer.write(parser.feed(chunk))
            if len(chunk) == CHUNK:
                continue
        state = (await client.container_status(args.container)).status.state
        if state != CONTAINER_STATES["CONTAINER_RUNNING"] and state != CONTAINER_STATES["CONTAINER_CREATED"]:
            # drain what the runtime wrote before it stopped, then finish
            with contextlib.suppress(FileNotFoundError):
                while True:
                    chunk, offset, _ = await asyncio.to_thread(_read_from, path, offset)
                    if not chunk:
                        break
                    printer.write(parser.feed(chunk))
            printer.write(parser.flush())
            return 0
        await asyncio.sleep(POLL)
