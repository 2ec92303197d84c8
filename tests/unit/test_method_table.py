"""daemon.methods.MethodTable: services added to it are served through one generic handler."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import empty_pb2

from pycontainerd.api.services.version.v1 import version_pb2, version_pb2_grpc
from pycontainerd.daemon.methods import MethodTable
from pycontainerd.services.version import VersionService

HEALTH = "/grpc.health.v1.Health/Check"


def _generic_only(method: str, reply: bytes) -> grpc.GenericRpcHandler[Any, Any]:
    """A generic handler added on its own (no registered methods), as hand-written code does."""

    async def answer(request: bytes, context: Any) -> bytes:
        return reply

    handler = grpc.unary_unary_rpc_method_handler(answer)
    service, _, name = method[1:].partition("/")
    return grpc.method_handlers_generic_handler(service, {name: handler})


def test_collects_registered_methods_by_full_name() -> None:
    table = MethodTable()
    VersionService().add_to_server(table)
    assert list(table.handlers) == ["/containerd.services.version.v1.Version/Version"]


def test_a_method_added_twice_is_refused() -> None:
    table = MethodTable()
    VersionService().add_to_server(table)
    with pytest.raises(ValueError, match="added twice"):
        VersionService().add_to_server(table)


def test_serving_is_refused() -> None:
    table = MethodTable()
    with pytest.raises(TypeError, match="only collects"):
        table.add_insecure_port("unix:/nonexistent")
    with pytest.raises(TypeError, match="only collects"):
        asyncio.run(table.start())


def test_installed_table_serves_its_methods_and_generic_only_handlers(tmp_path: Path) -> None:
    address = f"unix:{tmp_path / 'grpc.sock'}"

    async def main() -> None:
        table = MethodTable()
        VersionService().add_to_server(table)
        table.add_generic_rpc_handlers([_generic_only(HEALTH, b"ok")])
        server = grpc.aio.server()
        table.install(server)
        server.add_insecure_port(address)
        await server.start()
        try:
            async with grpc.aio.insecure_channel(address) as channel:
                stub = version_pb2_grpc.VersionStub(channel)
                reply = await stub.Version(empty_pb2.Empty())
                assert isinstance(reply, version_pb2.VersionResponse) and reply.revision == "pycontainerd"
                assert await channel.unary_unary(HEALTH, None, None)(b"") == b"ok"
                with pytest.raises(grpc.aio.AioRpcError) as err:
                    await channel.unary_unary("/containerd.services.version.v1.Version/Nope", None, None)(b"")
                assert err.value.code() == grpc.StatusCode.UNIMPLEMENTED
        finally:
            await server.stop(None)

    asyncio.run(main())


def test_wrappers_are_applied_once_per_method_first_outermost(tmp_path: Path) -> None:
    address = f"unix:{tmp_path / 'grpc.sock'}"
    wrapped: list[str] = []
    calls: list[str] = []

    def wrapper(name: str) -> Any:
        def wrap(method: str, handler: Any) -> Any:
            wrapped.append(f"{name} {method}")
            if handler.unary_unary is None:
                return handler
            inner = handler.unary_unary

            async def call(request: Any, context: Any) -> Any:
                calls.append(f"{name} in")
                try:
                    return await inner(request, context)
                finally:
                    calls.append(f"{name} out")

            return grpc.unary_unary_rpc_method_handler(call, request_deserializer=handler.request_deserializer,
                                                       response_serializer=handler.response_serializer)
        return wrap

    async def main() -> None:
        table = MethodTable()
        VersionService().add_to_server(table)
        table.add_generic_rpc_handlers([_generic_only(HEALTH, b"ok")])
        server = grpc.aio.server()
        table.install(server, [wrapper("outer"), wrapper("inner")])
        version = "/containerd.services.version.v1.Version/Version"
        assert wrapped == [f"inner {version}", f"outer {version}"]  # at install, not per call
        server.add_insecure_port(address)
        await server.start()
        try:
            async with grpc.aio.insecure_channel(address) as channel:
                stub = version_pb2_grpc.VersionStub(channel)
                for _ in range(3):
                    await stub.Version(empty_pb2.Empty())
                assert calls == ["outer in", "inner in", "inner out", "outer out"] * 3
                assert len(wrapped) == 2
                calls.clear()
                for _ in range(2):  # a generic-only method: wrapped on its first call, once
                    assert await channel.unary_unary(HEALTH, None, None)(b"") == b"ok"
                assert calls == ["outer in", "inner in", "inner out", "outer out"] * 2
                assert wrapped[2:] == [f"inner {HEALTH}", f"outer {HEALTH}"]
        finally:
            await server.stop(None)

    asyncio.run(main())
