"""The content store contract, run against every implementation.

Each case is ``async def case(new_store)`` where ``new_store()`` returns a store over the
implementation's backing data; calling it again gives another instance over the *same*
data (for the local store: a restarted daemon; for the metadata store: a fresh metadata
view of the same database and directory; for the gRPC proxy: a new connection).  The
store must implement ``pycontainerd.content.interfaces.Store`` and be empty at first.

Run all cases with ``run_case(case, new_store)``; ``CASES`` lists them, so a test module
parametrizes over ``CASES`` (see tests/unit/test_content_suite.py).
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Awaitable, Callable
from typing import Any

from pycontainerd import errdefs
from pycontainerd.content.interfaces import Info

StoreFactory = Callable[[], Awaitable[Any]]

MiB = 1 << 20


def digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def blob(n: int, seed: int = 0) -> bytes:
    """Deterministic pseudo-random bytes."""
    out = bytearray()
    counter = 0
    while len(out) < n:
        out += hashlib.sha256(f"{seed}-{counter}".encode()).digest()
        counter += 1
    return bytes(out[:n])


async def read_all(store: Any, digest: str, offset: int = 0, size: int = 0) -> bytes:
    out = bytearray()
    async for chunk in store.read(digest, offset, size):
        assert len(chunk) <= MiB, "chunks must not exceed 1 MiB"
        out += chunk
    return bytes(out)


async def expect(kind: type[errdefs.ContainerdError], aw: Awaitable[Any]) -> errdefs.ContainerdError:
    try:
        await aw
    except kind as exc:
        return exc
    raise AssertionError(f"expected {kind.__name__}")


async def put(store: Any, ref: str, data: bytes, *, labels: dict[str, str] | None = None) -> str:
    w = await store.writer(ref, len(data), digest_of(data))
    try:
        for i in range(0, len(data), 64 << 10):
            await w.write(data[i : i + (64 << 10)])
        return str(await w.commit(len(data), digest_of(data), labels))
    finally:
        await w.close()


# -- cases ---------------------------------------------------------------------------------
async def case_write_read_roundtrip(new_store: StoreFactory) -> None:
    cs = await new_store()
    data = blob(300_000, 1)
    before = time.time_ns()
    w = await cs.writer("roundtrip", len(data), digest_of(data))
    st = await w.status()
    assert st.ref == "roundtrip"
    assert st.offset == 0
    assert st.total == len(data)
    assert await w.write(data[:1000]) == 1000
    assert await w.write(data[1000:]) == len(data)
    assert w.digest() == digest_of(data)
    got = await w.commit(len(data), digest_of(data))
    await w.close()
    assert got == digest_of(data)
    info = await cs.info(digest_of(data))
    assert info.digest == digest_of(data)
    assert info.size == len(data)
    assert info.created_at >= before - 2_000_000_000
    assert await read_all(cs, info.digest) == data
    assert await read_all(cs, info.digest, 100, 50) == data[100:150]
    assert await read_all(cs, info.digest, 299_990) == data[299_990:]
    assert [i.digest for i in await cs.list()] == [info.digest]
    # the ingest is gone once committed
    await expect(errdefs.NotFound, cs.status("roundtrip"))
    assert await cs.list_statuses() == []


async def case_large_blob_chunks(new_store: StoreFactory) -> None:
    cs = await new_store()
    data = blob(3 * MiB + 17, 2)
    dgst = await put(cs, "large", data)
    chunks = [c async for c in cs.read(dgst)]
    assert all(len(c) <= MiB for c in chunks)
    assert b"".join(chunks) == data
    assert await read_all(cs, dgst, MiB - 3, MiB + 6) == data[MiB - 3 : 2 * MiB + 3]


async def case_empty_blob(new_store: StoreFactory) -> None:
    cs = await new_store()
    w = await cs.writer("empty", 0, digest_of(b""))
    assert await w.commit(0, digest_of(b"")) == digest_of(b"")
    await w.close()
    assert (await cs.info(digest_of(b""))).size == 0
    assert await read_all(cs, digest_of(b"")) == b""


async def case_commit_digest_mismatch(new_store: StoreFactory) -> None:
    cs = await new_store()
    data, other = b"hello world", b"another"
    w = await cs.writer("mismatch", len(data))
    await w.write(data)
    exc = await expect(errdefs.FailedPrecondition, w.commit(len(data), digest_of(other)))
    assert f"unexpected commit digest {digest_of(data)}, expected {digest_of(other)}" in str(exc)
    await w.close()
    await expect(errdefs.NotFound, cs.info(digest_of(data)))
    await expect(errdefs.NotFound, cs.info(digest_of(other)))
    assert await cs.list() == []


async def case_commit_size_mismatch(new_store: StoreFactory) -> None:
    cs = await new_store()
    data = b"0123456789"
    w = await cs.writer("short", 0)
    await w.write(data)
    exc = await expect(errdefs.FailedPrecondition, w.commit(20, ""))
    assert "unexpected commit size 10, expected 20" in str(exc)
    await w.close()
    await expect(errdefs.NotFound, cs.info(digest_of(data)))
    # the ingest survives the failed commit: it can be resumed, or aborted
    w = await cs.writer("short", 0)
    assert (await w.status()).offset == 10
    await w.close()
    await cs.abort("short")


async def case_already_exists(new_store: StoreFactory) -> None:
    cs = await new_store()
    data = b"exists"
    dgst = await put(cs, "first", data)
    await expect(errdefs.AlreadyExists, cs.writer("second", len(data), dgst))
    # without the expected digest the duplicate is only found at commit
    w = await cs.writer("third", 0)
    await w.write(data)
    await expect(errdefs.AlreadyExists, w.commit(len(data), dgst))
    await w.close()
    assert await cs.list_statuses() == []
    assert len(await cs.list()) == 1


async def case_ref_locked(new_store: StoreFactory) -> None:
    cs = await new_store()
    w1 = await cs.writer("locked-ref", 0)
    try:
        exc = await expect(errdefs.Unavailable, cs.writer("locked-ref", 0))
        assert "locked" in str(exc)
        w_other = await cs.writer("other-ref", 0)  # other refs are independent
        await w_other.close()
    finally:
        await w1.close()
    w2 = await cs.writer("locked-ref", 0)  # released by close
    await w2.close()
    await cs.abort("locked-ref")
    await cs.abort("other-ref")


async def case_resume(new_store: StoreFactory) -> None:
    cs = await new_store()
    data = blob(200_000, 3)
    w = await cs.writer("resume", len(data), digest_of(data))
    await w.write(data[:70_000])
    await w.close()
    st = await cs.status("resume")
    assert st.ref == "resume"
    assert st.offset == 70_000
    assert st.total == len(data)
    w = await cs.writer("resume", len(data), digest_of(data))
    assert (await w.status()).offset == 70_000
    await w.write(data[70_000:120_000])
    await w.close()
    # a new instance over the same data (a restarted daemon) re-hashes what is there
    cs2 = await new_store()
    w = await cs2.writer("resume", len(data), digest_of(data))
    st = await w.status()
    assert st.offset == 120_000
    await w.write(data[120_000:])
    assert w.digest() == digest_of(data)
    assert await w.commit(len(data), digest_of(data)) == digest_of(data)
    await w.close()
    assert await read_all(cs2, digest_of(data)) == data


async def case_truncate(new_store: StoreFactory) -> None:
    cs = await new_store()
    good = b"the right bytes"
    w = await cs.writer("trunc", 0)
    await w.write(b"garbage garbage garbage")
    await w.truncate(0)
    assert (await w.status()).offset == 0
    await w.write(good[:4])
    await w.truncate(2)
    await w.write(good[2:])
    assert w.digest() == digest_of(good)
    assert await w.commit(len(good), digest_of(good)) == digest_of(good)
    await w.close()
    assert await read_all(cs, digest_of(good)) == good


async def case_statuses_and_abort(new_store: StoreFactory) -> None:
    cs = await new_store()
    for ref in ("layer-sha256:aa", "layer-sha256:bb", "config-sha256:cc"):
        w = await cs.writer(ref, 100)
        await w.write(b"x" * 10)
        await w.close()
    refs = sorted(s.ref for s in await cs.list_statuses())
    assert refs == ["config-sha256:cc", "layer-sha256:aa", "layer-sha256:bb"]
    assert sorted(s.ref for s in await cs.list_statuses([""])) == refs
    only = await cs.list_statuses(["ref==layer-sha256:bb"])
    assert [(s.ref, s.offset, s.total) for s in only] == [("layer-sha256:bb", 10, 100)]
    assert sorted(s.ref for s in await cs.list_statuses(["ref~=^layer-"])) == refs[1:]
    st = await cs.status("layer-sha256:aa")
    assert st.started_at > 0
    assert st.updated_at >= st.started_at
    for ref in refs:
        await cs.abort(ref)
    assert await cs.list_statuses() == []
    await expect(errdefs.NotFound, cs.status("layer-sha256:aa"))
    await expect(errdefs.NotFound, cs.abort("layer-sha256:aa"))


async def case_labels(new_store: StoreFactory) -> None:
    cs = await new_store()
    dgst = await put(cs, "labelled", b"labelled blob", labels={"a": "1", "b": "2"})
    info = await cs.info(dgst)
    assert info.labels == {"a": "1", "b": "2"}
    info = await cs.update(Info(digest=dgst, size=0, labels={"c": "3"}), ["labels.c"])
    assert info.labels == {"a": "1", "b": "2", "c": "3"}
    info = await cs.update(Info(digest=dgst, size=0, labels={}), ["labels.a"])
    assert info.labels == {"b": "2", "c": "3"}
    info = await cs.update(Info(digest=dgst, size=0, labels={"z": "26"}), ["labels"])
    assert info.labels == {"z": "26"}
    info = await cs.update(Info(digest=dgst, size=0, labels={"y": "25"}))
    assert info.labels == {"y": "25"}
    assert (await cs.info(dgst)).labels == {"y": "25"}
    assert info.updated_at >= info.created_at
    await expect(errdefs.InvalidArgument, cs.update(Info(digest=dgst, size=0), ["size"]))
    await expect(errdefs.InvalidArgument, cs.update(Info(digest=dgst, size=0, labels={"k": "v" * 5000}), ["labels.k"]))
    await expect(errdefs.NotFound, cs.update(Info(digest=digest_of(b"nope"), size=0), ["labels"]))


async def case_list_filters(new_store: StoreFactory) -> None:
    cs = await new_store()
    d1 = await put(cs, "f1", b"one", labels={"kind": "config"})
    d2 = await put(cs, "f2", b"two two", labels={"kind": "layer", "containerd.io/uncompressed": "x"})
    await put(cs, "f3", b"three")

    async def digests(*fs: str) -> list[str]:
        return sorted(i.digest for i in await cs.list(list(fs)))

    assert await digests("labels.kind==config") == [d1]
    assert await digests("labels.kind") == sorted([d1, d2])
    assert await digests('labels."containerd.io/uncompressed"') == [d2]
    assert await digests(f"digest=={d2}") == [d2]
    assert await digests("size==7") == [d2]
    assert await digests("labels.kind==config", "labels.kind==layer") == sorted([d1, d2])
    assert len(await digests()) == 3
    await expect(errdefs.InvalidArgument, cs.list(["labels.kind=="]))


async def case_delete(new_store: StoreFactory) -> None:
    cs = await new_store()
    dgst = await put(cs, "del", b"to be deleted")
    await cs.delete(dgst)
    await expect(errdefs.NotFound, cs.info(dgst))
    await expect(errdefs.NotFound, cs.delete(dgst))
    await expect(errdefs.NotFound, read_all(cs, dgst))
    assert await cs.list() == []
    # and it can be written again
    assert await put(cs, "del-again", b"to be deleted") == dgst


async def case_not_found(new_store: StoreFactory) -> None:
    cs = await new_store()
    missing = digest_of(b"missing")
    await expect(errdefs.NotFound, cs.info(missing))
    await expect(errdefs.NotFound, read_all(cs, missing))
    await expect(errdefs.NotFound, cs.status("no-such-ref"))
    await expect(errdefs.InvalidArgument, cs.writer("", 0))


CASES: list[Callable[[StoreFactory], Awaitable[None]]] = [
    case_write_read_roundtrip,
    case_large_blob_chunks,
    case_empty_blob,
    case_commit_digest_mismatch,
    case_commit_size_mismatch,
    case_already_exists,
    case_ref_locked,
    case_resume,
    case_truncate,
    case_statuses_and_abort,
    case_labels,
    case_list_filters,
    case_delete,
    case_not_found,
]
