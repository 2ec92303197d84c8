"""The overlayfs snapshotter (plugin ``io.containerd.snapshotter.v1`` id ``overlayfs``).

Each snapshot is ``snapshots/<id>/fs`` (the overlay upper dir, and once committed a lower
dir of its children) plus ``snapshots/<id>/work`` for active ones.  Mounts, as containerd
hands them out:

- no parent: a bind mount of the snapshot's own ``fs`` (``rw`` or ``ro`` for a view);
- a view of exactly one committed layer: a read-only bind of that layer's ``fs``;
- otherwise ``overlay`` with ``lowerdir=<parent fs>:<grandparent fs>:...`` (nearest first)
  and for an active snapshot ``upperdir``/``workdir``; ``index=off`` when the kernel has
  the parameter (so layers can be shared by several overlays).

Numeric ids keep each lower dir around 70 bytes; a chain longer than a page of options is
still mountable because ``pycontainerd.mount`` passes the lower dirs one by one.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from .. import errdefs, fsmodes
from ..mount import Mount, mount_all, unmount_all
from ..plugin import InitContext, Registration, SkipPlugin, types
from .base import DirSnapshotter
from .interfaces import Kind
from .storage import Snapshot


def overlay_supported(root: str | os.PathLike[str]) -> None:
    """Raise SkipPlugin unless an overlay with two lower dirs mounts under ``root``."""
    if "overlay" not in {line.split()[-1] for line in Path("/proc/filesystems").read_text().splitlines() if line}:
        raise SkipPlugin("overlayfs is not supported by the kernel (no 'overlay' in /proc/filesystems)")
    fsmodes.private_dir(root)
    td = tempfile.mkdtemp(prefix="overlay-check-", dir=root)
    try:
        for d in ("lower1", "lower2", "upper", "work", "merged"):
            os.mkdir(os.path.join(td, d))
        opts = [f"lowerdir={td}/lower2:{td}/lower1", f"upperdir={td}/upper", f"workdir={td}/work"]
        try:
            mount_all([Mount("overlay", "overlay", opts)], os.path.join(td, "merged"))
        except errdefs.ContainerdError as exc:
            raise SkipPlugin(f"overlayfs does not work on the filesystem of {root}: {exc}") from exc
        unmount_all(os.path.join(td, "merged"))
    finally:
        shutil.rmtree(td, ignore_errors=True)


class OverlaySnapshotter(DirSnapshotter):
    name = "overlayfs"

    def __init__(self, root: str | os.PathLike[str], options: list[str] | None = None) -> None:
        super().__init__(root)
        if options is None:
            options = ["index=off"] if os.path.exists("/sys/module/overlay/parameters/index") else []
        self.options = options

    def upper(self, sid: str) -> Path:
        return self._dir(sid) / "fs"

    def work(self, sid: str) -> Path:
        return self._dir(sid) / "work"

    def _usage_path(self, sid: str) -> Path:
        return self.upper(sid)

    def _populate(self, td: Path, snap: Snapshot) -> None:
        fs = td / "fs"
        fs.mkdir(mode=0o755)
        os.chmod(fs, 0o755)
        if snap.kind == Kind.ACTIVE:
            (td / "work").mkdir(mode=0o711)
        if snap.parent_ids:
            st = os.stat(self.upper(snap.parent_ids[0]))
            os.lchown(fs, st.st_uid, st.st_gid)

    def _mounts(self, snap: Snapshot) -> list[Mount]:
        if not snap.parent_ids:
            ro = "ro" if snap.kind == Kind.VIEW else "rw"
            return [Mount("bind", str(self.upper(snap.id)), [ro, "rbind"])]
        options = list(self.options)
        if snap.kind == Kind.ACTIVE:
            options += [f"workdir={self.work(snap.id)}", f"upperdir={self.upper(snap.id)}"]
        elif len(snap.parent_ids) == 1:
            return [Mount("bind", str(self.upper(snap.parent_ids[0])), ["ro", "rbind"])]
        options.append("lowerdir=" + ":".join(str(self.upper(p)) for p in snap.parent_ids))
        return [Mount("overlay", "overlay", options)]


async def _init(ctx: InitContext) -> Any:
    import asyncio

    root = ctx.config.get("root_path") or ctx.root
    await asyncio.to_thread(overlay_supported, root)
    return await asyncio.to_thread(OverlaySnapshotter, root)


REGISTRATION = Registration(type=types.SNAPSHOT, id="overlayfs", init=_init)
