"""Compute a layer: the changes from a lower tree to an upper tree, as an OCI layer tar.

A double walk (like containerd's ``fs.Changes``): both trees are walked in name order,
side by side.  A path only in the upper tree is *added* (a directory with everything in
it); a path only in the lower tree is *deleted*, written as a whiteout ``.wh.<name>``;
a path in both is *modified* when its type, mode, owner, size, mtime, link target, device
number or xattrs differ (file contents are compared only when size and mtime agree but
the mtime has no sub-second part, where a same-second rewrite could hide).  A directory
that exists in both is always descended into; its own header is written only when its
metadata changed, or when something below it changed (so the layer is self-contained).

Hard links between added files are kept as tar hard links.  The tar goes to a writer
callable (the caller compresses/hashes and streams it into the content store).
"""

from __future__ import annotations

import contextlib
import os
import stat
import tarfile
from collections.abc import Callable
from typing import BinaryIO

BLOCK = 512


class _Sink:
    """File-like object tarfile writes into, forwarding to ``write``."""

    def __init__(self, write: Callable[[bytes], None]) -> None:
        self._write = write
        self.size = 0

    def write(self, data: bytes) -> int:
        if data:
            self._write(bytes(data))
            self.size += len(data)
        return len(data)

    def tell(self) -> int:
        return self.size

    def flush(self) -> None:
        return None


def _xattrs(path: str) -> dict[str, bytes]:
    out: dict[str, bytes] = {}
    try:
        names = os.listxattr(path, follow_symlinks=False)
    except OSError:
        return out
    for name in names:
        if name.startswith("trusted.overlay."):
            continue
        with contextlib.suppress(OSError):
            out[name] = os.getxattr(path, name, follow_symlinks=False)
    return out


def _same_content(a: str, b: str) -> bool:
    with open(a, "rb") as fa, open(b, "rb") as fb:
        while True:
            x = fa.read(1 << 20)
            y = fb.read(1 << 20)
            if x != y:
                return False
            if not x:
                return True


def _modified(lpath: str, lst: os.stat_result, upath: str, ust: os.stat_result) -> bool:
    if stat.S_IFMT(lst.st_mode) != stat.S_IFMT(ust.st_mode):
        return True
    if (lst.st_mode, lst.st_uid, lst.st_gid) != (ust.st_mode, ust.st_uid, ust.st_gid):
        return True
    if stat.S_ISLNK(ust.st_mode):
        if os.readlink(lpath) != os.readlink(upath):
            return True
    elif (stat.S_ISCHR(ust.st_mode) or stat.S_ISBLK(ust.st_mode)) and lst.st_rdev != ust.st_rdev:
        return True
    if _xattrs(lpath) != _xattrs(upath):
        return True
    if stat.S_ISDIR(ust.st_mode):
        return False
    if lst.st_size != ust.st_size or lst.st_mtime_ns != ust.st_mtime_ns:
        return True
    if stat.S_ISREG(ust.st_mode) and ust.st_mtime_ns % 1_000_000_000 == 0:
        return not _same_content(lpath, upath)
    return False


class _TarWriter:
    def __init__(self, fileobj: BinaryIO) -> None:
        self.tar = tarfile.open(  # noqa: SIM115 - closed by close()
            fileobj=fileobj, mode="w|", format=tarfile.PAX_FORMAT, encoding="utf-8"
        )
        self._inodes: dict[tuple[int, int], str] = {}
        self._written_dirs: set[str] = set()

    def add(self, rel: str, path: str, st: os.stat_result) -> None:
        ti = tarfile.TarInfo(rel)
        ti.mode = stat.S_IMODE(st.st_mode)
        ti.uid, ti.gid = st.st_uid, st.st_gid
        ti.mtime = st.st_mtime_ns / 1e9 if st.st_mtime_ns % 1_000_000_000 else st.st_mtime_ns // 1_000_000_000
        fmt = stat.S_IFMT(st.st_mode)
        data: BinaryIO | None = None
        if fmt == stat.S_IFREG:
            key = (st.st_dev, st.st_ino)
            if st.st_nlink > 1 and key in self._inodes:
                ti.type = tarfile.LNKTYPE
                ti.linkname = self._inodes[key]
            else:
                if st.st_nlink > 1:
                    self._inodes[key] = rel
                ti.type = tarfile.REGTYPE
                ti.size = st.st_size
                data = open(path, "rb")  # noqa: SIM115 - closed below
        elif fmt == stat.S_IFDIR:
            ti.type = tarfile.DIRTYPE
            self._written_dirs.add(rel)
        elif fmt == stat.S_IFLNK:
            ti.type = tarfile.SYMTYPE
            ti.linkname = os.readlink(path)
        elif fmt == stat.S_IFCHR or fmt == stat.S_IFBLK:
            ti.type = tarfile.CHRTYPE if fmt == stat.S_IFCHR else tarfile.BLKTYPE
            ti.devmajor, ti.devminor = os.major(st.st_rdev), os.minor(st.st_rdev)
        elif fmt == stat.S_IFIFO:
            ti.type = tarfile.FIFOTYPE
        else:
            return  # sockets are not archived
        xattrs = _xattrs(path)
        if xattrs:
            ti.pax_headers = {"SCHILY.xattr." + k: v.decode("utf-8", "surrogateescape") for k, v in xattrs.items()}
        try:
            self.tar.addfile(ti, data)
        finally:
            if data is not None:
                data.close()

    def whiteout(self, rel: str) -> None:
        d, base = os.path.split(rel)
        ti = tarfile.TarInfo(os.path.join(d, ".wh." + base))
        ti.type = tarfile.REGTYPE
        ti.mode = 0  # as containerd writes them
        self.tar.addfile(ti)

    def close(self) -> None:
        self.tar.close()


def _entries(path: str) -> dict[str, os.stat_result]:
    try:
        with os.scandir(path) as it:
            return {e.name: e.stat(follow_symlinks=False) for e in it}
    except (FileNotFoundError, NotADirectoryError):
        return {}


class _Walker:
    def __init__(self, lower: str, upper: str, tw: _TarWriter) -> None:
        self.lower, self.upper, self.tw = lower, upper, tw

    def _ensure_parents(self, pending: list[tuple[str, str, os.stat_result]]) -> None:
        for rel, path, st in pending:
            if rel not in self.tw._written_dirs:
                self.tw.add(rel, path, st)
        pending.clear()

    def add_tree(self, rel: str, path: str, st: os.stat_result) -> None:
        self.tw.add(rel, path, st)
        if stat.S_ISDIR(st.st_mode):
            for name, cst in sorted(_entries(path).items()):
                self.add_tree(f"{rel}/{name}", f"{path}/{name}", cst)

    def walk(self, rel: str, pending: list[tuple[str, str, os.stat_result]]) -> None:
        lpath = self.lower + ("/" + rel if rel else "")
        upath = self.upper + ("/" + rel if rel else "")
        lents = _entries(lpath)
        uents = _entries(upath)
        for name in sorted(set(lents) | set(uents)):
            crel = f"{rel}/{name}" if rel else name
            lst, ust = lents.get(name), uents.get(name)
            cl, cu = f"{lpath}/{name}", f"{upath}/{name}"
            if ust is None:
                self._ensure_parents(pending)
                self.tw.whiteout(crel)
                continue
            if lst is None or stat.S_IFMT(lst.st_mode) != stat.S_IFMT(ust.st_mode):
                # new, or of another type (the entry replaces the old one whole)
                self._ensure_parents(pending)
                self.add_tree(crel, cu, ust)
                continue
            if stat.S_ISDIR(ust.st_mode):
                if _modified(cl, lst, cu, ust):
                    self._ensure_parents(pending)
                    self.tw.add(crel, cu, ust)
                    self.walk(crel, pending)
                else:
                    pending.append((crel, cu, ust))
                    self.walk(crel, pending)
                    if pending and pending[-1][0] == crel:
                        pending.pop()
                continue
            if _modified(cl, lst, cu, ust):
                self._ensure_parents(pending)
                self.tw.add(crel, cu, ust)


def write_diff(lower: str, upper: str, write: Callable[[bytes], None]) -> int:
    """Write the tar of changes lower → upper through ``write``; returns the tar size."""
    sink = _Sink(write)
    tw = _TarWriter(sink)  # type: ignore[arg-type]
    _Walker(lower, upper, tw).walk("", [])
    tw.close()
    return sink.size
