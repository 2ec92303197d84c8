"""The CRI plugin's instance and its wiring to the daemon's stores (``plugin.py`` registers it
and imports this module only when the plugin is initialised: a daemon with the CRI disabled
never loads the CRI's servicers, its generated API or CNI)."""

from __future__ import annotations

import logging
from pathlib import Path

import grpc

from .. import errdefs
from ..cni import CNI
from ..config import CRIConfig
from ..events.exchange import Exchange
from ..fsmodes import private_dir
from ..metadata.containers import ContainerStore
from ..plugin import InitContext, SkipPlugin, types
from ..runtime.task_manager import TaskManager
from ..streaming.server import ServerConfig, StreamServer
from .containers import Containers
from .images import ImageService
from .imagestore import NAMESPACE, CriImageStore, registry_settings, snapshotter_root
from .runtime import RuntimeService, RuntimeState
from .sandbox import Sandboxes
from .streaming import CriStreamRuntime

log = logging.getLogger("pycontainerd.cri")


class CriPlugin:
    """The plugin instance: both servicers, and what the next RPC groups will build on."""

    def __init__(self, config: CRIConfig, images: CriImageStore, *, containers: ContainerStore | None = None,
                 tasks: TaskManager | None = None, state_dir: Path | None = None, exchange: Exchange | None = None
                 ) -> None:
        self.config = config
        self.images = images
        cni = None
        self.pods: Sandboxes | None = None
        self.containers: Containers | None = None
        if state_dir is not None:
            cni = CNI(conf_dir=config.cni.conf_dir, bin_dirs=config.cni.bin_search_path,
                      cache_dir=state_dir / "cni", max_conf_num=config.cni.max_conf_num, ip_pref=config.cni.ip_pref)
            if containers is not None and tasks is not None:
                self.pods = Sandboxes(config=config, images=images, containers=containers, tasks=tasks,
                                      state_dir=state_dir, cni=cni)
                self.containers = Containers(pods=self.pods, images=images, containers=containers, tasks=tasks,
                                             state_dir=state_dir, max_log_line=config.max_container_log_line_size,
                                             exchange=exchange, drain_exec_io_timeout=config.drain_exec_sync_io_timeout)
        self.stream_server: StreamServer | None = None
        if self.pods is not None and self.containers is not None:
            self.stream_server = StreamServer(stream_server_config(config),
                                              CriStreamRuntime(self.containers, self.pods))
        self.runtime_state = RuntimeState(config, cni)
        self.image_service = ImageService(images, {name: rt.snapshotter
                                                   for name, rt in config.containerd.runtimes.items()})
        self.runtime_service = RuntimeService(self.runtime_state, self.pods, self.containers, self.stream_server)

    def add_to_server(self, server: grpc.aio.Server) -> None:
        self.runtime_service.add_to_server(server)
        self.image_service.add_to_server(server)

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


async def init(ctx: InitContext) -> CriPlugin:
    config = ctx.typed_config(CRIConfig)
    snapshotter = config.containerd.snapshotter
    backends = ctx.get_all(types.SNAPSHOT)
    if snapshotter not in backends:
        raise SkipPlugin(f"the CRI snapshotter {snapshotter!r} is not loaded (loaded: {', '.join(sorted(backends))})")
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
        discard_unpacked_layers=config.containerd.discard_unpacked_layers,
        pull_progress_timeout=config.image_pull_progress_timeout,
        snapshot_annotations=not config.containerd.disable_snapshot_annotations,
    )
    private_dir(ctx.state)
    plugin = CriPlugin(config, store, containers=ctx.get(types.SERVICE, "containers-service"),
                       tasks=ctx.get(types.RUNTIME_V2, "task"), state_dir=ctx.state, exchange=ctx.daemon.exchange)
    if plugin.containers is not None:
        plugin.containers.watch_oom()
        await plugin.containers.restore()
    return plugin

