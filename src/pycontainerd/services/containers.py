"""Containers service: Get, List, ListStream, Create, Update, Delete over the container store."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from .. import errdefs
from ..metadata.containers import Container, ContainerStore, TypedValue
from ..plugin import InitContext, Registration, types
from ..rpc import Encoded, EncodedStream, Server
from .common import DeferredModule, add_servicer, field_paths, namespace_of, ns_from_ts, ts_from_ns

if TYPE_CHECKING:
    from google.protobuf import any_pb2, empty_pb2

    from ..api.services.containers.v1 import containers_pb2 as pb
else:  # imported at the service's first call (W6, idle PSS)
    pb = DeferredModule(
        globals(), "pb", "..api.services.containers.v1.containers_pb2",
        package="containerd.services.containers.v1",
    )
    any_pb2 = DeferredModule(globals(), "any_pb2", "google.protobuf.any_pb2")
    empty_pb2 = DeferredModule(globals(), "empty_pb2", "google.protobuf.empty_pb2")


def _typed(a: any_pb2.Any) -> TypedValue:
    return TypedValue(a.type_url, a.value)


def _any(v: TypedValue) -> any_pb2.Any:
    return any_pb2.Any(type_url=v.type_url, value=v.value)


def from_pb(c: pb.Container) -> Container:
    return Container(
        id=c.id,
        runtime_name=c.runtime.name if c.HasField("runtime") else "",
        spec=_typed(c.spec) if c.HasField("spec") else None,
        runtime_options=(
            _typed(c.runtime.options) if c.HasField("runtime") and c.runtime.HasField("options") else None
        ),
        labels=dict(c.labels),
        image=c.image,
        snapshotter=c.snapshotter,
        snapshot_key=c.snapshot_key,
        sandbox=c.sandbox,
        extensions={k: _typed(v) for k, v in c.extensions.items()},
        created_at_ns=ns_from_ts(c.created_at) if c.HasField("created_at") else 0,
        updated_at_ns=ns_from_ts(c.updated_at) if c.HasField("updated_at") else 0,
    )


def to_pb(c: Container) -> pb.Container:
    out = pb.Container(
        id=c.id,
        labels=c.labels,
        image=c.image,
        snapshotter=c.snapshotter,
        snapshot_key=c.snapshot_key,
        sandbox=c.sandbox,
        created_at=ts_from_ns(c.created_at_ns),
        updated_at=ts_from_ns(c.updated_at_ns),
    )
    out.runtime.name = c.runtime_name
    if c.runtime_options is not None:
        out.runtime.options.CopyFrom(_any(c.runtime_options))
    if c.spec is not None:
        out.spec.CopyFrom(_any(c.spec))
    for k, v in c.extensions.items():
        out.extensions[k].CopyFrom(_any(v))
    return out


# the encoded lists kept (``ContainersService._encoded_list``): this many namespaces, each
# only while its encoding is at most this big
KEEP_NAMESPACES = 4
KEEP_BYTES = 4 << 20


class _EncodedList:
    """Every container of a namespace, each encoded as a ``ListContainerMessage`` (whose one
    field has the number of ``ListContainersResponse.containers``: their concatenation is the
    encoded response too), and, made on first use, the two answers: List's response and
    ListStream's messages framed as one piece (which then holds the messages: they are not
    kept twice)."""

    __slots__ = ("_messages", "_response", "_stream", "count", "generation", "size")

    def __init__(self, generation: int | None, messages: list[bytes]) -> None:
        self.generation = generation
        self.count = len(messages)
        self.size = sum(map(len, messages))
        self._messages = messages
        self._response: bytes | None = None
        self._stream: EncodedStream | None = None

    def response(self) -> Encoded:
        if self._response is None:
            if self._stream is None:
                self._response = b"".join(self._messages)
            else:  # the framed messages without their prefixes
                data, pos, parts = self._stream.data, 0, []
                while pos < len(data):
                    length = int.from_bytes(data[pos + 1:pos + 5], "big")
                    parts.append(data[pos + 5:pos + 5 + length])
                    pos += 5 + length
                self._response = b"".join(parts)
        return Encoded(self._response)

    def stream(self) -> EncodedStream:
        if self._stream is None:
            self._stream = EncodedStream.of(self._messages)
            self._messages = []
        return self._stream


class ContainersService:
    def __init__(self, store: ContainerStore) -> None:
        self.store = store
        # namespace -> its containers encoded, as of a database generation: an unfiltered
        # List/ListStream (``ctr containers ls``) answers from here until the next metadata
        # write, without a read on a worker thread or any encoding
        self._encoded: dict[str, _EncodedList] = {}

    async def _encoded_list(self, ns: str) -> _EncodedList:
        """Every container of ``ns``, encoded (kept while the database has not changed)."""
        kept = self._encoded.get(ns)
        if kept is not None and kept.generation == self.store.db.generation:
            return kept
        cs, generation = await self.store.list_all(ns)
        out = _EncodedList(generation, [pb.ListContainerMessage(container=to_pb(c)).SerializeToString() for c in cs])
        if generation is not None and out.size <= KEEP_BYTES:
            # what an older generation left is stale: dropped, so at most a few lists are held
            fresh = {k: v for k, v in self._encoded.items() if v.generation == generation and k != ns}
            if len(fresh) >= KEEP_NAMESPACES:
                fresh.pop(next(iter(fresh)))
            fresh[ns] = out
            self._encoded = fresh
        return out

    async def Get(self, request: pb.GetContainerRequest, context: Any) -> pb.GetContainerResponse:
        c = await self.store.get(namespace_of(context), request.id)
        return pb.GetContainerResponse(container=to_pb(c))

    async def List(self, request: pb.ListContainersRequest, context: Any) -> pb.ListContainersResponse | Encoded:
        if not request.filters:
            return (await self._encoded_list(namespace_of(context))).response()
        cs = await self.store.list(namespace_of(context), list(request.filters))
        return pb.ListContainersResponse(containers=[to_pb(c) for c in cs])

    async def ListStream(
        self, request: pb.ListContainersRequest, context: Any
    ) -> AsyncIterator[pb.ListContainerMessage | EncodedStream]:
        if not request.filters:
            listed = await self._encoded_list(namespace_of(context))
            if listed.count:
                yield listed.stream()  # every message at once, framed already
            return
        for c in await self.store.list(namespace_of(context), list(request.filters)):
            yield pb.ListContainerMessage(container=to_pb(c))

    async def Create(self, request: pb.CreateContainerRequest, context: Any) -> pb.CreateContainerResponse:
        if not request.HasField("container"):
            raise errdefs.InvalidArgument("container must be set")
        c = await self.store.create(namespace_of(context), from_pb(request.container))
        return pb.CreateContainerResponse(container=to_pb(c))

    async def Update(self, request: pb.UpdateContainerRequest, context: Any) -> pb.UpdateContainerResponse:
        if not request.container.id:
            raise errdefs.InvalidArgument("Container.ID required")
        paths = field_paths(request.update_mask) if request.HasField("update_mask") else []
        c = await self.store.update(namespace_of(context), from_pb(request.container), paths)
        return pb.UpdateContainerResponse(container=to_pb(c))

    async def Delete(self, request: pb.DeleteContainerRequest, context: Any) -> empty_pb2.Empty:
        await self.store.delete(namespace_of(context), request.id)
        return empty_pb2.Empty()

    def add_to_server(self, server: Server) -> None:
        add_servicer(server, self, pb, "Containers")


async def _init_store(ctx: InitContext) -> ContainerStore:
    return ContainerStore(ctx.daemon.db, ctx.daemon.exchange)


async def _init_service(ctx: InitContext) -> ContainersService:
    return ContainersService(ctx.get(types.SERVICE, "containers-service"))


REGISTRATIONS = [
    Registration(type=types.SERVICE, id="containers-service", init=_init_store, requires=(types.METADATA,)),
    Registration(type=types.GRPC, id="containers", init=_init_service, requires=(types.SERVICE,)),
]
