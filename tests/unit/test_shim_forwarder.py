"""The shim's event forwarder: in order, retried while containerd's ttrpc socket is away."""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from google.protobuf import empty_pb2

from pycontainerd.api.services.ttrpc.events.v1 import events_pb2
from pycontainerd.shim.loop import Loop
from pycontainerd.shim.server import bind_listener
from pycontainerd.shim.ttrpc_loop import Forwarder, Method, TtrpcServer


@pytest.fixture
def sock_dir() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="pycd-fwd-") as d:
        yield Path(d)


def _event(topic: str) -> events_pb2.ForwardRequest:
    return events_pb2.ForwardRequest(envelope=events_pb2.Envelope(namespace="ns", topic=topic))


def _run_until(loop: Loop, cond: object, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():  # type: ignore[operator]
        assert time.monotonic() < deadline, "timed out"
        loop.run_once(max_wait=0.05)


def test_events_wait_for_containerd_and_arrive_in_order(sock_dir: Path) -> None:
    loop = Loop()
    path = str(sock_dir / "containerd.sock.ttrpc")
    fwd = Forwarder(loop, f"unix://{path}", "ns")
    got: list[tuple[str, list[str]]] = []
    try:
        for topic in ("/tasks/start", "/tasks/exit", "/tasks/delete"):
            fwd.forward(_event(topic))
        _run_until(loop, lambda: fwd.timer is not None)  # the first try failed: no socket yet
        assert fwd.queue and not got

        async def forward(req: events_pb2.ForwardRequest) -> empty_pb2.Empty:
            got.append((req.envelope.topic, [req.envelope.namespace]))
            return empty_pb2.Empty()

        server = TtrpcServer(
            loop,
            bind_listener(path),
            {"containerd.services.events.ttrpc.v1.Events/Forward": Method(events_pb2.ForwardRequest, forward)},
        )
        _run_until(loop, lambda: len(got) == 3 and not fwd.queue)  # the last answer arrived too
        assert [t for t, _ in got] == ["/tasks/start", "/tasks/exit", "/tasks/delete"]
        server.close()
    finally:
        fwd.close()
        if os.path.exists(path):
            os.unlink(path)


def test_an_event_is_dropped_after_its_tries(sock_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    loop = Loop()
    fwd = Forwarder(loop, str(sock_dir / "nobody-there"), "ns")
    monkeypatch.setattr(Forwarder, "RETRIES", 3)
    fwd.forward(_event("/tasks/exit"))
    _run_until(loop, lambda: not fwd.queue)
    fwd.close()
