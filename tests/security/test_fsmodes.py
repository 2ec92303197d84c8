"""File modes under the daemon's root and state directories, checked piece by piece (no root
needed): bundles, the metadata database, blobs, snapshotter and differ directories, shim
sockets and files, and the start-up pass that closes what an older version left open.

Regression tests for issue 13 (findings 2 and 3): bundles were 0711 (a setuid binary in a
running container's rootfs was reachable by any user, CVE-2021-41103 class), ``meta.db``
0644 and blobs 0444 under 0755 directories (container specs with their env, image contents
readable by any user).  ``tests/security/test_modes.py`` proves the whole of it as an
unprivileged user against a running daemon.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import stat
from pathlib import Path

import pytest

from pycontainerd import fsmodes
from pycontainerd.config import Config, GRPCConfig
from pycontainerd.content.local import LocalStore
from pycontainerd.daemon.server import Daemon
from pycontainerd.diff.walking import WalkingDiffer
from pycontainerd.metadata.db import Database
from pycontainerd.runtime import bundle
from pycontainerd.shim.server import bind_listener
from pycontainerd.shim.service import write_atomic
from pycontainerd.snapshots.native import NativeSnapshotter


def mode(p: Path | str) -> int:
    return stat.S_IMODE(os.lstat(p).st_mode)


def open_to_others(top: Path) -> list[str]:
    """Everything below ``top`` that others could read, list or write (a directory they may
    only pass through, 0711, is fine) and whose parents all let them pass."""
    out = []
    for dirpath, dirnames, filenames in os.walk(top):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            if p.is_symlink():
                continue
            between = [a for a in p.parents if a == top or top in a.parents]
            if mode(p) & (0o066 if p.is_dir() else 0o077) and all(mode(a) & 0o001 for a in between):
                out.append(str(p.relative_to(top)))
    return out


def test_close_children_closes_dirs_and_files_and_keeps_the_way_to_the_socket(tmp_path: Path) -> None:
    top = tmp_path / "state"
    for d, m in [("io.containerd.runtime.v2.task", 0o711), ("io.containerd.content.v1.content", 0o755),
                 ("sock-dir", 0o755), ("s", 0o711)]:
        (top / d).mkdir(parents=True)
        os.chmod(top / d, m)
    (top / "uuid").write_text("x")
    os.chmod(top / "uuid", 0o644)
    (top / "blob").write_text("x")
    os.chmod(top / "blob", 0o444)
    (top / "link").symlink_to("/etc")
    keep = fsmodes.traversable_children(top, [top / "sock-dir" / "d.sock", top / "direct.sock", "/elsewhere/x"])
    assert keep == [top / "sock-dir"]
    changed = fsmodes.close_children(top, keep=keep)
    assert sorted(changed) == sorted(["io.containerd.runtime.v2.task", "io.containerd.content.v1.content",
                                      "sock-dir", "s", "uuid", "blob"])
    assert mode(top / "io.containerd.runtime.v2.task") == 0o700
    assert mode(top / "io.containerd.content.v1.content") == 0o700
    assert mode(top / "s") == 0o700
    assert mode(top / "sock-dir") == 0o711
    assert mode(top / "uuid") == 0o600
    assert mode(top / "blob") == 0o400
    assert mode("/etc") == 0o755  # a symlink is not followed
    assert fsmodes.close_children(top, keep=keep) == []  # nothing left to do


def test_private_dir_makes_missing_parents_private_and_closes_an_old_one(tmp_path: Path) -> None:
    d = fsmodes.private_dir(tmp_path / "a" / "b" / "c")
    assert [mode(tmp_path / "a"), mode(tmp_path / "a/b"), mode(d)] == [0o700] * 3
    os.chmod(d, 0o755)
    fsmodes.private_dir(d, chmod=False)
    assert mode(d) == 0o755
    fsmodes.private_dir(d)
    assert mode(d) == 0o700
    (tmp_path / "f").write_text("")
    with pytest.raises(FileExistsError):
        fsmodes.private_dir(tmp_path / "f")


def test_top_dir_is_traversable_not_listable(tmp_path: Path) -> None:
    (tmp_path / "root").mkdir(mode=0o755)
    os.chmod(tmp_path / "root", 0o755)
    fsmodes.top_dir(tmp_path / "root")
    fsmodes.top_dir(tmp_path / "new" / "state")
    assert mode(tmp_path / "root") == 0o711
    assert mode(tmp_path / "new" / "state") == 0o711


def test_daemon_start_closes_what_an_older_version_left_open(tmp_path: Path) -> None:
    root, state = tmp_path / "root", tmp_path / "state"
    # the layout the old code left: 0711 tops, 0755/0711 plugin dirs, 0644 database and uuid
    for d in (root / "io.containerd.metadata.v1.sqlite", root / "io.containerd.content.v1.content/blobs/sha256",
              root / "io.containerd.snapshotter.v1.overlayfs/snapshots",
              state / "io.containerd.runtime.v2.task/default/c1/rootfs", state / "s", state / "api"):
        d.mkdir(parents=True)
    for p in (root, state, *root.iterdir(), *state.iterdir()):
        os.chmod(p, 0o755)
    os.chmod(state / "io.containerd.runtime.v2.task", 0o711)
    (root / "uuid").write_text("u")
    (root / "io.containerd.metadata.v1.sqlite" / "meta.db").write_text("")
    os.chmod(root / "io.containerd.metadata.v1.sqlite" / "meta.db", 0o644)
    cfg = Config(root=str(root), state=str(state), grpc=GRPCConfig(address=str(state / "api" / "d.sock")))
    daemon = Daemon(cfg)
    daemon._lock_root()
    try:
        assert mode(root) == 0o700  # nothing in it for others
        assert mode(state) == 0o711
        assert mode(root / "io.containerd.metadata.v1.sqlite") == 0o700
        assert mode(root / "io.containerd.content.v1.content") == 0o700
        assert mode(root / "io.containerd.snapshotter.v1.overlayfs") == 0o700
        assert mode(state / "s") == 0o700
        assert mode(state / "api") == 0o711  # holds the socket: others with the gid reach it
        assert mode(root / "uuid") == 0o600
        assert mode(root / ".lock") == 0o600
        assert open_to_others(root) == []
        # the runtime's directory stays passable (user namespaces, see runtime.bundle); its
        # plugin closes the bundles in it when it starts
        runtime_dir = state / "io.containerd.runtime.v2.task"
        assert mode(runtime_dir) == 0o711
        assert bundle.close_existing(runtime_dir) == [runtime_dir / "default" / "c1"]
        assert mode(runtime_dir / "default") == 0o711
        assert mode(runtime_dir / "default" / "c1") == 0o700
        assert open_to_others(state) == []
        daemon.db.open_sync()  # the database file itself is closed when it is opened
        assert mode(root / "io.containerd.metadata.v1.sqlite" / "meta.db") == 0o600
    finally:
        daemon.db.close()
        assert daemon._lock_fd is not None
        os.close(daemon._lock_fd)


def locked(cfg: Config) -> Daemon:
    daemon = Daemon(cfg)
    daemon._lock_root()
    assert daemon._lock_fd is not None
    os.close(daemon._lock_fd)
    return daemon


def test_root_stays_passable_only_when_the_socket_or_the_state_dir_is_inside(tmp_path: Path) -> None:
    r, s = tmp_path / "r1", tmp_path / "r1" / "run"
    (r / "io.containerd.content.v1.content").mkdir(parents=True)
    locked(Config(root=str(r), state=str(s), grpc=GRPCConfig(address=str(s / "d.sock"))))
    assert [mode(r), mode(s), mode(r / "io.containerd.content.v1.content")] == [0o711, 0o711, 0o700]
    r, s = tmp_path / "r2", tmp_path / "s2"
    locked(Config(root=str(r), state=str(s), grpc=GRPCConfig(address=str(r / "api" / "d.sock"))))
    (r / "api").mkdir(mode=0o755)
    os.chmod(r / "api", 0o755)
    locked(Config(root=str(r), state=str(s), grpc=GRPCConfig(address=str(r / "api" / "d.sock"))))
    assert [mode(r), mode(r / "api"), mode(s)] == [0o711, 0o711, 0o711]
    r = tmp_path / "r3"
    locked(Config(root=str(r), state=str(s), grpc=GRPCConfig(address=str(tmp_path / "d.sock"))))
    assert mode(r) == 0o700


def test_new_metadata_database_and_its_wal_are_private(tmp_path: Path) -> None:
    db = Database(tmp_path / "meta" / "meta.db")
    db.open_sync()
    try:
        db.write_sync(lambda conn: conn.execute("CREATE TABLE IF NOT EXISTS t (x)"))
        assert {"meta.db", "meta.db-wal", "meta.db-shm"} <= set(os.listdir(tmp_path / "meta"))
        for name in os.listdir(tmp_path / "meta"):
            assert mode(tmp_path / "meta" / name) == 0o600, name
        assert mode(tmp_path / "meta") == 0o700
    finally:
        db.close()


def test_bundle_is_private_and_its_rootfs_enterable_by_the_container_user(tmp_path: Path) -> None:
    runtime_root = tmp_path / "io.containerd.runtime.v2.task"
    runtime_root.mkdir(mode=0o711)
    meta = bundle.BundleMeta(namespace="default", id="c1", runtime_name="io.containerd.runc.v2")
    path = bundle.create(runtime_root, "default", "c1", {"root": {"path": "rootfs"}}, meta, have_rootfs_mounts=True)
    assert mode(runtime_root / "default") == 0o711  # passable, not listable (containerd's)
    assert mode(path) == 0o700
    # the container's / when there are no rootfs mounts: its user must enter it (inside the
    # 0700 bundle, which keeps everyone else out)
    assert mode(path / "rootfs") == 0o711
    assert mode(path / bundle.CONFIG) == 0o600
    assert mode(path / bundle.META) == 0o600


USERNS_SPEC = {"root": {"path": "rootfs"}, "linux": {
    "namespaces": [{"type": "pid"}, {"type": "user"}],
    "uidMappings": [{"containerID": 0, "hostID": 100000, "size": 65536}],
    "gidMappings": [{"containerID": 0, "hostID": 200000, "size": 1000},
                    {"containerID": 1000, "hostID": 300000, "size": 10}]}}


def test_the_host_gid_of_a_user_namespaced_root() -> None:
    assert bundle.userns_root_gid(USERNS_SPEC) == 200000
    shifted = {"linux": {"namespaces": [{"type": "user"}],
                         "gidMappings": [{"containerID": 5, "hostID": 10, "size": 1}, {"containerID": 0, "hostID": 7,
                                                                                      "size": 1}]}}
    assert bundle.userns_root_gid(shifted) == 7
    assert bundle.userns_root_gid({"linux": {"namespaces": [{"type": "pid"}], "gidMappings": [
        {"containerID": 0, "hostID": 200000, "size": 1}]}}) is None  # no user namespace
    assert bundle.userns_root_gid({"linux": {"namespaces": [{"type": "user"}]}}) is None
    assert bundle.userns_root_gid({"root": {"path": "rootfs"}}) is None


@pytest.mark.root
def test_a_user_namespaced_bundle_lets_only_its_mapped_root_group_pass(tmp_path: Path) -> None:
    runtime_root = tmp_path / "rt"
    runtime_root.mkdir(mode=0o711)
    meta = bundle.BundleMeta(namespace="default", id="u1", runtime_name="io.containerd.runc.v2")
    path = bundle.create(runtime_root, "default", "u1", USERNS_SPEC, meta, have_rootfs_mounts=True)
    assert mode(path) == 0o710
    assert os.stat(path).st_gid == 200000
    assert bundle.close_existing(runtime_root) == []  # closed to others already: left alone


def test_close_existing_closes_old_bundles(tmp_path: Path) -> None:
    rt = tmp_path / "rt"
    for d in ("default/old", "k8s.io/old2", ".deleted/x"):
        (rt / d / "rootfs").mkdir(parents=True)
    for p in (rt, rt / "default", rt / "k8s.io", rt / "default/old", rt / "k8s.io/old2", rt / ".deleted"):
        os.chmod(p, 0o755 if p == rt else 0o711)
    (rt / "default" / "stray-symlink").symlink_to("/etc")
    changed = bundle.close_existing(rt)
    assert sorted(changed) == [rt / "default/old", rt / "k8s.io/old2"]
    assert [mode(rt), mode(rt / "default"), mode(rt / "k8s.io")] == [0o711] * 3
    assert [mode(rt / "default/old"), mode(rt / "k8s.io/old2"), mode(rt / ".deleted")] == [0o700] * 3
    assert mode(rt / "default/old/rootfs") == 0o755  # the container's / maybe: left alone
    assert mode("/etc") == 0o755
    assert open_to_others(rt) == []


def test_shim_files_and_socket_dir_are_private(tmp_path: Path) -> None:
    write_atomic(str(tmp_path / "init.exit"), b"{}")
    assert mode(tmp_path / "init.exit") == 0o600
    sock = bind_listener(str(tmp_path / "s" / "abc"))
    try:
        assert mode(tmp_path / "s") == 0o700
        assert mode(tmp_path / "s" / "abc") == 0o600
    finally:
        sock.close()


def test_blobs_and_ingests_are_private(tmp_path: Path) -> None:
    async def body() -> None:
        store = LocalStore(tmp_path / "content")
        await asyncio.to_thread(store.setup_sync)
        w = await store.writer("ref-1", total=0, expected="")
        await w.write(b"secret layer")
        ingest = store.ingest_root("ref-1")
        assert mode(ingest) == 0o700
        assert {n: mode(ingest / n) for n in os.listdir(ingest)} == {n: 0o600 for n in os.listdir(ingest)}
        dgst = await w.commit(0, "")
        assert dgst == "sha256:" + hashlib.sha256(b"secret layer").hexdigest()
        assert mode(store.blob_path(dgst)) == 0o400
        assert open_to_others(tmp_path / "content") == []
        assert mode(tmp_path / "content") == 0o700

    asyncio.run(body())


def test_an_old_content_store_is_closed_when_it_is_set_up(tmp_path: Path) -> None:
    for d in ("content", "content/blobs", "content/blobs/sha256", "content/ingest"):
        (tmp_path / d).mkdir()
        os.chmod(tmp_path / d, 0o755)
    LocalStore(tmp_path / "content").setup_sync()
    assert [mode(tmp_path / d) for d in ("content", "content/blobs", "content/blobs/sha256", "content/ingest")] \
        == [0o700] * 4


def test_snapshotter_and_differ_dirs_are_private(tmp_path: Path) -> None:
    (tmp_path / "native" / "snapshots").mkdir(parents=True)
    os.chmod(tmp_path / "native", 0o755)
    os.chmod(tmp_path / "native" / "snapshots", 0o755)
    sn = NativeSnapshotter(tmp_path / "native")
    try:
        assert mode(tmp_path / "native") == 0o700
        assert mode(tmp_path / "native" / "snapshots") == 0o700
        assert mode(tmp_path / "native" / "metadata.db") == 0o600
    finally:
        sn.ms.close()
    WalkingDiffer(tmp_path / "walking" / "tmpmounts")
    assert mode(tmp_path / "walking") == 0o700
    assert mode(tmp_path / "walking" / "tmpmounts") == 0o700
