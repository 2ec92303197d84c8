"""Bursts of calls are all answered: none comes back CANCELLED (or anything else).

gRPC core queues calls the server has not picked up yet, and by default sheds that backlog
at random past 1000 calls (all of it past 3000): a burst of a few thousand concurrent calls
got CANCELLED answers, while containerd answered every one.  The daemon raises that limit
(``daemon/server.py``), so a burst waits its turn instead.
"""

from __future__ import annotations

import asyncio
import collections
import os
import time
from collections.abc import Iterator

import grpc
import pytest
from google.protobuf import empty_pb2

from pycontainerd.api.services.containers.v1 import containers_pb2, containers_pb2_grpc
from pycontainerd.api.services.version.v1 import version_pb2_grpc
from tests.integration.daemon import CTR, Daemon, running_daemon

pytestmark = pytest.mark.root

NS = (("containerd-namespace", "default"),)


@pytest.fixture(scope="module")
def daemon() -> Iterator[Daemon]:
    if os.geteuid() != 0:
        pytest.skip("needs root")
    with running_daemon() as d:
        yield d


async def _outcome(call: object) -> str:
    try:
        await call  # type: ignore[misc]
        return "OK"
    except grpc.aio.AioRpcError as exc:
        return f"{exc.code().name}: {exc.details()}"


async def _ctr_version(address: str) -> tuple[int, float]:
    start = time.monotonic()
    proc = await asyncio.create_subprocess_exec(
        CTR, "-a", address, "version", stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL
    )
    rc = await asyncio.wait_for(proc.wait(), 60)
    return rc, time.monotonic() - start


async def _version_burst(address: str, n: int) -> tuple[collections.Counter[str], int, int]:
    async with grpc.aio.insecure_channel(f"unix:{address}") as ch:
        stub = version_pb2_grpc.VersionStub(ch)
        calls = [asyncio.ensure_future(_outcome(stub.Version(empty_pb2.Empty(), timeout=60))) for _ in range(n)]
        rc, _ = await _ctr_version(address)  # a separate client, while the burst is in flight
        unanswered = sum(not c.done() for c in calls)
        return collections.Counter(await asyncio.gather(*calls)), rc, unanswered


async def _list_burst(address: str, n: int, channels: int) -> collections.Counter[str]:
    chans = [grpc.aio.insecure_channel(f"unix:{address}") for _ in range(channels)]
    try:
        stubs = [containers_pb2_grpc.ContainersStub(c) for c in chans]
        req = containers_pb2.ListContainersRequest()
        calls = [_outcome(stubs[i % channels].List(req, metadata=NS, timeout=60)) for i in range(n)]
        return collections.Counter(await asyncio.gather(*calls))
    finally:
        for c in chans:
            await c.close(None)


def test_3000_concurrent_version_calls_on_one_channel_all_answer(daemon: Daemon) -> None:
    outcomes, ctr_rc, unanswered = asyncio.run(_version_burst(daemon.address, 3000))
    assert outcomes == {"OK": 3000}, outcomes.most_common(5)
    assert ctr_rc == 0
    # ctr, on its own connection, was answered while the burst was still being served
    assert unanswered > 0, "ctr version was answered only after the whole burst"


def test_4000_list_calls_over_100_channels_all_answer(daemon: Daemon) -> None:
    outcomes = asyncio.run(_list_burst(daemon.address, 4000, 100))
    assert outcomes == {"OK": 4000}, outcomes.most_common(5)
