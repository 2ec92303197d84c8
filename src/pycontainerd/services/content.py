"""Content service: Info, Update, List*, Delete, Read*, Status, ListStatuses, Write**, Abort.

Every call works on the caller's namespace (``containerd-namespace``) and, for writes, its
lease (``containerd-lease``).  Write follows containerd's protocol: the first message
names the ref (and maybe total/expected) and opens, or resumes, the ingest; each message is
answered with the ingest's offset; STAT also reports total and timestamps; WRITE appends at
the current offset (offset 0 on a non-empty ingest starts again); COMMIT verifies and
publishes.  When ``expected`` is already committed in the namespace the stream fails with
ALREADY_EXISTS, which clients take as "skip this blob".
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from .. import errdefs
from ..content.helpers import READ_CHUNK, validate_digest
from ..content.interfaces import Info, Status
from ..content.local import LocalStore
from ..metadata.content import ContentStore, NamespacedContentStore, NamespacedWriter
from ..metadata.gc import Scheduler
from ..metadata.plugin import Metadata
from ..plugin import InitContext, Registration, types
from ..rpc import Server
from .common import DeferredModule, add_servicer, field_paths, lease_of, namespace_of, ts_from_ns

if TYPE_CHECKING:
    from google.protobuf import empty_pb2

    from ..api.services.content.v1 import content_pb2 as pb
else:  # imported at the service's first call (W6, idle PSS)
    pb = DeferredModule(
        globals(), "pb", "..api.services.content.v1.content_pb2",
        package="containerd.services.content.v1",
    )
    empty_pb2 = DeferredModule(globals(), "empty_pb2", "google.protobuf.empty_pb2")

LIST_BATCH = 100


def info_pb(info: Info) -> pb.Info:
    return pb.Info(
        digest=info.digest,
        size=info.size,
        created_at=ts_from_ns(info.created_at),
        updated_at=ts_from_ns(info.updated_at),
        labels=info.labels,
    )


def status_pb(st: Status) -> pb.Status:
    return pb.Status(
        started_at=ts_from_ns(st.started_at),
        updated_at=ts_from_ns(st.updated_at),
        ref=st.ref,
        offset=st.offset,
        total=st.total,
        expected=st.expected,
    )


def _digest_arg(digest: str) -> str:
    try:
        return validate_digest(digest)
    except errdefs.InvalidArgument as exc:
        reason = str(exc).rsplit(": ", 1)[-1]
        raise errdefs.InvalidArgument(f"digest {digest!r} failed validation: {reason}") from None


class ContentService:
    def __init__(self, store: ContentStore) -> None:
        self.store = store

    def _ns(self, context: Any) -> NamespacedContentStore:
        return self.store.namespaced(namespace_of(context), lease_of(context))

    async def Info(self, request: pb.InfoRequest, context: Any) -> pb.InfoResponse:
        info = await self._ns(context).info(_digest_arg(request.digest))
        return pb.InfoResponse(info=info_pb(info))

    async def Update(self, request: pb.UpdateRequest, context: Any) -> pb.UpdateResponse:
        digest = _digest_arg(request.info.digest)
        paths = field_paths(request.update_mask) if request.HasField("update_mask") else []
        info = await self._ns(context).update(Info(digest=digest, size=0, labels=dict(request.info.labels)), paths)
        return pb.UpdateResponse(info=info_pb(info))

    async def List(self, request: pb.ListContentRequest, context: Any) -> AsyncIterator[pb.ListContentResponse]:
        infos = await self._ns(context).list(list(request.filters))
        for i in range(0, len(infos), LIST_BATCH):
            yield pb.ListContentResponse(info=[info_pb(x) for x in infos[i : i + LIST_BATCH]])

    async def Delete(self, request: pb.DeleteContentRequest, context: Any) -> empty_pb2.Empty:
        await self._ns(context).delete(_digest_arg(request.digest))
        return empty_pb2.Empty()

    async def Read(self, request: pb.ReadContentRequest, context: Any) -> AsyncIterator[pb.ReadContentResponse]:
        store = self._ns(context)
        digest = _digest_arg(request.digest)
        info = await store.info(digest)
        offset = max(request.offset, 0)
        if offset > info.size:
            raise errdefs.OutOfRange(f"read of {digest} at offset {offset}: past object length {info.size} bytes")
        size = request.size
        if size <= 0 or offset + size > info.size:
            size = info.size - offset
        if size == 0:
            return
        pos = offset
        async for chunk in store.read(digest, offset, size, checked=True):
            for i in range(0, len(chunk), READ_CHUNK):
                part = chunk[i : i + READ_CHUNK]
                yield pb.ReadContentResponse(offset=pos, data=part)
                pos += len(part)

    async def Status(self, request: pb.StatusRequest, context: Any) -> pb.StatusResponse:
        try:
            st = await self._ns(context).status(request.ref)
        except errdefs.NotFound as exc:
            raise errdefs.NotFound(f"could not get status for ref {request.ref!r}: {exc}") from exc
        return pb.StatusResponse(status=status_pb(st))

    async def ListStatuses(self, request: pb.ListStatusesRequest, context: Any) -> pb.ListStatusesResponse:
        statuses = await self._ns(context).list_statuses(list(request.filters))
        return pb.ListStatusesResponse(statuses=[status_pb(s) for s in statuses])

    async def Abort(self, request: pb.AbortRequest, context: Any) -> empty_pb2.Empty:
        await self._ns(context).abort(request.ref)
        return empty_pb2.Empty()

    async def Write(
        self, request_iterator: AsyncIterator[pb.WriteContentRequest], context: Any
    ) -> AsyncIterator[pb.WriteContentResponse]:
        store = self._ns(context)
        requests = request_iterator.__aiter__()
        try:
            req = await requests.__anext__()
        except StopAsyncIteration:
            return
        if not req.ref:
            raise errdefs.InvalidArgument("first message must have a reference")
        ref, total, expected = req.ref, req.total, req.expected
        if expected:
            _digest_arg(expected)
        # holds the ref's lock until the stream ends
        wr: NamespacedWriter = await store.writer(ref, total, expected)
        try:
            while True:
                ws = await wr.status()
                msg = pb.WriteContentResponse(action=req.action, offset=ws.offset)
                if req.expected:
                    expected = _digest_arg(req.expected)
                    try:
                        await store.info(expected)
                    except errdefs.NotFound:
                        pass
                    else:
                        await wr.close()
                        try:
                            await store.abort(ref)
                        except errdefs.NotFound:
                            pass
                        raise errdefs.AlreadyExists(f"blob with expected digest {expected} exists")
                if req.total > 0:
                    total = req.total
                if req.action == pb.STAT:
                    msg.digest = wr.digest()
                    msg.started_at.CopyFrom(ts_from_ns(ws.started_at))
                    msg.updated_at.CopyFrom(ts_from_ns(ws.updated_at))
                    msg.total = total
                elif req.action in (pb.WRITE, pb.COMMIT):
                    if req.offset > 0 and req.offset != ws.offset:
                        raise errdefs.OutOfRange(f"write @{req.offset} must occur at current offset {ws.offset}")
                    if req.offset == 0 and ws.offset > 0:
                        await wr.truncate(0)
                        msg.offset = 0
                    if req.data:
                        msg.offset = await wr.write(req.data)
                    if req.action == pb.COMMIT:
                        msg.digest = await wr.commit(total, expected, dict(req.labels))
                    else:
                        msg.digest = wr.digest()
                else:
                    raise errdefs.InvalidArgument(f"unknown write action {req.action}")
                yield msg
                if req.action == pb.COMMIT:
                    return
                try:
                    req = await requests.__anext__()
                except StopAsyncIteration:
                    return
        finally:
            await wr.close()

    def add_to_server(self, server: Server) -> None:
        add_servicer(server, self, pb, "Content")


async def _init_store(ctx: InitContext) -> ContentStore:
    meta = ctx.require(Metadata, types.METADATA)
    local = ctx.require(LocalStore, types.CONTENT, "content")
    # without a collector, deleting the last record removes the bytes at once
    gc = ctx.optional(Scheduler, types.GC, "scheduler")
    return ContentStore(meta.db, local, ctx.daemon.exchange, delete_unreferenced_blobs=gc is None)


async def _init_service(ctx: InitContext) -> ContentService:
    return ContentService(ctx.get(types.SERVICE, "content-service"))


REGISTRATIONS = [
    Registration(
        type=types.SERVICE, id="content-service", init=_init_store, requires=(types.METADATA, types.CONTENT, types.GC)
    ),
    Registration(type=types.GRPC, id="content", init=_init_service, requires=(types.SERVICE,)),
]
