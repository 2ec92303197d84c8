"""Mounts: the ``Mount`` record snapshotters hand out, and doing/undoing it on Linux.

A ``Mount`` is what containerd's ``mount.Mount`` is: ``type``, ``source`` and a list of
``options`` in mount(8) syntax (``ro``, ``rbind``, ``lowerdir=...``).  ``mount_all`` turns
the options into mount(2) flags plus a data string, and mounts one after the other on the
same target (later mounts stack on top).  Everything here is blocking and meant to run in
a worker thread; the ``*_async`` helpers do that for callers on the event loop.

``core`` mounts and unmounts (the daemon's and the shim's one implementation); ``mount``
adds what only the daemon needs (async helpers, temporary mounts, mountinfo).  The names
below are loaded on first use, so that the shim, which imports ``pycontainerd.mount.core``
in every process, does not pay for ``mount.mount``'s asyncio and tempfile.

Deep overlay chains: the kernel copies the data string of mount(2) into one page, so a
``lowerdir=`` list of 50+ absolute paths may not fit.  containerd compacts the option
(relative paths under the longest common directory) and mounts from a child that chdir-ed
there.  We first use the new mount API (fsopen/fsconfig), passing each lower directory
with its own ``lowerdir+`` call (Linux >= 6.8), which has no total length limit; on older
kernels we do containerd's trick in a short-lived helper process (chdir is process-wide,
so it must not happen in a thread of the daemon).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .mount import (
        Mount,
        MountInfo,
        lookup,
        mount_all,
        mount_all_async,
        parse_options,
        read_only,
        temp_mount,
        temp_mount_async,
        unmount,
        unmount_all,
        unmount_all_async,
        with_temp_mount,
    )

__all__ = [
    "Mount",
    "MountInfo",
    "lookup",
    "mount_all",
    "mount_all_async",
    "parse_options",
    "read_only",
    "temp_mount",
    "temp_mount_async",
    "unmount",
    "unmount_all",
    "unmount_all_async",
    "with_temp_mount",
]


def __getattr__(name: str) -> Any:
    if name in __all__:
        return getattr(importlib.import_module(".mount", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
