"""Mount/unmount with mount(2) through ctypes (blocking: call from a worker thread).

See the package docstring for the theory; this module holds the mount calls, the deep-overlay
fallbacks and mountinfo lookup.  The flag table and option parsing live in
``pycontainerd.mountopts``, shared with the shim (which must not import this package).
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

from .. import errdefs, mountopts
from ..mountopts import MNT_DETACH as MNT_DETACH  # re-exported: diff.walking imports it from here
from ..mountopts import (
    MS_BIND,
    MS_NOATIME,
    MS_NODEV,
    MS_NODIRATIME,
    MS_NOEXEC,
    MS_NOSUID,
    MS_RDONLY,
    MS_REMOUNT,
    UMOUNT_NOFOLLOW,
)

T = TypeVar("T")

PAGE_SIZE = os.sysconf("SC_PAGESIZE")

# the process's own symbols include libc's (no ctypes.util.find_library: it runs ldconfig, and
# `pyctr run` reads the rootfs' /etc/passwd through a mount); asyncio, subprocess and tempfile
# are imported where used, for the same reason
_libc = ctypes.CDLL(None, use_errno=True)
_libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p]
_libc.mount.restype = ctypes.c_int
_libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]
_libc.umount2.restype = ctypes.c_int
_libc.syscall.restype = ctypes.c_long


@dataclass
class Mount:
    """One mount: ``type`` (``overlay``, ``bind``, ...), ``source``, mount(8)-style ``options``."""

    type: str
    source: str
    options: list[str] = field(default_factory=list)
    target: str = ""  # a sub-path of the mount point (containerd 1.7+ field); empty = the root

    def describe(self) -> str:
        return f"{self.type} {self.source} (options {','.join(self.options)})"


@dataclass(frozen=True)
class ParsedOptions:
    flags: int
    propagation: int
    data: list[str]


def parse_options(options: Sequence[str]) -> ParsedOptions:
    flags, prop, data = mountopts.parse(options)
    if "loop" in data:  # neither table knows the word, so it lands in data
        raise errdefs.Unimplemented("loop mounts are not supported")
    return ParsedOptions(flags, prop, data)


def _encode(s: str) -> bytes:
    return os.fsencode(s)


def _raw_mount(source: str, target: str, fstype: str, flags: int, data: str) -> None:
    rc = _libc.mount(
        _encode(source) if source else None,
        _encode(target),
        _encode(fstype) if fstype else None,
        flags,
        _encode(data) if data else None,
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
    fstype = m.type
    flags = opts.flags
    what = f"mount {m.describe()} on {target}"
    try:
        if flags & MS_REMOUNT == 0 or data:
            with at() as name:
                if fstype == "overlay" and len(data) >= PAGE_SIZE - 512:
                    _mount_long_overlay(m.source, name, flags, opts.data)
                else:
                    _raw_mount(m.source, name, fstype, flags, data)
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
        raise errdefs.from_oserror(exc, what) from exc
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
    """umount2(target); EBUSY is retried for a while (a process may just be leaving)."""
    tgt = os.fspath(target)
    for attempt in range(50):
        if _libc.umount2(_encode(tgt), flags) == 0:
            return
        err = ctypes.get_errno()
        if err == errno.EBUSY and attempt < 49:
            time.sleep(0.05)
            continue
        raise errdefs.from_oserror(OSError(err, os.strerror(err), tgt), "unmount")


def unmount_all(target: str | os.PathLike[str], flags: int = 0) -> None:
    """Unmount every mount stacked on ``target`` and every mount below it (none is fine).

    Mounts below ``target`` (a rootfs mount with a ``target`` sub-path, a bind mount's
    submounts) make umount2 answer EBUSY: they are unmounted first, deepest first."""
    tgt = os.fspath(target)
    for _ in range(1024):
        if _libc.umount2(_encode(tgt), flags | UMOUNT_NOFOLLOW) == 0:
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
        while _libc.umount2(_encode(mp), flags | UMOUNT_NOFOLLOW) == 0:
            pass  # stacked mounts on mp, all of them
        err = ctypes.get_errno()
        if err == errno.EBUSY:
            unmount(mp, flags)
        elif err not in (errno.EINVAL, errno.ENOENT):
            raise errdefs.from_oserror(OSError(err, os.strerror(err), mp), "unmount")
    return bool(below)


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


# -- deep overlays ----------------------------------------------------------------------------
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
                    ctypes.c_char_p(_encode(key) if key is not None else None),
                    ctypes.c_char_p(_encode(value) if value is not None else None),
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
                ctypes.c_char_p(_encode(target)),
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
    """containerd's compactLowerdirOption: (common dir, options with lowerdirs relative to it)."""
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


def _mount_long_overlay(source: str, target: str, flags: int, data: Sequence[str], *, fsapi: bool = True) -> None:
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
    import subprocess

    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            _CHDIR_MOUNT,
            source or "overlay",
            target,
            "overlay",
            str(flags & ~MS_REMOUNT),
            text,
        ],
        cwd=cwd,
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        raise OSError(proc.returncode, proc.stderr.strip() or "mount helper failed", target)


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
