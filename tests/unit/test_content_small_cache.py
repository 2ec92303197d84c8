"""The content store's small-blob cache: reads served from it are byte-exact at any offset and
size, big blobs stay out, and a deleted blob is never served from it again."""

from __future__ import annotations

from pathlib import Path

from pycontainerd import errdefs
from pycontainerd.content.local import SMALL_BLOB_MAX, LocalStore
from pycontainerd.metadata.content import ContentStore
from tests.suites.content_suite import blob, expect, put, read_all
from tests.unit.local_content import run_with_stores


def test_cached_reads_are_exact_and_deletion_evicts(tmp_path: Path) -> None:
    async def body(local: LocalStore, content: ContentStore) -> None:
        ns = content.namespaced("ns")
        data = blob(5000, seed=3)
        dgst = await put(ns, "small", data)
        assert await read_all(ns, dgst) == data  # fills the cache
        assert local._cached(dgst) == data
        for offset, size in ((0, 0), (10, 0), (10, 100), (4990, 100), (5000, 0), (0, 5000)):
            assert await read_all(ns, dgst, offset, size) == data[offset:offset + size if size else None]
        await ns.delete(dgst)
        assert local._cached(dgst) is None
        await expect(errdefs.NotFound, read_all(ns, dgst))
        await expect(errdefs.NotFound, read_all(local, dgst))

    run_with_stores(tmp_path, body)


def test_partial_and_big_blobs_are_not_cached(tmp_path: Path) -> None:
    async def body(local: LocalStore, content: ContentStore) -> None:
        ns = content.namespaced("ns")
        small = blob(3000, seed=1)
        d1 = await put(ns, "s", small)
        assert await read_all(ns, d1, 100, 50) == small[100:150]  # a part: not the whole blob
        assert local._cached(d1) is None
        big = blob(SMALL_BLOB_MAX + 1, seed=2)
        d2 = await put(ns, "b", big)
        assert await read_all(ns, d2) == big
        assert local._cached(d2) is None

    run_with_stores(tmp_path, body)


def test_other_namespaces_do_not_see_cached_blobs(tmp_path: Path) -> None:
    async def body(local: LocalStore, content: ContentStore) -> None:
        a, b = content.namespaced("a"), content.namespaced("b")
        data = blob(100, seed=5)
        dgst = await put(a, "x", data)
        assert await read_all(a, dgst) == data
        await expect(errdefs.NotFound, read_all(b, dgst))

    run_with_stores(tmp_path, body)
