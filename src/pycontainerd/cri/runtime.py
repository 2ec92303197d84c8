"""runtime.v1.RuntimeService: Version, Status, UpdateRuntimeConfig, the pod sandboxes (``sandbox.py``).

The Stream* calls (CRI list streaming) answer what their List* call answers, in batches of
``STREAM_BATCH``.  Every other RPC answers UNIMPLEMENTED naming the method
(``unimplemented_methods``), not grpc's bare "Method not implemented!".
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import shutil
import time
from collections.abc import AsyncIterator, Mapping
from typing import Any

from .. import __version__, errdefs
from ..api.cri.runtime.v1 import api_pb2 as pb
from ..cni import CNI, PodNetworking
from ..rpc import Server
from ..services.common import add_servicer
from ..streaming.runtime import PortForwardRequest
from ..streaming.server import StreamServer
from . import gojson, streaming
from .containers import Containers, signal_enum
from .events import ContainerEventHub
from .features import HandlerFeatures
from .imagestore import NAMESPACE
from .sandbox import DEFAULT_INTERFACE, Sandboxes
from .usage import UsageRates, usage

log = logging.getLogger("pycontainerd.cri")

# name: (help, type, label keys beyond the kubelet's own)
METRICS: dict[str, tuple[str, pb.MetricType.ValueType, tuple[str, ...]]] = {
    "container_memory_usage_bytes": ("Current memory usage in bytes, including all memory regardless of when it "
                                     "was accessed", pb.GAUGE, ()),
    "container_memory_working_set_bytes": ("Current working set in bytes", pb.GAUGE, ()),
    "container_network_receive_bytes_total": ("Cumulative count of bytes received", pb.COUNTER, ("interface",)),
    "container_network_receive_errors_total": ("Cumulative count of errors encountered while receiving",
                                               pb.COUNTER, ("interface",)),
    "container_network_transmit_bytes_total": ("Cumulative count of bytes transmitted", pb.COUNTER, ("interface",)),
    "container_network_transmit_errors_total": ("Cumulative count of errors encountered while transmitting",
                                                pb.COUNTER, ("interface",)),
}

_EVENT_TYPES = {"created": pb.CONTAINER_CREATED_EVENT, "started": pb.CONTAINER_STARTED_EVENT,
                "stopped": pb.CONTAINER_STOPPED_EVENT, "deleted": pb.CONTAINER_DELETED_EVENT}

STREAM_BATCH = 100  # items per Stream* response
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

    def __init__(self, config: Any, cni: PodNetworking | None = None,
                 handler_cnis: Mapping[str, PodNetworking] | None = None) -> None:
        self.config = config
        self.pod_cidr = ""
        self.cni = cni
        self.handler_cnis = dict(handler_cnis or {})  # the handlers with their own cni_conf_dir

    async def cni_info(self) -> dict[str, str]:
        """A verbose Status' CNI keys, as containerd 1.6's: ``cniconfig`` (go-cni's config of the
        default network plugin), ``lastCNILoadStatus`` ("OK" or why the default config does not
        load) and ``lastCNILoadStatus.<name>`` for ``default`` and each handler with its own config."""
        info: dict[str, str] = {}
        loaded = {name: net for name, net in (("default", self.cni), *self.handler_cnis.items())
                  if isinstance(net, CNI)}
        for name, net in loaded.items():
            doc, status = await net.describe()
            if name == "default":
                info["cniconfig"] = json.dumps(doc)
            info[f"lastCNILoadStatus.{name}"] = status
        info["lastCNILoadStatus"] = info.get("lastCNILoadStatus.default", "OK")
        return info

    async def network_ready(self) -> tuple[bool, str, str]:
        if self.cni is None:
            return False, NETWORK_NOT_READY_REASON, NETWORK_NOT_READY_MESSAGE
        try:
            await self.cni.status()
        except errdefs.ContainerdError as exc:
            return False, NETWORK_NOT_READY_REASON, f"Network plugin returns error: {exc}"
        return True, "", ""

    async def render_cni_conf(self, pod_cidrs: str) -> None:
        """``cni.conf_template``, as containerd 1.6: once the kubelet sends the pod CIDR(s) and the
        network is not ready (no usable CNI config), the template is rendered into ``cni.conf_dir``."""
        from ..cni import conftemplate

        try:
            conftemplate.template_data(pod_cidrs)  # the CIDRs must parse, template or not (containerd)
        except ValueError as exc:
            raise errdefs.InvalidArgument(f"get routes: pod CIDR {pod_cidrs!r}: {exc}") from exc
        cni_cfg = self.config.cni
        template = cni_cfg.conf_template
        if not template:
            log.info("no cni config template is specified, wait for other system components to drop the config")
            return
        if self.cni is None:
            return
        try:
            await self.cni.status()
            log.info("network plugin is ready, skip generating cni config from template %s", template)
            return
        except errdefs.ContainerdError:
            pass
        try:
            path = await asyncio.to_thread(conftemplate.write_conf, template, cni_cfg.conf_dir, pod_cidrs)
        except conftemplate.TemplateError as exc:
            raise errdefs.FailedPrecondition(f"cni.conf_template: {exc}") from exc
        except OSError as exc:
            raise errdefs.from_oserror(exc, f"generate cni config from template {template}") from exc
        log.info("generated cni config %s from template %s", path, template)


class RuntimeService:
    """Not a subclass of the generated servicer: the methods it lacks are filled in by ``add_to_server``."""

    def __init__(self, state: RuntimeState, pods: Sandboxes | None = None, containers: Containers | None = None,
                 stream_server: StreamServer | None = None, *, features: HandlerFeatures | None = None) -> None:
        self.state = state
        self._pods = pods
        self._containers = containers
        self._stream_server = stream_server
        self._no_streaming = "the CRI plugin has no streaming server (no task manager)"
        self._features = features
        self.events = ContainerEventHub()
        # usage_nano_cores: each container's (and pod's) previous CPU sample, as containerd keeps it
        self.container_rates = UsageRates()
        self.pod_rates = UsageRates()
        if containers is not None:
            containers.on_event = self._container_event

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
            if self._stream_server is not None and self._stream_server.port:
                info["streamServer"] = json.dumps(self._stream_server.base_url)
            info.update(await self.state.cni_info())
        # what the kubelet may use (1.30+): per handler, recursive read-only mounts where its runtime
        # (runc's features, an external shim's -info) and the kernel have them, no user namespaces
        # (features.py); the Strict supplemental groups policy, yes
        if self._features is None:
            self._features = HandlerFeatures.for_config(self.state.config)
        handlers = await self._features.runtime_handlers()
        return pb.StatusResponse(status=status, info=info, runtime_handlers=handlers,
                                 features=pb.RuntimeFeatures(supplemental_groups_policy=True))

    async def UpdateRuntimeConfig(self, request: pb.UpdateRuntimeConfigRequest, context: Any
                                  ) -> pb.UpdateRuntimeConfigResponse:
        cidr = request.runtime_config.network_config.pod_cidr
        if cidr:
            await self.state.render_cni_conf(cidr)
        if cidr and cidr != self.state.pod_cidr:
            log.info("pod CIDR set to %s", cidr)
            self.state.pod_cidr = cidr
        return pb.UpdateRuntimeConfigResponse()

    # -- pod sandboxes ----------------------------------------------------------------------------
    async def RuntimeConfig(self, request: pb.RuntimeConfigRequest, context: Any) -> pb.RuntimeConfigResponse:
        """The cgroup driver the kubelet must match: the default runtime's runc ``SystemdCgroup``, the
        same setting that makes its pods' cgroup paths systemd slices (``sandbox.cgroups_path``)."""
        rt = getattr(self.state.config, "default_runtime", None)
        systemd = bool(rt is not None and rt.options.systemd_cgroup)
        return pb.RuntimeConfigResponse(linux=pb.LinuxRuntimeConfiguration(
            cgroup_driver=pb.SYSTEMD if systemd else pb.CGROUPFS))

    async def RunPodSandbox(self, request: pb.RunPodSandboxRequest, context: Any) -> pb.RunPodSandboxResponse:
        sid = await self.pods.run(request.config, request.runtime_handler)
        return pb.RunPodSandboxResponse(pod_sandbox_id=sid)

    async def StopPodSandbox(self, request: pb.StopPodSandboxRequest, context: Any) -> pb.StopPodSandboxResponse:
        await self.pods.stop(request.pod_sandbox_id, self._stop_pod_containers)
        return pb.StopPodSandboxResponse()

    async def RemovePodSandbox(self, request: pb.RemovePodSandboxRequest, context: Any
                               ) -> pb.RemovePodSandboxResponse:
        await self.pods.remove(request.pod_sandbox_id, self._remove_pod_containers)
        self.pod_rates.forget(request.pod_sandbox_id)
        return pb.RemovePodSandboxResponse()

    async def PodSandboxStatus(self, request: pb.PodSandboxStatusRequest, context: Any
                               ) -> pb.PodSandboxStatusResponse:
        sb = await self.pods.get(request.pod_sandbox_id)
        status = _pod_status(sb)
        info: dict[str, str] = {}
        if request.verbose:
            info["info"] = json.dumps(sandbox_info(sb))
        return pb.PodSandboxStatusResponse(status=status, info=info)

    async def UpdatePodSandboxResources(self, request: pb.UpdatePodSandboxResourcesRequest, context: Any
                                        ) -> pb.UpdatePodSandboxResourcesResponse:
        """1.33's call, made after the kubelet resized the pod's cgroup: recorded (sandbox.py)."""
        await self.pods.update_resources(request.pod_sandbox_id,
                                         request.overhead if request.HasField("overhead") else None,
                                         request.resources if request.HasField("resources") else None)
        return pb.UpdatePodSandboxResourcesResponse()

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
                                       annotations=dict(sb.config.annotations), runtime_handler=sb.runtime_handler))
        return pb.ListPodSandboxResponse(items=items)

    async def StreamPodSandboxes(self, request: pb.StreamPodSandboxesRequest, context: Any
                                 ) -> AsyncIterator[pb.StreamPodSandboxesResponse]:
        listed = await self.ListPodSandbox(pb.ListPodSandboxRequest(filter=request.filter)
                                           if request.HasField("filter") else pb.ListPodSandboxRequest(), context)
        for chunk in batches(list(listed.items)):
            yield pb.StreamPodSandboxesResponse(pod_sandboxes=chunk)

    async def _stop_pod_containers(self, sandbox_id: str) -> None:
        if self._containers is not None:
            await self._containers.stop_in_pod(sandbox_id)

    async def _remove_pod_containers(self, sandbox_id: str) -> None:
        if self._containers is not None:
            await self._containers.remove_in_pod(sandbox_id)

    # -- containers -------------------------------------------------------------------------------
    @property
    def containers(self) -> Containers:
        if self._containers is None:
            raise errdefs.Unimplemented("containers are not served: the CRI plugin has no task manager")
        return self._containers

    async def CreateContainer(self, request: pb.CreateContainerRequest, context: Any) -> pb.CreateContainerResponse:
        cid = await self.containers.create(request.pod_sandbox_id, request.config)
        return pb.CreateContainerResponse(container_id=cid)

    async def StartContainer(self, request: pb.StartContainerRequest, context: Any) -> pb.StartContainerResponse:
        await self.containers.start(request.container_id)
        return pb.StartContainerResponse()

    async def StopContainer(self, request: pb.StopContainerRequest, context: Any) -> pb.StopContainerResponse:
        await self.containers.stop(request.container_id, int(request.timeout))
        return pb.StopContainerResponse()

    async def RemoveContainer(self, request: pb.RemoveContainerRequest, context: Any) -> pb.RemoveContainerResponse:
        await self.containers.remove(request.container_id)
        self.container_rates.forget(request.container_id)
        return pb.RemoveContainerResponse()

    async def ContainerStatus(self, request: pb.ContainerStatusRequest, context: Any) -> pb.ContainerStatusResponse:
        c = await self.containers.get(request.container_id)
        status = _container_status(c)
        info: dict[str, str] = {}
        if request.verbose:
            info["info"] = json.dumps(container_info(c))
        return pb.ContainerStatusResponse(status=status, info=info)

    async def ListContainers(self, request: pb.ListContainersRequest, context: Any) -> pb.ListContainersResponse:
        f = request.filter
        out = []
        for c in await self.containers.list():
            if request.HasField("filter"):
                if f.id and not c.id.startswith(f.id):
                    continue
                if f.HasField("state") and f.state.state != c.state:
                    continue
                if f.pod_sandbox_id and not c.sandbox_id.startswith(f.pod_sandbox_id):
                    continue
                if any(c.config.labels.get(k) != v for k, v in f.label_selector.items()):
                    continue
            out.append(pb.Container(id=c.id, pod_sandbox_id=c.sandbox_id, metadata=c.config.metadata,
                                    image=pb.ImageSpec(image=str(c.meta.get("image_ref") or "")),
                                    image_ref=str(c.meta.get("image_id") or ""), state=c.state,
                                    created_at=c.created_at_ns, labels=dict(c.config.labels),
                                    annotations=dict(c.config.annotations), image_id=str(c.meta.get("image_id") or "")))
        return pb.ListContainersResponse(containers=out)

    async def StreamContainers(self, request: pb.StreamContainersRequest, context: Any
                               ) -> AsyncIterator[pb.StreamContainersResponse]:
        listed = await self.ListContainers(pb.ListContainersRequest(filter=request.filter)
                                           if request.HasField("filter") else pb.ListContainersRequest(), context)
        for chunk in batches(list(listed.containers)):
            yield pb.StreamContainersResponse(containers=chunk)

    async def UpdateContainerResources(self, request: pb.UpdateContainerResourcesRequest, context: Any
                                       ) -> pb.UpdateContainerResourcesResponse:
        await self.containers.update_resources(request.container_id, request.linux)
        return pb.UpdateContainerResourcesResponse()

    async def ExecSync(self, request: pb.ExecSyncRequest, context: Any) -> pb.ExecSyncResponse:
        out, err, code = await self.containers.exec_sync(request.container_id, list(request.cmd),
                                                         int(request.timeout))
        return pb.ExecSyncResponse(stdout=out, stderr=err, exit_code=code)

    # -- streaming: the URL of the daemon's streaming server, with a one-time token -----------------
    @property
    def stream_server(self) -> StreamServer:
        if self._stream_server is None:
            raise errdefs.Unavailable(f"streaming is not served: {self._no_streaming}")
        return self._stream_server

    def disable_streaming(self, why: str) -> None:
        self._stream_server = None
        self._no_streaming = f"the CRI streaming server did not start: {why}"

    async def Exec(self, request: pb.ExecRequest, context: Any) -> pb.ExecResponse:
        server = self.stream_server
        req = await streaming.exec_request(self.containers, request)
        return pb.ExecResponse(url=server.url(req))

    async def Attach(self, request: pb.AttachRequest, context: Any) -> pb.AttachResponse:
        server = self.stream_server
        req = await streaming.attach_request(self.containers, request)
        return pb.AttachResponse(url=server.url(req))

    async def PortForward(self, request: pb.PortForwardRequest, context: Any) -> pb.PortForwardResponse:
        server = self.stream_server
        pod_id, ports = await streaming.port_forward_ports(self.pods, request)
        return pb.PortForwardResponse(url=server.url(PortForwardRequest(pod_id, ports)))

    async def ReopenContainerLog(self, request: pb.ReopenContainerLogRequest, context: Any
                                 ) -> pb.ReopenContainerLogResponse:
        await self.containers.reopen_log(request.container_id)
        return pb.ReopenContainerLogResponse()

    async def ContainerStats(self, request: pb.ContainerStatsRequest, context: Any) -> pb.ContainerStatsResponse:
        c = await self.containers.get(request.container_id)
        return pb.ContainerStatsResponse(stats=(await self._container_stats([c]))[0])

    async def ListContainerStats(self, request: pb.ListContainerStatsRequest, context: Any
                                 ) -> pb.ListContainerStatsResponse:
        f = request.filter
        chosen = []
        everything = await self.containers.list()
        self.container_rates.retain(c.id for c in everything)  # the removed ones' samples go
        for c in everything:  # every container, as containerd: `crictl stats -a` shows all
            if request.HasField("filter"):
                if f.id and not c.id.startswith(f.id):
                    continue
                if f.pod_sandbox_id and not c.sandbox_id.startswith(f.pod_sandbox_id):
                    continue
                if any(c.config.labels.get(k) != v for k, v in f.label_selector.items()):
                    continue
            chosen.append(c)
        return pb.ListContainerStatsResponse(stats=await self._container_stats(chosen))

    async def StreamContainerStats(self, request: pb.StreamContainerStatsRequest, context: Any
                                   ) -> AsyncIterator[pb.StreamContainerStatsResponse]:
        listed = await self.ListContainerStats(
            pb.ListContainerStatsRequest(filter=request.filter) if request.HasField("filter")
            else pb.ListContainerStatsRequest(), context)
        for chunk in batches(list(listed.stats)):
            yield pb.StreamContainerStatsResponse(container_stats=chunk)

    async def _container_stats(self, chosen: list[Any]) -> list[pb.ContainerStats]:
        stats = await self.containers.stats([c.id for c in chosen])
        return [_stats_pb(c, stats.get(c.id), self.container_rates) for c in chosen]

    async def CheckpointContainer(self, request: pb.CheckpointContainerRequest, context: Any
                                  ) -> pb.CheckpointContainerResponse:
        """UNIMPLEMENTED, the code containerd 1.6 answers (and the kubelet reads as "not supported"),
        with the reason instead of grpc's generic text."""
        criu = await asyncio.to_thread(shutil.which, "criu")
        raise errdefs.Unimplemented(
            "CheckpointContainer: pycontainerd cannot checkpoint containers (its shim has no CRIU "
            "checkpoint/restore" + ("" if criu else ", and criu is not installed on this host") + ")")

    # -- container events -----------------------------------------------------------------------
    async def GetContainerEvents(self, request: pb.GetEventsRequest, context: Any
                                 ) -> AsyncIterator[pb.ContainerEventResponse]:
        async for ev in self.events.subscribe():
            yield ev

    async def _container_event(self, cid: str, sandbox_id: str, kind: str) -> None:
        """One lifecycle step of a container, with its pod's status and its containers' then."""
        if not self.events.subscribers:
            return
        ev = pb.ContainerEventResponse(container_id=cid, container_event_type=_EVENT_TYPES[kind],
                                       created_at=time.time_ns())
        with contextlib.suppress(errdefs.ContainerdError):
            ev.pod_sandbox_status.CopyFrom(_pod_status(await self.pods.get(sandbox_id)))
        ev.containers_statuses.extend(_container_status(c) for c in await self.containers.list()
                                      if c.sandbox_id == sandbox_id)
        self.events.publish(ev)

    # -- pod metrics (cAdvisor's names, values whose unit the name says) --------------------------
    async def ListMetricDescriptors(self, request: pb.ListMetricDescriptorsRequest, context: Any
                                    ) -> pb.ListMetricDescriptorsResponse:
        return pb.ListMetricDescriptorsResponse(descriptors=[
            pb.MetricDescriptor(name=name, help=help_, label_keys=list(keys))
            for name, (help_, _, keys) in METRICS.items()])

    async def ListPodSandboxMetrics(self, request: pb.ListPodSandboxMetricsRequest, context: Any
                                    ) -> pb.ListPodSandboxMetricsResponse:
        out = []
        containers = await self.containers.list()
        for sb in await self.pods.list():
            if not sb.ready:
                continue
            at = time.time_ns()
            pm = pb.PodSandboxMetrics(pod_sandbox_id=sb.id)
            with contextlib.suppress(errdefs.ContainerdError):  # no cgroup_parent: no pod-level memory
                mode, data = await self.pods.cgroup_stats(sb)
                pm.metrics.extend(_memory_metrics({"data": data, "at": at, "mode": mode}))
            for i in await self.pods.interfaces(sb) or []:
                if i.name != "lo":
                    pm.metrics.extend(_metric(name, at, [i.name], value) for name, value in (
                        ("container_network_receive_bytes_total", i.rx_bytes),
                        ("container_network_receive_errors_total", i.rx_errors),
                        ("container_network_transmit_bytes_total", i.tx_bytes),
                        ("container_network_transmit_errors_total", i.tx_errors)))
            running = [c for c in containers if c.sandbox_id == sb.id and c.state == pb.CONTAINER_RUNNING]
            stats = await self.containers.stats([c.id for c in running])
            for c in running:
                m = stats.get(c.id)
                pm.container_metrics.add(container_id=c.id, metrics=_memory_metrics(m) if m and m.get("data") else [])
            out.append(pm)
        return pb.ListPodSandboxMetricsResponse(pod_metrics=out)

    async def StreamPodSandboxMetrics(self, request: pb.StreamPodSandboxMetricsRequest, context: Any
                                      ) -> AsyncIterator[pb.StreamPodSandboxMetricsResponse]:
        listed = await self.ListPodSandboxMetrics(pb.ListPodSandboxMetricsRequest(), context)
        for chunk in batches(list(listed.pod_metrics)):
            yield pb.StreamPodSandboxMetricsResponse(pod_sandbox_metrics=chunk)

    # -- pod stats ------------------------------------------------------------------------------
    async def PodSandboxStats(self, request: pb.PodSandboxStatsRequest, context: Any) -> pb.PodSandboxStatsResponse:
        sb = await self.pods.get(request.pod_sandbox_id)
        return pb.PodSandboxStatsResponse(stats=await self._pod_stats(sb))

    async def ListPodSandboxStats(self, request: pb.ListPodSandboxStatsRequest, context: Any
                                  ) -> pb.ListPodSandboxStatsResponse:
        f = request.filter
        out = []
        pods = await self.pods.list()
        self.pod_rates.retain(sb.id for sb in pods)
        for sb in pods:
            if not sb.ready:  # containerd lists the ready pods only: the others have no live cgroup
                continue
            if f.id and not sb.id.startswith(f.id):
                continue
            if any(sb.config.labels.get(k) != v for k, v in f.label_selector.items()):
                continue
            try:
                out.append(await self._pod_stats(sb))
            except errdefs.FailedPrecondition as exc:
                # containerd fails the whole list on a pod without a cgroup parent; we leave it out
                log.debug("pod stats: %s", exc)
        return pb.ListPodSandboxStatsResponse(stats=out)

    async def StreamPodSandboxStats(self, request: pb.StreamPodSandboxStatsRequest, context: Any
                                    ) -> AsyncIterator[pb.StreamPodSandboxStatsResponse]:
        listed = await self.ListPodSandboxStats(
            pb.ListPodSandboxStatsRequest(filter=request.filter) if request.HasField("filter")
            else pb.ListPodSandboxStatsRequest(), context)
        for chunk in batches(list(listed.stats)):
            yield pb.StreamPodSandboxStatsResponse(pod_sandbox_stats=chunk)

    async def _pod_stats(self, sb: Any) -> pb.PodSandboxStats:
        if not sb.ready:
            raise errdefs.Unavailable(f"failed to get pod sandbox stats since sandbox container {sb.id!r} "
                                      "is not in ready state")
        mode, data = await self.pods.cgroup_stats(sb)
        at = time.time_ns()
        out = pb.PodSandboxStats(attributes=pb.PodSandboxAttributes(
            id=sb.id, metadata=sb.config.metadata, labels=dict(sb.config.labels),
            annotations=dict(sb.config.annotations)))
        linux = out.linux
        _usage_pb(linux.cpu, linux.memory, {"data": data, "at": at, "mode": mode}, self.pod_rates, sb.id)
        ifaces = await self.pods.interfaces(sb)
        if ifaces is not None:
            for i in ifaces:
                if i.name == "lo":
                    continue
                usage = (linux.network.default_interface if i.name == DEFAULT_INTERFACE
                         else linux.network.interfaces.add())
                usage.name = i.name
                usage.rx_bytes.value, usage.rx_errors.value = i.rx_bytes, i.rx_errors
                usage.tx_bytes.value, usage.tx_errors.value = i.tx_bytes, i.tx_errors
            if not linux.network.HasField("default_interface"):  # containerd names it even when missing
                linux.network.default_interface.name = DEFAULT_INTERFACE
        running = [c for c in await self.containers.list()
                   if c.sandbox_id == sb.id and c.state == pb.CONTAINER_RUNNING]
        count = 0
        for c in running:  # like containerd: the containers' processes, not the infra one
            with contextlib.suppress(errdefs.NotFound):
                count += len(await self.containers.tasks.pids(NAMESPACE, c.id))
        linux.process.timestamp = at
        linux.process.process_count.value = count
        linux.containers.extend(await self._container_stats(running))
        return out

    def add_to_server(self, server: Server) -> None:
        fill_unimplemented(self, "RuntimeService")
        add_servicer(server, self, pb, "RuntimeService")


def _metric(name: str, at: int, labels: list[str], value: int) -> pb.Metric:
    return pb.Metric(name=name, timestamp=at, metric_type=METRICS[name][1], label_values=labels,
                     value=pb.UInt64Value(value=value))


def _memory_metrics(m: dict[str, Any]) -> list[pb.Metric]:
    cpu, mem = pb.CpuUsage(), pb.MemoryUsage()
    _usage_pb(cpu, mem, m)
    return [_metric("container_memory_usage_bytes", m["at"], [], mem.usage_bytes.value),
            _metric("container_memory_working_set_bytes", m["at"], [], mem.working_set_bytes.value)]


def container_info(c: Any) -> dict[str, Any]:
    """ContainerStatus' verbose ``info``: containerd 1.6's keys and value shapes (its ``ContainerInfo``
    marshalled by Go: ``config`` is the CRI ContainerConfig with proto field names, ``gojson``)."""
    return {"sandboxID": c.sandbox_id, "pid": c.pid, "removing": c.removing, "snapshotKey": c.snapshot_key,
            "snapshotter": c.snapshotter, "runtimeType": c.runtime_type,
            "runtimeOptions": gojson.runtime_options(c.runtime_options), "config": gojson.message(c.config),
            "runtimeSpec": c.spec}


def sandbox_info(sb: Any) -> dict[str, Any]:
    """PodSandboxStatus' verbose ``info``: containerd 1.6's ``SandboxInfo`` keys and value shapes,
    with ours beside them (``sandboxID``, ``netns``)."""
    return {"pid": sb.pid, "processStatus": sb.process_status,
            "netNamespaceClosed": not sb.netns or not sb.ready, "image": sb.image,
            "snapshotKey": sb.snapshot_key, "snapshotter": sb.snapshotter, "runtimeHandler": sb.runtime_handler,
            "runtimeType": sb.runtime_type, "runtimeOptions": gojson.runtime_options(sb.runtime_options),
            "config": gojson.message(sb.config), "runtimeSpec": sb.spec, "cniResult": sb.cni_result,
            "sandboxID": sb.id, "netns": sb.netns}


def _pod_status(sb: Any) -> pb.PodSandboxStatus:
    cfg = sb.config
    ns = cfg.linux.security_context.namespace_options
    return pb.PodSandboxStatus(
        id=sb.id, metadata=cfg.metadata, state=pb.SANDBOX_READY if sb.ready else pb.SANDBOX_NOTREADY,
        created_at=sb.created_at_ns,
        network=pb.PodSandboxNetworkStatus(ip=sb.ip, additional_ips=[pb.PodIP(ip=i) for i in sb.additional_ips]),
        linux=pb.LinuxPodSandboxStatus(namespaces=pb.Namespace(options=pb.NamespaceOption(
            network=ns.network, pid=ns.pid, ipc=ns.ipc, target_id=ns.target_id))),
        labels=dict(cfg.labels), annotations=dict(cfg.annotations), runtime_handler=sb.runtime_handler)


def _container_status(c: Any) -> pb.ContainerStatus:
    cfg = c.config
    exited = c.state == pb.CONTAINER_EXITED
    return pb.ContainerStatus(
        id=c.id, metadata=cfg.metadata, state=c.state, created_at=c.created_at_ns,
        started_at=c.started_at_ns, finished_at=c.finished_at_ns if exited else 0,
        exit_code=c.exit_code if exited else 0,
        image=pb.ImageSpec(image=str(c.meta.get("image_ref") or "")), image_ref=str(c.meta.get("image_id") or ""),
        reason=c.reason if exited else "", message=str(c.meta.get("message") or ""),
        labels=dict(cfg.labels), annotations=dict(cfg.annotations), log_path=str(c.meta.get("log_path") or ""),
        mounts=list(cfg.mounts), image_id=str(c.meta.get("image_id") or ""), user=_container_user(c.spec),
        stop_signal=signal_enum(str(c.meta.get("stop_signal") or "SIGTERM")), resources=_container_resources(c.spec))


def _container_resources(spec: dict[str, Any]) -> pb.ContainerResources:
    """ContainerStatus.resources as containerd 1.6's CRI reports them (``copyResourcesToStatus``, at
    create and after UpdateContainerResources): the spec's ``linux.resources`` (cpu, cpuset, memory
    limit and swap, hugepage limits, unified) and the process's oom_score_adj.  The kubelet's
    in-place resize reads them as what the container has."""
    linux = spec.get("linux")
    if not isinstance(linux, dict):
        return pb.ContainerResources()
    out = pb.LinuxContainerResources(oom_score_adj=int((spec.get("process") or {}).get("oomScoreAdj") or 0))
    res = linux.get("resources") or {}
    cpu, memory = res.get("cpu") or {}, res.get("memory") or {}
    out.cpu_period, out.cpu_quota, out.cpu_shares = (int(cpu.get(k) or 0) for k in ("period", "quota", "shares"))
    out.cpuset_cpus, out.cpuset_mems = str(cpu.get("cpus") or ""), str(cpu.get("mems") or "")
    out.memory_limit_in_bytes = int(memory.get("limit") or 0)
    out.memory_swap_limit_in_bytes = int(memory.get("swap") or 0)
    out.hugepage_limits.extend(pb.HugepageLimit(page_size=str(h.get("pageSize") or ""), limit=int(h.get("limit") or 0))
                               for h in res.get("hugepageLimits") or [])
    out.unified.update({str(k): str(v) for k, v in (res.get("unified") or {}).items()})
    return pb.ContainerResources(linux=out)


def _container_user(spec: dict[str, Any]) -> pb.ContainerUser:
    """The identity the container's first process starts with (ContainerStatus.user, 1.31+)."""
    user = (spec.get("process") or {}).get("user") or {}
    return pb.ContainerUser(linux=pb.LinuxContainerUser(
        uid=int(user.get("uid") or 0), gid=int(user.get("gid") or 0),
        supplemental_groups=[int(g) for g in user.get("additionalGids") or []]))


def _stats_pb(c: Any, m: dict[str, Any] | None, rates: UsageRates | None = None) -> pb.ContainerStats:
    """CRI stats from the task's cgroup metrics (v1 or v2, as ``pycontainerd.cgroups`` reads them)."""
    attrs = pb.ContainerAttributes(id=c.id, metadata=c.config.metadata, labels=dict(c.config.labels),
                                   annotations=dict(c.config.annotations))
    out = pb.ContainerStats(attributes=attrs)
    if m is None:
        return out
    if m.get("data"):  # a container without a live task has no cgroup: only its writable layer
        _usage_pb(out.cpu, out.memory, m, rates, c.id)
    at = m["at"]
    layer = m.get("layer")
    if layer is not None:  # the container's own snapshot: what it wrote
        out.writable_layer.timestamp = at
        out.writable_layer.fs_id.mountpoint = layer["mountpoint"]
        out.writable_layer.used_bytes.value = layer["used_bytes"]
        out.writable_layer.inodes_used.value = layer["inodes_used"]
    return out


def _usage_pb(cpu_out: pb.CpuUsage, mem_out: pb.MemoryUsage, m: dict[str, Any],
              rates: UsageRates | None = None, key: str = "") -> None:
    """CPU and memory usage from one cgroup's metrics dict (a container's or a pod's), as containerd
    1.6 fills them (``usage.py``); ``usage_nano_cores`` against ``key``'s previous sample in ``rates``."""
    u, at = usage(m["data"], m["mode"]), m["at"]
    cpu_out.timestamp = at
    cpu_out.usage_core_nano_seconds.value = u.cpu_ns
    if rates is not None:
        cpu_out.usage_nano_cores.value = rates.nano_cores(key, u.cpu_ns, at)
    mem_out.timestamp = at
    mem_out.working_set_bytes.value = u.working_set
    mem_out.available_bytes.value = u.available
    mem_out.usage_bytes.value = u.memory_usage
    mem_out.rss_bytes.value = u.rss
    mem_out.page_faults.value = u.page_faults
    mem_out.major_page_faults.value = u.major_page_faults


def batches(items: list[Any], size: int = STREAM_BATCH) -> list[list[Any]]:
    """A Stream* call's responses: each item once, none empty (no response at all for no items)."""
    return [items[i:i + size] for i in range(0, len(items), size)]


def unimplemented_methods(servicer: Any, service: str = "RuntimeService") -> list[str]:
    """The methods of ``service`` this servicer does not define itself."""
    names = pb.DESCRIPTOR.services_by_name[service].methods_by_name
    return [n for n in names if n not in type(servicer).__dict__]


def fill_unimplemented(servicer: Any, service: str) -> None:
    """Give the servicer an UNIMPLEMENTED answer naming each method of ``service`` it lacks."""
    for name in unimplemented_methods(servicer, service):
        setattr(servicer, name, _unimplemented(name, service))


def _unimplemented(name: str, service: str = "RuntimeService") -> Any:
    method = pb.DESCRIPTOR.services_by_name[service].methods_by_name[name]
    message = (f"runtime.v1.{service}/{name} is not implemented by pycontainerd yet "
               "(its CRI plugin serves images, pods, containers, ExecSync, streaming and container and pod stats)")
    if method.server_streaming:
        async def stream(request: Any, context: Any) -> Any:
            raise errdefs.Unimplemented(message)
            yield  # pragma: no cover - makes this an async generator

        return stream

    async def unary(request: Any, context: Any) -> Any:
        raise errdefs.Unimplemented(message)

    return unary
