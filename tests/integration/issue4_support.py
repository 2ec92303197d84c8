"""Helpers shared by the issue-4 tests (snapshots, GC, safety) — run against our daemon and
against a real containerd alike.

A *target* is anything with ``address``, ``root`` and ``ctr(*args, namespace=, check=)``:
``tests.integration.daemon.Daemon`` (pycontainerd) or ``tests.fixtures.containerd.Containerd``.
Both keep content blobs in ``<root>/io.containerd.content.v1.content/blobs/sha256`` and
overlay snapshots in ``<root>/io.containerd.snapshotter.v1.overlayfs/snapshots``, so the
on-disk checks ("space reclaimed", "no orphan directories") are the same for both.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import stat
import subprocess
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Protocol

CTR = "/usr/bin/ctr"


class Target(Protocol):
    address: str
    root: Path

    def ctr(self, *args: str, namespace: str = "default", timeout: float = 120,
            check: bool = True) -> subprocess.CompletedProcess[str]: ...


# -- ctr wrappers ------------------------------------------------------------------------------


def ctr_bytes(t: Target, *args: str, namespace: str = "default", check: bool = True,
              timeout: float = 120) -> subprocess.CompletedProcess[bytes]:
    """ctr with binary stdout (``snapshots diff``, ``content get``)."""
    r = subprocess.run([CTR, "-a", t.address, "-n", namespace, *args], capture_output=True, timeout=timeout,
                       check=False)
    if check and r.returncode != 0:
        raise AssertionError(f"ctr {' '.join(args)} failed ({r.returncode}): {r.stderr.decode()[-2000:]}")
    return r


def pull(t: Target, ref: str, *, namespace: str = "default") -> float:
    """`ctr images pull --plain-http REF`; returns the wall time (fetch + unpack)."""
    start = time.monotonic()
    t.ctr("images", "pull", "--plain-http", ref, namespace=namespace, timeout=300)
    return time.monotonic() - start


def snapshots(t: Target, *, namespace: str = "default", snapshotter: str = "overlayfs") -> dict[str, tuple[str, str]]:
    """`ctr snapshots ls` as {key: (parent, kind)} (columns cut where the header puts them:
    unpack keys contain a space, "extract-<n>-<rand> <chain id>")."""
    out = t.ctr("snapshots", "--snapshotter", snapshotter, "ls", namespace=namespace).stdout
    lines = out.splitlines()
    if not lines:
        return {}
    pcol, kcol = lines[0].index("PARENT"), lines[0].index("KIND")
    rows: dict[str, tuple[str, str]] = {}
    for line in lines[1:]:
        if line.strip():
            rows[line[:pcol].strip()] = (line[pcol:kcol].strip(), line[kcol:].strip())
    return rows


def content(t: Target, *, namespace: str = "default") -> dict[str, dict[str, str]]:
    """`ctr content ls` as {digest: labels}."""
    out = t.ctr("content", "ls", namespace=namespace).stdout
    result: dict[str, dict[str, str]] = {}
    for line in out.splitlines()[1:]:
        f = line.split("\t")
        if not f or not f[0].startswith("sha256:"):
            continue
        labels: dict[str, str] = {}
        raw = f[-1].strip() if len(f) >= 4 else ""
        if raw and raw != "-":
            for kv in raw.split(","):
                k, _, v = kv.partition("=")
                labels[k] = v
        result[f[0]] = labels
    return result


def leases(t: Target, *, namespace: str = "default") -> list[str]:
    return [line.split()[0] for line in t.ctr("leases", "ls", namespace=namespace).stdout.splitlines()[1:]
            if line.strip()]


def image_names(t: Target, *, namespace: str = "default") -> list[str]:
    return t.ctr("images", "ls", "-q", namespace=namespace).stdout.split()


def trigger_gc(t: Target, *, namespace: str = "default") -> None:
    """A synchronous collection, the way a client gets one: delete a lease with --sync."""
    lid = f"gc-trigger-{time.monotonic_ns()}"
    t.ctr("leases", "create", "--id", lid, namespace=namespace)
    t.ctr("leases", "rm", "--sync", lid, namespace=namespace)


def add_lease_resource(t: Target, lease: str, rid: str, rtype: str = "content", *, namespace: str = "default") -> None:
    """Leases.AddResource (real ctr 1.6 has no command for it; clients do it with a lease header)."""
    import grpc

    from pycontainerd.api.services.leases.v1 import leases_pb2, leases_pb2_grpc

    with grpc.insecure_channel(f"unix://{t.address}") as ch:
        leases_pb2_grpc.LeasesStub(ch).AddResource(
            leases_pb2.AddResourceRequest(id=lease, resource=leases_pb2.Resource(id=rid, type=rtype)),
            metadata=(("containerd-namespace", namespace),), timeout=30,
        )


@contextlib.contextmanager
def image_mounted(t: Target, ref: str, target: Path, *, rw: bool = False, namespace: str = "default"
                  ) -> Iterator[Path]:
    """`ctr images mount REF TARGET` … `ctr images unmount --rm TARGET` (also on failure)."""
    target.mkdir(parents=True, exist_ok=True)
    args = ["images", "mount", *(["--rw"] if rw else []), ref, str(target)]
    t.ctr(*args, namespace=namespace)
    try:
        yield target
    finally:
        r = t.ctr("images", "unmount", "--rm", str(target), namespace=namespace, check=False)
        if r.returncode != 0:
            subprocess.run(["umount", "-l", str(target)], check=False, capture_output=True)


# -- on-disk state -----------------------------------------------------------------------------


def blobs_dir(t: Target) -> Path:
    return t.root / "io.containerd.content.v1.content" / "blobs" / "sha256"


def snapshots_dir(t: Target, snapshotter: str = "overlayfs") -> Path:
    return t.root / f"io.containerd.snapshotter.v1.{snapshotter}" / "snapshots"


def blob_digests(t: Target) -> set[str]:
    d = blobs_dir(t)
    return {"sha256:" + p.name for p in d.iterdir()} if d.is_dir() else set()


def snapshot_dirs(t: Target, snapshotter: str = "overlayfs") -> list[str]:
    d = snapshots_dir(t, snapshotter)
    return sorted(p.name for p in d.iterdir()) if d.is_dir() else []


def du(path: Path) -> int:
    """Bytes allocated under ``path`` (each inode once), like ``du -s --bytes`` of blocks."""
    seen: set[tuple[int, int]] = set()
    total = 0
    for dirpath, dirnames, filenames in os.walk(path):
        for name in [*dirnames, *filenames]:
            st = os.lstat(os.path.join(dirpath, name))
            if (st.st_dev, st.st_ino) not in seen:
                seen.add((st.st_dev, st.st_ino))
                total += st.st_blocks * 512
    return total


def assert_store_empty(t: Target, *, namespace: str = "default", snapshotters: tuple[str, ...] = ("overlayfs",)
                       ) -> None:
    """Nothing left: no records, no blobs, no snapshot directories, no space used."""
    assert content(t, namespace=namespace) == {}, "content records left"
    assert blob_digests(t) == set(), f"blobs left on disk: {sorted(blob_digests(t))}"
    assert du(blobs_dir(t)) == 0
    for sn in snapshotters:
        assert snapshots(t, namespace=namespace, snapshotter=sn) == {}, f"{sn} snapshot records left"
        assert snapshot_dirs(t, sn) == [], f"{sn} snapshot dirs left: {snapshot_dirs(t, sn)}"
        assert du(snapshots_dir(t, sn)) == 0


# -- trees -------------------------------------------------------------------------------------


def tree(root: Path, *, volatile_since: float | None = None) -> dict[str, tuple[Any, ...]]:
    """Every path under ``root`` → (type+mode, uid, gid, nlink|-, content hash / link target /
    rdev, mtime, xattr names).  ``volatile_since``: mtimes at or after it (directories an
    extraction had to create itself) are reported as "now" so two extractions compare equal."""
    out: dict[str, tuple[Any, ...]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted([*dirnames, *filenames]):
            p = os.path.join(dirpath, name)
            try:
                st = os.lstat(p)
            except FileNotFoundError:
                # listed but not there: an overlay whiteout in a directory only one layer has
                # (readdir of such a directory is not filtered by the kernel)
                out[os.path.relpath(p, root)] = ("listed-but-absent",)
                continue
            what: Any = None
            nlink: Any = "-"
            if stat.S_ISREG(st.st_mode):
                with open(p, "rb") as fh:
                    what = hashlib.sha256(fh.read()).hexdigest()[:16]
                nlink = st.st_nlink
            elif stat.S_ISLNK(st.st_mode):
                what = os.readlink(p)
            elif stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
                what = (os.major(st.st_rdev), os.minor(st.st_rdev))
            mtime: Any = int(st.st_mtime)
            if volatile_since is not None and st.st_mtime >= volatile_since:
                mtime = "now"
            try:
                xattrs = tuple(sorted(os.listxattr(p, follow_symlinks=False)))
            except OSError:
                xattrs = ()
            out[os.path.relpath(p, root)] = (stat.filemode(st.st_mode), st.st_uid, st.st_gid, nlink, what, mtime,
                                             xattrs)
    return out


def tree_differences(a: Mapping[str, tuple[Any, ...]], b: Mapping[str, tuple[Any, ...]]) -> list[str]:
    return [f"{k}: {a.get(k)} != {b.get(k)}" for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]


def write_json(path: Path, obj: Any) -> None:
    path.write_text(json.dumps(obj, indent=1, sort_keys=True))
