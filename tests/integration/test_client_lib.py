"""The client library against our daemon: typed results, errors as errdefs kinds, sync facade."""

from __future__ import annotations

import asyncio
import itertools

import pytest

from pycontainerd import errdefs
from pycontainerd.client import Client, SyncClient
from tests.fixtures.procs import wait_for_async

from .daemon import Daemon

pytestmark = pytest.mark.root


def test_async_client_namespaces_and_errors(daemon: Daemon) -> None:
    async def go() -> None:
        async with Client(daemon.address, "default") as c:
            v = await c.version()
            assert v.version == "0.1.0"
            await c.namespaces.create("lib", {"a": "1"})
            with pytest.raises(errdefs.AlreadyExists):
                await c.namespaces.create("lib")
            with pytest.raises(errdefs.InvalidArgument):
                await c.namespaces.create("no//good")
            # Get of an unknown namespace is not an error (clients read default labels from it)
            assert (await c.namespaces.get("never-made")).labels == {}
            ns = await c.namespaces.set_labels("lib", {"b": "2", "a": ""})
            assert ns.labels == {"b": "2"}
            with pytest.raises(errdefs.NotFound):
                await c.namespaces.delete("missing")
            await c.namespaces.delete("lib")
            plugins = await c.introspection.plugins(["type==io.containerd.grpc.v1"])
            assert plugins and all(p.type == "io.containerd.grpc.v1" for p in plugins)

    asyncio.run(go())


def test_events_subscription_sees_publishes(daemon: Daemon) -> None:
    async def go() -> None:
        async with Client(daemon.address, "default") as c:
            got: list[str] = []

            async def listen() -> None:
                async for ev in c.events.subscribe(['topic~="/namespaces/"']):
                    got.append(f"{ev.topic} {ev.fields.get('name')}")
                    if ev.topic == "/namespaces/delete":
                        return

            task = asyncio.create_task(listen())
            probes = itertools.count()

            async def subscribed() -> bool:  # live once one of our creates comes back
                if got:
                    return True
                await c.namespaces.create(f"e0x{next(probes)}")
                return False

            await wait_for_async(subscribed, 20, "the subscription to see a /namespaces/create")
            await c.namespaces.delete("e0x0")
            await asyncio.wait_for(task, 10)
            assert any(g.startswith("/namespaces/create") for g in got)
            assert got[-1] == "/namespaces/delete e0x0"

    asyncio.run(go())


def test_sync_client(daemon: Daemon) -> None:
    with SyncClient(daemon.address, "default") as c:
        c.namespaces.create("sync1")
        assert "sync1" in [n.name for n in c.namespaces.list()]
        with pytest.raises(errdefs.AlreadyExists):
            c.namespaces.create("sync1")
