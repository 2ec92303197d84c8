"""``ctr run --cni``: network a container through CNI plugins run here, on the client's host.

Like ctr 1.6, the plugins run client-side: the task is created (its init process holds the
container's own network namespace, which the spec always asks for unless ``--net-host``),
then CNI ADD runs against ``/proc/<pid>/ns/net``, then the task starts.  The attachment
(the config and plugin directories, the result cache, the published ports) is recorded in
the container's :data:`CNI_LABEL`, so whichever later pyctr invocation deletes the task
(``run --rm``, ``tasks delete``, ``containers rm``) can run CNI DEL; DEL runs without a
netns path (the process is gone and its pid may be someone else's by then) and finds what
to undo in the result cache (host-local releases the IP, portmap drops its rules).

    net = ContainerNetwork(conf_dir="/etc/cni/net.d", bin_dirs=DEFAULT_BIN_DIRS,
                           cache_dir="/run/pycontainerd/cni", ports=(parse_publish("8080:80"),))
    labels = {CNI_LABEL: net.label()}              # at container creation
    await setup_network(namespace, container_id, pid, net)   # between Tasks.Create and Start
    await teardown_network(namespace, container_id, labels)  # after Tasks.Delete (idempotent)
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from .. import errdefs
from ..cni import CNI, CapabilityArgs, PodNetwork, PortMapping, SetupResult
from . import DEFAULT_BIN_DIRS, DEFAULT_CONF_DIR

CNI_LABEL = "io.pycontainerd.cni"

__all__ = ["CNI_LABEL", "DEFAULT_BIN_DIRS", "DEFAULT_CONF_DIR", "ContainerNetwork", "parse_publish",
           "publish_all", "release_attachment", "setup_network", "teardown_network"]


def parse_publish(value: str) -> PortMapping:
    """``-p``: ``[HOST_IP:]HOST_PORT:CONTAINER_PORT[/tcp|udp]``."""
    spec, _, proto = value.partition("/")
    proto = (proto or "tcp").lower()
    if proto not in ("tcp", "udp", "sctp"):
        raise errdefs.InvalidArgument(f"--publish {value}: protocol must be tcp, udp or sctp, not {proto!r}")
    host_ip = ""
    if spec.startswith("["):  # [::1]:8080:80
        end = spec.find("]")
        if end < 0 or spec[end + 1:end + 2] != ":":
            raise errdefs.InvalidArgument(f"--publish {value}: expected [IPv6]:HOST_PORT:CONTAINER_PORT")
        host_ip, spec = spec[1:end], spec[end + 2:]
        parts = spec.split(":")
    else:
        parts = spec.split(":")
        if len(parts) == 3:
            host_ip, parts = parts[0], parts[1:]
    if len(parts) != 2:
        raise errdefs.InvalidArgument(
            f"--publish {value}: expected HOST_PORT:CONTAINER_PORT or HOST_IP:HOST_PORT:CONTAINER_PORT[/tcp|udp]")
    if host_ip:
        try:
            ipaddress.ip_address(host_ip)
        except ValueError:
            raise errdefs.InvalidArgument(f"--publish {value}: {host_ip!r} is not an IP address") from None
    ports = []
    for p in parts:
        if not p.isdigit() or not 0 < int(p) < 65536:
            raise errdefs.InvalidArgument(f"--publish {value}: {p!r} is not a port (1-65535)")
        ports.append(int(p))
    return PortMapping(ports[0], ports[1], proto, host_ip)


@dataclass(frozen=True)
class ContainerNetwork:
    """Where a container's CNI networking comes from, as recorded in its :data:`CNI_LABEL`."""

    conf_dir: str
    bin_dirs: tuple[str, ...]
    cache_dir: str
    ports: tuple[PortMapping, ...] = ()

    def cni(self) -> CNI:
        # ctr --cni: the first config of the directory, with loopback
        return CNI(conf_dir=self.conf_dir, bin_dirs=self.bin_dirs, cache_dir=self.cache_dir, max_conf_num=1)

    def pod(self, namespace: str, container_id: str, netns: str) -> PodNetwork:
        # ctr's fullID: <namespace>-<id>, so equal ids in two namespaces do not share an attachment
        return PodNetwork(sandbox_id=f"{namespace}-{container_id}", netns=netns,
                          capabilities=CapabilityArgs(port_mappings=self.ports))

    def label(self) -> str:
        return json.dumps({
            "confDir": self.conf_dir, "binDirs": list(self.bin_dirs), "cacheDir": self.cache_dir,
            "ports": [p.to_json() for p in self.ports],
        }, separators=(",", ":"))

    @classmethod
    def from_label(cls, value: str) -> ContainerNetwork:
        try:
            doc = json.loads(value)
            return cls(
                conf_dir=str(doc["confDir"]), bin_dirs=tuple(str(b) for b in doc["binDirs"]),
                cache_dir=str(doc["cacheDir"]),
                ports=tuple(PortMapping(int(p["hostPort"]), int(p["containerPort"]), str(p.get("protocol", "tcp")),
                                        str(p.get("hostIP", ""))) for p in doc.get("ports", [])),
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise errdefs.InvalidArgument(f"label {CNI_LABEL}: not a CNI attachment record: {exc}") from exc

    async def check_ready(self) -> None:
        """Fail before anything is created when there is no config or a plugin is missing."""
        await self.cni().status()


async def setup_network(namespace: str, container_id: str, pid: int, net: ContainerNetwork) -> SetupResult:
    """CNI ADD for the task whose init process is ``pid`` (created, not yet started)."""
    return await net.cni().setup(net.pod(namespace, container_id, f"/proc/{pid}/ns/net"))


async def teardown_network(namespace: str, container_id: str, labels: Mapping[str, str]) -> bool:
    """CNI DEL for a container networked by :func:`setup_network`; False if it was not."""
    value = labels.get(CNI_LABEL)
    if not value:
        return False
    await release_attachment(namespace, container_id, ContainerNetwork.from_label(value))
    return True


async def release_attachment(namespace: str, container_id: str, net: ContainerNetwork) -> None:
    """CNI DEL without a netns path: the task is deleted, its pid may be another process's now."""
    await net.cni().teardown(net.pod(namespace, container_id, ""))


def publish_all(values: Sequence[str]) -> tuple[PortMapping, ...]:
    return tuple(parse_publish(v) for v in values)
