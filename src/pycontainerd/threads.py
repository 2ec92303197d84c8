"""Worker-thread helpers: work that must not be abandoned half-way, and short commands.

``asyncio.to_thread`` ties the work to its caller: cancel the caller before the job starts and
the job never runs; cancel it while the job runs and the caller leaves at once while the thread
goes on.  Cleanup (closing an ingest, unmounting) and the mounts that cleanup undoes must
neither be skipped nor overtaken, so they go through ``to_thread_uncancelled``.

A command run to its end (``runc delete --force``, ``runc features``, a shim binary's
``start``/``delete``) goes through ``run_process``, not the event loop's subprocess support:
under uvloop that is libuv's ``uv_spawn``, a ``fork()`` of the whole daemon on the loop's
thread (the loop stalls for its page tables), and the child keeps every inheritable
descriptor of ours (uvloop's stdio copies, the daemon's log).  ``subprocess.run`` in a worker
thread uses ``vfork`` and closes all but the child's stdio (``close_fds``).
"""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import Callable, Mapping, Sequence
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


async def run_process(argv: Sequence[str], *, limit: float, input: bytes = b"", cwd: str | None = None,
                      env: Mapping[str, str] | None = None) -> subprocess.CompletedProcess[bytes]:
    """Run ``argv`` to its end in a worker thread (see the module docstring): ``input`` on its
    stdin, its stdout and stderr captured.  Raises ``subprocess.TimeoutExpired`` (the child
    killed and reaped) past ``limit`` seconds, ``OSError`` if it cannot be started."""
    def run() -> subprocess.CompletedProcess[bytes]:
        return subprocess.run(list(argv), input=input, capture_output=True, timeout=limit, cwd=cwd,
                              env=dict(env) if env is not None else None, close_fds=True, check=False)

    return await asyncio.to_thread(run)
