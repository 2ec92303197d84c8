"""runtime.v1.RuntimeService: Version, Status, UpdateRuntimeConfig, the pod sandboxes (``sandbox.py``).

Every other RPC answers UNIMPLEMENTED naming the method (``unimplemented_methods``), not
grpc's bare "Method not implemented!".
"""

from __future__ import annotations

import dataclasses
import json
import logging
from typing import Any

import grpc
from google.protobuf import json_format

from .. import __version__, errdefs
from ..api.cri.runtime.v1 import api_pb2 as pb
from ..api.cri.runtime.v1 import api_pb2_grpc as pb_grpc
from ..cni import PodNetworking
from ..services.common import add_servicer
from .sandbox import Sandboxes

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
    """What the runtime side knows: the CRI config, the pod CIDR the kubelet sent, the CNI manager."""

    def __init__(self, config: Any, cni: PodNetworking | None = None) -> None:
        self.config = config
        self.pod_cidr = ""
        self.cni = cni

    async def network_ready(self) -> tuple[bool, str, str]:
        if self.cni is None:
            return False, NETWORK_NOT_READY_REASON, NETWORK_NOT_READY_MESSAGE
        try:
            await self.cni.status()
        except errdefs.ContainerdError as exc:
            return False, NETWORK_NOT_READY_REASON, f"Network plugin returns error: {exc}"
        return True, "", ""


class RuntimeService:
    """Not a subclass of the generated servicer: the methods it lacks are filled in by ``add_to_server``."""

    def __init__(self, state: RuntimeState, pods: Sandboxes | None = None) -> None:
        self.state = state
        self._pods = pods

    @property
    def pods(self) -> Sandboxes:
        if self._pods is None:
            raise errdefs.Unimplemented("pods are not served: the CRI plugin has no task manager")
        return self._pods

    async def Version(self, request: pb.VersionRequest, context: Any) -> pb.VersionResponse:
        return pb.VersionResponse(version=KUBE_API_VERSION, runtime_name=RUNTIME_NAME, runtime_version=__version__,
                                  runtime_api_version=RUNTIME_API_VERSION)

    async def Status(self, request: pb.StatusRequest, context: Any) -> pb.StatusResponse:
        ready, reason, message = await self.state.network_ready()
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

    # -- pod sandboxes ----------------------------------------------------------------------------
    async def RunPodSandbox(self, request: pb.RunPodSandboxRequest, context: Any) -> pb.RunPodSandboxResponse:
        sid = await self.pods.run(request.config, request.runtime_handler)
        return pb.RunPodSandboxResponse(pod_sandbox_id=sid)

    async def StopPodSandbox(self, request: pb.StopPodSandboxRequest, context: Any) -> pb.StopPodSandboxResponse:
        await self.pods.stop(request.pod_sandbox_id, self._stop_pod_containers)
        return pb.StopPodSandboxResponse()

    async def RemovePodSandbox(self, request: pb.RemovePodSandboxRequest, context: Any
                               ) -> pb.RemovePodSandboxResponse:
        await self.pods.remove(request.pod_sandbox_id, self._remove_pod_containers)
        return pb.RemovePodSandboxResponse()

    async def PodSandboxStatus(self, request: pb.PodSandboxStatusRequest, context: Any
                               ) -> pb.PodSandboxStatusResponse:
        sb = await self.pods.get(request.pod_sandbox_id)
        cfg = sb.config
        ns = cfg.linux.security_context.namespace_options
        status = pb.PodSandboxStatus(
            id=sb.id, metadata=cfg.metadata, state=pb.SANDBOX_READY if sb.ready else pb.SANDBOX_NOTREADY,
            created_at=sb.created_at_ns,
            network=pb.PodSandboxNetworkStatus(ip=sb.ip, additional_ips=[pb.PodIP(ip=i) for i in sb.additional_ips]),
            linux=pb.LinuxPodSandboxStatus(namespaces=pb.Namespace(options=pb.NamespaceOption(
                network=ns.network, pid=ns.pid, ipc=ns.ipc, target_id=ns.target_id))),
            labels=dict(cfg.labels), annotations=dict(cfg.annotations), runtime_handler="")
        info: dict[str, str] = {}
        if request.verbose:
            info["info"] = json.dumps({
                "pid": sb.pid, "processStatus": "running" if sb.ready else "deleted",
                "netNamespaceClosed": not sb.netns or not sb.ready, "image": sb.image,
                "sandboxID": sb.id, "runtimeType": "io.containerd.runc.v2", "runtimeSpec": sb.spec,
                "config": json_format.MessageToDict(cfg), "netns": sb.netns,
            })
        return pb.PodSandboxStatusResponse(status=status, info=info)

    async def ListPodSandbox(self, request: pb.ListPodSandboxRequest, context: Any) -> pb.ListPodSandboxResponse:
        f = request.filter
        items = []
        for sb in await self.pods.list():
            state = pb.SANDBOX_READY if sb.ready else pb.SANDBOX_NOTREADY
            if request.HasField("filter"):
                if f.id and not sb.id.startswith(f.id):
                    continue
                if f.HasField("state") and f.state.state != state:
                    continue
                if any(sb.config.labels.get(k) != v for k, v in f.label_selector.items()):
                    continue
            items.append(pb.PodSandbox(id=sb.id, metadata=sb.config.metadata, state=state,
                                       created_at=sb.created_at_ns, labels=dict(sb.config.labels),
                                       annotations=dict(sb.config.annotations)))
        return pb.ListPodSandboxResponse(items=items)

    async def _stop_pod_containers(self, sandbox_id: str) -> None:
        """Stop every container of the pod (the containers RPCs override this)."""

    async def _remove_pod_containers(self, sandbox_id: str) -> None:
        """Stop and remove every container of the pod (the containers RPCs override this)."""

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
               f"(see its release notes for what the CRI plugin serves)")
    if method.server_streaming:
        async def stream(request: Any, context: Any) -> Any:
            raise errdefs.Unimplemented(message)
            yield  # pragma: no cover - makes this an async generator

        return stream

    async def unary(request: Any, context: Any) -> Any:
        raise errdefs.Unimplemented(message)

    return unary
