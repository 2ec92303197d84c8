"""A client that hangs up cancels the handler in the middle of opening or closing an ingest or a
temporary mount: the ref's lock and the file must still be released (or the next writer of the
ref waits on "ref locked" forever: a resumed pull hung this way), and a mount made by a worker
thread must be finished before the cleanup that unmounts it runs."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from pathlib import Path

from pycontainerd.content.local import LocalStore
from pycontainerd.threads import to_thread_uncancelled
from tests.fixtures.procs import wait_for_async


async def _released(store: LocalStore, ref: str) -> bool:
    return await wait_for_async(lambda: not store.is_locked(ref), 5, f"the lock on {ref} to go")


async def _cancel_soon(coro: object) -> None:
    task = asyncio.ensure_future(coro)  # type: ignore[call-overload]
    await asyncio.sleep(0)  # let it start and reach its worker-thread hop
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


def test_cancelled_close_still_releases_the_ref(tmp_path: Path) -> None:
    async def main() -> None:
        store = LocalStore(tmp_path)
        await asyncio.to_thread(store.setup_sync)
        for i in range(20):
            w = await store.writer(f"r{i}")
            await w.write(b"x" * 100)
            await _cancel_soon(w.close())
            assert await _released(store, f"r{i}")
            w2 = await store.writer(f"r{i}")  # the next writer resumes at the offset
            assert (await w2.status()).offset == 100
            await w2.close()

    asyncio.run(main())


def test_cancelled_open_releases_the_ref_once_the_open_is_done(tmp_path: Path) -> None:
    async def main() -> None:
        store = LocalStore(tmp_path)
        await asyncio.to_thread(store.setup_sync)
        for i in range(20):
            await _cancel_soon(store.writer(f"o{i}"))
            assert await _released(store, f"o{i}")
            w = await store.writer(f"o{i}")
            await w.close()
            assert not store.is_locked(f"o{i}")

    asyncio.run(main())


def test_to_thread_uncancelled_finishes_the_work_before_the_cancellation() -> None:
    started, release, done = threading.Event(), threading.Event(), threading.Event()

    def work() -> None:  # stands for a mount: it runs until the test lets it finish
        started.set()
        release.wait(30)
        done.set()

    async def main() -> None:
        task = asyncio.ensure_future(to_thread_uncancelled(work))
        try:
            await wait_for_async(started.is_set, 10, "the work to start in its thread")
            task.cancel()
            for _ in range(20):  # the cancellation is delivered, and held: the work is not done
                await asyncio.sleep(0)
            assert not task.done()
        finally:
            release.set()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(task, 10)
        assert task.cancelled()
        assert done.is_set()  # the mount (here: work) happened before the caller went on

    asyncio.run(main())
