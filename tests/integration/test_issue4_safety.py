"""Issue 4: hostile layers and crashes.

- (malicious layers: the breakout suite in tests/security/test_breakouts.py;)
- `kill -9` of the daemon while it unpacks or while it collects garbage leaves a store that,
  after a restart, is consistent (every record has its bytes, every snapshot directory its
  record, no stale temp mounts) and works (pull, mount, GC back to empty);
- what a crash can leave at any point — half-made or half-removed snapshot directories, a
  record whose snapshot was never made, a differ temp mount — is cleaned up at start-up.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest

from tests.fixtures import images
from tests.fixtures.containerd import Containerd
from tests.fixtures.procs import mounts_under, wait_for
from tests.fixtures.registry import Registry

from .daemon import CTR, Daemon
from .issue4_support import (
    Target,
    assert_store_empty,
    blob_digests,
    content,
    image_mounted,
    leases,
    pull,
    snapshot_dirs,
    snapshots,
    snapshots_dir,
)

pytestmark = pytest.mark.root

OVERLAY = "io.containerd.snapshotter.v1.overlayfs"
NATIVE = "io.containerd.snapshotter.v1.native"
TMPMOUNTS = Path("io.containerd.differ.v1.walking") / "tmpmounts"


# -- images ----------------------------------------------------------------------------------


def _medium_layer(n: int, files: int = 1500, size: int = 8192) -> list[images.TarEntry]:
    entries = [images.d(f"m{n}")]
    for i in range(files):
        if i % 100 == 0:
            entries.append(images.d(f"m{n}/d{i // 100:02d}"))
        entries.append(images.f(f"m{n}/d{i // 100:02d}/f{i:05d}", (f"{n}-{i}\n" * (size // 8))[:size]))
    return entries


@pytest.fixture(scope="module")
def medium(registry: Registry, fixture_dir: Path) -> tuple[str, images.BuiltImage]:
    """busybox + 6 layers of 1500 small files: unpacking takes seconds, long enough to kill in."""
    img = images.build_busybox_image(fixture_dir / "issue4-medium", name="docker.io/library/medium:latest",
                                     extra_layers=[_medium_layer(n) for n in range(6)])
    images.push_to_registry(img, registry.url, "issue4/medium", "latest")
    return registry.ref("issue4/medium"), img


@pytest.fixture(scope="module")
def multilayer_ref(registry: Registry, multilayer_image: images.BuiltImage) -> str:
    images.push_to_registry(multilayer_image, registry.url, "issue4safety/multilayer", "latest")
    return registry.ref("issue4safety/multilayer")


# -- crash leftovers ---------------------------------------------------------------------------


def check_consistent(d: Daemon) -> None:
    """After a (re)start: records and bytes agree, and nothing is left mounted or half-made."""
    for sn in ("overlayfs", "native"):
        dirs = snapshot_dirs(d, sn)
        assert all(x.isdigit() for x in dirs), f"{sn}: half-made/removed dirs left: {dirs}"
        rows = {}
        for ns in d.ctr("namespaces", "ls", "-q").stdout.split():
            rows.update(snapshots(d, namespace=ns, snapshotter=sn))
        assert len(dirs) == len(rows), f"{sn}: {len(dirs)} dirs for {len(rows)} snapshots"
    recorded: set[str] = set()
    for ns in d.ctr("namespaces", "ls", "-q").stdout.split():
        recorded |= set(content(d, namespace=ns))
    assert blob_digests(d) == recorded, "blobs and content records disagree"
    tmp = d.root / TMPMOUNTS
    assert not tmp.exists() or list(tmp.iterdir()) == []
    assert mounts_under(str(d.root)) == []


def drop_leases(d: Daemon) -> None:
    ids = leases(d)
    if ids:
        d.ctr("leases", "rm", "--sync", *ids)


def test_startup_cleans_what_a_crash_leaves(daemon: Daemon, busybox_image: images.BuiltImage,
                                            multilayer_image: images.BuiltImage, multilayer_ref: str,
                                            registry: Registry, tmp_path: Path) -> None:
    images.push_to_registry(busybox_image, registry.url, "issue4safety/busybox", "latest")
    pull(daemon, registry.ref("issue4safety/busybox"))
    base_dirs = snapshot_dirs(daemon)
    assert len(base_dirs) == 1
    base_fs = snapshots_dir(daemon) / base_dirs[0] / "fs"
    daemon.stop()

    # 1. snapshot directories of a crashed prepare (new-*), remove (rm-*) and one without a record
    for sn in (OVERLAY, NATIVE):
        for junk in ("new-crash1", "rm-crash2", "4242"):
            p = daemon.root / sn / "snapshots" / junk / "fs"
            p.mkdir(parents=True)
            (p / "junk").write_bytes(b"junk\n")
    # 2. the differ's temp mount of a crashed `ctr snapshots diff`: a real read-only bind of a layer
    stale = daemon.root / TMPMOUNTS / "mount-stale"
    stale.mkdir(parents=True)
    (daemon.root / TMPMOUNTS / "mount-empty").mkdir()
    subprocess.run(["mount", "--bind", "-o", "ro", str(base_fs), str(stale)], check=True)
    subprocess.run(["mount", "-o", "remount,bind,ro", str(stale)], check=True)
    # 3. a crash inside Commit (after the name's record, before the snapshot): a record with no
    #    snapshot, held by the crashed pull's lease — the next pull must not trip over it
    chain = multilayer_image.chain_ids
    assert chain[0] == busybox_image.chain_ids[0]
    db = sqlite3.connect(daemon.root / "io.containerd.metadata.v1.sqlite" / "meta.db")
    with db:
        now = time.time_ns()
        expire = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 3600))
        db.execute("INSERT INTO leases (namespace, id, labels, created_at) VALUES (?,?,?,?)",
                   ("default", "crashed-pull", json.dumps({"containerd.io/gc.expire": expire}), now))
        db.execute("INSERT INTO snapshots (namespace, snapshotter, key, backend_key, parent, labels, created_at,"
                   " updated_at) VALUES (?,?,?,?,?,?,?,?)",
                   ("default", "overlayfs", chain[1], f"default/424242/{chain[1]}", chain[0], "{}", now, now))
        db.execute("INSERT INTO lease_resources (namespace, lease, type, id) VALUES (?,?,?,?)",
                   ("default", "crashed-pull", "snapshots/overlayfs", chain[1]))
    db.close()

    daemon.start()
    check_consistent(daemon)
    assert snapshot_dirs(daemon) == base_dirs
    assert (base_fs / "bin" / "busybox").is_file(), "the layer behind the stale temp mount was damaged"
    assert snapshots(daemon) == {chain[0]: ("", "Committed")}
    pull(daemon, multilayer_ref)
    with image_mounted(daemon, multilayer_ref, tmp_path / "m") as m:
        assert images.check_tree(m) == []
    drop_leases(daemon)
    daemon.ctr("images", "rm", "--sync", *daemon.ctr("images", "ls", "-q").stdout.split())
    assert_store_empty(daemon, snapshotters=("overlayfs", "native"))


def _wait_killed_pull(proc: subprocess.Popen[str]) -> None:
    try:
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)


def test_kill9_during_unpack(daemon: Daemon, medium: tuple[str, images.BuiltImage], tmp_path: Path) -> None:
    ref, img = medium
    proc = subprocess.Popen([CTR, "-a", daemon.address, "images", "pull", "--plain-http", ref],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        def unpacking() -> bool:
            rows = snapshots(daemon)
            committed = sum(1 for _, k in rows.values() if k == "Committed")
            return committed >= 2 and any(k.startswith("extract-") for k in rows)

        wait_for(unpacking, 60, "the unpack to be half-way", interval=0.01)
        daemon.kill9()
    finally:
        _wait_killed_pull(proc)
    assert proc.returncode != 0
    daemon.start()
    check_consistent(daemon)
    pull(daemon, ref)
    check_consistent(daemon)
    with image_mounted(daemon, ref, tmp_path / "m") as m:
        for n in range(6):
            assert len(list((m / f"m{n}").rglob("f*"))) == 1500
        assert (m / "m5" / "d14" / "f01499").read_bytes()[:8] == b"5-1499\n5"
    assert snapshots(daemon).keys() >= set(img.chain_ids)
    drop_leases(daemon)  # the crashed pull's lease still holds its half-made snapshot
    daemon.ctr("images", "rm", "--sync", ref)
    assert_store_empty(daemon)


def test_kill9_during_gc(daemon: Daemon, medium: tuple[str, images.BuiltImage], tmp_path: Path) -> None:
    ref, img = medium
    pull(daemon, ref)
    n_dirs = len(snapshot_dirs(daemon))
    assert n_dirs == len(img.layers)
    sdir = snapshots_dir(daemon)
    proc = subprocess.Popen([CTR, "-a", daemon.address, "images", "rm", "--sync", ref],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        def collecting() -> bool:
            names = os.listdir(sdir)
            return len(names) < n_dirs or any(x.startswith("rm-") for x in names) or proc.poll() is not None

        wait_for(collecting, 60, "the collection to start removing snapshots", interval=0.002)
        caught = proc.poll() is None
        daemon.kill9()
        print(f"\nkill -9 during GC: caught={caught} dirs left={os.listdir(sdir)}")
    finally:
        _wait_killed_pull(proc)
    daemon.start()
    check_consistent(daemon)
    if caught:
        assert proc.returncode != 0
    # the image record went before the collection; the start-up collection finished the job
    assert daemon.ctr("images", "ls", "-q").stdout.split() == []
    assert_store_empty(daemon)
    pull(daemon, ref)
    with image_mounted(daemon, ref, tmp_path / "m") as m:
        assert (m / "m0" / "d00" / "f00000").is_file()
    daemon.ctr("images", "rm", "--sync", ref)
    assert_store_empty(daemon)


def test_target_helpers_cover_both_daemons(daemon: Daemon, containerd: Containerd) -> None:
    """The on-disk layout the checks above rely on is containerd's own."""
    t: Target
    for t in (daemon, containerd):
        assert (t.root / "io.containerd.content.v1.content").is_dir()
        assert (t.root / OVERLAY).is_dir()
