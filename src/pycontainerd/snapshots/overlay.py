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

Configuration (``[plugins."io.containerd.snapshotter.v1.overlayfs"]``, ``OverlayfsConfig``):
``root_path`` moves the snapshots; ``mount_options`` are appended to every overlay mount
(not to the bind mounts, as containerd); ``upperdir_label`` adds
``containerd.io/snapshot/overlay.upperdir`` (the snapshot's upper dir) to the Info that
``Stat``/``Update``/``Walk`` report; ``sync_remove`` deletes a removed snapshot's directory
in ``Remove`` instead of leaving it to the next ``Cleanup`` (the GC's); ``slow_chown`` is
refused when the config is loaded (no id-mapped snapshots here).
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from .. import errdefs, fsmodes
from ..config import OverlayfsConfig
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
    td = fsmodes.temp_dir(root, "overlay-check-")
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
        _remove_tree(td)


def _remove_tree(path: str) -> None:
    """``shutil.rmtree(path, ignore_errors=True)`` for the check's few directories, without
    importing shutil at start-up (it imports bz2 and lzma: W6, idle PSS)."""
    for dirpath, dirnames, filenames in os.walk(path, topdown=False):
        for name in filenames:
            with contextlib.suppress(OSError):
                os.unlink(os.path.join(dirpath, name))
        for name in dirnames:
            with contextlib.suppress(OSError):
                os.rmdir(os.path.join(dirpath, name))
    with contextlib.suppress(OSError):
        os.rmdir(path)


UPPERDIR_LABEL = "containerd.io/snapshot/overlay.upperdir"


class OverlaySnapshotter(DirSnapshotter):
    name = "overlayfs"

    def __init__(
        self,
        root: str | os.PathLike[str],
        options: list[str] | None = None,
        *,
        mount_options: tuple[str, ...] = (),
        upperdir_label: bool = False,
        sync_remove: bool = True,
    ) -> None:
        super().__init__(root, sync_remove=sync_remove)
        if options is None:
            options = ["index=off"] if os.path.exists("/sys/module/overlay/parameters/index") else []
        self.options = options
        self.mount_options = list(mount_options)
        self.upperdir_label = upperdir_label

    def _extra_labels(self, sid: str) -> dict[str, str]:
        return {UPPERDIR_LABEL: str(self.upper(sid))} if self.upperdir_label else {}

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
        return [Mount("overlay", "overlay", options + self.mount_options)]


async def _init(ctx: InitContext) -> OverlaySnapshotter:
    import asyncio

    cfg = ctx.typed_config(OverlayfsConfig)
    root = cfg.root_path or ctx.root
    await asyncio.to_thread(overlay_supported, root)
    return await asyncio.to_thread(
        lambda: OverlaySnapshotter(
            root,
            mount_options=cfg.mount_options,
            upperdir_label=cfg.upperdir_label,
            sync_remove=cfg.sync_remove,
        )
    )


REGISTRATION = Registration(type=types.SNAPSHOT, id="overlayfs", init=_init, config=OverlayfsConfig)
