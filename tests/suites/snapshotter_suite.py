"""The snapshotter contract, run against every implementation (root: real mounts).

Each case is ``async def case(sn, work)``: ``sn`` implements
``pycontainerd.snapshots.interfaces.Snapshotter`` and is empty; ``work`` is a scratch
directory for mount points.  Cases mount what the snapshotter hands out (the way a
runtime would) and always unmount, even on failure.  ``CASES`` lists them; test modules
parametrize over it (tests/integration/test_snapshots_suite.py runs them against overlay,
native and the namespaced metadata store over each).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

from pycontainerd import errdefs
from pycontainerd.mount import Mount, mount_all, unmount_all
from pycontainerd.snapshots.interfaces import Info, Kind

Case = Callable[[Any, Path], Awaitable[None]]


@contextlib.asynccontextmanager
async def mounted(mounts: list[Mount], work: Path) -> AsyncIterator[Path]:
    target = Path(tempfile.mkdtemp(prefix="mnt-", dir=work))
    await asyncio.to_thread(mount_all, mounts, target)
    try:
        yield target
    finally:
        await asyncio.to_thread(unmount_all, target)
        target.rmdir()


async def expect(kind: type[errdefs.ContainerdError], aw: Awaitable[Any]) -> errdefs.ContainerdError:
    try:
        await aw
    except kind as exc:
        return exc
    except errdefs.ContainerdError as exc:
        raise AssertionError(f"expected {kind.__name__}, got {type(exc).__name__}: {exc}") from exc
    raise AssertionError(f"expected {kind.__name__}, got success")


async def layer(sn: Any, work: Path, key: str, name: str, parent: str, files: dict[str, bytes]) -> None:
    mounts = await sn.prepare(key, parent)
    async with mounted(mounts, work) as root:
        for rel, data in files.items():
            p = root / rel
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_bytes(data)
    await sn.commit(name, key)


# -- cases ------------------------------------------------------------------------------------
async def case_prepare_commit_chain(sn: Any, work: Path) -> None:
    await layer(sn, work, "k1", "l1", "", {"a": b"one", "dir/x": b"x"})
    info = await sn.stat("l1")
    assert info.kind == Kind.COMMITTED
    assert info.parent == ""
    assert info.name == "l1"
    await expect(errdefs.NotFound, sn.stat("k1"))  # the key is gone after commit
    await layer(sn, work, "k2", "l2", "l1", {"b": b"two"})
    assert (await sn.stat("l2")).parent == "l1"
    mounts = await sn.prepare("rw", "l2")
    async with mounted(mounts, work) as root:
        assert (root / "a").read_bytes() == b"one"
        assert (root / "b").read_bytes() == b"two"
        assert (root / "dir" / "x").read_bytes() == b"x"
        (root / "a").write_bytes(b"changed")
        (root / "b").unlink()
    # the committed layers are unchanged
    mounts = await sn.view("v", "l2")
    async with mounted(mounts, work) as root:
        assert (root / "a").read_bytes() == b"one"
        assert (root / "b").exists()
        try:
            (root / "new").write_bytes(b"no")
        except OSError as exc:
            err = exc.errno
        else:
            raise AssertionError("a view must be read-only")
        assert err == errno.EROFS
    info = await sn.stat("v")
    assert info.kind == Kind.VIEW
    assert info.parent == "l2"
    assert (await sn.stat("rw")).kind == Kind.ACTIVE


async def case_mounts_again(sn: Any, work: Path) -> None:
    await layer(sn, work, "k1", "base", "", {"f": b"1"})
    first = await sn.prepare("c", "base")
    again = await sn.mounts("c")
    assert [(m.type, m.source, m.options) for m in first] == [(m.type, m.source, m.options) for m in again]
    async with mounted(again, work) as root:
        assert (root / "f").read_bytes() == b"1"
    await expect(errdefs.FailedPrecondition, sn.mounts("base"))


async def case_view_of_empty_and_single(sn: Any, work: Path) -> None:
    mounts = await sn.view("empty-view")
    async with mounted(mounts, work) as root:
        assert list(root.iterdir()) == []
    await layer(sn, work, "k", "one", "", {"only": b"1"})
    mounts = await sn.view("v1", "one")
    async with mounted(mounts, work) as root:
        assert (root / "only").read_bytes() == b"1"


async def case_errors(sn: Any, work: Path) -> None:
    await sn.prepare("active")
    await expect(errdefs.AlreadyExists, sn.prepare("active"))
    await expect(errdefs.AlreadyExists, sn.view("active"))
    await expect(errdefs.NotFound, sn.prepare("x", "no-such-parent"))
    await expect(errdefs.InvalidArgument, sn.prepare("y", "active"))  # parent not committed
    await expect(errdefs.NotFound, sn.commit("name", "no-such-key"))
    await sn.view("view")
    await expect(errdefs.FailedPrecondition, sn.commit("from-view", "view"))
    await sn.commit("committed", "active")
    await expect(errdefs.FailedPrecondition, sn.commit("again", "committed"))
    await sn.prepare("active2")
    await expect(errdefs.AlreadyExists, sn.commit("committed", "active2"))
    await sn.prepare("child", "committed")
    await expect(errdefs.FailedPrecondition, sn.remove("committed"))
    await sn.remove("child")
    await sn.remove("committed")
    await expect(errdefs.NotFound, sn.remove("committed"))
    await expect(errdefs.NotFound, sn.stat("committed"))
    await expect(errdefs.NotFound, sn.mounts("nothing"))
    await expect(errdefs.NotFound, sn.usage("nothing"))
    # failed calls left nothing behind
    names = sorted(i.name for i in await sn.walk())
    assert names == ["active2", "view"], names


async def case_labels(sn: Any, work: Path) -> None:
    await sn.prepare("k", "", {"a": "1", "b": "2"})
    assert (await sn.stat("k")).labels == {"a": "1", "b": "2"}
    info = await sn.update(Info(name="k", kind=Kind.ACTIVE, labels={"a": "10", "c": "3"}), ["labels.a"])
    assert info.labels == {"a": "10", "b": "2"}
    info = await sn.update(Info(name="k", kind=Kind.ACTIVE, labels={}), ["labels.b"])
    assert info.labels == {"a": "10"}
    info = await sn.update(Info(name="k", kind=Kind.ACTIVE, labels={"z": "26"}))
    assert info.labels == {"z": "26"}
    assert (await sn.stat("k")).labels == {"z": "26"}
    await expect(errdefs.InvalidArgument, sn.update(Info(name="k", kind=Kind.ACTIVE), ["parent"]))
    await expect(errdefs.NotFound, sn.update(Info(name="nope", kind=Kind.ACTIVE, labels={"a": "b"})))
    await sn.commit("c", "k", {"containerd.io/gc.root": "x"})
    assert (await sn.stat("c")).labels == {"containerd.io/gc.root": "x"}


async def case_walk_filters(sn: Any, work: Path) -> None:
    await sn.prepare("a1", "", {"team": "x"})
    await sn.commit("c1", "a1", {"team": "x"})
    await sn.prepare("a2", "c1", {"team": "y"})
    await sn.view("v1", "c1")
    assert sorted(i.name for i in await sn.walk()) == ["a2", "c1", "v1"]
    assert [i.name for i in await sn.walk(["kind==committed"])] == ["c1"]
    assert sorted(i.name for i in await sn.walk(["parent==c1"])) == ["a2", "v1"]
    assert [i.name for i in await sn.walk(["labels.team==y"])] == ["a2"]
    assert sorted(i.name for i in await sn.walk(["kind==view", "kind==active"])) == ["a2", "v1"]


async def case_usage(sn: Any, work: Path) -> None:
    mounts = await sn.prepare("u")
    async with mounted(mounts, work) as root:
        (root / "big").write_bytes(os.urandom(1 << 20))
        (root / "d").mkdir()
        (root / "d" / "small").write_bytes(b"s")
    usage = await sn.usage("u")
    assert usage.size >= 1 << 20, usage
    assert usage.inodes >= 3, usage
    await sn.commit("uc", "u")
    committed = await sn.usage("uc")
    assert committed.size >= 1 << 20, committed
    assert committed.inodes >= 3, committed


async def case_deep_chain(sn: Any, work: Path) -> None:
    """60 layers: an overlay of all of them must still mount."""
    parent = ""
    depth = 60
    for i in range(depth):
        key, name = f"extract-{i}", f"sha256:{i:064x}"
        await layer(sn, work, key, name, parent, {f"layer-{i:02d}": str(i).encode()})
        parent = name
    mounts = await sn.prepare("container", parent)
    async with mounted(mounts, work) as root:
        names = sorted(p.name for p in root.iterdir())
        assert names == [f"layer-{i:02d}" for i in range(depth)]
        (root / "written").write_bytes(b"ok")
    mounts = await sn.view("container-view", parent)
    async with mounted(mounts, work) as root:
        assert len(list(root.iterdir())) == depth


async def case_remove_chain_and_cleanup(sn: Any, work: Path) -> None:
    await layer(sn, work, "k1", "c1", "", {"a": b"a"})
    await layer(sn, work, "k2", "c2", "c1", {"b": b"b"})
    await sn.prepare("top", "c2")
    for key in ("top", "c2", "c1"):
        await sn.remove(key)
    assert await sn.walk() == []
    await sn.cleanup()


async def case_concurrent_prepare_same_key(sn: Any, work: Path) -> None:
    results = await asyncio.gather(*(sn.prepare("same") for _ in range(5)), return_exceptions=True)
    ok = [r for r in results if not isinstance(r, BaseException)]
    errs = [r for r in results if isinstance(r, BaseException)]
    assert len(ok) == 1, results
    assert all(isinstance(e, errdefs.AlreadyExists) for e in errs), errs


CASES: list[Case] = [
    case_prepare_commit_chain,
    case_mounts_again,
    case_view_of_empty_and_single,
    case_errors,
    case_labels,
    case_walk_filters,
    case_usage,
    case_deep_chain,
    case_remove_chain_and_cleanup,
    case_concurrent_prepare_same_key,
]
