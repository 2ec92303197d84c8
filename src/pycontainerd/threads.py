"""Worker-thread helpers for work that must not be abandoned half-way.

``asyncio.to_thread`` ties the work to its caller: cancel the caller before the job starts and
the job never runs; cancel it while the job runs and the caller leaves at once while the thread
goes on.  Cleanup (closing an ingest, unmounting) and the mounts that cleanup undoes must
neither be skipped nor overtaken, so they go through ``to_thread_uncancelled``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")


async def to_thread_uncancelled(fn: Callable[..., T], *args: Any) -> T:
    """Run ``fn`` in a worker thread and see it finish even if the caller is cancelled.

    The cancellation is re-raised once the work is done, so code after it (an unmount after
    a mount) never runs before the work it undoes."""
    job = asyncio.ensure_future(asyncio.to_thread(fn, *args))
    try:
        return await asyncio.shield(job)
    except asyncio.CancelledError:
        await asyncio.wait([job])
        raise
