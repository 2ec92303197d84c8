"""The CRI plugin's instance and its wiring to the daemon's stores (``plugin.py`` registers it
and imports this module only when the plugin is initialised: a daemon with the CRI disabled
never loads the CRI's servicers, its generated API or CNI)."""

from __future__ import annotations

from pathlib import Path

import grpc

from ..cni import CNI
from ..config import CRIConfig
from ..events.exchange import Exchange
from ..fsmodes import private_dir
from ..metadata.containers import ContainerStore
from ..plugin import InitContext, SkipPlugin, types
from ..runtime.task_manager import TaskManager
from .containers import Containers
from .images import ImageService
from .imagestore import NAMESPACE, CriImageStore, registry_settings, snapshotter_root
from .runtime import RuntimeService, RuntimeState
from .sandbox import Sandboxes


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
                                             exchange=exchange)
        self.runtime_state = RuntimeState(config, cni)
        self.image_service = ImageService(images)
        self.runtime_service = RuntimeService(self.runtime_state, self.pods, self.containers)

    def add_to_server(self, server: grpc.aio.Server) -> None:
        self.runtime_service.add_to_server(server)
        self.image_service.add_to_server(server)


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
    )
    private_dir(ctx.state)
    plugin = CriPlugin(config, store, containers=ctx.get(types.SERVICE, "containers-service"),
                       tasks=ctx.get(types.RUNTIME_V2, "task"), state_dir=ctx.state, exchange=ctx.daemon.exchange)
    if plugin.containers is not None:
        plugin.containers.watch_oom()
        await plugin.containers.restore()
    return plugin

