"""One wrapper per containerd service: protobuf in, plain dataclasses out.

Each wrapper holds the ``Client`` (for its channel, namespace and lease headers) and a
stub; ``raw`` exposes the stub for callers that need a field this wrapper does not map.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from google.protobuf import any_pb2, field_mask_pb2

from .. import typeurl
from ..api.services.events.v1 import events_pb2, events_pb2_grpc
from ..api.services.introspection.v1 import introspection_pb2, introspection_pb2_grpc
from ..api.services.namespaces.v1 import namespaces_pb2, namespaces_pb2_grpc
from .containers import Containers as Containers
from .content import Content as Content
from .images import Images as Images
from .leases import Leases as Leases
from .snapshots import Snapshots as Snapshots
from .tasks import Tasks as Tasks

if TYPE_CHECKING:
    from .core import Client


class _Service:
    stub_cls: Any = None

    def __init__(self, client: Client) -> None:
        self.client = client
        self.raw = self.stub_cls(client.channel)


# -- introspection ------------------------------------------------------------------------
@dataclass
class PluginInfo:
    type: str
    id: str
    requires: list[str]
    platforms: list[str]
    exports: dict[str, str]
    capabilities: list[str]
    status: str  # ok | skip | error
    error: str = ""


class Introspection(_Service):
    stub_cls = introspection_pb2_grpc.IntrospectionStub

    async def plugins(self, filters: Sequence[str] = ()) -> list[PluginInfo]:
        resp = await self.client.unary(self.raw.Plugins, introspection_pb2.PluginsRequest(filters=list(filters)))
        out = []
        for p in resp.plugins:
            status, err = "ok", ""
            if p.HasField("init_err"):
                err = p.init_err.message
                status = "skip" if "skip plugin" in err else "error"
            plats = [
                "/".join(x for x in (pl.os, pl.architecture, pl.variant) if x) for pl in p.platforms
            ]
            out.append(PluginInfo(p.type, p.id, list(p.requires), plats, dict(p.exports), list(p.capabilities),
                                  status, err))
        return out


# -- namespaces ---------------------------------------------------------------------------
@dataclass
class Namespace:
    name: str
    labels: dict[str, str] = field(default_factory=dict)


class Namespaces(_Service):
    stub_cls = namespaces_pb2_grpc.NamespacesStub

    async def list(self) -> list[Namespace]:
        resp = await self.client.unary(self.raw.List, namespaces_pb2.ListNamespacesRequest())
        return [Namespace(n.name, dict(n.labels)) for n in resp.namespaces]

    async def get(self, name: str) -> Namespace:
        resp = await self.client.unary(self.raw.Get, namespaces_pb2.GetNamespaceRequest(name=name))
        return Namespace(resp.namespace.name, dict(resp.namespace.labels))

    async def create(self, name: str, labels: Mapping[str, str] | None = None) -> Namespace:
        req = namespaces_pb2.CreateNamespaceRequest(namespace=namespaces_pb2.Namespace(name=name, labels=labels or {}))
        resp = await self.client.unary(self.raw.Create, req)
        return Namespace(resp.namespace.name, dict(resp.namespace.labels))

    async def set_labels(self, name: str, labels: Mapping[str, str]) -> Namespace:
        """Set (or with an empty value, remove) each given label, like ``ctr namespaces label``."""
        req = namespaces_pb2.UpdateNamespaceRequest(
            namespace=namespaces_pb2.Namespace(name=name, labels={k: v for k, v in labels.items() if v}),
            update_mask=field_mask_pb2.FieldMask(paths=[f"labels.{k}" for k in labels]),
        )
        resp = await self.client.unary(self.raw.Update, req)
        return Namespace(resp.namespace.name, dict(resp.namespace.labels))

    async def delete(self, name: str) -> None:
        await self.client.unary(self.raw.Delete, namespaces_pb2.DeleteNamespaceRequest(name=name))


# -- events -------------------------------------------------------------------------------
@dataclass
class Event:
    timestamp: datetime
    namespace: str
    topic: str
    type_url: str
    fields: dict[str, Any]

    def json(self) -> str:
        return json.dumps(self.fields, separators=(",", ":"), sort_keys=False)


def decode_any(a: any_pb2.Any) -> dict[str, Any]:
    """The fields of an event for printing; ``{"@type": <type URL>}`` if its type is unknown."""
    fields = typeurl.to_dict(a)
    return {"@type": a.type_url} if fields is None else fields


class Events(_Service):
    stub_cls = events_pb2_grpc.EventsStub

    async def subscribe(self, filters: Sequence[str] = ()) -> AsyncIterator[Event]:
        # make sure every event type is registered for decoding
        from ..api.events import container_pb2, content_pb2, image_pb2, namespace_pb2, snapshot_pb2, task_pb2  # noqa: F401

        req = events_pb2.SubscribeRequest(filters=list(filters))
        async for env in self.client.stream(self.raw.Subscribe, req):
            ts = datetime.fromtimestamp(env.timestamp.seconds + env.timestamp.nanos / 1e9, UTC)
            yield Event(ts, env.namespace, env.topic, env.event.type_url, decode_any(env.event))

    async def publish(self, topic: str, event: Any) -> None:
        a = any_pb2.Any(type_url=event.DESCRIPTOR.full_name, value=event.SerializeToString())
        await self.client.unary(self.raw.Publish, events_pb2.PublishRequest(topic=topic, event=a))
