"""Daemon-wide memory hygiene: keep glibc from holding on to memory after big operations.

Why: a layer apply or a blob upload moves hundreds of MiB through ~1 MiB ``bytes`` objects
allocated in worker threads.  glibc gives each thread that allocates its own arena (up to
8 per core) and raises its mmap threshold dynamically once a big block is freed, so after a
pull those 1 MiB blocks live in arenas that glibc never returns to the kernel: the daemon
would stay 50-80 MiB above its idle size.  Two remedies, both cheap:

- ``configure_malloc()`` (once, at start-up, before worker threads exist): one arena
  (``M_ARENA_MAX``, as ``MALLOC_ARENA_MAX=1`` would, without leaking into the children's
  environment).  Threads then share the main heap, whose free pages ``malloc_trim`` hands
  back; most allocations happen under the GIL anyway, so the shared lock costs nothing.
  Measured on W6 (PSS after a 300 MiB pull): ~100 MiB unbounded, ~42 MiB with two arenas
  and trimming, ~35 MiB with one arena and trimming (idle start: ~30 MiB).
- ``Trimmer``: ``malloc_trim(0)`` (returns every free page of every arena to the kernel)
  shortly after a big operation (``request()``: the differ calls it after each apply) and
  whenever the resident size has grown noticeably since the last trim (a slow periodic
  check of ``/proc/self/statm``, so no code path has to remember to ask).

The daemon owns its ``Trimmer`` (no process global: two daemons in one test process each
have theirs) and hands ``request`` to the plugins that need it (the diff service).

Everything degrades to a no-op where glibc is not the allocator.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import time

log = logging.getLogger("pycontainerd.memory")

_M_TRIM_THRESHOLD = -1
_M_ARENA_MAX = -8

_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def _libc() -> ctypes.CDLL | None:
    try:
        # the process's own symbols, libc's among them (ctypes.util.find_library would run
        # ldconfig and import tempfile, shutil, random, bz2 and lzma for good: W6, idle PSS)
        lib = ctypes.CDLL(None, use_errno=True)
    except OSError:
        return None
    if not hasattr(lib, "malloc_trim") or not hasattr(lib, "mallopt"):
        return None  # not glibc (musl has neither)
    lib.malloc_trim.argtypes = [ctypes.c_size_t]
    lib.malloc_trim.restype = ctypes.c_int
    lib.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    lib.mallopt.restype = ctypes.c_int
    return lib


_LIBC = _libc()


def configure_malloc(arena_max: int = 1) -> bool:
    """Cap glibc's arenas (unless ``MALLOC_ARENA_MAX`` is set); True when applied."""
    if _LIBC is None or "MALLOC_ARENA_MAX" in os.environ:
        return False
    return bool(_LIBC.mallopt(_M_ARENA_MAX, arena_max))


def malloc_trim() -> bool:
    """Return free heap pages to the kernel (blocking, a few ms); True if memory was released."""
    if _LIBC is None:
        return False
    return bool(_LIBC.malloc_trim(0))


def rss_bytes() -> int:
    """Resident set size of this process (0 if unknown)."""
    try:
        with open("/proc/self/statm", "rb") as f:
            return int(f.read().split()[1]) * _PAGE
    except (OSError, ValueError, IndexError):
        return 0


class Trimmer:
    """Calls ``malloc_trim(0)`` in a worker thread when it is worth it.

    - ``request()``: after a big operation; the trim runs ``delay`` seconds later (requests
      in between coalesce, so a pull of five layers trims once or twice, not per chunk).
    - every ``interval`` seconds: if RSS grew more than ``growth`` bytes since the last
      trim, trim.
    """

    def __init__(self, *, delay: float = 0.5, interval: float = 5.0, growth: int = 4 << 20) -> None:
        self.delay = delay
        self.interval = interval
        self.growth = growth
        self.trims = 0
        self._baseline = 0
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self._requested = False
        self._users = 0

    @property
    def enabled(self) -> bool:
        return _LIBC is not None

    def start(self) -> None:
        """Start the background task (from the event loop); nested starts are counted."""
        self._users += 1
        if not self.enabled or self._task is not None:
            return
        self._wake = asyncio.Event()
        self._baseline = rss_bytes()
        self._task = asyncio.get_running_loop().create_task(self._run(), name="malloc-trim")

    async def close(self) -> None:
        """Undo one ``start()``; the task stops with the last user."""
        self._users = max(0, self._users - 1)
        if self._users:
            return
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def request(self) -> None:
        """Ask for a trim soon (cheap; safe to call from the event loop only)."""
        if self._wake is not None:
            self._requested = True
            self._wake.set()

    async def trim_now(self) -> None:
        start = time.perf_counter()
        before = rss_bytes()
        await asyncio.to_thread(malloc_trim)
        self.trims += 1
        self._baseline = rss_bytes()
        log.debug(
            "malloc_trim: rss %.1f -> %.1f MiB in %.1f ms",
            before / 2**20,
            self._baseline / 2**20,
            (time.perf_counter() - start) * 1000,
        )

    async def _run(self) -> None:
        assert self._wake is not None
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.interval)
            if self._requested:
                # let the burst finish (the next layer's apply requests again)
                while True:
                    self._wake.clear()
                    self._requested = False
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._wake.wait(), self.delay)
                    if not self._requested:
                        break
                await self._trim_logged()
                continue
            self._wake.clear()
            if rss_bytes() > self._baseline + self.growth:
                await self._trim_logged()
            else:
                # RSS may also have shrunk (freed mmaps): follow it down
                self._baseline = min(self._baseline, rss_bytes())

    async def _trim_logged(self) -> None:
        try:
            await self.trim_now()
        except Exception:  # never let hygiene take the daemon down
            log.exception("malloc_trim failed")
