"""The native snapshotter (plugin ``io.containerd.snapshotter.v1`` id ``native``).

No kernel help: a snapshot with a parent starts as a full copy of the parent's directory
(``cp -a``, which keeps owners, modes, hard links, devices, xattrs and times), and every
mount is a bind mount of the snapshot's own directory (``ro`` for views).  Slow and
space-hungry, but it works on any filesystem, and whiteouts are plain deletions.

Configuration (``[plugins."io.containerd.snapshotter.v1.native"]``): ``root_path``, where
the snapshots live (default: the plugin's root directory), as containerd's.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

from .. import errdefs
from ..mount import Mount
from ..plugin import InitContext, Registration, types
from .base import DirSnapshotter
from .interfaces import Kind
from .storage import Snapshot


def copy_tree(src: Path, dst: Path) -> None:
    """Copy the contents of ``src`` into the existing directory ``dst``, preserving everything."""
    proc = subprocess.run(
        ["cp", "-a", "--reflink=auto", "--", f"{src}/.", f"{dst}/"],
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        raise errdefs.Unknown(f"copy snapshot {src} to {dst}: {proc.stderr.strip()}")


class NativeSnapshotter(DirSnapshotter):
    name = "native"

    def _populate(self, td: Path, snap: Snapshot) -> None:
        os.chmod(td, 0o755)
        if snap.parent_ids:
            copy_tree(self._dir(snap.parent_ids[0]), td)

    def _mounts(self, snap: Snapshot) -> list[Mount]:
        ro = "ro" if snap.kind == Kind.VIEW else "rw"
        return [Mount("bind", str(self._dir(snap.id)), [ro, "rbind"])]


@dataclass(frozen=True)
class NativeConfig:
    """``[plugins."io.containerd.snapshotter.v1.native"]``."""

    root_path: str = ""


async def _init(ctx: InitContext) -> NativeSnapshotter:
    cfg = ctx.typed_config(NativeConfig)
    return await asyncio.to_thread(NativeSnapshotter, cfg.root_path or ctx.root)


REGISTRATION = Registration(type=types.SNAPSHOT, id="native", init=_init, config=NativeConfig)
