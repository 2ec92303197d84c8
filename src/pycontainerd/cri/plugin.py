"""Registration of the CRI plugin ``io.containerd.grpc.v1.cri``.

The plugin serves ``runtime.v1.RuntimeService`` and ``runtime.v1.ImageService`` on the
daemon's own socket (kubelet's ``--container-runtime-endpoint``).  Its configuration is the
daemon's ``CRIConfig`` (``[plugins."io.containerd.grpc.v1.cri"]`` or the version-1
``[plugins.cri]``); its objects live in namespace ``k8s.io``.

This module stays light: the instance and its wiring (``wiring.py``: the servicers, the
generated CRI API, CNI, ~3 MiB resident) are imported when the plugin is initialised, so a
daemon that disables the CRI (``disabled_plugins``) does not carry them.
"""

from __future__ import annotations

from typing import Any

from ..config import CRIConfig
from ..plugin import InitContext, Registration, types


async def _init(ctx: InitContext) -> Any:
    from . import wiring

    return await wiring.init(ctx)


REGISTRATION = Registration(type=types.GRPC, id="cri", init=_init, config=CRIConfig,
                            requires=(types.EVENT, types.SERVICE, types.LEASE, types.SNAPSHOT, types.RUNTIME_V2))
