"""mount(2) flags and the parsing of mount(8)-style options into them.

Used by ``pycontainerd.mount.core``, the one mount implementation of the daemon and the shim
(every shim process imports it).  Keep this module free of imports beyond small
standard-library modules.

The option table is the one in containerd's ``mount_linux.go``: known words set or clear a
flag, propagation words are collected separately (they need a mount call of their own), and
everything else is filesystem data (``lowerdir=...``, ``index=off``).

``resolve_in_root`` places a mount's ``target`` (a sub-path of the mount point, a containerd
1.7+ field) under the mount point, the way containerd's ``fs.RootPath`` does: the mount point
acts as ``/``, ``..`` never climbs above it and symlinks met on the way are followed inside it.
``pinned_in_root`` then hands mount(2) the opened directory (``/proc/self/fd/N``), checked to
lie under the mount point, so renaming things in between cannot redirect the mount.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from collections.abc import Iterable, Iterator

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
MS_UNBINDABLE = 0x20000
MS_PRIVATE = 0x40000
MS_SLAVE = 0x80000
MS_SHARED = 0x100000
MS_RELATIME = 0x200000
MS_STRICTATIME = 0x1000000

# umount2(2) flags
MNT_DETACH = 0x2
UMOUNT_NOFOLLOW = 0x8

# option -> (clear?, flag)
FLAGS: dict[str, tuple[bool, int]] = {
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

PROPAGATION: dict[str, int] = {
    "private": MS_PRIVATE,
    "rprivate": MS_PRIVATE | MS_REC,
    "shared": MS_SHARED,
    "rshared": MS_SHARED | MS_REC,
    "slave": MS_SLAVE,
    "rslave": MS_SLAVE | MS_REC,
    "unbindable": MS_UNBINDABLE,
    "runbindable": MS_UNBINDABLE | MS_REC,
}


def parse(options: Iterable[str]) -> tuple[int, int, list[str]]:
    """``(flags, propagation, data)``: options applied in order (a later ``rw`` undoes ``ro``),
    with the words neither table knows kept, in order, as data."""
    flags = 0
    propagation = 0
    data: list[str] = []
    for opt in options:
        if opt in FLAGS:
            clear, flag = FLAGS[opt]
            flags = flags & ~flag if clear else flags | flag
        elif opt in PROPAGATION:
            propagation |= PROPAGATION[opt]
        else:
            data.append(opt)
    return flags, propagation, data


MAX_SYMLINKS = 255


def resolve_in_root(root: str, path: str) -> str:
    """``root`` joined with ``path`` as if ``root`` were ``/``: the result never leaves ``root``.

    The one implementation of containerd's ``fs.RootPath`` here: mounts' targets (daemon and
    shim) and layer entries (``diff.apply``) go through it.

    ``..`` at the top stays at the top; a symlink found under ``root`` is read and followed
    relative to ``root`` (an absolute link starts again at ``root``); components that do not
    exist are kept as they are (mounting on them then fails with ENOENT).  Like containerd's
    ``fs.RootPath``, the walk and a mount of the path it returns are not atomic: a process
    that can rename things under ``root`` meanwhile could swap a directory for a symlink.
    Mount through ``pinned_in_root`` to close that window.
    """
    root = os.path.normpath(root)
    todo = [c for c in path.split("/") if c not in ("", ".")]
    todo.reverse()  # a stack: next component last
    done: list[str] = []
    links = 0
    while todo:
        comp = todo.pop()
        if comp in ("", "."):
            continue
        if comp == "..":
            if done:
                done.pop()
            continue
        candidate = os.path.join(root, *done, comp)
        try:
            st = os.lstat(candidate)
        except (FileNotFoundError, NotADirectoryError):  # missing, or below a non-directory
            done.append(comp)
            continue
        if not stat.S_ISLNK(st.st_mode):
            done.append(comp)
            continue
        links += 1
        if links > MAX_SYMLINKS:
            raise OSError(errno.ELOOP, os.strerror(errno.ELOOP), os.path.join(root, path.lstrip("/")))
        link = os.readlink(candidate)
        if link.startswith("/"):
            done = []
        todo.extend(reversed([c for c in link.split("/") if c not in ("", ".")]))
    return os.path.join(root, *done) if done else root


@contextlib.contextmanager
def pinned_in_root(root: str, target: str) -> Iterator[str]:
    """``/proc/self/fd/N`` for ``target`` (a path ``resolve_in_root`` gave), opened without
    following a symlink at its end and checked to still lie under ``root``.

    mount(2) given that name acts on the opened file itself, so a rename under ``root``
    after the check cannot send the mount elsewhere.  PermissionError (EPERM) when the
    opened file is outside ``root`` (something was swapped since the resolution).  Open it
    anew for each mount(2) call: after a mount, the path leads into the new mount while an
    older descriptor still names the directory below it.
    """
    fd = os.open(target, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        name = f"/proc/self/fd/{fd}"
        real = os.readlink(name)
        base = os.path.realpath(root).rstrip("/")
        if stat.S_ISLNK(os.fstat(fd).st_mode) or not (real == (base or "/") or real.startswith(base + "/")):
            raise PermissionError(errno.EPERM, f"mount target is no longer under {root} (it is {real})", target)
        yield name
    finally:
        os.close(fd)


def _unescape_mountinfo(field: bytes) -> bytes:
    """A mountinfo field with its octal escapes (space, tab, newline, backslash) undone."""
    if b"\\" not in field:
        return field
    out = bytearray()
    i = 0
    while i < len(field):
        code = field[i + 1 : i + 4]
        if field[i] == 0x5C and len(code) == 3 and code.isdigit():
            out.append(int(code, 8))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return bytes(out)


def mountpoints_under(path: str, *, include_root: bool = False, mountinfo: str = "/proc/self/mountinfo") -> list[str]:
    """The mount points strictly below ``path`` (and ``path`` itself with ``include_root``),
    deepest first: the order to unmount them in."""
    prefix = os.path.realpath(path).rstrip("/")
    points: set[str] = set()
    with open(mountinfo, "rb") as f:
        for line in f:
            fields = line.split(b" ")
            if len(fields) < 5:
                continue
            mp = os.fsdecode(_unescape_mountinfo(fields[4]))
            if mp.startswith(prefix + "/") or (include_root and mp == prefix):
                points.add(mp)
    return sorted(points, key=len, reverse=True)
