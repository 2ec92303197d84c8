"""Events service: Publish, Forward and Subscribe over the daemon's exchange.

Events published inside the daemon carry a payload dict; here they become the
``containerd.events.*`` message for their topic, packed in an Any whose type URL is the
message's full name (what ``ctr events`` resolves).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from .. import errdefs, identifiers, typeurl
from ..events import Envelope, Exchange
from ..events.exchange import validate_topic
from ..plugin import InitContext, Registration, types
from ..rpc import Server
from .common import DeferredModule, add_servicer, namespace_of, ns_from_ts, ts_from_ns

if TYPE_CHECKING:
    from google.protobuf import any_pb2, empty_pb2, message

    from ..api.events import container_pb2, content_pb2, image_pb2, namespace_pb2, snapshot_pb2, task_pb2
    from ..api.services.events.v1 import events_pb2 as pb
else:  # imported at the service's first call (W6, idle PSS)
    container_pb2 = DeferredModule(globals(), "container_pb2", "..api.events.container_pb2")
    content_pb2 = DeferredModule(globals(), "content_pb2", "..api.events.content_pb2")
    image_pb2 = DeferredModule(globals(), "image_pb2", "..api.events.image_pb2")
    namespace_pb2 = DeferredModule(globals(), "namespace_pb2", "..api.events.namespace_pb2")
    snapshot_pb2 = DeferredModule(globals(), "snapshot_pb2", "..api.events.snapshot_pb2")
    task_pb2 = DeferredModule(globals(), "task_pb2", "..api.events.task_pb2")
    pb = DeferredModule(globals(), "pb", "..api.services.events.v1.events_pb2", package="containerd.services.events.v1")
    any_pb2 = DeferredModule(globals(), "any_pb2", "google.protobuf.any_pb2")
    empty_pb2 = DeferredModule(globals(), "empty_pb2", "google.protobuf.empty_pb2")

log = logging.getLogger("pycontainerd.events")


@functools.cache
def topic_messages() -> dict[str, type[message.Message]]:
    """The ``containerd.events`` message of each topic (built at the first event encoded)."""
    return {
        "/tasks/create": task_pb2.TaskCreate,
        "/tasks/start": task_pb2.TaskStart,
        "/tasks/delete": task_pb2.TaskDelete,
        "/tasks/io": task_pb2.TaskIO,
        "/tasks/exit": task_pb2.TaskExit,
        "/tasks/oom": task_pb2.TaskOOM,
        "/tasks/exec-added": task_pb2.TaskExecAdded,
        "/tasks/exec-started": task_pb2.TaskExecStarted,
        "/tasks/paused": task_pb2.TaskPaused,
        "/tasks/resumed": task_pb2.TaskResumed,
        "/tasks/checkpointed": task_pb2.TaskCheckpointed,
        "/containers/create": container_pb2.ContainerCreate,
        "/containers/update": container_pb2.ContainerUpdate,
        "/containers/delete": container_pb2.ContainerDelete,
        "/images/create": image_pb2.ImageCreate,
        "/images/update": image_pb2.ImageUpdate,
        "/images/delete": image_pb2.ImageDelete,
        "/namespaces/create": namespace_pb2.NamespaceCreate,
        "/namespaces/update": namespace_pb2.NamespaceUpdate,
        "/namespaces/delete": namespace_pb2.NamespaceDelete,
        "/snapshot/prepare": snapshot_pb2.SnapshotPrepare,
        "/snapshot/commit": snapshot_pb2.SnapshotCommit,
        "/snapshot/remove": snapshot_pb2.SnapshotRemove,
        "/content/delete": content_pb2.ContentDelete,
    }


def encode_event(env: Envelope) -> any_pb2.Any:
    if env.raw is not None:
        return any_pb2.Any(type_url=env.raw[0], value=env.raw[1])
    cls = topic_messages().get(env.topic)
    if cls is None:
        raise errdefs.InvalidArgument(f"no event type known for topic {env.topic}")
    from google.protobuf import json_format  # on the first event, not at start-up (W6, idle PSS)

    msg = json_format.ParseDict(dict(env.payload), cls(), ignore_unknown_fields=True)
    return any_pb2.Any(type_url=cls.DESCRIPTOR.full_name, value=msg.SerializeToString())


def decode_any(event: any_pb2.Any) -> dict[str, Any]:
    """The fields of a forwarded event, for filters on ``event.<field>``; {} if its type is unknown."""
    topic_messages()  # the event modules imported: their types known to typeurl
    fields = typeurl.to_dict(event)
    return {} if fields is None else fields


def to_envelope_pb(env: Envelope) -> pb.Envelope:
    return pb.Envelope(
        timestamp=ts_from_ns(env.timestamp_ns), namespace=env.namespace, topic=env.topic, event=encode_event(env)
    )


class EventsService:
    def __init__(self, exchange: Exchange) -> None:
        self.exchange = exchange

    async def Publish(self, request: pb.PublishRequest, context: Any) -> empty_pb2.Empty:
        ns = namespace_of(context)
        if not request.HasField("event"):
            raise errdefs.InvalidArgument(f"event must be set (topic {request.topic!r})")
        import time

        env = Envelope(
            time.time_ns(), ns, request.topic, decode_any(request.event),
            raw=(request.event.type_url, request.event.value),
        )
        self.exchange.forward(env)
        return empty_pb2.Empty()

    async def Forward(self, request: pb.ForwardRequest, context: Any) -> empty_pb2.Empty:
        # validated in containerd's order (namespace, topic, timestamp); a missing envelope or event
        # is refused here too (containerd 1.6 dereferences nil and crashes)
        if not request.HasField("envelope"):
            raise errdefs.InvalidArgument("forward request: envelope must be set")
        e = request.envelope
        if not e.HasField("event"):
            raise errdefs.InvalidArgument(f"envelope event must be set (topic {e.topic!r})")
        try:
            identifiers.validate(e.namespace)
        except errdefs.InvalidArgument as exc:
            raise errdefs.InvalidArgument(f"event envelope has invalid namespace: {exc}") from None
        validate_topic(e.topic)
        if ns_from_ts(e.timestamp) == 0:
            raise errdefs.InvalidArgument(f"timestamp must be set on forwarded event {e.topic}")
        env = Envelope(
            ns_from_ts(e.timestamp), e.namespace, e.topic, decode_any(e.event), raw=(e.event.type_url, e.event.value)
        )
        self.exchange.forward(env)
        return empty_pb2.Empty()

    async def Subscribe(self, request: pb.SubscribeRequest, context: Any) -> AsyncIterator[pb.Envelope]:
        async for env in self.exchange.subscribe(list(request.filters)):
            try:
                yield to_envelope_pb(env)
            except Exception:
                log.exception("cannot encode event %s", env.topic)

    def add_to_server(self, server: Server) -> None:
        add_servicer(server, self, pb, "Events")


async def _init(ctx: InitContext) -> EventsService:
    return EventsService(ctx.daemon.exchange)


async def _init_exchange(ctx: InitContext) -> Exchange:
    exchange: Exchange = ctx.daemon.exchange
    return exchange


REGISTRATIONS = [
    Registration(type=types.EVENT, id="exchange", init=_init_exchange),
    Registration(type=types.GRPC, id="events", init=_init, requires=(types.EVENT,)),
]
