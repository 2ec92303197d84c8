"""Mounting the container rootfs in the shim (mount(2) through ctypes: no helper process).

``parse_options`` turns containerd-style mount options into ``(flags, propagation, data)``
the way containerd's ``mount_linux.go`` does: known flag words (``ro``, ``nosuid``,
``rbind``...) become MS_* flags, propagation words are applied by a second mount call, and
the rest is the filesystem data string (``lowerdir=...,upperdir=...``).  Overlay data longer
than a page is shortened by mounting from the lowerdirs' common parent directory with
relative paths (the shim is single-threaded, so a temporary chdir is safe).
"""

from __future__ import annotations

import ctypes
import errno
import os
import time

MS_RDONLY = 0x1
MS_NOSUID = 0x2
MS_NODEV = 0x4
MS_NOEXEC = 0x8
MS_SYNCHRONOUS = 0x10
MS_REMOUNT = 0x20
MS_MANDLOCK = 0x40
MS_DIRSYNC = 0x80
MS_NOATIME = 0x400
MS_NODIRATIME = 0x800
MS_BIND = 0x1000
MS_REC = 0x4000
MS_UNBINDABLE = 1 << 17
MS_PRIVATE = 1 << 18
MS_SLAVE = 1 << 19
MS_SHARED = 1 << 20
MS_RELATIME = 1 << 21
MS_STRICTATIME = 1 << 24
MNT_DETACH = 2

# word -> (clear?, flag)
_FLAGS: dict[str, tuple[bool, int]] = {
    "async": (True, MS_SYNCHRONOUS),
    "atime": (True, MS_NOATIME),
    "bind": (False, MS_BIND),
    "defaults": (False, 0),
    "dev": (True, MS_NODEV),
    "diratime": (True, MS_NODIRATIME),
    "dirsync": (False, MS_DIRSYNC),
    "exec": (True, MS_NOEXEC),
    "mand": (False, MS_MANDLOCK),
    "noatime": (False, MS_NOATIME),
    "nodev": (False, MS_NODEV),
    "nodiratime": (False, MS_NODIRATIME),
    "noexec": (False, MS_NOEXEC),
    "nomand": (True, MS_MANDLOCK),
    "norelatime": (True, MS_RELATIME),
    "nostrictatime": (True, MS_STRICTATIME),
    "nosuid": (False, MS_NOSUID),
    "rbind": (False, MS_BIND | MS_REC),
    "relatime": (False, MS_RELATIME),
    "remount": (False, MS_REMOUNT),
    "ro": (False, MS_RDONLY),
    "rw": (True, MS_RDONLY),
    "strictatime": (False, MS_STRICTATIME),
    "suid": (True, MS_NOSUID),
    "sync": (False, MS_SYNCHRONOUS),
}
_PROPAGATION: dict[str, int] = {
    "private": MS_PRIVATE,
    "rprivate": MS_PRIVATE | MS_REC,
    "shared": MS_SHARED,
    "rshared": MS_SHARED | MS_REC,
    "slave": MS_SLAVE,
    "rslave": MS_SLAVE | MS_REC,
    "unbindable": MS_UNBINDABLE,
    "runbindable": MS_UNBINDABLE | MS_REC,
}

_libc = ctypes.CDLL(None, use_errno=True)
_libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p]
_libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]


def parse_options(options: list[str]) -> tuple[int, int, str]:
    flags = 0
    propagation = 0
    data: list[str] = []
    for opt in options:
        if opt in _FLAGS:
            clear, flag = _FLAGS[opt]
            flags = flags & ~flag if clear else flags | flag
        elif opt in _PROPAGATION:
            propagation |= _PROPAGATION[opt]
        else:
            data.append(opt)
    return flags, propagation, ",".join(data)


def _mount(source: str, target: str, fstype: str, flags: int, data: str) -> None:
    rc = _libc.mount(
        source.encode(), target.encode(), fstype.encode() if fstype else None, flags, data.encode() or None
    )
    if rc != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"mount {fstype or 'none'} {source} on {target}: {os.strerror(err)}", target)


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


def mount(fstype: str, source: str, target: str, options: list[str]) -> None:
    flags, propagation, data = parse_options(options)
    chdir = ""
    if fstype == "overlay" and len(data) >= os.sysconf("SC_PAGE_SIZE") - 512:
        chdir, data = compact_overlay(data)
    old = os.getcwd() if chdir else ""
    if chdir:
        os.chdir(chdir)
    try:
        first = flags & ~(MS_RDONLY | MS_REMOUNT) if flags & MS_BIND else flags
        _mount(source, target, fstype, first, data)
        if flags & MS_BIND and flags & MS_RDONLY:
            _mount("", target, "", first | MS_RDONLY | MS_REMOUNT, "")
        if propagation:
            _mount("", target, "", propagation, "")
    finally:
        if old:
            os.chdir(old)


def mount_all(mounts: list[dict[str, object]], rootfs: str) -> list[str]:
    """Mount each ``{"type","source","target","options"}`` at ``rootfs``/target; return the
    mounted paths (for ``unmount_all`` in reverse order)."""
    done: list[str] = []
    try:
        for m in mounts:
            target = os.path.join(rootfs, str(m.get("target") or "").lstrip("/"))
            target = target.rstrip("/") or "/"
            opts = m.get("options") or []
            mount(str(m.get("type") or ""), str(m.get("source") or ""), target, [str(o) for o in opts])  # type: ignore[attr-defined]
            done.append(target)
    except BaseException:
        for path in reversed(done):
            unmount(path)
        raise
    return done


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
