"""The btrfs snapshotter slot: reported as skipped unless the root is on btrfs.

containerd lists snapshotters that cannot run on this host as ``skip`` in ``ctr plugins ls``
(btrfs on ext4, zfs without a pool, ...). We do the same check for btrfs so operators see
why it is absent; on a real btrfs root it is still skipped, because pycontainerd does not
implement btrfs subvolume snapshots (overlayfs works on btrfs too).
"""

from __future__ import annotations

import asyncio
import ctypes
import os

from ..plugin import InitContext, Registration, SkipPlugin, types

BTRFS_SUPER_MAGIC = 0x9123683E


class _Statfs(ctypes.Structure):
    _fields_ = [("f_type", ctypes.c_long), ("_rest", ctypes.c_byte * 112)]


def filesystem_magic(path: str) -> int:
    libc = ctypes.CDLL(None, use_errno=True)  # libc among the process's symbols (no ldconfig run)
    buf = _Statfs()
    if libc.statfs(os.fsencode(path), ctypes.byref(buf)) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err), path)
    return int(buf.f_type) & 0xFFFFFFFF


async def _init(ctx: InitContext) -> None:
    path = str(ctx.root.parent)
    magic = await asyncio.to_thread(filesystem_magic, path)
    if magic != BTRFS_SUPER_MAGIC:
        raise SkipPlugin(f"path {ctx.root} must be a btrfs filesystem to be used with the btrfs snapshotter")
    raise SkipPlugin("the btrfs snapshotter is not implemented by pycontainerd; use overlayfs")


REGISTRATION = Registration(type=types.SNAPSHOT, id="btrfs", init=_init)
