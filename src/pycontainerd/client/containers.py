"""Container records over gRPC: ``client.containers.get/list/create/update/delete``.

A ``Container`` is only metadata (the spec, the runtime, the rootfs snapshot key, labels);
running it is the Tasks service's job (client/tasks.py).  The OCI spec travels as JSON
inside an Any (``types.containerd.io/opencontainers/runtime-spec/1/Spec``), exactly as ctr
sends it; ``Container.spec`` is that JSON decoded.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from google.protobuf import any_pb2, field_mask_pb2, timestamp_pb2

from ..api.runtime.v2.runc.options import oci_pb2
from ..api.services.containers.v1 import containers_pb2, containers_pb2_grpc
from ..oci.spec import SPEC_TYPE_URL
from . import DEFAULT_RUNTIME

if TYPE_CHECKING:
    from .core import Client

RUNC_OPTIONS_TYPE_URL = "containerd.runc.v1.Options"

__all__ = ["DEFAULT_RUNTIME", "Container", "Containers", "runc_options"]


def _dt(ts: timestamp_pb2.Timestamp) -> datetime | None:
    if not ts.seconds and not ts.nanos:
        return None
    return datetime.fromtimestamp(ts.seconds + ts.nanos / 1e9, UTC)


def runc_options(binary_name: str = "", root: str = "", systemd_cgroup: bool = False) -> any_pb2.Any:
    """The runtime options Any ctr attaches for io.containerd.runc.v2 (``containerd.runc.v1.Options``)."""
    opts = oci_pb2.Options(binary_name=binary_name, root=root, systemd_cgroup=systemd_cgroup)
    return any_pb2.Any(type_url=RUNC_OPTIONS_TYPE_URL, value=opts.SerializeToString())


def spec_any(spec: Mapping[str, Any], type_url: str = SPEC_TYPE_URL) -> any_pb2.Any:
    return any_pb2.Any(type_url=type_url, value=json.dumps(spec, separators=(",", ":")).encode())


@dataclass
class Container:
    id: str
    image: str = ""
    labels: dict[str, str] = field(default_factory=dict)
    runtime: str = DEFAULT_RUNTIME
    runtime_options: any_pb2.Any | None = None
    spec: dict[str, Any] | None = None
    spec_type_url: str = SPEC_TYPE_URL
    snapshotter: str = ""
    snapshot_key: str = ""
    sandbox: str = ""
    extensions: dict[str, any_pb2.Any] = field(default_factory=dict)
    created_at: datetime | None = None
    updated_at: datetime | None = None

    @classmethod
    def from_pb(cls, c: containers_pb2.Container) -> Container:
        spec: dict[str, Any] | None = None
        if c.HasField("spec") and c.spec.value:
            try:
                spec = json.loads(c.spec.value)
            except ValueError:
                spec = None
        return cls(
            id=c.id, image=c.image, labels=dict(c.labels), runtime=c.runtime.name,
            runtime_options=c.runtime.options if c.runtime.HasField("options") else None,
            spec=spec, spec_type_url=c.spec.type_url or SPEC_TYPE_URL, snapshotter=c.snapshotter,
            snapshot_key=c.snapshot_key, sandbox=c.sandbox,
            extensions={k: v for k, v in c.extensions.items()},
            created_at=_dt(c.created_at), updated_at=_dt(c.updated_at),
        )

    def to_pb(self) -> containers_pb2.Container:
        runtime = containers_pb2.Container.Runtime(name=self.runtime)
        if self.runtime_options is not None:
            runtime.options.CopyFrom(self.runtime_options)
        pb = containers_pb2.Container(id=self.id, labels=dict(self.labels), image=self.image, runtime=runtime,
                                      snapshotter=self.snapshotter, snapshot_key=self.snapshot_key,
                                      sandbox=self.sandbox)
        if self.spec is not None:
            pb.spec.CopyFrom(spec_any(self.spec, self.spec_type_url))
        for k, v in self.extensions.items():
            pb.extensions[k].CopyFrom(v)
        return pb

    def info(self) -> dict[str, Any]:
        """The record in the shape ``ctr containers info`` prints (Go field names)."""
        def ts(d: datetime | None) -> str:
            return d.strftime("%Y-%m-%dT%H:%M:%S.%fZ") if d else "0001-01-01T00:00:00Z"

        options: dict[str, Any] | None = None
        if self.runtime_options is not None:
            options = {"type_url": self.runtime_options.type_url}
            if self.runtime_options.value:
                options["value"] = self.runtime_options.value.hex()
        return {
            "ID": self.id, "Labels": self.labels or None, "Image": self.image,
            "Runtime": {"Name": self.runtime, "Options": options},
            "SnapshotKey": self.snapshot_key, "Snapshotter": self.snapshotter,
            "CreatedAt": ts(self.created_at), "UpdatedAt": ts(self.updated_at),
            "Extensions": {k: {"type_url": v.type_url} for k, v in self.extensions.items()} or None,
            "Spec": self.spec,
        }


class Containers:
    stub_cls: Any = containers_pb2_grpc.ContainersStub
    pb = containers_pb2

    def __init__(self, client: Client) -> None:
        self.client = client
        self.raw = self.stub_cls(client.channel)

    async def get(self, container_id: str) -> Container:
        resp = await self.client.unary(self.raw.Get, containers_pb2.GetContainerRequest(id=container_id))
        return Container.from_pb(resp.container)

    async def list(self, filters: Sequence[str] = ()) -> list[Container]:
        resp = await self.client.unary(self.raw.List, containers_pb2.ListContainersRequest(filters=list(filters)))
        return [Container.from_pb(c) for c in resp.containers]

    async def create(self, container: Container) -> Container:
        req = containers_pb2.CreateContainerRequest(container=container.to_pb())
        resp = await self.client.unary(self.raw.Create, req)
        return Container.from_pb(resp.container)

    async def update(self, container: Container, fieldpaths: Sequence[str] = ()) -> Container:
        req = containers_pb2.UpdateContainerRequest(
            container=container.to_pb(),
            update_mask=field_mask_pb2.FieldMask(paths=list(fieldpaths)) if fieldpaths else None,
        )
        resp = await self.client.unary(self.raw.Update, req)
        return Container.from_pb(resp.container)

    async def set_labels(self, container_id: str, labels: Mapping[str, str]) -> Container:
        """Set (or with an empty value, remove) each given label, like ``ctr containers label``."""
        c = Container(id=container_id, labels={k: v for k, v in labels.items() if v}, runtime="")
        return await self.update(c, [f"labels.{k}" for k in labels])

    async def delete(self, container_id: str) -> None:
        await self.client.unary(self.raw.Delete, containers_pb2.DeleteContainerRequest(id=container_id))
