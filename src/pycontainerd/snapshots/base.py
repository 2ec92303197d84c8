"""What the directory-backed snapshotters (overlay, native) share.

Layout under the plugin root (as containerd's): ``metadata.db`` (``storage.MetaStore``) and
``snapshots/<id>/`` per snapshot.  A new snapshot is built in ``snapshots/new-XXXX`` and
renamed to its id inside the metadata transaction, so a crash leaves either nothing or a
complete snapshot; a removed one is renamed to ``snapshots/rm-<id>`` in the transaction and
deleted after it (``sync_remove``) or left for the next ``cleanup`` (which the garbage
collector runs after each collection: containerd's asynchronous removal, the overlay
snapshotter's default).  ``cleanup`` deletes any directory under ``snapshots/`` whose id has no
record (crash leftovers: ``new-*``, ``rm-*``, or an id a rolled-back transaction gave out),
except the ``rm-*`` directories a ``remove`` (or another ``cleanup``) is deleting right now.
The GC runs it at start-up, before anything is served, so a reused id never meets a
leftover directory.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import dataclasses
import logging
import os
import threading
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

from .. import errdefs, fsmodes
from ..mount import Mount
from .interfaces import Info, Kind, Usage, info_field
from .storage import MetaStore, Snapshot

log = logging.getLogger("pycontainerd.snapshots")

T = TypeVar("T")


def disk_usage(path: str | os.PathLike[str]) -> Usage:
    """Blocks and inodes under ``path``, each inode counted once (like continuity's DiskUsage)."""
    seen: set[tuple[int, int]] = set()
    usage = Usage()

    def account(st: os.stat_result) -> None:
        ident = (st.st_dev, st.st_ino)
        if ident in seen:
            return
        seen.add(ident)
        usage.inodes += 1
        usage.size += st.st_blocks * 512

    try:
        account(os.lstat(path))
    except FileNotFoundError:
        return usage
    stack = [os.fspath(path)]
    while stack:
        d = stack.pop()
        try:
            it = os.scandir(d)
        except FileNotFoundError:
            continue
        with it:
            for e in it:
                st = e.stat(follow_symlinks=False)
                account(st)
                if e.is_dir(follow_symlinks=False):
                    stack.append(e.path)
    return usage


def match_filters(filters: Sequence[str]) -> Callable[[Info], bool]:
    if not [f for f in filters if f]:
        return lambda _info: True
    from .. import filters as filtermod

    flt = filtermod.parse_all(list(filters))
    return lambda info: bool(flt.match(lambda path: info_field(info, path)))


class DirSnapshotter:
    """Base of overlay and native: records in ``MetaStore``, one directory per snapshot."""

    name = "base"

    def __init__(self, root: str | os.PathLike[str], *, sync_remove: bool = True) -> None:
        self.root = Path(root)
        self.sync_remove = sync_remove
        self.snapshots_dir = self.root / "snapshots"
        # root only, also when an older version made them 0755 (CVE-2021-41103): snapshot
        # contents are image and container files (setuid binaries, secrets)
        fsmodes.private_dir(self.root)
        fsmodes.private_dir(self.snapshots_dir)
        self.ms = MetaStore(self.root / "metadata.db")
        # ``rm-<id>`` directories a ``remove`` is deleting right now (cleanup leaves them alone)
        self._removing: set[str] = set()
        self._removing_lock = threading.Lock()

    # -- hooks ------------------------------------------------------------------------------
    def _dir(self, sid: str) -> Path:
        return self.snapshots_dir / sid

    def _populate(self, td: Path, snap: Snapshot) -> None:
        """Fill the new snapshot directory ``td`` (not yet renamed to its id)."""
        raise NotImplementedError

    def _mounts(self, snap: Snapshot) -> list[Mount]:
        raise NotImplementedError

    def _usage_path(self, sid: str) -> Path:
        return self._dir(sid)

    def _extra_labels(self, sid: str) -> dict[str, str]:
        """Labels the snapshotter adds to the Info it reports (not stored)."""
        return {}

    def _labelled(self, sid: str, info: Info) -> Info:
        extra = self._extra_labels(sid)
        if not extra:
            return info
        return dataclasses.replace(info, labels={**info.labels, **extra})

    # -- async API (each call runs in a worker thread) -----------------------------------------
    async def _run(self, fn: Callable[..., T], *args: object) -> T:
        return await asyncio.to_thread(fn, *args)

    async def stat(self, key: str) -> Info:
        return await self._run(self._stat, key)

    async def update(self, info: Info, fieldpaths: Sequence[str] = ()) -> Info:
        return await self._run(self._update, info, tuple(fieldpaths))

    async def usage(self, key: str) -> Usage:
        return await self._run(self._usage, key)

    async def mounts(self, key: str) -> builtins.list[Mount]:
        return await self._run(self._mounts_of, key)

    async def prepare(
        self, key: str, parent: str = "", labels: Mapping[str, str] | None = None
    ) -> builtins.list[Mount]:
        return await self._run(self._create, Kind.ACTIVE, key, parent, dict(labels or {}))

    async def view(self, key: str, parent: str = "", labels: Mapping[str, str] | None = None) -> builtins.list[Mount]:
        return await self._run(self._create, Kind.VIEW, key, parent, dict(labels or {}))

    async def commit(self, name: str, key: str, labels: Mapping[str, str] | None = None) -> None:
        await self._run(self._commit, name, key, dict(labels or {}))

    async def remove(self, key: str) -> None:
        await self._run(self._remove, key)

    async def walk(self, filters: Sequence[str] = ()) -> builtins.list[Info]:
        match = match_filters(filters)
        infos = await self._run(self._walk)
        return [i for i in infos if match(i)]

    async def cleanup(self) -> None:
        await self._run(self._cleanup)

    async def close(self) -> None:
        await self._run(self.ms.close)

    # -- blocking implementations ---------------------------------------------------------------
    def _stat(self, key: str) -> Info:
        with self.ms.transaction() as tx:
            sid, info, _usage = tx.info(key)
        return self._labelled(sid, info)

    def _update(self, info: Info, fieldpaths: tuple[str, ...]) -> Info:
        with self.ms.transaction() as tx:
            updated = tx.update(info, fieldpaths)
            sid = tx.info(updated.name)[0]
        return self._labelled(sid, updated)

    def _usage(self, key: str) -> Usage:
        with self.ms.transaction() as tx:
            sid, info, usage = tx.info(key)
        if info.kind == Kind.ACTIVE:
            return disk_usage(self._usage_path(sid))
        return usage

    def _mounts_of(self, key: str) -> list[Mount]:
        with self.ms.transaction() as tx:
            snap = tx.get(key)
        return self._mounts(snap)

    def _create(self, kind: Kind, key: str, parent: str, labels: dict[str, str]) -> list[Mount]:
        with self.ms.transaction() as tx:
            td = Path(fsmodes.temp_dir(self.snapshots_dir, "new-"))
            try:
                snap = tx.create(key, kind, parent, labels)
                self._populate(td, snap)
                try:
                    os.rename(td, self._dir(snap.id))
                except OSError as exc:
                    raise errdefs.from_oserror(exc, f"rename snapshot dir for {key}") from exc
            except BaseException:
                if td.exists():
                    import shutil  # at first use: shutil imports bz2 and lzma (W6, idle PSS)

                    shutil.rmtree(td, ignore_errors=True)
                raise
        return self._mounts(snap)

    def _commit(self, name: str, key: str, labels: dict[str, str]) -> None:
        with self.ms.transaction() as tx:
            snap = tx.get(key)
            if snap.kind != Kind.ACTIVE:
                raise errdefs.FailedPrecondition(
                    f"snapshot {key} is not active ({snap.kind}); only active snapshots can be committed"
                )
            usage = disk_usage(self._usage_path(snap.id))
            tx.commit(key, name, usage, labels)
            self._after_commit(snap)
        with contextlib.suppress(OSError):
            fd = os.open(self.snapshots_dir, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)

    def _after_commit(self, snap: Snapshot) -> None:
        return None

    def _remove(self, key: str) -> None:
        with self.ms.transaction() as tx:
            sid, _kind = tx.remove(key)
            path = self._dir(sid)
            renamed = self.snapshots_dir / f"rm-{sid}"
            try:
                os.rename(path, renamed)
            except FileNotFoundError:
                return  # nothing on disk; the record goes anyway
            except OSError as exc:
                raise errdefs.from_oserror(exc, f"remove snapshot {key}") from exc
            if not self.sync_remove:
                return  # the next cleanup deletes rm-<id>
            with self._removing_lock:
                self._removing.add(renamed.name)
        try:
            self._rmtree(renamed)
        finally:
            with self._removing_lock:
                self._removing.discard(renamed.name)

    def _rmtree(self, path: Path) -> None:
        if not path.exists():
            return

        def onerror(func: Callable[..., object], p: str, exc: tuple[type[BaseException], BaseException, Any]) -> None:
            if isinstance(exc[1], FileNotFoundError):
                return  # already gone
            log.warning("removing %s: %s", p, exc[1])

        import shutil

        shutil.rmtree(path, onerror=onerror)

    def _walk(self) -> list[Info]:
        with self.ms.transaction() as tx:
            infos = tx.walk()
            ids = {key: sid for sid, key in tx.ids().items()}
        return [self._labelled(ids[i.name], i) for i in infos]

    def _cleanup(self) -> None:
        doomed: list[Path] = []
        with self.ms.transaction() as tx:  # holds off creates and removes while we look
            ids = tx.ids()
            with self._removing_lock:
                for entry in os.scandir(self.snapshots_dir):
                    if entry.name in ids or entry.name in self._removing:
                        continue
                    path = Path(entry.path)
                    if not entry.is_dir(follow_symlinks=False):
                        with contextlib.suppress(OSError):
                            os.unlink(path)
                        continue
                    if not entry.name.startswith("rm-"):
                        target = Path(fsmodes.temp_dir(self.snapshots_dir, f"rm-{entry.name}-"))
                        try:
                            os.rename(path, target)  # onto the fresh empty dir: atomic replace
                            path = target
                        except OSError as exc:
                            log.warning("cleanup: cannot rename %s: %s", path, exc)
                            os.rmdir(target)
                            continue
                    self._removing.add(path.name)
                    doomed.append(path)
        try:
            for path in doomed:
                log.info("%s snapshotter: removing unreferenced %s", self.name, path)
                self._rmtree(path)
        finally:
            with self._removing_lock:
                self._removing.difference_update(p.name for p in doomed)
