"""Stalled event subscribers cannot grow the daemon (issue 13: 50 stalled ``ctr events`` grew it to
853 MB): each is dropped once it falls too far behind, ``ctr version`` answers throughout, and
memory stays bounded."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import grpc
import pytest

from pycontainerd.api.services.namespaces.v1 import namespaces_pb2, namespaces_pb2_grpc
from tests.fixtures.procs import wait_for
from tests.integration.daemon import CTR, Daemon

pytestmark = pytest.mark.root

SUBSCRIBERS = 20


def _rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def test_stalled_subscribers_are_dropped_and_memory_stays_bounded(daemon: Daemon, tmp_path: Path) -> None:
    outs = [tmp_path / f"events-{i}.txt" for i in range(SUBSCRIBERS)]
    procs = []
    try:
        for out in outs:
            with open(out, "wb") as fh:
                procs.append(subprocess.Popen([CTR, "-a", daemon.address, "events"], stdout=fh,
                                              stderr=subprocess.DEVNULL))
        probes = iter(range(10**6))

        def all_subscribed() -> bool:
            # a subscriber connects some time after it starts: probe until every one has seen an event
            daemon.ctr("namespaces", "label", "default", "probe", str(next(probes)))
            return all(o.stat().st_size > 0 for o in outs)

        wait_for(all_subscribed, 30, "every subscriber to receive events", interval=0.2)
        for p in procs:  # stalled: they stop reading their streams
            os.kill(p.pid, signal.SIGSTOP)
        idle = _rss_mib(daemon.pid)
        labels = {f"k{j}": "v" * 4000 for j in range(16)}  # ~64 KiB per event
        peak = idle
        with grpc.insecure_channel(f"unix://{daemon.address}") as ch:
            ns = namespaces_pb2_grpc.NamespacesStub(ch)
            md = (("containerd-namespace", "default"),)
            for i in range(300):  # 20 x 300 x 64 KiB = 375 MiB if subscribers' queues were unbounded
                ns.Create(namespaces_pb2.CreateNamespaceRequest(
                    namespace=namespaces_pb2.Namespace(name=f"n{i}", labels=labels)), metadata=md)
                ns.Delete(namespaces_pb2.DeleteNamespaceRequest(name=f"n{i}"), metadata=md)
                if i % 50 == 0:
                    assert "Server:" in daemon.ctr("version", timeout=30).stdout
                    peak = max(peak, _rss_mib(daemon.pid))
        peak = max(peak, _rss_mib(daemon.pid))
        dropped = daemon.log.read_text(errors="replace").count("event subscriber dropped")
        assert dropped == SUBSCRIBERS, f"{dropped} of {SUBSCRIBERS} stalled subscribers dropped"
        assert peak - idle < 120, f"daemon grew from {idle:.0f} to {peak:.0f} MiB"
    finally:
        for p in procs:
            p.kill()
            p.wait()
