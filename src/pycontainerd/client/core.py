"""Connection, headers and error mapping shared by every service wrapper."""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import grpc
from google.protobuf import empty_pb2

from .. import errdefs
from ..api.services.introspection.v1 import introspection_pb2_grpc
from ..api.services.version.v1 import version_pb2_grpc
from . import DEFAULT_ADDRESS, DEFAULT_NAMESPACE
from .quick import DaemonUnreachable, probe, unix_path

T = TypeVar("T")

NAMESPACE_HEADER = "containerd-namespace"
LEASE_HEADER = "containerd-lease"
MAX_MSG = 16 << 20


def to_errdefs(exc: grpc.aio.AioRpcError | grpc.RpcError) -> errdefs.ContainerdError:
    """Map a gRPC status back to the error kind it came from (once, here)."""
    code = exc.code() if hasattr(exc, "code") else grpc.StatusCode.UNKNOWN
    details = exc.details() if hasattr(exc, "details") else str(exc)
    name = code.name if code is not None else "UNKNOWN"
    if name == "UNAVAILABLE" and details and ("connect" in details.lower() or "socket" in details.lower()):
        details = f"cannot reach the daemon: {details}"
    err = errdefs.from_code(name, details or name.lower())
    return err


@dataclass(frozen=True)
class Version:
    version: str
    revision: str


class Client:
    """An asyncio client bound to one socket and one namespace."""

    def __init__(self, address: str | None = None, namespace: str | None = None, *, lease: str | None = None,
                 timeout: float = 10.0) -> None:
        address = address or os.environ.get("CONTAINERD_ADDRESS") or DEFAULT_ADDRESS
        self.address = address
        self.namespace = namespace or os.environ.get("CONTAINERD_NAMESPACE") or DEFAULT_NAMESPACE
        self.lease = lease
        self.timeout = timeout
        target = address if address.startswith(("unix:", "dns:", "ipv4:")) else f"unix://{address}"
        self.channel = grpc.aio.insecure_channel(
            target,
            options=[
                ("grpc.max_receive_message_length", MAX_MSG),
                ("grpc.max_send_message_length", MAX_MSG),
            ],
        )
        from .diff import Diff
        from .services import Containers, Content, Events, Images, Introspection, Leases, Namespaces, Snapshots, Tasks

        self.introspection = Introspection(self)
        self.namespaces = Namespaces(self)
        self.events = Events(self)
        self.content = Content(self)
        self.images = Images(self)
        self.leases = Leases(self)
        self.snapshots = Snapshots(self)
        self.containers = Containers(self)
        self.tasks = Tasks(self)
        self.diff = Diff(self)

    # -- plumbing ---------------------------------------------------------------------------
    def metadata(self, namespace: str | None = None) -> tuple[tuple[str, str], ...]:
        md: list[tuple[str, str]] = [(NAMESPACE_HEADER, namespace or self.namespace)]
        if self.lease:
            md.append((LEASE_HEADER, self.lease))
        return tuple(md)

    def with_namespace(self, namespace: str) -> Client:
        """A client sharing this connection but speaking for another namespace."""
        other = object.__new__(Client)
        other.__dict__.update(self.__dict__)
        other.namespace = namespace
        other._rebind()
        return other

    def with_lease(self, lease: str | None) -> Client:
        other = object.__new__(Client)
        other.__dict__.update(self.__dict__)
        other.lease = lease
        other._rebind()
        return other

    def _rebind(self) -> None:
        for name in ("introspection", "namespaces", "events", "content", "images", "leases", "snapshots",
                     "containers", "tasks", "diff"):
            svc = getattr(self, name)
            setattr(self, name, type(svc)(self))

    async def wait_ready(self, timeout: float | None = None) -> None:  # noqa: ASYNC109 - like grpc's own
        """Wait until the daemon accepts the connection.

        A unix socket is probed first, so a dead daemon (no socket, connection refused) is
        reported at once, saying why and how to start it, instead of after the whole timeout.
        """
        timeout = timeout or self.timeout
        if unix_path(self.address) is not None:
            await asyncio.to_thread(probe, self.address, timeout)
        try:
            await asyncio.wait_for(self.channel.channel_ready(), timeout)
        except TimeoutError:
            raise DaemonUnreachable(f"cannot reach the daemon at {self.address}: no answer in {timeout:g}s: "
                                    "is it running? (raise --connect-timeout)") from None

    async def unary(self, method: Callable[..., Awaitable[T]], request: Any, *, namespace: str | None = None,
                    timeout: float | None = None) -> T:  # noqa: ASYNC109 - passed to grpc
        try:
            return await method(request, metadata=self.metadata(namespace), timeout=timeout, wait_for_ready=True)
        except grpc.aio.AioRpcError as exc:
            raise to_errdefs(exc) from None

    async def stream(self, method: Callable[..., Any], request: Any, *, namespace: str | None = None
                     ) -> AsyncIterator[Any]:
        call = method(request, metadata=self.metadata(namespace), wait_for_ready=True)
        try:
            async for item in call:
                yield item
        except grpc.aio.AioRpcError as exc:
            raise to_errdefs(exc) from None
        finally:
            call.cancel()

    # -- small services ---------------------------------------------------------------------
    async def version(self) -> Version:
        stub = version_pb2_grpc.VersionStub(self.channel)
        resp = await self.unary(stub.Version, empty_pb2.Empty())
        return Version(resp.version, resp.revision)

    async def server_uuid(self) -> str:
        stub = introspection_pb2_grpc.IntrospectionStub(self.channel)
        resp = await self.unary(stub.Server, empty_pb2.Empty())
        return str(resp.uuid)

    async def close(self) -> None:
        await self.channel.close(None)

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


class SyncClient:
    """A blocking facade: runs a private event loop on a thread and forwards calls to ``Client``."""

    def __init__(self, address: str | None = None, namespace: str | None = None, **kw: Any) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True, name="pycontainerd-client")
        self._thread.start()
        self._client: Client = self.run(self._make(address, namespace, kw))

    @staticmethod
    async def _make(address: str | None, namespace: str | None, kw: dict[str, Any]) -> Client:
        return Client(address, namespace, **kw)

    @property
    def client(self) -> Client:
        return self._client

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()

    def iterate(self, agen: AsyncIterator[T]) -> Iterator[T]:
        while True:
            try:
                yield self.run(agen.__anext__())  # type: ignore[arg-type]
            except StopAsyncIteration:
                return

    def __getattr__(self, name: str) -> Any:
        target = getattr(self._client, name)
        if callable(target):
            def call(*args: Any, **kwargs: Any) -> Any:
                res = target(*args, **kwargs)
                return self.run(res) if asyncio.iscoroutine(res) else res
            return call
        return _SyncService(self, target)

    def close(self) -> None:
        self.run(self._client.close())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)
        self._loop.close()

    def __enter__(self) -> SyncClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _SyncService:
    def __init__(self, owner: SyncClient, svc: Any) -> None:
        self._owner, self._svc = owner, svc

    def __getattr__(self, name: str) -> Any:
        target = getattr(self._svc, name)

        def call(*args: Any, **kwargs: Any) -> Any:
            res = target(*args, **kwargs)
            if asyncio.iscoroutine(res):
                return self._owner.run(res)
            if hasattr(res, "__anext__"):
                return self._owner.iterate(res)
            return res

        return call
