"""The CRI image list (what CreateContainer's and RunPodSandbox's resolve walk): kept while the
metadata database's generation stands, read again after any write, never kept when a write
overlapped the read; callers get copies."""

from __future__ import annotations

import asyncio
from typing import Any

from pycontainerd.cri import imagestore
from pycontainerd.metadata import images as mdimages

DIGEST_A = "sha256:" + "a" * 64
DIGEST_B = "sha256:" + "b" * 64


class _DB:
    generation = 0


class _Images:
    """The metadata image store as far as ``CriImageStore.list`` reads it."""

    def __init__(self) -> None:
        self.db = _DB()
        self.records = [mdimages.Image("docker.io/library/busybox:latest", mdimages.Descriptor("m", DIGEST_A, 1))]
        self.lists = 0
        self.during_list: Any = None  # called while a list is in flight (a write meanwhile)

    async def list(self, ns: str) -> list[mdimages.Image]:
        self.lists += 1
        if self.during_list is not None:
            self.during_list()
            self.during_list = None
        return list(self.records)


class _Store(imagestore.CriImageStore):
    async def _describe(self, target: mdimages.Descriptor) -> Any:
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
        # a write (any: the generation moves on twice) makes the next list read again
        images.records.append(mdimages.Image("docker.io/library/alpine:3", mdimages.Descriptor("m", DIGEST_B, 1)))
        images.db.generation += 2
        assert (await store.resolve("alpine:3")).id == DIGEST_B and images.lists == 2

    asyncio.run(run())


def test_a_list_overlapped_by_a_write_is_not_kept() -> None:
    async def run() -> None:
        store, images = _store()

        def write() -> None:
            images.db.generation += 2

        images.during_list = write
        await store.list()
        await store.list()
        assert images.lists == 2  # the first (overlapped) was not kept ...
        await store.list()
        assert images.lists == 2  # ... the second was
        images.db.generation += 1  # a write in flight: nothing kept answers
        await store.list()
        assert images.lists == 3

    asyncio.run(run())
