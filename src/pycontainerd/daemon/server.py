"""The daemon: owns every store, loads the plugins, serves gRPC on a unix socket.

``Daemon`` is the one object that holds state (no globals), so two daemons can run in one
test process.  Start-up order: lock the root (one daemon per root), open the metadata
database, load plugins in dependency order, bind the socket (replacing a stale one,
refusing a live one), tell systemd we are ready.  SIGTERM/SIGINT stop gracefully: stop
accepting, let in-flight calls finish briefly, close plugins in reverse order.  Running
containers are never touched on shutdown: their shims live on.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import logging
import os
import signal
import socket
from pathlib import Path
from typing import Any

from .. import errdefs, fsmodes
from ..config import Config
from ..events import Exchange
from ..metadata.db import Database
from ..plugin import PluginSet
from ..plugin import registry as plugin_registry
from ..plugin import types as plugin_types
from ..rpc import Server
from . import memory, oom, tempdir
from .interceptors import TimingObserver
from .ops import OpsServers

log = logging.getLogger("pycontainerd")

MAX_MSG = 16 << 20
# in-flight calls get this long to finish on SIGTERM before they are cancelled
STOP_GRACE = 2.0


class Daemon:
    def __init__(self, config: Config) -> None:
        self.config = config
        self.root = Path(config.root)
        self.state = Path(config.state)
        self.address = config.grpc.address
        self.db = Database(self.root / "io.containerd.metadata.v1.sqlite" / "meta.db")
        self.exchange = Exchange()
        self.plugins = PluginSet()
        self.uuid = ""
        self._server: Server | None = None
        self._tcp_server: Server | None = None
        self._lock_fd: int | None = None
        self._stopping = asyncio.Event()
        self._serving = False
        self._bound = False  # the socket path is ours to remove only once we bound it
        self._trimming = False  # the trimmer was started (and stop must close it)
        self.trimmer = memory.Trimmer()  # the diff service asks it for trims (``trimmer.request``)
        self.ops = OpsServers(self)  # debug socket, metrics endpoint, SIGUSR1 dumps

    # -- start-up ---------------------------------------------------------------------------
    def _lock_root(self) -> None:
        # state: 0711, others pass to the socket (there by default) and a user-namespaced
        # container's root to its bundle; root: 0700 unless the socket or state is inside it
        fsmodes.top_dir(self.state)
        if fsmodes.leads_to(self.root, [self.state, Path(self.address)]):
            fsmodes.top_dir(self.root)
        else:
            fsmodes.private_dir(self.root)
        fd = os.open(self.root / ".lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            raise errdefs.FailedPrecondition(
                f"root directory {self.root} is in use by another pycontainerd daemon"
            ) from exc
        self._lock_fd = fd
        self._close_dirs()

    def _close_dirs(self) -> None:
        """Close what lies in root and state to other users (see ``fsmodes``): also what an
        older version left open, so an upgrade closes the plugin directories, bundles and
        database of containers already running.  The directories that lead to the socket
        (or to the state directory, if it is inside the root) stay traversable, and so does
        the runtime's (bundles below it are closed one by one: ``runtime.bundle``)."""
        runtime_dir = self.state / f"{plugin_types.RUNTIME_V2}.task"
        targets = [self.state, Path(self.address)]
        for top in (self.root, self.state):
            keep = [*fsmodes.traversable_children(top, targets), runtime_dir]
            changed = fsmodes.close_children(top, keep=keep)
            if changed:
                log.info("closed to other users in %s: %s", top, ", ".join(sorted(changed)))

    def _server_uuid(self) -> str:
        p = self.root / "uuid"
        try:
            return p.read_text().strip()
        except FileNotFoundError:
            value = uuid4()
            tmp = p.with_suffix(".tmp")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, fsmodes.PRIVATE_FILE)
            with os.fdopen(fd, "w") as f:
                f.write(value)
            os.replace(tmp, p)
            return value

    def _check_socket_path(self) -> None:
        """Refuse to start when a live daemon serves on our address; remove a stale socket."""
        path = Path(self.address)
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o711)
        if path.exists() or path.is_symlink():
            probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                probe.connect(str(path))
            except OSError as exc:
                if exc.errno not in (errno.ECONNREFUSED, errno.ENOENT, errno.ENOTSOCK):
                    raise
                path.unlink(missing_ok=True)  # stale socket of a dead daemon
            else:
                raise errdefs.FailedPrecondition(
                    f"another daemon is already serving on {path}; stop it or use --address"
                )
            finally:
                probe.close()

    def _bind_socket(self) -> socket.socket:
        """Our listening socket (checked again: a daemon may have started meanwhile)."""
        self._check_socket_path()
        path = Path(self.address)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.bind(str(path))
            os.chmod(path, 0o660)
            gid = self.config.grpc.gid
            uid = self.config.grpc.uid
            if gid or uid:
                os.chown(path, uid or -1, gid or -1)
            sock.listen(1024)
        except BaseException:
            sock.close()
            raise
        sock.setblocking(False)
        return sock

    async def start(self) -> None:
        from . import builtins

        memory.configure_malloc()  # before plugins start their worker threads
        self.ops.install_signal_handlers()  # SIGUSR1 dumps stacks from the first moment on
        self.ops.log_startup()
        self._lock_root()
        if self.config.cgroup.path:
            # before any worker thread or the shim launcher exists, so they start inside it too
            from .. import cgroups  # only with [cgroup] path set (W6, idle PSS)

            try:
                joined = cgroups.place_process(self.config.cgroup.path, os.getpid())
            except errdefs.InvalidArgument as exc:
                raise errdefs.InvalidArgument(f"config key cgroup.path: {exc}") from exc
            log.info("daemon moved to cgroup %s", ", ".join(map(str, joined)))
        # oom_score before anything forks (the shim launcher, runc): they inherit it
        problem = oom.apply_oom_score(self.config.oom_score)
        if problem is not None:
            log.error("%s", problem)  # containerd logs it too and starts anyway
        tempdir.apply_temp_dir(self.config.temp)
        self.uuid = self._server_uuid()
        await self.db.open()
        self.plugins = await plugin_registry.load(
            builtins.registrations(),
            root=self.root,
            state=self.state,
            plugin_config=self._plugin_config,
            daemon=self,
            disabled=self.config.disabled_plugins,
            required=self.config.required_plugins,
        )
        # a live daemon on our address is refused before any plugin starts; the socket itself
        # appears once the plugins have started (clients never see a half-restored daemon)
        await asyncio.to_thread(self._check_socket_path)
        server = Server(
            max_receive_message_length=self.config.grpc.max_recv_message_size or MAX_MSG,
            max_send_message_length=self.config.grpc.max_send_message_size or MAX_MSG,
            # per-RPC timing only when it is logged, gRPC metrics only when they are served
            observers=[*self.ops.observers(), *([TimingObserver()] if _timing_logged() else [])],
        )
        for p in self.plugins.plugins:
            if p.error is None and hasattr(p.instance, "add_to_server"):
                p.instance.add_to_server(server)
        # plugins finish starting (GC's first pass, shim reconnection) before the first call
        # is served, so clients never see a half-restored daemon
        for p in self.plugins.plugins:
            starter = getattr(p.instance, "start", None) if p.error is None else None
            if starter is not None and asyncio.iscoroutinefunction(starter):
                await starter()
        # the trimmer, debug socket and metrics endpoint before the gRPC socket appears: a client
        # that reached the daemon finds all of it up (a stack dump then shows serve_forever)
        self.trimmer.start()
        self._trimming = True
        await self.ops.start()
        sock = await asyncio.to_thread(self._bind_socket)
        self._bound = True
        try:
            await server.serve_unix(sock)
        except BaseException:
            sock.close()
            raise
        self._server = server
        self._serving = True
        await self._serve_tcp()
        log.info("pycontainerd serving on %s", self.address)
        sd_notify("READY=1")

    async def _serve_tcp(self) -> None:
        """``[grpc] tcp_address``: a second server, as containerd's: TLS (ALPN h2) with cert and
        key, client certificates required with ``tcp_tls_ca``; it serves only what plugins offer
        for TCP (``add_to_tcp_server``: the CRI with disable_tcp_service = false)."""
        from ..rpc.server import tls_context
        from .ops import parse_host_port

        g = self.config.grpc
        if not g.tcp_address:
            if g.tcp_tls_cert or g.tcp_tls_key or g.tcp_tls_ca:
                log.warning("config: grpc.tcp_tls_* set without grpc.tcp_address: not used")
            return
        host, port = parse_host_port(g.tcp_address, "grpc.tcp_address", "127.0.0.1:10010")
        ctx = None
        if g.tcp_tls_cert or g.tcp_tls_key:
            if not (g.tcp_tls_cert and g.tcp_tls_key):
                raise errdefs.InvalidArgument("config keys grpc.tcp_tls_cert and grpc.tcp_tls_key go together")
            try:
                ctx = await asyncio.to_thread(tls_context, g.tcp_tls_cert, g.tcp_tls_key, g.tcp_tls_ca)
            except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError
                raise errdefs.InvalidArgument(f"config keys grpc.tcp_tls_*: cannot load the TLS files: {exc}") from exc
        elif g.tcp_tls_ca:
            raise errdefs.InvalidArgument("config key grpc.tcp_tls_ca needs grpc.tcp_tls_cert and grpc.tcp_tls_key")
        assert self._server is not None
        server = Server(max_receive_message_length=self._server.max_receive_message_length,
                        max_send_message_length=self._server.max_send_message_length,
                        observers=self._server.observers)
        for p in self.plugins.plugins:
            if p.error is None and hasattr(p.instance, "add_to_tcp_server"):
                p.instance.add_to_tcp_server(server)
        try:
            bound = await server.serve_tcp(host, port, ssl=ctx)
        except OSError as exc:
            raise errdefs.from_oserror(exc, f"grpc.tcp_address {g.tcp_address}") from exc
        self._tcp_server = server
        log.info("pycontainerd serving gRPC%s on tcp %s (%s)", " (TLS)" if ctx else "",
                 ", ".join(f"{a[0]}:{a[1]}" for a in bound), ", ".join(sorted(server.services)) or "no services")

    def _plugin_config(self, reg: plugin_registry.Registration) -> Any:
        """A plugin's decoded config; its warnings (unknown keys) are logged, errors raised."""
        value, warnings = self.config.plugin_config(reg.uri, reg.config)
        for w in warnings:
            log.warning("config: %s", w)
        return value

    async def serve_forever(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._stopping.set)
        await self._stopping.wait()
        sd_notify("STOPPING=1")
        await self.stop()

    def request_stop(self) -> None:
        self._stopping.set()

    async def stop(self) -> None:
        await self.ops.close()
        if self._trimming:
            self._trimming = False
            await self.trimmer.close()
        servers = [s for s in (self._server, self._tcp_server) if s is not None]
        self._server = self._tcp_server = None
        if servers:
            await asyncio.gather(*(s.stop(grace=STOP_GRACE) for s in servers))
        for p in reversed(self.plugins.plugins):
            closer = getattr(p.instance, "close", None) if p.error is None else None
            if closer is None:
                continue
            with contextlib.suppress(Exception):
                res = closer()
                if asyncio.iscoroutine(res):
                    await res
        await asyncio.to_thread(self.db.close)
        if self._bound:
            with contextlib.suppress(OSError):
                os.unlink(self.address)
            self._bound = False
        self._serving = False
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None


def uuid4() -> str:
    """A random (version 4) UUID's text, as ``str(uuid.uuid4())`` without importing ``uuid``
    (it loads ``platform`` and its ctypes probing for good: W6, idle PSS)."""
    b = bytearray(os.urandom(16))
    b[6] = (b[6] & 0x0F) | 0x40  # version 4
    b[8] = (b[8] & 0x3F) | 0x80  # RFC 4122 variant
    h = b.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def _timing_logged() -> bool:
    return logging.getLogger("pycontainerd.grpc").isEnabledFor(logging.DEBUG)


def sd_notify(state: str) -> None:
    """Tell systemd (Type=notify) about our state; a no-op outside systemd."""
    addr = os.environ.get("NOTIFY_SOCKET")
    if not addr:
        return
    if addr.startswith("@"):
        addr = "\0" + addr[1:]
    with contextlib.suppress(OSError), socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        s.connect(addr)
        s.sendall(state.encode())
