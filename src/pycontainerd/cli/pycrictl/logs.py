"""pycrictl logs [-f] [--tail N] [--since T] [-t] [--limit-bytes N] [-p] [-r]: a container's log,
from the CRI log file on this host (crictl's flags, the kubelet's rules).

The runtime writes `<rfc3339nano> <stream> <P|F> <msg>` records to ContainerStatus.log_path;
we print the messages (stdout to stdout, stderr to stderr) with partial records joined.
``--tail`` picks the last lines first, then ``--since`` drops the older ones (as the kubelet
does); ``-f`` keeps printing, across a rotation, until the container is no longer running."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import os
import re
import sys
import time
from collections import deque
from typing import Any, BinaryIO

from ... import errdefs
from ...client.cri import CONTAINER_STATES, CriClient, LogLine, LogParser
from ..common import go_duration

POLL = 0.2  # seconds between looks at the log file when following
CHUNK = 1 << 20


def register(sub: Any) -> None:
    p = sub.add_parser("logs", help="print a container's log")
    p.add_argument("container", metavar="CONTAINER_ID")
    p.add_argument("-f", "--follow", action="store_true", help="keep printing until the container exits")
    p.add_argument("--tail", type=int, default=-1, help="only the last N lines (default: all)")
    p.add_argument("--since", default="", type=since_ns,
                   help="only lines since a time (2013-01-02T13:23:37, RFC 3339, a Unix time) "
                        "or for a duration (42m, 1h30m)")
    p.add_argument("--limit-bytes", type=int, default=-1, help="stop after this many bytes (default: no limit)")
    p.add_argument("-t", "--timestamps", action="store_true", help="prefix each line with its timestamp")
    p.add_argument("-s", "--stream", choices=["stdout", "stderr"], default="", help="only this stream")
    p.add_argument("-p", "--previous", action="store_true",
                   help="the log of the container's previous attempt (the kubelet's <attempt - 1>.log)")
    p.add_argument("-r", "--reopen", action="store_true", help="ask the runtime to reopen the log file first")
    p.set_defaults(func=logs)


_RFC3339 = re.compile(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d{1,9}))?(Z|[+-]\d\d:\d\d)?")


def timestamp_ns(text: str, *, local: bool = False) -> int | None:
    """Nanoseconds since the epoch of an RFC 3339 time (fraction up to ns); a time without a zone is
    UTC, or local time with ``local``; None if ``text`` is not one."""
    m = _RFC3339.fullmatch(text.strip())
    if not m:
        return None
    base = datetime.datetime.fromisoformat(m.group(1))
    zone = m.group(3)
    if zone:
        base = base.replace(tzinfo=datetime.UTC if zone == "Z" else datetime.datetime.strptime(zone, "%z").tzinfo)
    elif not local:
        base = base.replace(tzinfo=datetime.UTC)
    secs = int(base.timestamp())  # a naive datetime is local time here
    return secs * 1_000_000_000 + int((m.group(2) or "0").ljust(9, "0"))


def since_ns(text: str) -> int:
    """--since as docker and crictl read it: a duration back from now, a time, or a Unix time."""
    value = text.strip()
    if not value:
        return 0
    if re.fullmatch(r"\d+(\.\d{1,9})?", value):  # a Unix time, seconds[.fraction]
        secs, _, frac = value.partition(".")
        return int(secs) * 1_000_000_000 + int(frac.ljust(9, "0") or 0)
    if re.fullmatch(r"\d{4}-\d\d-\d\d", value):
        value += "T00:00:00"
    ns = timestamp_ns(value, local=True)
    if ns is not None:
        return ns
    try:
        return time.time_ns() - int(go_duration(value) * 1e9)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(
            f"invalid --since {text!r}: use a time (2013-01-02T13:23:37, 2013-01-02T13:23:37Z), "
            "a Unix time (1356999817) or a duration (42m, 1h30m)") from None


class _LimitReached(Exception):
    pass


class _Printer:
    def __init__(self, timestamps: bool, stream: str, since: int = 0, limit: int = -1) -> None:
        self.timestamps, self.stream, self.since, self.left = timestamps, stream, since, limit

    def write(self, lines: list[LogLine]) -> None:
        touched: set[BinaryIO] = set()
        try:
            for ln in lines:
                if self.stream and ln.stream != self.stream:
                    continue
                if self.since and ln.timestamp and (timestamp_ns(ln.timestamp) or 0) < self.since:
                    continue
                out = sys.stderr.buffer if ln.stream == "stderr" else sys.stdout.buffer
                prefix = (ln.timestamp + " ").encode() if self.timestamps and ln.timestamp else b""
                data = prefix + ln.content + b"\n"
                if self.left >= 0:
                    data, self.left = data[:self.left], self.left - len(data[:self.left])
                out.write(data)
                touched.add(out)
                if self.left == 0:
                    raise _LimitReached
        finally:
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


def previous_log_path(path: str, attempt: int, name: str) -> str:
    """The kubelet's log of the attempt before: ``<dir>/<attempt - 1>.log`` (crictl's rule)."""
    if attempt == 0:
        raise errdefs.NotFound(f"container {name!r} has no previous attempt (its attempt is 0)")
    head, _, _ = path.rpartition("/")
    ext = os.path.splitext(path)[1]
    return f"{head}/{attempt - 1}{ext}"


async def logs(args: argparse.Namespace, client: CriClient) -> int:
    if args.limit_bytes == 0:
        return 0
    if args.reopen:
        await client.reopen_container_log(args.container)
    st = (await client.container_status(args.container)).status
    path = st.log_path
    if not path:
        raise errdefs.NotFound(f"container {args.container} has no log file (its pod has no log_directory)")
    if args.previous:
        path = previous_log_path(path, st.metadata.attempt, st.metadata.name)
    printer = _Printer(args.timestamps, args.stream, args.since, args.limit_bytes)
    try:
        await _copy(args, client, path, printer, follow=args.follow and not args.previous)
    except _LimitReached:
        pass
    return 0


async def _copy(args: argparse.Namespace, client: CriClient, path: str, printer: _Printer, *, follow: bool) -> None:
    parser = LogParser()
    try:
        data = await asyncio.to_thread(_read_all, path)
    except FileNotFoundError:
        if args.previous:
            raise errdefs.NotFound(f"no log of the previous attempt of container {args.container}: {path} "
                                   "does not exist") from None
        data = b""
    except OSError as exc:
        raise errdefs.from_oserror(exc, f"read the log of container {args.container}") from exc
    offset = len(data)
    lines = parser.feed(data)
    if not follow:
        lines += parser.flush()
    if args.stream:
        lines = [ln for ln in lines if ln.stream == args.stream]
    if args.tail >= 0:
        lines = list(deque(lines, maxlen=args.tail)) if args.tail else []
    printer.write(lines)
    if not follow:
        return
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
            return
        await asyncio.sleep(POLL)
