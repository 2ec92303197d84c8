"""The overlay snapshotter's options, on the snapshotter itself (no mounting needed):
``mount_options`` on every overlay mount, ``upperdir_label`` in the Info it reports,
``sync_remove`` deleting at once vs leaving the directory to ``cleanup``."""

from __future__ import annotations

import asyncio
from pathlib import Path

from pycontainerd.snapshots.interfaces import Info
from pycontainerd.snapshots.overlay import UPPERDIR_LABEL, OverlaySnapshotter


def test_mount_options_go_on_every_overlay_mount_only(tmp_path: Path) -> None:
    async def run() -> None:
        o = OverlaySnapshotter(tmp_path, options=["index=off"], mount_options=("nodev", "volatile"))
        base = await o.prepare("base")
        assert base[0].type == "bind" and "nodev" not in base[0].options  # no parent: a bind mount
        await o.commit("l1", "base")
        await o.prepare("l2-active", "l1")
        await o.commit("l2", "l2-active")
        active = await o.prepare("top", "l2")
        view = await o.view("v", "l2")
        for m in (active[0], view[0]):
            assert m.type == "overlay"
            assert m.options[-2:] == ["nodev", "volatile"]
            assert m.options[0] == "index=off"
        single = await o.view("v1", "l1")  # a view of one layer: a read-only bind
        assert single[0].type == "bind" and "nodev" not in single[0].options
        await o.close()

        plain = OverlaySnapshotter(tmp_path / "plain", options=[])
        await plain.prepare("a")
        await plain.commit("c", "a")
        m = (await plain.prepare("b", "c"))[0]
        assert m.type == "overlay" and not {"nodev", "volatile"} & set(m.options)
        await plain.close()

    asyncio.run(run())


def test_upperdir_label(tmp_path: Path) -> None:
    async def run() -> None:
        o = OverlaySnapshotter(tmp_path, options=[], upperdir_label=True)
        await o.prepare("a", labels={"x": "1"})
        info = await o.stat("a")
        upper = info.labels[UPPERDIR_LABEL]
        assert Path(upper).is_dir() and Path(upper).name == "fs" and info.labels["x"] == "1"
        assert [i.labels[UPPERDIR_LABEL] for i in await o.walk()] == [upper]
        updated = await o.update(Info(name="a", kind=info.kind, labels={"y": "2"}), ["labels.y"])
        assert updated.labels[UPPERDIR_LABEL] == upper and updated.labels["y"] == "2"
        await o.close()

        off = OverlaySnapshotter(tmp_path / "off", options=[])
        await off.prepare("a")
        assert UPPERDIR_LABEL not in (await off.stat("a")).labels
        assert all(UPPERDIR_LABEL not in i.labels for i in await off.walk())
        await off.close()

    asyncio.run(run())


def test_the_label_is_not_stored(tmp_path: Path) -> None:
    async def run() -> None:
        o = OverlaySnapshotter(tmp_path, options=[], upperdir_label=True)
        await o.prepare("a")
        await o.close()
        again = OverlaySnapshotter(tmp_path, options=[])  # same store, label off
        assert UPPERDIR_LABEL not in (await again.stat("a")).labels
        await again.close()

    asyncio.run(run())


def test_sync_remove(tmp_path: Path) -> None:
    async def run() -> None:
        sync = OverlaySnapshotter(tmp_path / "sync", options=[], sync_remove=True)
        await sync.prepare("a")
        await sync.remove("a")
        assert list(sync.snapshots_dir.iterdir()) == []  # gone within Remove
        await sync.close()

        lazy = OverlaySnapshotter(tmp_path / "async", options=[], sync_remove=False)
        await lazy.prepare("a")
        await lazy.remove("a")
        left = [p.name for p in lazy.snapshots_dir.iterdir()]
        assert len(left) == 1 and left[0].startswith("rm-")  # the record is gone, the bytes wait
        await lazy.cleanup()  # what the garbage collector runs after each collection
        assert list(lazy.snapshots_dir.iterdir()) == []
        await lazy.close()

    asyncio.run(run())
