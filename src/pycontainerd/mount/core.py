"""Mounting and unmounting ``Mount`` records with mount(2)/umount2(2): the one implementation of
the daemon (``pycontainerd.mount``) and the shim (which mounts a container's rootfs).

Blocking: the daemon calls it from worker threads (``mount.mount``'s ``*_async`` helpers); the
shim calls it directly.  Every shim process imports this module, so it stays small: ctypes,
``os`` and the option table (``pycontainerd.mountopts``), nothing that pulls in asyncio or
subprocess; overlays with a data string longer than a page go through ``deep_overlay``,
imported by the first one.

Mounting follows containerd's ``Mount.mount`` (mount_linux.go):

1. the options become mount(2) flags, propagation flags and a data string (``mountopts.parse``;
   ``loop`` is refused: no loop devices here);
2. unless the flags ask for a pure remount without data, one mount(2) with the flags and data;
3. the propagation (``rprivate``, ``shared``...) with a second call;
4. a read-only bind mount is remounted read-only (the kernel ignores MS_RDONLY on the first
   bind call).

A ``Mount.target`` is a path under the mount point resolved with it as ``/``
(``mountopts.resolve_in_root``) and every call acts on the opened, checked directory
(``mountopts.pinned_in_root``): a request can never mount onto a host path.

Deep overlays: the kernel copies mount(2)'s data into one page, so a ``lowerdir=`` list of 50+
absolute paths may not fit: ``deep_overlay`` mounts those.

Unmounting follows containerd's ``UnmountAll``: every mount stacked on the target and every
mount below it (deepest first, as they make umount2 answer EBUSY) is unmounted; EBUSY is
retried for a while (a process may just be leaving) and then reported, never papered over with
a lazy detach.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

from .. import errdefs, mountopts
from ..mountopts import MNT_DETACH, MS_BIND, MS_RDONLY, MS_REMOUNT, UMOUNT_NOFOLLOW

PAGE_SIZE = os.sysconf("SC_PAGESIZE")

BUSY_RETRIES = 50
BUSY_DELAY = 0.05
"""umount2 answering EBUSY is tried again this many times, this many seconds apart (containerd's
``unmount``: 50 x 50 ms), then the error is raised."""

_libc = ctypes.CDLL(None, use_errno=True)  # the process's libc (no ctypes.util: it imports subprocess)
_libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p]
_libc.mount.restype = ctypes.c_int
_libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]
_libc.umount2.restype = ctypes.c_int


@dataclass
class Mount:
    """One mount: ``type`` (``overlay``, ``bind``, ...), ``source``, mount(8)-style ``options``."""

    type: str
    source: str
    options: list[str] = field(default_factory=list)
    target: str = ""  # a sub-path of the mount point (containerd 1.7+ field); empty = the root

    def describe(self) -> str:
        return f"{self.type} {self.source} (options {','.join(self.options)})"


class ParsedOptions(NamedTuple):
    flags: int
    propagation: int
    data: list[str]


def parse_options(options: Sequence[str]) -> ParsedOptions:
    flags, prop, data = mountopts.parse(options)
    if "loop" in data:  # neither table knows the word, so it lands in data
        raise errdefs.Unimplemented("loop mounts are not supported")
    return ParsedOptions(flags, prop, data)


def _raw_mount(source: str, target: str, fstype: str, flags: int, data: str) -> None:
    rc = _libc.mount(
        os.fsencode(source) if source else None,
        os.fsencode(target),
        os.fsencode(fstype) if fstype else None,
        flags,
        os.fsencode(data) if data else None,
    )
    if rc != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err), target)


def _mount_one(m: Mount, target: str) -> str:
    """Mount ``m`` on ``target`` (its ``target`` resolved inside it); the path mounted on."""
    opts = parse_options(m.options)
    root = target
    if m.target:
        try:
            target = mountopts.resolve_in_root(root, m.target)
        except OSError as exc:
            raise errdefs.from_oserror(exc, f"resolve mount target {m.target!r} under {root}") from exc

    def at() -> contextlib.AbstractContextManager[str]:
        # a target from a request: every mount(2) acts on the opened, checked directory
        return mountopts.pinned_in_root(root, target) if m.target else contextlib.nullcontext(target)

    data = ",".join(opts.data)
    flags = opts.flags
    try:
        if flags & MS_REMOUNT == 0 or data:
            with at() as name:
                if m.type == "overlay" and len(data) >= PAGE_SIZE - 512:
                    from . import deep_overlay

                    deep_overlay.mount(m.source, name, flags, opts.data)
                else:
                    _raw_mount(m.source, name, m.type, flags, data)
        if opts.propagation:
            with at() as name:
                _raw_mount("", name, "", opts.propagation, "")
        if flags & MS_BIND and flags & MS_RDONLY:
            # a bind mount ignores MS_RDONLY on the first call: remount to apply it
            with at() as name:
                _raw_mount("", name, "", flags | MS_REMOUNT, "")
    except OSError as exc:
        if isinstance(exc.filename, str) and exc.filename.startswith("/proc/self/fd/"):
            exc.filename = target
        raise errdefs.from_oserror(exc, f"mount {m.describe()} on {target}") from exc
    return target


def mount_all(mounts: Sequence[Mount], target: str | os.PathLike[str]) -> None:
    """Mount each of ``mounts`` on ``target`` in order; on failure undo the ones done.

    A mount's ``target`` is a path under ``target`` resolved with ``target`` as ``/``
    (``mountopts.resolve_in_root``): it can never land outside it."""
    tgt = os.fspath(target)
    done: list[str] = []
    try:
        for m in mounts:
            done.append(_mount_one(m, tgt))
    except BaseException:
        for path in reversed(done):
            with contextlib.suppress(OSError, errdefs.ContainerdError):
                unmount(path, MNT_DETACH)
        raise


def unmount(target: str | os.PathLike[str], flags: int = 0) -> None:
    """umount2(target) once; EBUSY is retried (``BUSY_RETRIES`` x ``BUSY_DELAY``), then raised."""
    tgt = os.fspath(target)
    for attempt in range(BUSY_RETRIES):
        if _libc.umount2(os.fsencode(tgt), flags) == 0:
            return
        err = ctypes.get_errno()
        if err == errno.EBUSY and attempt < BUSY_RETRIES - 1:
            time.sleep(BUSY_DELAY)
            continue
        raise errdefs.from_oserror(OSError(err, os.strerror(err), tgt), "unmount")


def unmount_all(target: str | os.PathLike[str], flags: int = 0) -> None:
    """Unmount every mount stacked on ``target`` and every mount below it (none is fine).

    Mounts below ``target`` (a rootfs mount with a ``target`` sub-path, a bind mount's
    submounts) make umount2 answer EBUSY: they are unmounted first, deepest first."""
    tgt = os.fspath(target)
    for _ in range(1024):
        if _libc.umount2(os.fsencode(tgt), flags | UMOUNT_NOFOLLOW) == 0:
            continue
        err = ctypes.get_errno()
        if err in (errno.EINVAL, errno.ENOENT):
            return  # not (or no longer) a mount point
        if err == errno.EBUSY:
            if _unmount_below(tgt, flags):
                continue
            unmount(tgt, flags)  # retries, raises if it stays busy
            continue
        raise errdefs.from_oserror(OSError(err, os.strerror(err), tgt), "unmount")
    raise errdefs.FailedPrecondition(f"unmount {tgt}: too many stacked mounts")


def _unmount_below(target: str, flags: int) -> bool:
    """Unmount the mounts strictly below ``target``, deepest first; False if there are none."""
    below = mountopts.mountpoints_under(target)
    for mp in below:
        while _libc.umount2(os.fsencode(mp), flags | UMOUNT_NOFOLLOW) == 0:
            pass  # stacked mounts on mp, all of them
        err = ctypes.get_errno()
        if err == errno.EBUSY:
            unmount(mp, flags)
        elif err not in (errno.EINVAL, errno.ENOENT):
            raise errdefs.from_oserror(OSError(err, os.strerror(err), mp), "unmount")
    return bool(below)
