"""The daemon's side of mounts: async helpers, temporary mounts, mountinfo, read-only views.

Mounting and unmounting themselves live in ``mount.core`` (shared with the shim) and are
re-exported here; see its docstring for the rules (containerd's ``Mount.mount`` and
``UnmountAll``, targets confined to the mount point, deep overlays).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TypeVar

from .. import errdefs
from ..mountopts import MNT_DETACH as MNT_DETACH  # re-exported: diff.walking imports it from here
from .core import Mount as Mount
from .core import mount_all as mount_all
from .core import parse_options as parse_options
from .core import unmount as unmount
from .core import unmount_all as unmount_all

T = TypeVar("T")

# asyncio and tempfile are imported where used: `pyctr run`'s fast path (client/fastrun.py)
# reads the rootfs' /etc/passwd through a temp mount and pays for no more than that


def read_only(mounts: Sequence[Mount]) -> list[Mount]:
    """The same mounts made read-only (an overlay's upper dir becomes its top lower dir)."""
    out: list[Mount] = []
    for m in mounts:
        opts = [o for o in m.options if o not in ("rw", "ro")]
        if m.type == "overlay":
            upper = next((o[len("upperdir=") :] for o in opts if o.startswith("upperdir=")), None)
            if upper is not None:
                lowers = next((o[len("lowerdir=") :] for o in opts if o.startswith("lowerdir=")), "")
                opts = [o for o in opts if not o.startswith(("upperdir=", "workdir=", "lowerdir="))]
                opts.append(f"lowerdir={upper}:{lowers}" if lowers else f"lowerdir={upper}")
        opts.append("ro")
        out.append(Mount(m.type, m.source, opts, m.target))
    return out


# -- temp mounts ------------------------------------------------------------------------------
@contextlib.contextmanager
def temp_mount(mounts: Sequence[Mount], parent: str | os.PathLike[str] | None = None) -> Iterator[str]:
    """Mount in a new temp dir (under ``parent``) for the duration of the block."""
    if parent is not None:
        os.makedirs(parent, mode=0o700, exist_ok=True)
    import tempfile

    tmp = tempfile.mkdtemp(prefix="pycontainerd-mount", dir=parent)
    try:
        mount_all(mounts, tmp)
        try:
            yield tmp
        finally:
            unmount_all(tmp)
    finally:
        with contextlib.suppress(OSError):
            os.rmdir(tmp)


def with_temp_mount(mounts: Sequence[Mount], fn: Callable[[str], T], parent: str | os.PathLike[str] | None = None) -> T:
    with temp_mount(mounts, parent) as root:
        return fn(root)


@contextlib.asynccontextmanager
async def temp_mount_async(mounts: Sequence[Mount], parent: str | os.PathLike[str] | None = None) -> AsyncIterator[str]:
    import asyncio
    import tempfile

    from ..threads import to_thread_uncancelled

    if parent is not None:
        await asyncio.to_thread(os.makedirs, parent, 0o700, True)
    tmp = await asyncio.to_thread(tempfile.mkdtemp, None, "pycontainerd-mount", os.fspath(parent) if parent else None)
    try:
        try:
            await to_thread_uncancelled(mount_all, mounts, tmp)
            yield tmp
        finally:
            await to_thread_uncancelled(unmount_all, tmp)  # none mounted is fine
    finally:
        with contextlib.suppress(OSError):
            await to_thread_uncancelled(os.rmdir, tmp)


async def mount_all_async(mounts: Sequence[Mount], target: str | os.PathLike[str]) -> None:
    import asyncio

    await asyncio.to_thread(mount_all, mounts, target)


async def unmount_all_async(target: str | os.PathLike[str], flags: int = 0) -> None:
    import asyncio

    await asyncio.to_thread(unmount_all, target, flags)


# -- mountinfo --------------------------------------------------------------------------------
@dataclass(frozen=True)
class MountInfo:
    id: int
    parent: int
    major: int
    minor: int
    root: str
    mountpoint: str
    options: str
    optional: str
    fstype: str
    source: str
    vfs_options: str


def _unescape(s: str) -> str:
    # mountinfo octal-escapes space, tab, newline and backslash
    out = []
    i = 0
    while i < len(s):
        if s[i] == "\\" and s[i + 1 : i + 4].isdigit() and len(s[i + 1 : i + 4]) == 3:
            out.append(chr(int(s[i + 1 : i + 4], 8)))
            i += 4
        else:
            out.append(s[i])
            i += 1
    return "".join(out)


def mountinfo(pid: str = "self") -> list[MountInfo]:
    result = []
    with open(f"/proc/{pid}/mountinfo", encoding="utf-8", errors="surrogateescape") as fh:
        text = fh.read()
    for line in text.splitlines():
        pre, _, post = line.partition(" - ")
        f = pre.split(" ")
        p = post.split(" ")
        major, minor = f[2].split(":")
        result.append(
            MountInfo(
                id=int(f[0]),
                parent=int(f[1]),
                major=int(major),
                minor=int(minor),
                root=_unescape(f[3]),
                mountpoint=_unescape(f[4]),
                options=f[5],
                optional=" ".join(f[6:]),
                fstype=p[0],
                source=_unescape(p[1]) if len(p) > 1 else "",
                vfs_options=p[2] if len(p) > 2 else "",
            )
        )
    return result


def lookup(path: str | os.PathLike[str]) -> MountInfo:
    """The mount that contains ``path`` (the deepest mount point that is a prefix of it)."""
    real = os.path.realpath(os.fspath(path))
    best: MountInfo | None = None
    for mi in mountinfo():
        mp = mi.mountpoint
        if (real == mp or real.startswith(mp.rstrip("/") + "/")) and (best is None or len(mp) >= len(best.mountpoint)):
            best = mi
    if best is None:
        raise errdefs.NotFound(f"no mount found for {real}")
    return best
