"""The CRI image list (what CreateContainer's and RunPodSandbox's resolve walk): kept until an
image record changes (``ImageStore.writes``, shared by every store of a database), never kept
when an image write overlapped the read or a record's content could not be read; callers get
copies."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from pycontainerd import errdefs
from pycontainerd.cri import imagestore
from pycontainerd.metadata import images as mdimages
from pycontainerd.metadata.db import Database

DIGEST_A = "sha256:" + "a" * 64
DIGEST_B = "sha256:" + "b" * 64


class _Images:
    """The metadata image store as far as ``CriImageStore.list`` reads it."""

    def __init__(self) -> None:
        self.count = 0  # image writes begun or ended
        self.in_flight = False
        self.records = [mdimages.Image("docker.io/library/busybox:latest", mdimages.Descriptor("m", DIGEST_A, 1))]
        self.lists = 0
        self.during_list: Any = None  # called while a list is in flight (a write meanwhile)

    def writes(self) -> int | None:
        return None if self.in_flight else self.count

    async def list(self, ns: str) -> list[mdimages.Image]:
        self.lists += 1
        if self.during_list is not None:
            self.during_list()
            self.during_list = None
        return list(self.records)


class _Store(imagestore.CriImageStore):
    missing: set[str] = set()  # digests whose content cannot be read

    async def _describe(self, target: mdimages.Descriptor) -> Any:
        if target.digest in self.missing:
            raise errdefs.NotFound(f"content {target.digest}")
        return imagestore._Described(target.digest, 10, {"config": {}}, "chain-" + target.digest[-4:])


def _store() -> tuple[_Store, _Images]:
    images = _Images()
    store = _Store(content=None, snapshots=None, differ=None, images=images,  # type: ignore[arg-type]
                   leases=None, snapshotter="overlayfs", snapshotter_root="/nonexistent",
                   registry=imagestore.RegistrySettings())
    return store, images


def test_resolve_reads_once_per_generation() -> None:
    async def run() -> None:
        store, images = _store()
        first = await store.resolve("busybox")
        assert first.id == DIGEST_A and images.lists == 1
        assert (await store.resolve("docker.io/library/busybox:latest")).id == DIGEST_A
        assert images.lists == 1  # kept
        first.references.append("changed by a caller")
        assert "changed by a caller" not in (await store.resolve("busybox")).references  # a copy each time
        # an image write (begun and ended) makes the next list read again
        images.records.append(mdimages.Image("docker.io/library/alpine:3", mdimages.Descriptor("m", DIGEST_B, 1)))
        images.count += 2
        assert (await store.resolve("alpine:3")).id == DIGEST_B and images.lists == 2

    asyncio.run(run())


def test_a_list_overlapped_by_a_write_is_not_kept() -> None:
    async def run() -> None:
        store, images = _store()

        def write() -> None:
            images.count += 2

        images.during_list = write
        await store.list()
        await store.list()
        assert images.lists == 2  # the first (overlapped) was not kept ...
        await store.list()
        assert images.lists == 2  # ... the second was
        images.in_flight = True  # a write in flight: nothing kept answers, nothing is kept
        await store.list()
        await store.list()
        assert images.lists == 4

    asyncio.run(run())


def test_a_list_missing_some_content_is_not_kept() -> None:
    async def run() -> None:
        store, images = _store()
        store.missing = {DIGEST_A}
        assert await store.list() == []
        store.missing = set()  # the content came, no image record changed
        assert [i.id for i in await store.list()] == [DIGEST_A]
        assert images.lists == 2

    asyncio.run(run())


def test_image_writes_are_counted_per_database(tmp_path: Path) -> None:
    async def run() -> None:
        db = Database(tmp_path / "meta.db")
        await db.open()
        try:
            a, b = mdimages.ImageStore(db), mdimages.ImageStore(db)  # as the CRI's and the Images service's
            w0 = a.writes()
            img = mdimages.Image("docker.io/library/busybox:latest", mdimages.Descriptor("m", DIGEST_A, 1))
            await b.create("k8s.io", img)
            w1 = a.writes()
            assert w1 is not None and w0 is not None and w1 > w0
            await b.update("k8s.io", replace(img, labels={"x": "y"}), ["labels"])
            w2 = a.writes()
            assert w2 is not None and w2 > w1
            await a.get("k8s.io", img.name)
            await a.list("k8s.io")
            assert a.writes() == w2  # reads do not count
            with pytest.raises(errdefs.NotFound):
                await a.delete("k8s.io", "no-such-image")
            w3 = a.writes()
            assert w3 is not None and w3 > w2  # a failed write counts too (it may have begun)
            await a.delete("k8s.io", img.name)
            w4 = a.writes()
            assert w4 is not None and w4 > w3
        finally:
            db.close()

    asyncio.run(run())
