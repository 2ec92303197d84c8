"""Overlay mounts whose options do not fit in one page (``mount.core`` imports this module for
the first such mount).

The kernel copies mount(2)'s data string into one page, so a ``lowerdir=`` list of 50+ absolute
paths may not fit.  First the new mount API (fsopen/fsconfig) with one ``lowerdir+`` call per
lower directory (Linux >= 6.8), which has no total length limit; on older kernels containerd's
trick: lowerdirs relative to their common directory, mounted by a short-lived helper process
that chdir-ed there (chdir is process-wide: never in a threaded daemon, and the same in the
shim).
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import subprocess
import sys
from collections.abc import Sequence

from ..mountopts import MS_NOATIME, MS_NODEV, MS_NODIRATIME, MS_NOEXEC, MS_NOSUID, MS_RDONLY, MS_REMOUNT
from .core import PAGE_SIZE

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long

_SYS_MOVE_MOUNT = 429
_SYS_FSOPEN = 430
_SYS_FSCONFIG = 431
_SYS_FSMOUNT = 432
_FSOPEN_CLOEXEC = 1
_FSCONFIG_SET_FLAG = 0
_FSCONFIG_SET_STRING = 1
_FSCONFIG_CMD_CREATE = 6
_FSMOUNT_CLOEXEC = 1
_MOVE_MOUNT_F_EMPTY_PATH = 4
_AT_FDCWD = -100
_ATTRS = {
    MS_RDONLY: 0x1,
    MS_NOSUID: 0x2,
    MS_NODEV: 0x4,
    MS_NOEXEC: 0x8,
    MS_NOATIME: 0x10,
    MS_NODIRATIME: 0x80,
}


def _syscall(nr: int, *args: object) -> int:
    rc = int(_libc.syscall(ctypes.c_long(nr), *args))
    if rc < 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    return rc


def _fs_log(fd: int) -> str:
    lines = []
    with contextlib.suppress(OSError):
        for _ in range(32):
            lines.append(os.read(fd, 4096).decode(errors="replace").strip())
    return "; ".join(line for line in lines if line)


def _mount_overlay_fsapi(target: str, flags: int, data: Sequence[str]) -> None:
    fd = _syscall(_SYS_FSOPEN, ctypes.c_char_p(b"overlay"), ctypes.c_uint(_FSOPEN_CLOEXEC))
    try:

        def cfg(cmd: int, key: str | None, value: str | None) -> None:
            try:
                _syscall(
                    _SYS_FSCONFIG,
                    ctypes.c_int(fd),
                    ctypes.c_uint(cmd),
                    ctypes.c_char_p(os.fsencode(key) if key is not None else None),
                    ctypes.c_char_p(os.fsencode(value) if value is not None else None),
                    ctypes.c_int(0),
                )
            except OSError as exc:
                detail = _fs_log(fd)
                raise OSError(exc.errno, f"{exc.strerror} (overlay {key}: {detail})") from exc

        cfg(_FSCONFIG_SET_STRING, "source", "overlay")
        for opt in data:
            key, sep, value = opt.partition("=")
            if key == "lowerdir":
                for lower in value.split(":"):
                    cfg(_FSCONFIG_SET_STRING, "lowerdir+", lower)
            elif sep:
                cfg(_FSCONFIG_SET_STRING, key, value)
            else:
                cfg(_FSCONFIG_SET_FLAG, key, None)
        cfg(_FSCONFIG_CMD_CREATE, None, None)
        attrs = 0
        for f, a in _ATTRS.items():
            if flags & f:
                attrs |= a
        mfd = _syscall(_SYS_FSMOUNT, ctypes.c_int(fd), ctypes.c_uint(_FSMOUNT_CLOEXEC), ctypes.c_uint(attrs))
        try:
            _syscall(
                _SYS_MOVE_MOUNT,
                ctypes.c_int(mfd),
                ctypes.c_char_p(b""),
                ctypes.c_int(_AT_FDCWD),
                ctypes.c_char_p(os.fsencode(target)),
                ctypes.c_uint(_MOVE_MOUNT_F_EMPTY_PATH),
            )
        finally:
            os.close(mfd)
    finally:
        os.close(fd)


_CHDIR_MOUNT = """
import ctypes, os, sys
libc = ctypes.CDLL(None, use_errno=True)
src, tgt, typ, flags, data = sys.argv[1:6]
if libc.mount(src.encode(), tgt.encode(), typ.encode(), int(flags), data.encode()) != 0:
    e = ctypes.get_errno()
    sys.stderr.write(os.strerror(e))
    sys.exit(e or 1)
"""


def compact_lowerdir(data: Sequence[str]) -> tuple[str, list[str]]:
    """containerd's compactLowerdirOption: (common dir, options with lowerdirs relative to it);
    ``("", data)`` when there is nothing to gain (fewer than two lowerdirs, or no common dir)."""
    lowers: list[str] = []
    for opt in data:
        if opt.startswith("lowerdir="):
            lowers = opt[len("lowerdir=") :].split(":")
    if len(lowers) < 2:
        return "", list(data)
    common = os.path.commonpath(lowers)
    if common in ("", "/"):
        return "", list(data)
    rel = ":".join(os.path.relpath(p, common) for p in lowers)
    return common, [f"lowerdir={rel}" if o.startswith("lowerdir=") else o for o in data]


def mount(source: str, target: str, flags: int, data: Sequence[str], *, fsapi: bool = True) -> None:
    """Mount an overlay with these (parsed) ``data`` options on ``target``; OSError on failure."""
    if fsapi:
        try:
            _mount_overlay_fsapi(target, flags, data)
            return
        except OSError as exc:
            if exc.errno not in (errno.ENOSYS, errno.EINVAL, errno.EPERM):
                raise
    # older kernels: relative lowerdirs, mounted by a helper whose cwd is their common dir
    cwd, compact = compact_lowerdir(data)
    if target.startswith("/proc/self/fd/"):
        target = os.readlink(target)  # the helper has its own descriptors (checked just now)
    target = os.path.abspath(target)
    text = ",".join(compact)
    if not cwd or len(text) >= PAGE_SIZE:
        raise OSError(errno.E2BIG, "overlay options too long even when compacted", target)
    proc = subprocess.run(
        [sys.executable, "-c", _CHDIR_MOUNT, source or "overlay", target, "overlay", str(flags & ~MS_REMOUNT), text],
        cwd=cwd,
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        raise OSError(proc.returncode, proc.stderr.strip() or "mount helper failed", target)
