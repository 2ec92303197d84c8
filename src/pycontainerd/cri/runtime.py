"""runtime.v1.RuntimeService: Version, Status, UpdateRuntimeConfig; pods and containers come next.

Every other RPC answers UNIMPLEMENTED naming the method (``unimplemented_methods``), not
grpc's bare "Method not implemented!".
"""

from __future__ import annotations

import dataclasses
import json
import logging
from typing import Any

import grpc

from .. import __version__, errdefs
from ..api.cri.runtime.v1 import api_pb2 as pb
from ..api.cri.runtime.v1 import api_pb2_grpc as pb_grpc
from ..services.common import add_servicer

log = logging.getLogger("pycontainerd.cri")

RUNTIME_NAME = "pycontainerd"
RUNTIME_API_VERSION = "v1"
KUBE_API_VERSION = "0.1.0"  # what the kubelet's remote runtime reports as the CRI version
RUNTIME_READY = "RuntimeReady"
NETWORK_READY = "NetworkReady"
NETWORK_NOT_READY_REASON = "NetworkPluginNotReady"
NETWORK_NOT_READY_MESSAGE = "Network plugin returns error: cni plugin not initialized"


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(p[:1].upper() + p[1:] for p in rest)


def config_json(obj: Any) -> Any:
    """A config dataclass as JSON-ready data with camelCase keys (containerd's ``info.config``)."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {_camel(f.name): config_json(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, dict):
        return {str(k): config_json(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [config_json(v) for v in obj]
    return obj


class RuntimeState:
    """What the runtime side knows so far: the CRI config and the pod CIDR the kubelet sent."""

    def __init__(self, config: Any) -> None:
        self.config = config
        self.pod_cidr = ""

    def network_ready(self) -> tuple[bool, str, str]:
        # CNI is not wired yet (cri/cni.py comes from another branch)
        return False, NETWORK_NOT_READY_REASON, NETWORK_NOT_READY_MESSAGE


class RuntimeService:
    """Not a subclass of the generated servicer: the methods it lacks are filled in by ``add_to_server``."""

    def __init__(self, state: RuntimeState) -> None:
        self.state = state

    async def Version(self, request: pb.VersionRequest, context: Any) -> pb.VersionResponse:
        return pb.VersionResponse(version=KUBE_API_VERSION, runtime_name=RUNTIME_NAME, runtime_version=__version__,
                                  runtime_api_version=RUNTIME_API_VERSION)

    async def Status(self, request: pb.StatusRequest, context: Any) -> pb.StatusResponse:
        ready, reason, message = self.state.network_ready()
        status = pb.RuntimeStatus(conditions=[
            pb.RuntimeCondition(type=RUNTIME_READY, status=True),
            pb.RuntimeCondition(type=NETWORK_READY, status=ready, reason="" if ready else reason,
                                message="" if ready else message),
        ])
        info: dict[str, str] = {}
        if request.verbose:
            info["config"] = json.dumps(config_json(self.state.config))
            info["podCIDR"] = json.dumps(self.state.pod_cidr)
        return pb.StatusResponse(status=status, info=info)

    async def UpdateRuntimeConfig(self, request: pb.UpdateRuntimeConfigRequest, context: Any
                                  ) -> pb.UpdateRuntimeConfigResponse:
        cidr = request.runtime_config.network_config.pod_cidr
        if cidr and cidr != self.state.pod_cidr:
            log.info("pod CIDR set to %s", cidr)
            self.state.pod_cidr = cidr
        return pb.UpdateRuntimeConfigResponse()

    def add_to_server(self, server: grpc.aio.Server) -> None:
        for name in unimplemented_methods(self):
            setattr(self, name, _unimplemented(name))
        add_servicer(server, pb_grpc.add_RuntimeServiceServicer_to_server, self, pb, "RuntimeService")


def unimplemented_methods(servicer: Any) -> list[str]:
    """The RuntimeService methods this servicer does not define itself."""
    names = pb.DESCRIPTOR.services_by_name["RuntimeService"].methods_by_name
    return [n for n in names if n not in type(servicer).__dict__]


def _unimplemented(name: str) -> Any:
    method = pb.DESCRIPTOR.services_by_name["RuntimeService"].methods_by_name[name]
    message = (f"runtime.v1.RuntimeService/{name} is not implemented by pycontainerd yet "
               f"(pods and containers are not served; images are)")
    if method.server_streaming:
        async def stream(request: Any, context: Any) -> Any:
            raise errdefs.Unimplemented(message)
            yield  # pragma: no cover - makes this an async generator

        return stream

    async def unary(request: Any, context: Any) -> Any:
        raise errdefs.Unimplemented(message)

    return unary
