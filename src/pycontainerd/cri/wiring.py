"""The CRI plugin's instance and its wiring to the daemon's stores (``plugin.py`` registers it
and imports this module only when the plugin is initialised: a daemon with the CRI disabled
never loads the CRI's servicers, its generated API or CNI)."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

from .. import errdefs
from ..cni import CNI
from ..config import CRIConfig
from ..events.exchange import Exchange
from ..fsmodes import private_dir
from ..metadata.containers import ContainerStore
from ..plugin import InitContext, SkipPlugin, types
from ..rpc import Server
from ..runtime.task_manager import TaskManager
from ..streaming.server import ServerConfig, StreamServer
from . import configopts, handlers
from .containers import Containers
from .features import HandlerFeatures
from .images import ImageService
from .imagestore import NAMESPACE, CriImageStore, registry_settings, snapshotter_root
from .runtime import RuntimeService, RuntimeState
from .sandbox import Sandboxes
from .streaming import CriStreamRuntime

log = logging.getLogger("pycontainerd.cri")


class CriPlugin:
    """The plugin instance: both servicers, and what the next RPC groups will build on."""

    def __init__(self, config: CRIConfig, images: CriImageStore, *, containers: ContainerStore | None = None,
                 tasks: TaskManager | None = None, state_dir: Path | None = None, exchange: Exchange | None = None,
                 root_dir: Path | None = None, base_specs: dict[str, dict[str, Any]] | None = None) -> None:
        self.config = config
        self.images = images
        cni = None
        self.handler_cnis: dict[str, CNI] = {}
        self.pods: Sandboxes | None = None
        self.containers: Containers | None = None
        # what each handler supports, decided for the shim the task manager picks for it
        external = tasks.external if tasks is not None else None
        self.features = HandlerFeatures.for_config(config, resolve=external.resolve if external is not None else None)
        if state_dir is not None:
            cni = CNI(conf_dir=config.cni.conf_dir, bin_dirs=config.cni.bin_search_path,
                      cache_dir=state_dir / "cni", max_conf_num=config.cni.max_conf_num, ip_pref=config.cni.ip_pref)
            # as containerd: a handler with a cni_conf_dir has its own load of it (its
            # cni_max_conf_num, else the cni section's), sharing the plugins and the result cache
            self.handler_cnis = {
                name: CNI(conf_dir=rt.cni_conf_dir, bin_dirs=config.cni.bin_search_path, cache_dir=state_dir / "cni",
                          max_conf_num=rt.cni_max_conf_num or config.cni.max_conf_num, ip_pref=config.cni.ip_pref)
                for name, rt in config.containerd.runtimes.items() if rt.cni_conf_dir}
            if containers is not None and tasks is not None:
                self.pods = Sandboxes(config=config, images=images, containers=containers, tasks=tasks,
                                      state_dir=state_dir, cni=cni, handler_cnis=self.handler_cnis,
                                      base_specs=base_specs)
                self.containers = Containers(pods=self.pods, images=images, containers=containers, tasks=tasks,
                                             state_dir=state_dir, max_log_line=config.max_container_log_line_size,
                                             exchange=exchange, root_dir=root_dir,
                                             drain_exec_io_timeout=config.drain_exec_sync_io_timeout,
                                             features=self.features)
        self.stream_server: StreamServer | None = None
        if self.pods is not None and self.containers is not None:
            self.stream_server = StreamServer(stream_server_config(config),
                                              CriStreamRuntime(self.containers, self.pods))
        self.runtime_state = RuntimeState(config, cni, self.handler_cnis)
        self.image_service = ImageService(images, {name: rt.snapshotter
                                                   for name, rt in config.containerd.runtimes.items()})
        self.runtime_service = RuntimeService(self.runtime_state, self.pods, self.containers, self.stream_server,
                                              features=self.features)

    def add_to_server(self, server: Server) -> None:
        self.runtime_service.add_to_server(server)
        self.image_service.add_to_server(server)

    def add_to_tcp_server(self, server: Server) -> None:
        """The TCP server (``[grpc] tcp_address``) serves the CRI only with disable_tcp_service = false."""
        if not self.config.disable_tcp_service:
            self.add_to_server(server)

    async def start(self) -> None:
        if self.stream_server is None:
            return
        try:
            await self.stream_server.start()
        except errdefs.ContainerdError as exc:
            # the rest of the CRI still serves; Exec/Attach/PortForward say why they cannot
            log.error("CRI streaming server not started: %s", exc)
            self.stream_server = None
            self.runtime_service.disable_streaming(str(exc))

    async def close(self) -> None:
        if self.stream_server is not None:
            await self.stream_server.close()


def stream_server_config(config: CRIConfig) -> ServerConfig:
    """The CRI section's streaming options (containerd's names) as the server's config."""
    try:
        port = int(config.stream_server_port)
    except ValueError:
        raise errdefs.InvalidArgument(
            f"stream_server_port {config.stream_server_port!r} is not a port number") from None
    if not 0 <= port < 65536:
        raise errdefs.InvalidArgument(f"stream_server_port {port} is out of range")
    tls = config.x509_key_pair_streaming
    return ServerConfig(address=config.stream_server_address, port=port, tls=config.enable_tls_streaming,
                        cert_file=tls.tls_cert_file, key_file=tls.tls_key_file,
                        idle_timeout=config.stream_idle_timeout)


def read_base_specs(config: CRIConfig) -> dict[str, dict[str, Any]]:
    """Each handler's ``base_runtime_spec``, read once (blocking: run it in a thread); a missing or
    invalid file is an error naming the key and the file (containerd's CRI fails to load too)."""
    out: dict[str, dict[str, Any]] = {}
    by_path: dict[str, dict[str, Any]] = {}
    for name, rt in config.containerd.runtimes.items():
        path = rt.base_runtime_spec
        if not path:
            continue
        if path not in by_path:
            try:
                data = Path(path).read_bytes()
            except OSError as exc:
                raise errdefs.InvalidArgument(
                    f"{handlers.runtime_key(name, 'base_runtime_spec')} = {path!r}: failed to load base OCI spec "
                    f"from file: {exc.strerror or exc}") from None
            by_path[path] = handlers.parse_base_spec(data, handler=name, path=path)
        out[name] = by_path[path]
    return out


async def init(ctx: InitContext) -> CriPlugin:
    config = ctx.typed_config(CRIConfig)
    configopts.check_selinux(config, host_has_selinux=await asyncio.to_thread(configopts.host_has_selinux))
    snapshotter = config.containerd.snapshotter
    backends = ctx.get_all(types.SNAPSHOT)
    if snapshotter not in backends:
        raise SkipPlugin(f"the CRI snapshotter {snapshotter!r} is not loaded (loaded: {', '.join(sorted(backends))})")
    for name, rt in config.containerd.runtimes.items():
        if rt.snapshotter and rt.snapshotter not in backends:
            raise errdefs.FailedPrecondition(
                f"{handlers.runtime_key(name, 'snapshotter')} = {rt.snapshotter!r}: that snapshotter is not loaded "
                f"(loaded: {', '.join(sorted(backends))})")
    base_specs = await asyncio.to_thread(read_base_specs, config)
    store = CriImageStore(
        content=ctx.get(types.SERVICE, "content-service"),
        snapshots=ctx.get(types.SERVICE, "snapshots-service"),
        differ=ctx.get(types.SERVICE, "diff-service"),
        images=ctx.get(types.SERVICE, "images-service"),
        leases=ctx.get(types.LEASE, "manager"),
        snapshotter=snapshotter,
        snapshotter_root=snapshotter_root(ctx.daemon.root, backends[snapshotter], snapshotter),
        registry=registry_settings(config.registry),
        max_concurrent_downloads=config.max_concurrent_downloads,
        namespace=NAMESPACE,
        other_roots={rt.snapshotter: snapshotter_root(ctx.daemon.root, backends[rt.snapshotter], rt.snapshotter)
                     for rt in config.containerd.runtimes.values() if rt.snapshotter and rt.snapshotter != snapshotter},
        discard_unpacked_layers=config.containerd.discard_unpacked_layers,
        pull_progress_timeout=config.image_pull_progress_timeout,
        snapshot_annotations=not config.containerd.disable_snapshot_annotations,
    )
    private_dir(ctx.state)
    plugin = CriPlugin(config, store, containers=ctx.get(types.SERVICE, "containers-service"),
                       tasks=ctx.get(types.RUNTIME_V2, "task"), state_dir=ctx.state, exchange=ctx.daemon.exchange,
                       root_dir=ctx.root, base_specs=base_specs)
    if plugin.containers is not None:
        plugin.containers.watch_oom()
        await plugin.containers.restore()
    return plugin

