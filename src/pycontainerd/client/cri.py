"""A small client for the Kubernetes CRI API ``runtime.v1`` (RuntimeService + ImageService).

    async with CriClient("unix:///run/containerd/containerd.sock") as cri:
        print((await cri.version()).runtime_version)
        pod = await cri.run_pod_sandbox(pod_config_from_dict({"metadata": {"name": "p", "uid": "u",
                                                                           "namespace": "default"}}))

Requests and responses are the generated ``runtime.v1`` messages; errors come back as
``pycontainerd.errdefs`` kinds, like every other client wrapper. A daemon that answers
UNIMPLEMENTED (no CRI plugin, e.g. pycontainerd today or containerd with CRI disabled) gives
``errdefs.Unimplemented`` whose message says so: "the daemon at X does not serve the CRI
API (runtime.v1): ...".

Also here, because kubelet-style tools need them and they are pure: loading pod/container
configs (JSON or YAML) into messages, turning messages into JSON-ready
dicts, and parsing the CRI container log format (``<rfc3339nano> <stream> <P|F> <msg>``) with
partial lines joined (`LogParser`).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, TypeVar

import grpc
import yaml
from google.protobuf import json_format
from google.protobuf.message import Message

from .. import errdefs
from ..api.cri.runtime.v1 import api_pb2, api_pb2_grpc
from .core import MAX_MSG, to_errdefs

T = TypeVar("T")
M = TypeVar("M", bound=Message)

DEFAULT_ENDPOINT = "unix:///run/pycontainerd/pycontainerd.sock"
CRI_API = "runtime.v1"
#: the CRI version string kubelet and crictl send in VersionRequest
KUBE_API_VERSION = "v1"


def normalize_endpoint(endpoint: str) -> str:
    """A gRPC target for an endpoint given as ``unix:///path``, ``unix:/path`` or a plain path."""
    if endpoint.startswith("unix://"):
        return endpoint
    if endpoint.startswith("unix:"):
        return "unix://" + endpoint[len("unix:"):]
    if endpoint.startswith("/"):
        return f"unix://{endpoint}"
    if "://" not in endpoint:
        raise errdefs.InvalidArgument(
            f"invalid endpoint {endpoint!r}: expected unix:///path/to/socket (or an absolute socket path)")
    scheme = endpoint.split("://", 1)[0]
    raise errdefs.InvalidArgument(f"unsupported endpoint scheme {scheme!r} in {endpoint!r}: only unix:// is supported")


GRPC_UNKNOWN_METHOD = ("Method not found!", "Method not implemented!")
# grpc-go's (containerd's, and pycontainerd's own server's) answers for a service or method it lacks
GRPC_UNKNOWN_PREFIXES = ("unknown service ", "unknown method ")


def cri_error(exc: grpc.aio.AioRpcError, endpoint: str, what: str) -> errdefs.ContainerdError:
    """Map a CRI call's status to an error kind; UNIMPLEMENTED with gRPC's own "Method not found!"
    means the daemon has no CRI API, with a message of the runtime's that this one call is not served."""
    if exc.code() == grpc.StatusCode.UNIMPLEMENTED:
        details = exc.details() or ""
        if details and details not in GRPC_UNKNOWN_METHOD and not details.startswith(GRPC_UNKNOWN_PREFIXES):
            return errdefs.Unimplemented(f"{what}: {details}" if what else details)
        return errdefs.Unimplemented(
            f"the daemon at {endpoint} does not serve the CRI API ({CRI_API}): {details or 'unimplemented'}")
    err = to_errdefs(exc)
    if exc.code() == grpc.StatusCode.UNAVAILABLE:
        return errdefs.Unavailable(f"cannot reach the runtime at {endpoint}: {exc.details()}")
    if exc.code() == grpc.StatusCode.DEADLINE_EXCEEDED:
        return errdefs.DeadlineExceeded(f"{what}: no answer from {endpoint} in time (raise --timeout)")
    err.message = f"{what}: {err.message}" if what else err.message
    return err


class CriClient:
    """An asyncio client for one runtime endpoint and one image endpoint (the same by default)."""

    def __init__(self, runtime_endpoint: str | None = None, image_endpoint: str | None = None, *,
                 timeout: float = 10.0, debug: Callable[[str], None] | None = None) -> None:
        self.runtime_endpoint = runtime_endpoint or os.environ.get("CONTAINER_RUNTIME_ENDPOINT") or DEFAULT_ENDPOINT
        self.image_endpoint = image_endpoint or os.environ.get("IMAGE_SERVICE_ENDPOINT") or self.runtime_endpoint
        self.timeout = timeout
        self._debug = debug
        opts = [("grpc.max_receive_message_length", MAX_MSG), ("grpc.max_send_message_length", MAX_MSG)]
        self._runtime_channel = grpc.aio.insecure_channel(normalize_endpoint(self.runtime_endpoint), options=opts)
        if normalize_endpoint(self.image_endpoint) == normalize_endpoint(self.runtime_endpoint):
            self._image_channel = self._runtime_channel
        else:
            self._image_channel = grpc.aio.insecure_channel(normalize_endpoint(self.image_endpoint), options=opts)
        self.runtime = api_pb2_grpc.RuntimeServiceStub(self._runtime_channel)
        self.images = api_pb2_grpc.ImageServiceStub(self._image_channel)

    # -- plumbing ---------------------------------------------------------------------------
    async def wait_ready(self, timeout: float | None = None) -> None:  # noqa: ASYNC109 - like grpc's own
        """Wait until the endpoints accept connections; Unavailable with a hint otherwise."""
        chans = {self.runtime_endpoint: self._runtime_channel, self.image_endpoint: self._image_channel}
        for endpoint, chan in chans.items():
            from .quick import DaemonUnreachable, probe, unix_path

            if unix_path(endpoint) is not None:
                try:
                    await asyncio.to_thread(probe, endpoint, timeout or self.timeout)
                except DaemonUnreachable as exc:
                    text = str(exc).replace("the daemon", "the runtime", 1).replace("pyctr", "pycrictl")
                    text = text.replace("-a or CONTAINERD_ADDRESS", "-r or CONTAINER_RUNTIME_ENDPOINT")
                    raise DaemonUnreachable(text) from None
            try:
                await asyncio.wait_for(chan.channel_ready(), timeout or self.timeout)
            except TimeoutError:
                raise errdefs.Unavailable(
                    f"cannot reach the runtime at {endpoint}: is it running? (connect timed out)") from None

    async def _call(self, method: Callable[..., Awaitable[T]], request: Message, *, endpoint: str, what: str,
                    timeout: float | None = None, no_deadline: bool = False) -> T:  # noqa: ASYNC109
        if self._debug:
            self._debug(f"{what} request: {json.dumps(message_to_dict(request), sort_keys=True)}")
        try:
            resp = await method(request, timeout=None if no_deadline else (timeout or self.timeout))
        except grpc.aio.AioRpcError as exc:
            raise cri_error(exc, endpoint, what) from None
        if self._debug and isinstance(resp, Message):
            self._debug(f"{what} response: {json.dumps(message_to_dict(resp), sort_keys=True)}")
        return resp

    async def _rt(self, method: Callable[..., Awaitable[T]], request: Message, what: str, **kw: Any) -> T:
        return await self._call(method, request, endpoint=self.runtime_endpoint, what=what, **kw)

    async def _img(self, method: Callable[..., Awaitable[T]], request: Message, what: str, **kw: Any) -> T:
        return await self._call(method, request, endpoint=self.image_endpoint, what=what, **kw)

    async def close(self) -> None:
        await self._runtime_channel.close(None)
        if self._image_channel is not self._runtime_channel:
            await self._image_channel.close(None)

    async def __aenter__(self) -> CriClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- runtime service --------------------------------------------------------------------
    async def version(self) -> api_pb2.VersionResponse:
        return await self._rt(self.runtime.Version, api_pb2.VersionRequest(version=KUBE_API_VERSION), "version")

    async def status(self, verbose: bool = False) -> api_pb2.StatusResponse:
        return await self._rt(self.runtime.Status, api_pb2.StatusRequest(verbose=verbose), "status")

    async def run_pod_sandbox(self, config: api_pb2.PodSandboxConfig, runtime_handler: str = "",
                              timeout: float | None = None) -> str:  # noqa: ASYNC109
        """Create and start a pod sandbox; returns its id."""
        req = api_pb2.RunPodSandboxRequest(config=config, runtime_handler=runtime_handler)
        resp = await self._rt(self.runtime.RunPodSandbox, req, "run pod sandbox", timeout=timeout,
                              no_deadline=timeout is None)
        return resp.pod_sandbox_id

    async def stop_pod_sandbox(self, pod_id: str) -> None:
        """Stop a pod's containers and its sandbox; a missing pod is not an error (CRI's rule)."""
        await self._rt(self.runtime.StopPodSandbox, api_pb2.StopPodSandboxRequest(pod_sandbox_id=pod_id),
                       f"stop pod sandbox {pod_id}", no_deadline=True)

    async def remove_pod_sandbox(self, pod_id: str) -> None:
        await self._rt(self.runtime.RemovePodSandbox, api_pb2.RemovePodSandboxRequest(pod_sandbox_id=pod_id),
                       f"remove pod sandbox {pod_id}", no_deadline=True)

    async def pod_sandbox_status(self, pod_id: str, verbose: bool = False) -> api_pb2.PodSandboxStatusResponse:
        req = api_pb2.PodSandboxStatusRequest(pod_sandbox_id=pod_id, verbose=verbose)
        return await self._rt(self.runtime.PodSandboxStatus, req, f"pod sandbox status {pod_id}")

    async def list_pod_sandbox(self, filter: api_pb2.PodSandboxFilter | None = None) -> list[api_pb2.PodSandbox]:
        req = api_pb2.ListPodSandboxRequest(filter=filter) if filter is not None else api_pb2.ListPodSandboxRequest()
        resp = await self._rt(self.runtime.ListPodSandbox, req, "list pod sandboxes")
        return list(resp.items)

    async def create_container(self, pod_id: str, config: api_pb2.ContainerConfig,
                               sandbox_config: api_pb2.PodSandboxConfig) -> str:
        """Create a container in a pod; returns its id."""
        req = api_pb2.CreateContainerRequest(pod_sandbox_id=pod_id, config=config, sandbox_config=sandbox_config)
        resp = await self._rt(self.runtime.CreateContainer, req, "create container", no_deadline=True)
        return resp.container_id

    async def start_container(self, container_id: str) -> None:
        await self._rt(self.runtime.StartContainer, api_pb2.StartContainerRequest(container_id=container_id),
                       f"start container {container_id}", no_deadline=True)

    async def stop_container(self, container_id: str, timeout: int = 0) -> None:  # noqa: ASYNC109 - CRI's field
        """Stop a container: SIGTERM (or its stop signal), SIGKILL after `timeout` seconds."""
        req = api_pb2.StopContainerRequest(container_id=container_id, timeout=timeout)
        await self._rt(self.runtime.StopContainer, req, f"stop container {container_id}", no_deadline=True)

    async def remove_container(self, container_id: str) -> None:
        await self._rt(self.runtime.RemoveContainer, api_pb2.RemoveContainerRequest(container_id=container_id),
                       f"remove container {container_id}", no_deadline=True)

    async def update_container_resources(self, container_id: str,
                                         linux: api_pb2.LinuxContainerResources) -> None:
        """New CPU/memory limits for a running or created container."""
        req = api_pb2.UpdateContainerResourcesRequest(container_id=container_id, linux=linux)
        await self._rt(self.runtime.UpdateContainerResources, req, f"update container {container_id}")

    async def reopen_container_log(self, container_id: str) -> None:
        """Ask the runtime to reopen the container's log file (after it was rotated away)."""
        req = api_pb2.ReopenContainerLogRequest(container_id=container_id)
        await self._rt(self.runtime.ReopenContainerLog, req, f"reopen the log of container {container_id}")

    async def list_containers(self, filter: api_pb2.ContainerFilter | None = None) -> list[api_pb2.Container]:
        req = api_pb2.ListContainersRequest(filter=filter) if filter is not None else api_pb2.ListContainersRequest()
        resp = await self._rt(self.runtime.ListContainers, req, "list containers")
        return list(resp.containers)

    async def container_status(self, container_id: str, verbose: bool = False) -> api_pb2.ContainerStatusResponse:
        req = api_pb2.ContainerStatusRequest(container_id=container_id, verbose=verbose)
        return await self._rt(self.runtime.ContainerStatus, req, f"container status {container_id}")

    async def exec_sync(self, container_id: str, cmd: Iterable[str], timeout: int = 0  # noqa: ASYNC109
                        ) -> api_pb2.ExecSyncResponse:
        """Run a command in a container and wait for it; `timeout` seconds (0: none)."""
        req = api_pb2.ExecSyncRequest(container_id=container_id, cmd=list(cmd), timeout=timeout)
        return await self._rt(self.runtime.ExecSync, req, f"exec in container {container_id}", no_deadline=True)

    async def exec(self, container_id: str, cmd: Iterable[str], *, tty: bool = False, stdin: bool = False,
                   stdout: bool = True, stderr: bool = True) -> str:
        """Prepare a streaming exec; returns the streaming server's URL (see ``client.streaming``)."""
        req = api_pb2.ExecRequest(container_id=container_id, cmd=list(cmd), tty=tty, stdin=stdin,
                                  stdout=stdout, stderr=stderr)
        return (await self._rt(self.runtime.Exec, req, f"exec in container {container_id}")).url

    async def attach(self, container_id: str, *, tty: bool = False, stdin: bool = False,
                     stdout: bool = True, stderr: bool = True) -> str:
        """Prepare an attach to a container's process; returns the streaming server's URL."""
        req = api_pb2.AttachRequest(container_id=container_id, tty=tty, stdin=stdin, stdout=stdout, stderr=stderr)
        return (await self._rt(self.runtime.Attach, req, f"attach to container {container_id}")).url

    async def port_forward(self, pod_id: str, ports: Iterable[int] = ()) -> str:
        """Prepare a port-forward into a pod's network namespace; returns the streaming server's URL."""
        req = api_pb2.PortForwardRequest(pod_sandbox_id=pod_id, port=list(ports))
        return (await self._rt(self.runtime.PortForward, req, f"port-forward to pod {pod_id}")).url

    async def container_stats(self, container_id: str) -> api_pb2.ContainerStats:
        req = api_pb2.ContainerStatsRequest(container_id=container_id)
        resp = await self._rt(self.runtime.ContainerStats, req, f"container stats {container_id}")
        return resp.stats

    async def list_container_stats(self, filter: api_pb2.ContainerStatsFilter | None = None
                                   ) -> list[api_pb2.ContainerStats]:
        req = (api_pb2.ListContainerStatsRequest(filter=filter) if filter is not None
               else api_pb2.ListContainerStatsRequest())
        resp = await self._rt(self.runtime.ListContainerStats, req, "list container stats")
        return list(resp.stats)

    async def pod_stats(self, pod_id: str) -> api_pb2.PodSandboxStats:
        req = api_pb2.PodSandboxStatsRequest(pod_sandbox_id=pod_id)
        resp = await self._rt(self.runtime.PodSandboxStats, req, f"pod stats {pod_id}")
        return resp.stats

    async def list_pod_stats(self, filter: api_pb2.PodSandboxStatsFilter | None = None
                             ) -> list[api_pb2.PodSandboxStats]:
        req = (api_pb2.ListPodSandboxStatsRequest(filter=filter) if filter is not None
               else api_pb2.ListPodSandboxStatsRequest())
        resp = await self._rt(self.runtime.ListPodSandboxStats, req, "list pod stats")
        return list(resp.stats)

    # -- image service ----------------------------------------------------------------------
    async def list_images(self, image: str = "") -> list[api_pb2.Image]:
        req = api_pb2.ListImagesRequest(filter=api_pb2.ImageFilter(image=api_pb2.ImageSpec(image=image)))
        resp = await self._img(self.images.ListImages, req, "list images")
        return list(resp.images)

    async def image_status(self, image: str, verbose: bool = False) -> api_pb2.ImageStatusResponse:
        """The image's status; ``resp.HasField("image")`` is false when the runtime does not have it."""
        req = api_pb2.ImageStatusRequest(image=api_pb2.ImageSpec(image=image), verbose=verbose)
        return await self._img(self.images.ImageStatus, req, f"image status {image}")

    async def pull_image(self, image: str, auth: api_pb2.AuthConfig | None = None,
                         sandbox_config: api_pb2.PodSandboxConfig | None = None,
                         timeout: float | None = None) -> str:  # noqa: ASYNC109
        """Pull inside the runtime; returns the image reference (id) it resolved to."""
        req = api_pb2.PullImageRequest(image=api_pb2.ImageSpec(image=image), auth=auth,
                                       sandbox_config=sandbox_config)
        resp = await self._img(self.images.PullImage, req, f"pull image {image}", timeout=timeout,
                               no_deadline=timeout is None)
        return resp.image_ref

    async def remove_image(self, image: str) -> None:
        """Remove an image by id, tag or digest; a missing image is not an error (CRI's rule)."""
        req = api_pb2.RemoveImageRequest(image=api_pb2.ImageSpec(image=image))
        await self._img(self.images.RemoveImage, req, f"remove image {image}")

    async def image_fs_info(self) -> api_pb2.ImageFsInfoResponse:
        return await self._img(self.images.ImageFsInfo, api_pb2.ImageFsInfoRequest(), "image fs info")


# -- configs and JSON ---------------------------------------------------------------------------


def message_to_dict(msg: Message) -> dict[str, Any]:
    """A JSON-ready dict, camelCase like crictl's output, with fields at their defaults included
    (a READY pod shows ``"state": "SANDBOX_READY"``, not nothing)."""
    try:
        kw: dict[str, Any] = {"always_print_fields_with_no_presence": True}
        return json_format.MessageToDict(msg, **kw)
    except TypeError:  # protobuf < 5.26
        kw = {"including_default_value_fields": True}
        return json_format.MessageToDict(msg, **kw)


def _from_dict(d: Mapping[str, Any], msg: M, what: str) -> M:
    if not isinstance(d, Mapping):
        raise errdefs.InvalidArgument(f"invalid {what}: expected an object, got {type(d).__name__}")
    try:
        json_format.ParseDict(dict(d), msg)
    except json_format.ParseError as exc:
        raise errdefs.InvalidArgument(f"invalid {what}: {exc}") from None
    return msg


def pod_config_from_dict(d: Mapping[str, Any]) -> api_pb2.PodSandboxConfig:
    """A PodSandboxConfig from crictl's JSON/YAML shape (snake_case or camelCase field names)."""
    cfg = _from_dict(d, api_pb2.PodSandboxConfig(), "pod sandbox config")
    if not cfg.metadata.name:
        raise errdefs.InvalidArgument("invalid pod sandbox config: metadata.name is required")
    return cfg


def container_config_from_dict(d: Mapping[str, Any]) -> api_pb2.ContainerConfig:
    cfg = _from_dict(d, api_pb2.ContainerConfig(), "container config")
    if not cfg.metadata.name:
        raise errdefs.InvalidArgument("invalid container config: metadata.name is required")
    if not cfg.image.image:
        raise errdefs.InvalidArgument("invalid container config: image.image is required")
    return cfg


def load_config_file(path: str | Path) -> dict[str, Any]:
    """Read a JSON or YAML (``.yaml``/``.yml``) config file into a dict."""
    p = Path(path)
    try:
        text = p.read_text()
    except OSError as exc:
        raise errdefs.from_oserror(exc, "read config file") from exc
    if p.suffix.lower() in (".yaml", ".yml"):
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise errdefs.InvalidArgument(f"{p}: invalid YAML: {exc}") from None
    else:
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise errdefs.InvalidArgument(f"{p}: invalid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise errdefs.InvalidArgument(f"{p}: expected an object at the top level")
    return data


def parse_info(info: Mapping[str, str]) -> dict[str, Any]:
    """The verbose ``info`` map of a status response, each value decoded from JSON when it is JSON."""
    out: dict[str, Any] = {}
    for k, v in info.items():
        try:
            out[k] = json.loads(v)
        except ValueError:
            out[k] = v
    return out


def enum_name(enum: Any, value: int) -> str:
    """The name of a generated enum's value (``ContainerState``, ``PodSandboxState``)."""
    return str(enum.Name(value))


CONTAINER_STATES = {n: api_pb2.ContainerState.Value(n) for n in api_pb2.ContainerState.keys()}  # noqa: SIM118
POD_STATES = {n: api_pb2.PodSandboxState.Value(n) for n in api_pb2.PodSandboxState.keys()}  # noqa: SIM118


def container_state_name(value: int) -> str:
    return enum_name(api_pb2.ContainerState, value)


def pod_state_name(value: int) -> str:
    return enum_name(api_pb2.PodSandboxState, value)


# -- the CRI log format (sans I/O) --------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class LogLine:
    """One complete log line (partial pieces joined): its first piece's timestamp and stream."""

    timestamp: str
    stream: str
    content: bytes


def parse_log_record(line: bytes) -> tuple[str, str, bool, bytes]:
    """Split one record ``<rfc3339nano> <stream> <P|F> <msg>`` (without its newline).

    Returns (timestamp, stream, partial, msg). Records without a tag (old CRI format) are full.
    Raises InvalidArgument for a line that is not a CRI log record."""
    parts = line.split(b" ", 3)
    if len(parts) < 3 or parts[1] not in (b"stdout", b"stderr"):
        raise errdefs.InvalidArgument(f"not a CRI log record: {line[:80]!r}")
    ts, stream = parts[0].decode(errors="replace"), parts[1].decode()
    if parts[2] in (b"P", b"F"):
        return ts, stream, parts[2] == b"P", parts[3] if len(parts) > 3 else b""
    return ts, stream, False, b" ".join(parts[2:])


class LogParser:
    """Feed bytes of a CRI log file; get complete `LogLine`s (partial records joined per stream).

    Bytes after the last newline are kept until more arrive (the writer may be mid-record);
    lines that are not CRI records are passed through as stdout."""

    def __init__(self) -> None:
        self._buf = b""
        self._partial: dict[str, tuple[str, list[bytes]]] = {}

    def feed(self, data: bytes) -> list[LogLine]:
        self._buf += data
        *records, self._buf = self._buf.split(b"\n")
        out: list[LogLine] = []
        for rec in records:
            if not rec:
                continue
            try:
                ts, stream, partial, msg = parse_log_record(rec)
            except errdefs.InvalidArgument:
                out.append(LogLine("", "stdout", rec))
                continue
            first_ts, pieces = self._partial.pop(stream, (ts, []))
            pieces.append(msg)
            if partial:
                self._partial[stream] = (first_ts, pieces)
            else:
                out.append(LogLine(first_ts, stream, b"".join(pieces)))
        return out

    def flush(self) -> list[LogLine]:
        """At the end of the log: the pending partial lines (a last line without newline)."""
        out = [LogLine(ts, stream, b"".join(pieces)) for stream, (ts, pieces) in self._partial.items()]
        self._partial.clear()
        if self._buf:
            out.extend(self.feed(b"\n"))
        out.extend(LogLine(ts, stream, b"".join(pieces)) for stream, (ts, pieces) in self._partial.items())
        self._partial.clear()
        return out


def parse_log(data: bytes) -> Iterator[LogLine]:
    """All complete lines of a whole log file's bytes."""
    p = LogParser()
    yield from p.feed(data)
    yield from p.flush()


__all__ = [
    "CONTAINER_STATES",
    "DEFAULT_ENDPOINT",
    "POD_STATES",
    "CriClient",
    "LogLine",
    "LogParser",
    "api_pb2",
    "container_config_from_dict",
    "container_state_name",
    "load_config_file",
    "message_to_dict",
    "normalize_endpoint",
    "parse_info",
    "parse_log",
    "parse_log_record",
    "pod_config_from_dict",
    "pod_state_name",
]
