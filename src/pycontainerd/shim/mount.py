"""Mounting the container rootfs in the shim (mount(2) through ctypes: no helper process).

``parse_options`` turns containerd-style mount options into ``(flags, propagation, data)``
with the daemon's table (``pycontainerd.mountopts``, not ``pycontainerd.mount``, whose package
pulls in asyncio): known flag words (``ro``, ``nosuid``, ``rbind``...) become MS_* flags,
propagation words are applied by a second mount call, and the rest is the filesystem data
string (``lowerdir=...,upperdir=...``).  Overlay data longer than a page is shortened by
mounting from the lowerdirs' common parent directory with relative paths (the shim is
single-threaded, so a temporary chdir is safe).
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import time

from pycontainerd import mountopts
from pycontainerd.mountopts import MNT_DETACH, MS_BIND, MS_RDONLY, MS_REMOUNT

_libc = ctypes.CDLL(None, use_errno=True)
_libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p]
_libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]


def parse_options(options: list[str]) -> tuple[int, int, str]:
    flags, propagation, data = mountopts.parse(options)
    return flags, propagation, ",".join(data)


def _mount(source: str, target: str, fstype: str, flags: int, data: str, *, shown: str = "") -> None:
    rc = _libc.mount(
        source.encode(), target.encode(), fstype.encode() if fstype else None, flags, data.encode() or None
    )
    if rc != 0:
        err = ctypes.get_errno()
        shown = shown or target
        raise OSError(err, f"mount {fstype or 'none'} {source} on {shown}: {os.strerror(err)}", shown)


def compact_overlay(data: str) -> tuple[str, str]:
    """``(chdir, data)`` with lowerdirs relative to their common parent, if that helps."""
    parts = data.split(",")
    lower = [p for p in parts if p.startswith("lowerdir=")]
    if not lower:
        return "", data
    dirs = lower[0][len("lowerdir=") :].split(":")
    common = os.path.commonpath(dirs) if len(dirs) > 1 else os.path.dirname(dirs[0])
    if not common or common == "/":
        return "", data
    rel = ":".join(os.path.relpath(d, common) for d in dirs)
    out = [f"lowerdir={rel}" if p.startswith("lowerdir=") else p for p in parts]
    return common, ",".join(out)


def mount(fstype: str, source: str, target: str, options: list[str], *, root: str = "") -> None:
    """Mount on ``target``; with ``root``, each mount(2) call goes through
    ``mountopts.pinned_in_root(root, target)`` (a target taken from a request)."""
    flags, propagation, data = parse_options(options)
    chdir = ""
    if fstype == "overlay" and len(data) >= os.sysconf("SC_PAGE_SIZE") - 512:
        chdir, data = compact_overlay(data)
    old = os.getcwd() if chdir else ""
    if chdir:
        os.chdir(chdir)

    def at() -> contextlib.AbstractContextManager[str]:
        return mountopts.pinned_in_root(root, target) if root else contextlib.nullcontext(target)

    try:
        first = flags & ~(MS_RDONLY | MS_REMOUNT) if flags & MS_BIND else flags
        with at() as name:
            _mount(source, name, fstype, first, data, shown=target)
        if flags & MS_BIND and flags & MS_RDONLY:
            with at() as name:
                _mount("", name, "", first | MS_RDONLY | MS_REMOUNT, "", shown=target)
        if propagation:
            with at() as name:
                _mount("", name, "", propagation, "", shown=target)
    finally:
        if old:
            os.chdir(old)


def mount_all(mounts: list[dict[str, object]], rootfs: str) -> list[str]:
    """Mount each ``{"type","source","target","options"}`` at ``rootfs``/target; return the
    mounted paths (for ``unmount`` in reverse order).

    ``target`` is resolved with ``rootfs`` as ``/`` (``mountopts.resolve_in_root``): ``..``
    stops at the rootfs and symlinks are followed inside it, so a request can never mount
    onto a host path (containerd 1.7+ resolves it the same way, with ``fs.RootPath``; 1.6
    ignores the field and mounts everything on the rootfs)."""
    done: list[str] = []
    try:
        for m in mounts:
            sub = str(m.get("target") or "")
            target = mountopts.resolve_in_root(rootfs, sub)
            opts = m.get("options") or []
            mount(
                str(m.get("type") or ""),
                str(m.get("source") or ""),
                target,
                [str(o) for o in opts],  # type: ignore[attr-defined]
                root=rootfs if sub else "",
            )
            done.append(target)
    except BaseException:
        for path in reversed(done):
            unmount(path)
        raise
    return done


def unmount_tree(root: str) -> None:
    """Unmount everything on ``root`` and below it, deepest first (a dead shim's rootfs)."""
    for mp in mountopts.mountpoints_under(root, include_root=True):
        unmount(mp)


def unmount(target: str) -> None:
    """Unmount every mount stacked on ``target`` (lazily after a few busy retries)."""
    for attempt in range(50):
        rc = _libc.umount2(target.encode(), MNT_DETACH if attempt >= 10 else 0)
        if rc == 0:
            continue
        err = ctypes.get_errno()
        if err in (errno.EINVAL, errno.ENOENT):
            return  # not a mount point (any more)
        if err != errno.EBUSY:
            raise OSError(err, f"unmount {target}: {os.strerror(err)}", target)
        time.sleep(0.005)
    raise OSError(errno.EBUSY, f"unmount {target}: still busy", target)
