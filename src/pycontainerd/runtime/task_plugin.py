"""The task manager as the daemon's plugins ``io.containerd.runtime.v2.task`` and its legacy
alias ``io.containerd.runtime.v1.linux``: the runc defaults from the daemon config, the
launchers (our fork-server shim, external runtime v2 binaries) and the registrations."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import stat
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import fsmodes
from ..metadata.containers import ContainerStore
from . import bundle as bundlemod
from .task_manager import TaskManager
from .task_types import RuntimeDefaults, Timeouts
from .v2 import binary as binarymod

if TYPE_CHECKING:
    from ..config import Config
    from .shim_api import ExitLike, ExternalShims, Shim, ShimLauncher  # protocols, for annotations only (W6, idle PSS)
    from .v2 import ShimManager

log = logging.getLogger("pycontainerd.runtime")


def defaults_from_config(daemon_config: Config) -> RuntimeDefaults:
    """RuntimeDefaults from the daemon config.

    The default CRI runtime's runc options are the defaults for every runc task:
    ``BinaryName``, ``Root``, ``SystemdCgroup`` (the config loader folds the legacy
    ``runtime_engine``/``runtime_root``/``systemd_cgroup``/``no_pivot`` into them),
    ``NoPivotRoot`` and ``NoNewKeyring`` (runc create flags) and ``IoUid``/``IoGid`` (owner of
    the stdio pipes); the loader refuses the options we cannot honour (``ShimCgroup``,
    ``Criu*``).  ``[plugins."io.containerd.runtime.v1.linux"] shim_debug`` or a debug log
    level turn shim debug logs on; its ``runtime``/``runtime_root`` are the runc binary and root
    of the tasks of runtime ``io.containerd.runtime.v1.linux`` (``ctr run --runtime ...``).
    oomScoreAdj is always restricted to the daemon's own score (runc cannot lower it here
    anyway), whatever CRI's ``restrict_oom_score_adj`` says.
    """
    opts = daemon_config.cri.default_runtime.options
    return RuntimeDefaults(
        binary_name=opts.binary_name or "runc",
        root=opts.root,
        systemd_cgroup=opts.systemd_cgroup,
        no_pivot_root=opts.no_pivot_root,
        no_new_keyring=opts.no_new_keyring,
        io_uid=opts.io_uid,
        io_gid=opts.io_gid,
        shim_debug=daemon_config.linux.shim_debug or daemon_config.debug.level == "debug",
        v1_binary_name=daemon_config.linux.runtime if daemon_config.linux.runtime != "runc" else "",
        v1_root=daemon_config.linux.runtime_root,
    )


# containerd's [timeouts] keys -> Timeouts fields (the config loader refuses any other key)
TIMEOUT_KEYS = {
    "io.containerd.timeout.shim.cleanup": "shim_cleanup",
    "io.containerd.timeout.shim.load": "shim_load",
    "io.containerd.timeout.shim.shutdown": "shim_shutdown",
    "io.containerd.timeout.task.state": "task_state",
}


def timeouts_from_config(daemon_config: Config) -> Timeouts:
    """The runtime's ``Timeouts`` from the config's ``[timeouts]`` (defaults: containerd's)."""
    values = {attr: daemon_config.timeouts[key] for key, attr in TIMEOUT_KEYS.items() if key in daemon_config.timeouts}
    return Timeouts(**values)


class RuntimeAlias:
    """``io.containerd.runtime.v1.linux``: the same task manager under its legacy plugin name."""

    def __init__(self, manager: TaskManager) -> None:
        self.manager = manager


def runtime_paths_from_config(daemon_config: Any) -> dict[str, str]:
    """Runtime names whose shim binary the config names: the default CRI runtime's
    ``runtime_path`` serves its ``runtime_type`` (so ``runtime_type = "io.containerd.runc.v2"``
    with ``runtime_path = "/usr/bin/containerd-shim-runc-v2"`` runs every runc task, ``ctr
    run`` included, on that shim instead of the daemon's own)."""
    try:
        rt = daemon_config.cri.default_runtime
    except (AttributeError, KeyError):
        return {}
    path = getattr(rt, "runtime_path", "")
    rtype = getattr(rt, "runtime_type", "")
    return {rtype: path} if path and rtype else {}


def publish_binary() -> str:
    """The daemon's own executable, which shims run as ``-publish-binary ... publish``."""
    argv0 = sys.argv[0] if sys.argv else ""
    if argv0 and os.path.basename(argv0).startswith("pycontainerd") and os.path.isfile(argv0):
        return os.path.abspath(argv0)
    import shutil  # at first use: shutil imports bz2 and lzma (W6, idle PSS)

    return shutil.which("pycontainerd") or os.path.join(os.path.dirname(sys.executable), "pycontainerd")


def external_shims(daemon: Any, defaults: RuntimeDefaults, timeouts: Timeouts | None = None) -> ShimManager:
    from .v2 import ShimManager

    return ShimManager(
        timeouts=timeouts,
        exchange=daemon.exchange,
        grpc_address=str(daemon.address),
        publish_binary=publish_binary(),
        runtime_paths=runtime_paths_from_config(daemon.config),
        self_dir=os.path.dirname(publish_binary()),
        debug=defaults.shim_debug,
        ttrpc_address=daemon.config.ttrpc.address,
        ttrpc_owner=(daemon.config.ttrpc.uid, daemon.config.ttrpc.gid),
    )


OWN_SHIM_BINARY = "containerd-shim-pyrunc-v2"


def own_shim_binary() -> str:
    """Our shim's runtime v2 binary (its ``delete`` cleans up after a dead shim): beside the
    interpreter, else beside the daemon's executable, else on PATH."""
    for directory in (os.path.dirname(sys.executable), os.path.dirname(publish_binary())):
        candidate = os.path.join(directory, OWN_SHIM_BINARY)
        if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    import shutil

    return shutil.which(OWN_SHIM_BINARY) or OWN_SHIM_BINARY


def own_launcher(external: ExternalShims, owner: str) -> ShimLauncher:
    """The launcher of the daemon's own runc runtime: our shim forked by the fork server,
    serving task.v2 over ttrpc (``runtime.v2.ForkLauncher``)."""
    from . import shim_client
    from .v2 import ForkLauncher, ShimManager

    assert isinstance(external, ShimManager)
    return ForkLauncher(external, own_shim_binary(), shim_client.ShimLauncher(owner=owner))


class DeferredShims:
    """The task manager's ``ExternalShims`` and its own ``ShimLauncher`` (``launcher``) until
    the first shim: the runtime v2 manager, ttrpc, the shim API protobufs and the fork
    server's client are loaded on first use (a task created, a shim restored or cleaned up
    after a restart, a connection on the events socket), so an idle daemon never holds them
    (W6, idle PSS).

    ``start()`` binds the shims' events socket (``[ttrpc] address``, else ``<grpc
    address>.ttrpc``) at once, with its modes, as containerd does: the first connection there
    (a shim, or ``pycontainerd publish``) makes the manager, which takes the listening socket
    over and serves it; a shim started by us never finds the socket missing either, since the
    manager exists before it is launched.  Resolving a runtime the daemon's own launcher
    serves needs none of it."""

    def __init__(self, daemon: Any, defaults: RuntimeDefaults, timeouts: Timeouts) -> None:
        self._daemon = daemon
        self._defaults = defaults
        self._timeouts = timeouts
        self._runtime_paths = runtime_paths_from_config(daemon.config)
        self._ttrpc_address: str = daemon.config.ttrpc.address or binarymod.ttrpc_address(str(daemon.address))
        self._ttrpc_owner: tuple[int, int] = (daemon.config.ttrpc.uid, daemon.config.ttrpc.gid)
        self._manager: ShimManager | None = None
        self._own: ShimLauncher | None = None
        self._lock = asyncio.Lock()
        self._listener: socket.socket | None = None
        self._wakeup: asyncio.Task[Any] | None = None
        self._started = False  # start() ran: the events socket is (to be) served
        self._serving = False  # the manager serves it
        self.launcher: ShimLauncher = _DeferredLauncher(self)

    @property
    def loaded(self) -> bool:
        """Whether the runtime v2 manager was made."""
        return self._manager is not None

    def _made(self) -> ShimManager:
        if self._manager is None:
            manager = external_shims(self._daemon, self._defaults, self._timeouts)
            self._own = own_launcher(manager, owner=str(self._daemon.state))
            self._manager = manager
        return self._manager

    async def manager(self) -> ShimManager:
        """The runtime v2 manager, made on first use and, once ``start()`` ran, serving events."""
        manager = self._made()
        if self._started and not self._serving:
            async with self._lock:
                if not self._serving:
                    self._serving = True
                    sock, self._listener = self._listener, None
                    if sock is not None:
                        with contextlib.suppress(Exception):
                            asyncio.get_running_loop().remove_reader(sock.fileno())
                    try:
                        await manager.start(sock=sock)
                    except Exception as exc:  # as TaskManager.start: logged, not fatal
                        log.error("cannot serve events for runtime v2 shims: %s", exc)
        return manager

    async def own_launcher(self) -> ShimLauncher:
        await self.manager()
        assert self._own is not None
        return self._own

    # -- ExternalShims -------------------------------------------------------------------------
    def resolve(self, runtime_name: str) -> str | None:
        own = runtime_name in binarymod.OWN_RUNTIMES and not self._runtime_paths.get(runtime_name)
        if own and self._manager is None:
            return None  # ShimManager.resolve's answer, without loading it
        return self._made().resolve(runtime_name)

    async def launch(self, **kwargs: Any) -> Shim:
        return await (await self.manager()).launch(**kwargs)

    async def connect(self, bundle: Path) -> Shim:
        return await (await self.manager()).connect(bundle)

    async def cleanup(self, *, namespace: str, container_id: str, bundle: Path) -> ExitLike:
        return await (await self.manager()).cleanup(namespace=namespace, container_id=container_id, bundle=bundle)

    async def start(self) -> None:
        """Serve the shims' events: the manager's server if it exists, else the bound socket."""
        if self._started:
            return
        self._started = True
        if self._manager is not None:
            await self.manager()
            return
        sock = await asyncio.to_thread(self._bind)
        self._listener = sock
        asyncio.get_running_loop().add_reader(sock.fileno(), self._connection_waiting)
        log.info("shim events (ttrpc) socket bound on %s; served from the first shim or connection",
                 self._ttrpc_address)

    def _bind(self) -> socket.socket:
        path = binarymod.socket_path(self._ttrpc_address)
        if not path:
            raise ValueError(f"ttrpc address {self._ttrpc_address!r} names no socket")
        if not path.startswith("\0"):
            with contextlib.suppress(FileNotFoundError):
                if stat.S_ISSOCK(os.lstat(path).st_mode):
                    os.unlink(path)  # a stale socket of an earlier daemon
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.bind(path)
            sock.listen(100)
            sock.setblocking(False)
            if not path.startswith("\0"):
                uid, gid = self._ttrpc_owner
                # only the daemon's user talks to it, unless ``[ttrpc] uid/gid`` name another owner
                os.chmod(path, 0o660 if (uid or gid) else 0o600)
                if uid or gid:
                    os.chown(path, uid or -1, gid or -1)
        except BaseException:
            sock.close()
            raise
        return sock

    def _connection_waiting(self) -> None:
        if self._listener is not None:
            asyncio.get_running_loop().remove_reader(self._listener.fileno())
        if self._wakeup is None:
            self._wakeup = asyncio.get_running_loop().create_task(self.manager(), name="runtime-v2-load")
            self._wakeup.add_done_callback(_log_failure)

    async def close(self) -> None:
        if self._wakeup is not None:
            with contextlib.suppress(Exception):
                await self._wakeup
        sock, self._listener = self._listener, None
        if sock is not None:
            with contextlib.suppress(Exception):
                asyncio.get_running_loop().remove_reader(sock.fileno())
            sock.close()
            path = binarymod.socket_path(self._ttrpc_address)
            if not path.startswith("\0"):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(path)
        if self._own is not None:
            with contextlib.suppress(Exception):
                await self._own.close()
        if self._manager is not None:
            await self._manager.close()


def _log_failure(task: asyncio.Task[Any]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("loading the runtime v2 manager for the shims' events socket failed", exc_info=task.exception())


class _DeferredLauncher:
    """``DeferredShims.launcher``: the daemon's own launcher (``runtime.v2.ForkLauncher``), made on first use."""

    def __init__(self, shims: DeferredShims) -> None:
        self._shims = shims

    async def launch(self, **kwargs: Any) -> Shim:
        return await (await self._shims.own_launcher()).launch(**kwargs)

    async def connect(self, bundle: Path) -> Shim:
        return await (await self._shims.own_launcher()).connect(bundle)

    async def cleanup(self, **kwargs: Any) -> ExitLike:
        return await (await self._shims.own_launcher()).cleanup(**kwargs)

    async def close(self) -> None:
        pass  # closed with the DeferredShims (the task manager closes both)


async def _init_v2(ctx: Any) -> TaskManager:
    # bundles (container root filesystems) live below: containerd's modes (see
    # runtime.bundle), also for bundles an older version made 0711 (CVE-2021-41103)
    ctx.state.mkdir(parents=True, exist_ok=True, mode=fsmodes.TOP_DIR)
    closed = await asyncio.to_thread(bundlemod.close_existing, ctx.state)
    if closed:
        log.info("closed %d bundles an older version left open to other users", len(closed))
    daemon = ctx.daemon
    defaults = defaults_from_config(daemon.config)
    timeouts = timeouts_from_config(daemon.config)
    external = DeferredShims(daemon, defaults, timeouts)
    manager = TaskManager(
        root=ctx.state,
        containers=ContainerStore(daemon.db, daemon.exchange),
        exchange=daemon.exchange,
        launcher=external.launcher,
        defaults=defaults,
        shim_state=Path(daemon.state),
        external=external,
        log_dir=Path(ctx.root) / "logs",
        timeouts=timeouts,
    )
    await manager.restore()
    return manager


async def _init_v1(ctx: Any) -> RuntimeAlias:
    from ..plugin import types

    return RuntimeAlias(ctx.get(types.RUNTIME_V2, "task"))


def _registrations() -> list[Any]:
    from ..plugin import Registration, types

    return [
        Registration(type=types.RUNTIME_V2, id="task", init=_init_v2, requires=(types.METADATA, types.EVENT)),
        Registration(type=types.RUNTIME_V1, id="linux", init=_init_v1, requires=(types.RUNTIME_V2,)),
    ]


REGISTRATIONS = _registrations()
