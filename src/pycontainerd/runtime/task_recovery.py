"""Dead shims, tear-down and restart recovery: the task manager's clean-up seam.

``TaskRecovery`` is owned by ``task_manager.TaskManager`` and does what follows a shim's
life rather than a request's:

- a shim that disappears (its event stream ends while the task is listed) leaves a
  *tombstone* (``shim_gone``/``tombstone``): the task's bundle is cleaned up — the shim
  binary's ``delete`` (external runtimes) or the fork server's cleanup, else ``runc delete
  --force`` here — and the task stays listed as STOPPED with its last known exit (255 when
  unknown), published as ``/tasks/exit`` when the shim never sent one;
- the part of ``delete`` that happens around and after its reply: the bundle renamed away
  (its rootfs unmounted first when the manager mounted it, ``move_bundle``), then, in the
  background, the shim's shutdown, a ``runc delete --force`` if the shim died before its own,
  and the bundle's files removed (``finish_delete``);
- ``restore`` at daemon start-up: leftovers of deleted bundles removed, every bundle scanned,
  live shims reconnected (their tasks listed again), dead ones tombstoned or, for tasks that
  never completed their create or whose container record is gone, killed and cleaned up;
  then kept logs of containers deleted while the daemon was down are removed.

It reads the manager's public settings (``ManagerSettings``, at each use: they may be
replaced after construction) and reaches the manager's task table, event pumps and kept logs
only through ``ManagerHooks``; the records it handles are ``task_record.TaskRecord``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import subprocess
import time
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from .. import errdefs, timestamps
from ..events import Exchange
from ..metadata.containers import ContainerStore
from ..threads import run_process
from . import bundle as bundlemod
from .task_record import TaskRecord
from .task_types import Exit, RuntimeDefaults

if TYPE_CHECKING:
    from .shim_api import ExitLike, ExternalShims, Shim, ShimLauncher  # protocols, for annotations only (W6, idle PSS)

log = logging.getLogger("pycontainerd.runtime")

UNKNOWN_EXIT = 255


class ManagerSettings(Protocol):
    """The task manager's public settings recovery reads (the manager itself provides them)."""

    @property
    def root(self) -> Path: ...
    @property
    def shim_state(self) -> Path: ...
    @property
    def defaults(self) -> RuntimeDefaults: ...
    @property
    def launcher(self) -> ShimLauncher: ...
    @property
    def external(self) -> ExternalShims | None: ...
    @property
    def containers(self) -> ContainerStore: ...
    @property
    def exchange(self) -> Exchange: ...
    @property
    def log_dir(self) -> Path | None: ...


class ManagerHooks(Protocol):
    """What recovery asks of the manager's own state: its task table, its shims' event pumps
    and its kept logs."""

    def is_listed(self, t: TaskRecord) -> bool:
        """Whether ``t`` is the task the manager lists under its namespace and id."""
        ...

    def add(self, t: TaskRecord, *, events: bool) -> None:
        """List ``t`` (restored, or tombstoned); ``events``: forward its shim's events too."""
        ...

    async def stop_events(self, t: TaskRecord) -> None:
        """Stop forwarding the events of ``t``'s shim."""
        ...

    async def remove_log(self, namespace: str, container_id: str) -> None:
        """Remove the kept log of a container that no longer exists."""
        ...


def _now() -> int:
    return time.time_ns()


def _runc_children(pid: int) -> list[int]:
    """Children of ``pid`` that are a ``runc`` command (not a container's ``runc init``)."""
    out = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return []
    for tid in tasks:
        try:
            with open(f"/proc/{pid}/task/{tid}/children") as f:
                kids = [int(x) for x in f.read().split()]
        except (OSError, ValueError):
            continue
        for kid in kids:
            try:
                with open(f"/proc/{kid}/comm") as f:
                    if f.read().strip() == "runc":
                        out.append(kid)
            except OSError:
                continue
    return out


def _wait_no_runc_child(pid: int, timeout: float) -> None:
    """Blocking: wait (at most ``timeout``) until shim ``pid`` runs no ``runc`` command."""
    deadline = time.monotonic() + timeout
    while _runc_children(pid) and time.monotonic() < deadline:
        time.sleep(0.02)


async def discard_shim(shim: Shim | None) -> None:
    """Delete, shut down and disconnect a shim whose task is not kept (errors ignored)."""
    if shim is None:
        return
    with contextlib.suppress(Exception):
        await shim.delete("")
    with contextlib.suppress(Exception):
        await shim.shutdown()
    with contextlib.suppress(Exception):
        await shim.close()


async def runc_force_delete(meta: bundlemod.BundleMeta) -> None:
    """``runc delete --force`` of the bundle's container (with its runc binary and root)."""
    import shutil  # at first use: shutil imports bz2 and lzma (W6, idle PSS)

    binary = shutil.which(meta.binary_name or "runc")
    if not binary:
        return
    args = [binary]
    if meta.runtime_root:
        args += ["--root", meta.runtime_root]
    args += ["delete", "--force", meta.id]
    try:
        done = await run_process(args, limit=30)  # off the loop, no descriptor of ours inherited
        if done.returncode != 0 and b"not exist" not in done.stderr:
            log.warning("runc delete --force %s: %s", meta.id, done.stderr.decode(errors="replace").strip())
    except (OSError, subprocess.TimeoutExpired) as exc:
        log.warning("runc delete --force %s: %s", meta.id, exc)


def cleanup_bundle_sync(path: Path, meta: bundlemod.BundleMeta) -> None:
    """Blocking: remove a bundle in place (its rootfs unmounted)."""
    del meta
    bundlemod.remove(path)


def _unmount_and_trash(path: Path) -> Path | None:
    try:
        bundlemod.unmount_rootfs(path)
    except Exception as exc:  # the bundle's removal tries again
        log.warning("unmounting the rootfs of bundle %s: %s", path, exc)
    return bundlemod.move_to_trash(path)


class TaskRecovery:
    """Tombstones for dead shims, the tail of a delete, and the restore at start-up."""

    def __init__(self, settings: ManagerSettings, hooks: ManagerHooks) -> None:
        self._settings = settings
        self._hooks = hooks

    # -- dead shims --------------------------------------------------------------------------------
    async def shim_gone(self, t: TaskRecord) -> None:
        """The shim of a live task disappeared: clean up and leave a tombstone."""
        async with t.lock:
            if t.shim is None or not self._hooks.is_listed(t) or t.deleting:
                return
            log.warning("shim of task %s/%s is gone; cleaning up", t.namespace, t.id)
            shim, t.shim = t.shim, None
            with contextlib.suppress(Exception):
                await shim.close()
            await self.tombstone(t)

    async def tombstone(self, t: TaskRecord) -> None:
        recorded = await self.cleanup_dead(t.bundle, t.meta)
        exit_ = t.last_exit or recorded
        t.tombstone = exit_
        t.dead.set()
        if t.last_exit is None:
            self._settings.exchange.publish(
                t.namespace,
                "/tasks/exit",
                {
                    "container_id": t.id,
                    "id": t.id,
                    "pid": exit_.pid,
                    "exit_status": exit_.exit_status,
                    "exited_at": timestamps.format_ns(exit_.exited_at_ns),
                },
            )

    async def cleanup_dead(self, path: Path, meta: bundlemod.BundleMeta) -> Exit:
        """A task whose shim is gone: runc delete --force, unmount, remove the bundle.

        Returns the exit the shim recorded in the bundle, else 255 (unknown) now."""
        exit_ = Exit(meta.pid, UNKNOWN_EXIT, _now())
        try:
            e: ExitLike
            external = self._settings.external
            if self._is_external(meta):
                assert external is not None
                e = await external.cleanup(namespace=meta.namespace, container_id=meta.id, bundle=path)
            else:
                e = await self._settings.launcher.cleanup(
                    namespace=meta.namespace,
                    container_id=meta.id,
                    bundle=path,
                    runtime_binary=meta.binary_name or "runc",
                    runtime_root=meta.runtime_root or None,
                )
            exit_ = Exit(e.pid or meta.pid, e.exit_status, e.exited_at_ns or _now())
        except Exception as exc:
            log.warning("cleanup of task %s/%s through the shim binary failed: %s", meta.namespace, meta.id, exc)
            await runc_force_delete(meta)
        try:
            await asyncio.to_thread(cleanup_bundle_sync, path, meta)
        except Exception as exc:
            log.warning("removing bundle %s: %s", path, exc)
        return exit_

    def _is_external(self, meta: bundlemod.BundleMeta) -> bool:
        """Whether the task's shim is an external runtime v2 binary (recorded at create)."""
        return self._settings.external is not None and bool(meta.extra.get("shim_binary"))

    # -- the tail of a delete ----------------------------------------------------------------------
    async def move_bundle(self, path: Path, meta: bundlemod.BundleMeta, *, unmount: bool = False) -> Path | None:
        """Delete's last step before the reply: the bundle is renamed away (one rename: the id
        is free at once, and a daemon restart will not mistake it for a task); its files are
        removed afterwards, off the request's path (``finish_delete``).  ``unmount``: its
        rootfs is unmounted first, in the same worker-thread hop."""
        try:
            return await asyncio.to_thread(_unmount_and_trash if unmount else bundlemod.move_to_trash, path)
        except Exception as exc:
            log.warning("moving bundle %s away: %s; removing it in place", path, exc)
            await asyncio.to_thread(cleanup_bundle_sync, path, meta)
            return None

    async def finish_delete(self, t: TaskRecord, trash: Path | None) -> None:
        """After Delete answered: let the shim finish (it exits once ``runc delete`` is done),
        disconnect, and remove the bundle's files."""
        try:
            if t.shim is not None:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(t.shim.shutdown(), 60)
                await self._hooks.stop_events(t)
                with contextlib.suppress(Exception):
                    await t.shim.close()
            left: bool = bool(t.meta.runtime_root) and await asyncio.to_thread(Path(t.meta.runtime_root, t.id).is_dir)
            if left:
                # the shim died between Delete's reply and its deferred ``runc delete``: runc's state
                # would make the next create of this id fail ("container with given ID already exists")
                await runc_force_delete(t.meta)
            if trash is not None:
                await asyncio.to_thread(bundlemod.remove, trash)
        except Exception as exc:
            log.warning("finishing the deletion of task %s/%s: %s", t.namespace, t.id, exc)

    # -- restart recovery --------------------------------------------------------------------------
    async def restore(self) -> None:
        """Reconnect to the shims of tasks that survived a daemon restart."""
        root = self._settings.root
        try:
            await asyncio.to_thread(bundlemod.clean_trash, root)
        except Exception as exc:
            log.warning("removing leftovers of deleted bundles under %s: %s", root, exc)
        found = await asyncio.to_thread(lambda: list(bundlemod.scan(root)))
        await asyncio.gather(*(self._restore_one(ns, cid, path) for ns, cid, path in found))
        await self._sweep_kept_logs()

    async def _sweep_kept_logs(self) -> None:
        """Kept logs of containers deleted while the daemon was down (their delete event never came)."""
        log_dir = self._settings.log_dir
        if log_dir is None:
            return

        def listing() -> list[tuple[str, str]]:
            out: list[tuple[str, str]] = []
            with contextlib.suppress(FileNotFoundError, NotADirectoryError):
                for ns in os.scandir(log_dir):
                    if ns.is_dir(follow_symlinks=False):
                        out += [(ns.name, f.name[: -len(".log")]) for f in os.scandir(ns.path)
                                if f.name.endswith(".log") and f.is_file(follow_symlinks=False)]
            return out

        for namespace, container_id in await asyncio.to_thread(listing):
            await self._hooks.remove_log(namespace, container_id)

    async def _restore_one(self, namespace: str, container_id: str, path: Path) -> None:
        settings = self._settings
        meta = await asyncio.to_thread(bundlemod.read_meta, path)
        if meta is None:
            spec = await asyncio.to_thread(bundlemod.read_spec, path)
            meta = bundlemod.BundleMeta(
                namespace=namespace,
                id=container_id,
                runtime_name="io.containerd.runc.v2",
                binary_name=settings.defaults.binary_name,
                runtime_root=os.path.join(settings.defaults.root or str(settings.shim_state / "runc"), namespace),
                cgroups_path=bundlemod.cgroups_path_of(spec),
            )
        t = TaskRecord(namespace, container_id, path, meta, None, started_at_ns=meta.started_at_ns)
        try:
            external = settings.external
            if self._is_external(meta):
                assert external is not None
                shim = await external.connect(path)
            else:
                shim = await settings.launcher.connect(path)
        except Exception as exc:
            log.info("task %s/%s: shim is gone (%s); cleaning up", namespace, container_id, exc)
            if meta.pid == 0 or not await self._container_exists(namespace, container_id):
                # never got past create, or deleted (a Delete finishing when the daemon
                # stopped): nothing to report, just clean up
                await self.cleanup_dead(path, meta)
                return
            self._hooks.add(t, events=False)
            await self.tombstone(t)
            return
        t.shim = shim
        if meta.pid == 0:
            # the daemon died between launching the shim and recording the create's answer: the
            # create was never acknowledged, so there is no task — stop whatever the shim got to
            # start and clean up, or the id stays taken by a task nobody can see (a "ghost")
            log.info("task %s/%s: create never completed; removing what it left", namespace, container_id)
            # the shim may still be running `runc create` for the lost request: let it finish, so
            # the container it makes is killed and deleted below instead of appearing afterwards
            await asyncio.to_thread(_wait_no_runc_child, shim.pid, 10.0)
            with contextlib.suppress(Exception):
                await shim.kill("", 9, True)
            await discard_shim(shim)
            await self.cleanup_dead(path, meta)
            return
        try:
            await settings.containers.get(namespace, container_id)
        except errdefs.NotFound:
            log.warning("task %s/%s has no container record; killing it", namespace, container_id)
            with contextlib.suppress(Exception):
                await shim.kill("", 9, True)
            with contextlib.suppress(Exception):
                await asyncio.wait_for(shim.wait(""), 10)
            await discard_shim(shim)
            with contextlib.suppress(Exception):
                await asyncio.to_thread(cleanup_bundle_sync, path, meta)
            return
        self._hooks.add(t, events=True)
        log.info("restored task %s/%s (shim pid %d)", namespace, container_id, shim.pid)

    async def _container_exists(self, namespace: str, container_id: str) -> bool:
        try:
            await self._settings.containers.get(namespace, container_id)
        except errdefs.NotFound:
            return False
        except Exception:
            return True  # when in doubt, keep the tombstone
        return True
