"""Snapshots and Diff services over gRPC, driven by the real ``ctr`` (and a raw stub for Apply).

The server here loads only the plugins these services need (content, metadata, the
snapshotters, the walking differ and the services) through the real plugin loader, on a
temp root and socket, in a thread of the test process; so the test does not depend on
which plugins ``daemon/builtins.py`` lists yet.
"""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import io
import json
import shutil
import subprocess
import tarfile
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from pycontainerd.rpc import Server

pytestmark = pytest.mark.root

CTR = "/usr/bin/ctr"


class _Daemon:
    def __init__(self, base: Path) -> None:
        self.root = base / "root"
        self.state = base / "state"
        self.address = str(base / "pycd.sock")
        self.db: Any = None
        self.exchange: Any = None
        self.events: list[Any] = []
        self.trimmer: Any = None


class Harness:
    def __init__(self, base: Path) -> None:
        self.base = base
        self.daemon = _Daemon(base)
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.server: Server | None = None
        self.plugins: Any = None

    async def _start(self) -> None:
        from pycontainerd.config import Config
        from pycontainerd.content import local
        from pycontainerd.daemon.memory import Trimmer
        from pycontainerd.diff import walking
        from pycontainerd.events import Exchange
        from pycontainerd.metadata import plugin as metadata
        from pycontainerd.metadata.db import Database
        from pycontainerd.plugin import registry
        from pycontainerd.services import content, diff, snapshots
        from pycontainerd.snapshots import native, overlay

        d = self.daemon
        d.db = Database(d.root / "meta.db")
        await d.db.open()
        d.exchange = Exchange()
        d.trimmer = Trimmer()
        regs = [
            *local.REGISTRATIONS,
            overlay.REGISTRATION,
            native.REGISTRATION,
            metadata.REGISTRATION,
            *walking.REGISTRATIONS,
            *content.REGISTRATIONS,
            *snapshots.REGISTRATIONS,
            *diff.REGISTRATIONS,
        ]
        self.plugins = await registry.load(
            regs,
            root=d.root,
            state=d.state,
            plugin_config=lambda reg: Config().plugin_config(reg.uri, reg.config)[0],
            daemon=d,
            required=[r.uri for r in regs],
        )
        server = Server()
        for p in self.plugins.plugins:
            if p.error is None and hasattr(p.instance, "add_to_server"):
                p.instance.add_to_server(server)
        await server.serve_unix(d.address)
        self.server = server

        async def collect() -> None:
            async for env in d.exchange.subscribe():
                d.events.append(env)

        self._collector = asyncio.ensure_future(collect())

    async def _stop(self) -> None:
        self._collector.cancel()
        if self.server is not None:
            await self.server.stop(None)
        for p in reversed(self.plugins.plugins if self.plugins else []):
            closer = getattr(p.instance, "close", None) if p.error is None else None
            if closer is not None:
                res = closer()
                if asyncio.iscoroutine(res):
                    await res
        await asyncio.to_thread(self.daemon.db.close)

    def run(self, coro: Any, timeout: float = 60) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def start(self) -> None:
        self.thread.start()
        self.run(self._start())

    def stop(self) -> None:
        try:
            self.run(self._stop())
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(10)

    def ctr(self, *args: str, ns: str = "test", check: bool = True, stdin: bytes | None = None) -> str:
        r = subprocess.run(
            [CTR, "-a", self.daemon.address, "-n", ns, *args], capture_output=True, input=stdin, timeout=60, check=False
        )
        if check and r.returncode != 0:
            raise AssertionError(f"ctr {' '.join(args)} failed: {r.stdout.decode()}{r.stderr.decode()}")
        return (r.stdout + (r.stderr if not check else b"")).decode()


def _cleanup_mounts(prefix: Path) -> None:
    with open("/proc/self/mountinfo") as f:
        mps = [line.split()[4] for line in f if line.split()[4].startswith(str(prefix) + "/")]
    for mp in sorted(mps, key=len, reverse=True):
        subprocess.run(["umount", "-l", mp], check=False, capture_output=True)


@pytest.fixture
def harness() -> Iterator[Harness]:
    if not shutil.which(CTR):
        pytest.skip("the real ctr (Debian package containerd) is not installed")
    base = Path(tempfile.mkdtemp(prefix="pycd-snap-"))
    h = Harness(base)
    try:
        h.start()
        yield h
    finally:
        try:
            h.stop()
        finally:
            _cleanup_mounts(base)
            shutil.rmtree(base, ignore_errors=True)


def test_ctr_snapshot_commands(harness: Harness) -> None:
    h = harness
    sn = ["snapshots", "--snapshotter", "overlayfs"]
    h.ctr(*sn, "prepare", "k1")
    out = h.ctr(*sn, "mounts", "/mnt/x", "k1")
    assert "mount -t bind" in out
    assert "/snapshots/" in out
    h.ctr(*sn, "commit", "c1", "k1")
    h.ctr(*sn, "prepare", "k2", "c1")
    out = h.ctr(*sn, "mounts", "/mnt/x", "k2")
    assert "mount -t overlay overlay" in out
    assert "lowerdir=" in out
    assert "upperdir=" in out
    h.ctr(*sn, "view", "v1", "c1")
    listing = h.ctr(*sn, "ls")
    rows = {line.split()[0]: line.split()[1:] for line in listing.splitlines()[1:]}
    assert rows["c1"] == ["Committed"]
    assert rows["k2"] == ["c1", "Active"]
    assert rows["v1"] == ["c1", "View"]
    info = json.loads(h.ctr(*sn, "info", "k2"))
    assert info["Kind"] == "Active"
    assert info["Parent"] == "c1"
    h.ctr(*sn, "label", "c1", "containerd.io/gc.root=yes")
    assert json.loads(h.ctr(*sn, "info", "c1"))["Labels"] == {"containerd.io/gc.root": "yes"}
    # a committed snapshot takes any number of children
    h.ctr(*sn, "prepare", "k1x", "c1")
    assert json.loads(h.ctr(*sn, "info", "k1x"))["Parent"] == "c1"
    # errors the way containerd reports them
    out = h.ctr(*sn, "prepare", "k2", "c1", check=False)
    assert "already exists" in out, out
    out = h.ctr(*sn, "rm", "c1", check=False)
    assert "with child: failed precondition" in out, out
    out = h.ctr(*sn, "prepare", "k3", "nope", check=False)
    assert "not found" in out, out
    # namespaces are separate
    assert h.ctr(*sn, "ls", ns="other").splitlines()[1:] == []
    h.ctr(*sn, "rm", "k2", "v1", "k1x")
    h.ctr(*sn, "rm", "c1")
    assert h.ctr(*sn, "ls").splitlines()[1:] == []
    out = h.ctr("snapshots", "--snapshotter", "nosuch", "ls", check=False)
    assert "snapshotter not loaded" in out, out
    topics = [e.topic for e in h.daemon.events]
    assert "/snapshot/prepare" in topics
    assert "/snapshot/commit" in topics
    assert "/snapshot/remove" in topics


def _layer(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for name, data in files.items():
            ti = tarfile.TarInfo(name)
            ti.size = len(data)
            ti.mode = 0o644
            tf.addfile(ti, io.BytesIO(data))
    return buf.getvalue()


def test_diff_apply_and_snapshot_diff(harness: Harness) -> None:
    from pycontainerd.api.services.diff.v1 import diff_pb2, diff_pb2_grpc
    from pycontainerd.api.services.snapshots.v1 import snapshots_pb2, snapshots_pb2_grpc
    from pycontainerd.api.types import descriptor_pb2

    h = harness
    tar = _layer({"hello.txt": b"hello world\n", "bin/tool": b"#!/bin/sh\n"})
    blob = gzip.compress(tar)
    digest = "sha256:" + hashlib.sha256(blob).hexdigest()
    h.ctr("content", "ingest", "--expected-size", str(len(blob)), "--expected-digest", digest, "layer-ref", stdin=blob)
    md = (("containerd-namespace", "test"),)

    async def apply() -> Any:
        async with grpc.aio.insecure_channel(f"unix:{h.daemon.address}") as ch:
            snaps = snapshots_pb2_grpc.SnapshotsStub(ch)
            prep = await snaps.Prepare(
                snapshots_pb2.PrepareSnapshotRequest(snapshotter="overlayfs", key="extract"), metadata=md
            )
            resp = await diff_pb2_grpc.DiffStub(ch).Apply(
                diff_pb2.ApplyRequest(
                    diff=descriptor_pb2.Descriptor(
                        media_type="application/vnd.oci.image.layer.v1.tar+gzip", digest=digest, size=len(blob)
                    ),
                    mounts=prep.mounts,
                ),
                metadata=md,
            )
            await snaps.Commit(
                snapshots_pb2.CommitSnapshotRequest(snapshotter="overlayfs", name="layer1", key="extract"), metadata=md
            )
            return resp.applied

    applied = asyncio.run(apply())
    assert applied.digest == "sha256:" + hashlib.sha256(tar).hexdigest()
    assert applied.media_type == "application/vnd.oci.image.layer.v1.tar"
    assert applied.size == len(tar)
    # a container-like change on top, then `ctr snapshots diff` writes the layer blob
    sn = ["snapshots", "--snapshotter", "overlayfs"]
    h.ctr(*sn, "prepare", "work", "layer1")
    target = Path(tempfile.mkdtemp(dir=h.base))
    mount_cmd = h.ctr(*sn, "mounts", str(target), "work").strip()
    subprocess.run(mount_cmd, shell=True, check=True)
    try:
        assert (target / "hello.txt").read_bytes() == b"hello world\n"
        (target / "hello.txt").unlink()
        (target / "new.txt").write_bytes(b"new\n")
    finally:
        subprocess.run(["umount", str(target)], check=True)
    # what `ctr snapshots diff work` sends (it also needs the Leases service, not loaded here)

    async def compare() -> str:
        async with grpc.aio.insecure_channel(f"unix:{h.daemon.address}") as ch:
            snaps = snapshots_pb2_grpc.SnapshotsStub(ch)
            lower = await snaps.View(
                snapshots_pb2.ViewSnapshotRequest(snapshotter="overlayfs", key="work-view", parent="layer1"),
                metadata=md,
            )
            upper = await snaps.Mounts(snapshots_pb2.MountsRequest(snapshotter="overlayfs", key="work"), metadata=md)
            resp = await diff_pb2_grpc.DiffStub(ch).Diff(
                diff_pb2.DiffRequest(left=lower.mounts, right=upper.mounts, labels={"x": "y"}), metadata=md
            )
            assert resp.diff.media_type == "application/vnd.oci.image.layer.v1.tar+gzip"
            return str(resp.diff.digest)

    diff_digest = asyncio.run(compare())
    data = subprocess.run(
        [CTR, "-a", h.daemon.address, "-n", "test", "content", "get", diff_digest], capture_output=True, check=True
    ).stdout
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(data))) as tf:
        names = sorted(tf.getnames())
    assert names == [".wh.hello.txt", "new.txt"], names
    info = h.ctr("content", "ls")
    assert "containerd.io/uncompressed=sha256:" in info, info
