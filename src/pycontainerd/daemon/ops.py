"""What an operator needs from a running daemon: the debug socket, metrics, SIGUSR1 dumps, start-up log.

``OpsServers`` belongs to one ``Daemon``.  The debug socket is always served (``[debug]
address``, default ``<state>/debug.sock``, i.e. ``/run/pycontainerd/debug.sock``); the
metrics endpoint only when ``[metrics] address`` is set.  Each server lives in its own
package (``pycontainerd.debug``, ``pycontainerd.metrics``); this module only wires them to
the daemon.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import threading
from dataclasses import fields
from pathlib import Path
from typing import Any

from .. import __version__, errdefs

log = logging.getLogger("pycontainerd")

DEBUG_SOCKET = "debug.sock"


def parse_metrics_address(address: str) -> tuple[str, int]:
    """``host:port`` (``[v6]:port``; an empty host means every interface) → (host, port)."""
    return parse_host_port(address, "metrics.address", "127.0.0.1:1338")


def parse_host_port(address: str, key: str, example: str) -> tuple[str, int]:
    """``host:port`` of config key ``key`` (``[v6]:port``; an empty host means every interface)."""
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) < 65536:
        raise errdefs.InvalidArgument(f"config key {key}: {address!r} is not host:port (e.g. \"{example}\")")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise errdefs.InvalidArgument(f"config key {key}: {address!r}: write an IPv6 host as [addr]:port")
    return host or "0.0.0.0", int(port)


class OpsServers:
    def __init__(self, daemon: Any) -> None:
        self.daemon = daemon
        self.debug: Any = None
        self.metrics: Any = None
        self._observer: Any = None
        self._handlers_installed = False
        self._previous_handler: Any = None
        self.registry: Any = None  # pycontainerd.metrics.registry.DaemonMetrics when metrics are served
        cfg = daemon.config
        if cfg.metrics.address:
            parse_metrics_address(cfg.metrics.address)  # refuse a bad address before anything starts
            from ..metrics.registry import DaemonMetrics

            self.registry = DaemonMetrics(task_cgroups=not cfg.cgroups_monitor.no_prometheus)

    @property
    def debug_address(self) -> str:
        return self.daemon.config.debug.address or str(Path(self.daemon.config.state) / DEBUG_SOCKET)

    # -- start-up ---------------------------------------------------------------------------------
    def log_startup(self) -> None:
        cfg = self.daemon.config
        log.info("starting pycontainerd version %s (containerd API v1)", __version__)
        log.info("config file: %s", cfg.source or "none (defaults)")
        log.info("root: %s, state: %s, gRPC socket: %s", cfg.root, cfg.state, cfg.grpc.address)

    def warn_unloaded_sections(self) -> None:
        """A configured section whose plugin did not load is named (a typo or a missing plugin)."""
        cfg = self.daemon.config
        loaded = {p.registration.uri: p for p in self.daemon.plugins.plugins}
        configured = set(cfg.plugins)
        for f in fields(cfg):
            uri = f.metadata.get("plugin")
            factory: Any = f.default_factory
            if uri and getattr(cfg, f.name) != factory():
                configured.add(uri)
        for uri in sorted(configured):
            p = loaded.get(uri)
            if p is None:
                log.warning("config: section [plugins.%r] configures plugin %s, which this daemon does not load",
                            uri, uri)
            elif p.error is not None:
                log.warning("config: section [plugins.%r] configures plugin %s, which did not load: %s",
                            uri, uri, p.init_error_message)

    def install_signal_handlers(self) -> None:
        """SIGUSR1 dumps the stacks, through a plain ``signal.signal`` handler, not the loop's.

        The loop runs its signal callbacks only when it gets back to polling, which a stuck
        daemon (a blocking call on the loop) never does.  Python runs this handler in the
        main thread at the next bytecode, or as soon as a blocking system call is
        interrupted, so the dump shows the very call the loop is stuck in.
        """
        if threading.current_thread() is not threading.main_thread():
            log.debug("no SIGUSR1 stack dumps: the daemon does not run in the main thread")
            return
        loop = asyncio.get_running_loop()
        self._previous_handler = signal.signal(signal.SIGUSR1, lambda signum, frame: self.dump_stacks(loop))
        self._handlers_installed = True

    def dump_stacks(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        from ..debug.server import dump_stacks

        try:
            dump_stacks(Path(self.daemon.config.state), loop)
        except Exception:  # a dump must never take the daemon down
            log.exception("SIGUSR1 stack dump failed")

    def observers(self) -> list[Any]:
        """The gRPC server's observers: its metrics, when they are served."""
        if self.registry is None:
            return []
        from ..metrics.grpc import GRPCMetrics

        self._observer = GRPCMetrics(self.registry.registry, histogram=self.daemon.config.metrics.grpc_histogram)
        return [self._observer]

    def _observe_engine(self) -> None:
        """Let the metrics see GC passes, content ingests and layer applies (plugins that loaded)."""
        from ..plugin import types

        m = self.registry
        plugins = self.daemon.plugins
        hooks: tuple[tuple[str, str, str, Any], ...] = (
            (types.GC, "scheduler", "collector.observers", m.on_gc),
            (types.SERVICE, "content-service", "ingest_observers", m.on_ingest),
            (types.DIFF, "walking", "apply_observers", m.on_apply),
        )
        for type_, id_, attr, hook in hooks:
            try:
                target: Any = plugins.get(type_, id_)
                for part in attr.split("."):
                    target = getattr(target, part)
                target.append(hook)
            except (errdefs.NotFound, AttributeError):
                log.debug("metrics: no %s.%s to observe", type_, id_)

    async def start(self) -> None:
        from ..debug.server import DebugServer

        self.warn_unloaded_sections()
        if self.registry is not None:
            self._observe_engine()
        cfg = self.daemon.config
        self.debug = DebugServer(self.daemon, self.debug_address, uid=cfg.debug.uid, gid=cfg.debug.gid)
        await self.debug.start()
        if cfg.metrics.address:
            from ..metrics.server import MetricsServer

            host, port = parse_metrics_address(cfg.metrics.address)
            self.metrics = MetricsServer(self.daemon, host, port, self.registry)
            await self.metrics.start()

    async def close(self) -> None:
        for server in (self.metrics, self.debug):
            if server is not None:
                with contextlib.suppress(Exception):
                    await server.close()
        self.metrics = self.debug = None
        if self._handlers_installed:
            with contextlib.suppress(Exception):
                signal.signal(signal.SIGUSR1, self._previous_handler or signal.SIG_DFL)
            self._handlers_installed = False
