"""The Content service over gRPC: a content store (``content.interfaces.Store``) proxy.

    cs = client.content
    info = await cs.info("sha256:…")
    async for chunk in cs.read("sha256:…"): ...
    w = await cs.writer("layer-sha256:…", total=size, expected=digest)   # AlreadyExists if present
    await w.write(data); await w.commit(size, digest, labels)

Writes use the bidirectional ``Write`` stream the way ctr does: a ``STAT`` message opens
(or resumes) the ingest and answers its current offset — or fails with AlreadyExists when
the expected blob is already committed, or Unavailable while another writer holds the
ref (``images.blobs.open_writer`` retries that with backoff); ``WRITE`` messages carry
``offset`` + data and are each answered with the new offset; ``COMMIT`` carries the total
size, expected digest and labels, and is answered with the digest.  Every request carries
the client's namespace and lease headers.
"""

from __future__ import annotations

import builtins
import hashlib
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import grpc
from google.protobuf import field_mask_pb2, timestamp_pb2
from grpc.aio import EOF  # type: ignore[attr-defined]

from .. import errdefs
from ..api.services.content.v1 import content_pb2, content_pb2_grpc
from ..content.interfaces import Info, Status

if TYPE_CHECKING:
    from .core import Client

__all__ = ["Content", "RemoteWriter"]

READ_CHUNK = 1 << 20


def _ns(ts: timestamp_pb2.Timestamp) -> int:
    return int(ts.seconds) * 1_000_000_000 + int(ts.nanos)


def info_from_pb(i: content_pb2.Info) -> Info:
    return Info(digest=i.digest, size=int(i.size), created_at=_ns(i.created_at), updated_at=_ns(i.updated_at),
                labels=dict(i.labels))


def status_from_pb(s: content_pb2.Status) -> Status:
    return Status(ref=s.ref, offset=int(s.offset), total=int(s.total), expected=s.expected,
                  started_at=_ns(s.started_at), updated_at=_ns(s.updated_at))


class Content:
    """Content store proxy; satisfies ``content.interfaces.Store``."""

    stub_cls: Any = content_pb2_grpc.ContentStub
    pb = content_pb2

    def __init__(self, client: Client) -> None:
        self.client = client
        self.raw = self.stub_cls(client.channel)

    # -- Manager ------------------------------------------------------------------------
    async def info(self, digest: str) -> Info:
        resp = await self.client.unary(self.raw.Info, content_pb2.InfoRequest(digest=digest))
        return info_from_pb(resp.info)

    async def update(self, info: Info, fieldpaths: Sequence[str] = ()) -> Info:
        req = content_pb2.UpdateRequest(
            info=content_pb2.Info(digest=info.digest, labels=dict(info.labels)),
            update_mask=field_mask_pb2.FieldMask(paths=list(fieldpaths)) if fieldpaths else None,
        )
        resp = await self.client.unary(self.raw.Update, req)
        return info_from_pb(resp.info)

    async def set_labels(self, digest: str, labels: Mapping[str, str]) -> Info:
        """Set (empty value: remove) the given labels only."""
        return await self.update(Info(digest, 0, labels={k: v for k, v in labels.items() if v}),
                                 [f"labels.{k}" for k in labels])

    async def list(self, filters: Sequence[str] = ()) -> builtins.list[Info]:
        out: builtins.list[Info] = []
        async for resp in self.client.stream(self.raw.List, content_pb2.ListContentRequest(filters=list(filters))):
            out.extend(info_from_pb(i) for i in resp.info)
        return out

    async def delete(self, digest: str) -> None:
        await self.client.unary(self.raw.Delete, content_pb2.DeleteContentRequest(digest=digest))

    # -- Provider -----------------------------------------------------------------------
    async def read(self, digest: str, offset: int = 0, size: int = 0) -> AsyncIterator[bytes]:
        req = content_pb2.ReadContentRequest(digest=digest, offset=offset, size=size)
        async for resp in self.client.stream(self.raw.Read, req):
            if resp.data:
                yield bytes(resp.data)

    async def read_all(self, digest: str) -> bytes:
        return b"".join([c async for c in self.read(digest)])

    # -- IngestManager ------------------------------------------------------------------
    async def status(self, ref: str) -> Status:
        resp = await self.client.unary(self.raw.Status, content_pb2.StatusRequest(ref=ref))
        return status_from_pb(resp.status)

    async def list_statuses(self, filters: Sequence[str] = ()) -> builtins.list[Status]:
        resp = await self.client.unary(self.raw.ListStatuses, content_pb2.ListStatusesRequest(filters=list(filters)))
        return [status_from_pb(s) for s in resp.statuses]

    async def abort(self, ref: str) -> None:
        await self.client.unary(self.raw.Abort, content_pb2.AbortRequest(ref=ref))

    # -- Ingester -----------------------------------------------------------------------
    async def writer(self, ref: str, total: int = 0, expected: str = "") -> RemoteWriter:
        if not ref:
            raise errdefs.InvalidArgument("ref must not be empty")
        w = RemoteWriter(self.client, self.raw, ref, expected)
        await w.start(total)
        return w


class RemoteWriter:
    """One open ingest over a ``Write`` stream. Not safe for concurrent use."""

    def __init__(self, client: Client, raw: Any, ref: str, expected: str) -> None:
        self.client = client
        self._raw = raw
        self._ref = ref
        self._expected = expected
        self._call: Any = None
        self._offset = 0
        self._total = 0
        self._started = 0
        self._updated = 0
        self._hash: Any = hashlib.sha256()
        self._hash_valid = True
        self._server_digest = ""
        self._closed = False

    @property
    def ref(self) -> str:
        return self._ref

    async def _send(self, req: content_pb2.WriteContentRequest) -> content_pb2.WriteContentResponse:
        try:
            await self._call.write(req)
            resp = await self._call.read()
        except grpc.aio.AioRpcError as exc:
            from .core import to_errdefs

            self._closed = True
            raise to_errdefs(exc) from None
        if resp is EOF:
            self._closed = True
            try:
                code = await self._call.code()
                details = await self._call.details()
            except grpc.aio.AioRpcError as exc:  # pragma: no cover - defensive
                from .core import to_errdefs

                raise to_errdefs(exc) from None
            raise errdefs.from_code(code.name if code else "UNKNOWN", details or "write stream closed")
        result: content_pb2.WriteContentResponse = resp
        if result.digest:
            self._server_digest = result.digest
        self._updated = _ns(result.updated_at)
        return result

    async def start(self, total: int) -> None:
        self._call = self._raw.Write(metadata=self.client.metadata(), wait_for_ready=True)
        resp = await self._send(content_pb2.WriteContentRequest(
            action=content_pb2.STAT, ref=self._ref, total=total, expected=self._expected))
        self._offset = int(resp.offset)
        self._total = int(resp.total) or total
        self._started = _ns(resp.started_at)
        if self._offset:
            self._hash_valid = False  # bytes written by an earlier session are not in our hash

    async def status(self) -> Status:
        return Status(ref=self._ref, offset=self._offset, total=self._total, expected=self._expected,
                      started_at=self._started, updated_at=self._updated)

    async def write(self, data: bytes) -> int:
        if self._closed:
            raise errdefs.FailedPrecondition(f"writer {self._ref} is closed")
        resp = await self._send(content_pb2.WriteContentRequest(
            action=content_pb2.WRITE, ref=self._ref, offset=self._offset, data=data))
        new = int(resp.offset)
        if new != self._offset + len(data):
            raise errdefs.Unknown(f"writer {self._ref}: server at offset {new}, expected {self._offset + len(data)}")
        self._offset = new
        if self._hash_valid:
            self._hash.update(data)
        return new

    async def truncate(self, size: int) -> None:
        """Like containerd's proxy: the next WRITE carries this offset and the server truncates."""
        self._offset = size
        if size == 0:
            self._hash = hashlib.sha256()
            self._hash_valid = True
        else:
            self._hash_valid = False

    def digest(self) -> str:
        if self._hash_valid:
            return "sha256:" + str(self._hash.hexdigest())
        return self._server_digest

    async def commit(self, size: int, expected: str, labels: Mapping[str, str] | None = None) -> str:
        if self._closed:
            raise errdefs.FailedPrecondition(f"writer {self._ref} is closed")
        resp = await self._send(content_pb2.WriteContentRequest(
            action=content_pb2.COMMIT, ref=self._ref, total=size, offset=self._offset, expected=expected,
            labels=dict(labels or {})))
        await self.close()
        return str(resp.digest or expected)

    async def close(self) -> None:
        if self._call is None:
            return
        call, self._call = self._call, None
        self._closed = True
        try:
            await call.done_writing()
        except (grpc.aio.AioRpcError, grpc.aio.UsageError, RuntimeError):
            pass
        call.cancel()
