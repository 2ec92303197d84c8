"""Registration of the CRI plugin ``io.containerd.grpc.v1.cri`` and its wiring to the daemon's stores.

The plugin serves ``runtime.v1.RuntimeService`` and ``runtime.v1.ImageService`` on the
daemon's own socket (kubelet's ``--container-runtime-endpoint``).  Its configuration is the
daemon's ``CRIConfig`` (``[plugins."io.containerd.grpc.v1.cri"]`` or the version-1
``[plugins.cri]``); its objects live in namespace ``k8s.io``.
"""

from __future__ import annotations

import grpc

from ..config import CRIConfig
from ..plugin import InitContext, Registration, SkipPlugin, types
from .images import ImageService
from .imagestore import NAMESPACE, CriImageStore, registry_settings, snapshotter_root
from .runtime import RuntimeService, RuntimeState


class CriPlugin:
    """The plugin instance: both servicers, and what the next RPC groups will build on."""

    def __init__(self, config: CRIConfig, images: CriImageStore) -> None:
        self.config = config
        self.images = images
        self.runtime_state = RuntimeState(config)
        self.image_service = ImageService(images)
        self.runtime_service = RuntimeService(self.runtime_state)

    def add_to_server(self, server: grpc.aio.Server) -> None:
        self.runtime_service.add_to_server(server)
        self.image_service.add_to_server(server)


async def _init(ctx: InitContext) -> CriPlugin:
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
    return CriPlugin(config, store)


REGISTRATION = Registration(type=types.GRPC, id="cri", init=_init, config=CRIConfig,
                            requires=(types.EVENT, types.SERVICE, types.LEASE, types.SNAPSHOT))
