"""The profiles behind ``/debug/pprof/*``: CPU (sampled per thread), heap (tracemalloc), goroutines.

CPU: a sampler thread wakes every ``interval`` seconds, reads each Python thread's own CPU
clock (``pthread_getcpuclockid``) and charges the CPU time the thread used since the last
tick to the stack it is in now.  Idle threads (blocked in a poll, a lock, a queue) use no
CPU and so weigh nothing, which is what Go's SIGPROF-driven profile shows too.  The
sampler itself is left out.  Everything here blocks: call it from a worker thread.

Heap: ``tracemalloc`` records the Python allocations still alive, with their tracebacks
(``HEAP_FRAMES`` deep).  It is off by default (it costs memory and time on every
allocation): the first heap request starts it (the answer says so and holds what was
allocated since), ``PYTHONTRACEMALLOC=N`` in the daemon's environment starts it at
start-up.  tracemalloc knows files and lines, not functions: the function around each
line is found by scanning the source backwards by indentation (cached).
"""

from __future__ import annotations

import contextlib
import functools
import linecache
import os
import re
import sys
import threading
import time
import tracemalloc
from collections.abc import Callable

from .profile import Frame, ProfileBuilder
from .stacks import frames_of

HEAP_FRAMES = 32
MAX_PROFILE_SECONDS = 300.0


def _thread_clock(ident: int) -> int | None:
    try:
        return time.clock_gettime_ns(time.pthread_getcpuclockid(ident))
    except (OSError, OverflowError, ValueError):
        return None


def cpu_profile(seconds: float, interval: float = 0.01,
                stop: Callable[[], bool] | None = None) -> tuple[ProfileBuilder, dict[str, int]]:
    """Sample every Python thread for ``seconds``; (profile, per-thread CPU ns)."""
    seconds = max(0.0, min(seconds, MAX_PROFILE_SECONDS))
    me = threading.get_ident()
    b = ProfileBuilder([("samples", "count"), ("cpu", "nanoseconds")], period_type=("cpu", "nanoseconds"),
                       period=int(interval * 1e9), duration_ns=int(seconds * 1e9),
                       comments=["pycontainerd: CPU time of each Python thread charged to its stack at each tick"])
    last: dict[int, int] = {}
    per_thread: dict[str, int] = {}
    names: dict[int, str] = {}
    deadline = time.monotonic() + seconds
    while True:
        frames = sys._current_frames()
        if len(names) != len(frames):
            names = {t.ident: t.name for t in threading.enumerate() if t.ident is not None}
        for ident, frame in frames.items():
            if ident == me:
                continue
            now = _thread_clock(ident)
            if now is None:
                continue
            before = last.get(ident)
            last[ident] = now
            if before is None or now <= before:
                continue
            used = now - before
            name = names.get(ident, str(ident))
            per_thread[name] = per_thread.get(name, 0) + used
            b.add(frames_of(frame), [1, used], {"thread": name})
        del frames
        if time.monotonic() >= deadline or (stop is not None and stop()):
            break
        time.sleep(interval)
    return b, per_thread


def cpu_text(b: ProfileBuilder, per_thread: dict[str, int], seconds: float) -> str:
    lines = [f"CPU profile of pycontainerd pid {os.getpid()} over {seconds:g} s (per Python thread):"]
    for name, ns in sorted(per_thread.items(), key=lambda kv: -kv[1]):
        lines.append(f"  {ns / 1e6:10.1f} ms  {name}")
    lines.append("")
    lines.append("top stacks (leaf function, CPU ms):")
    totals: dict[str, int] = {}
    for key, sample in b._by_stack.items():
        stack = key[0]
        leaf = stack[0].function if stack else "?"
        totals[leaf] = totals.get(leaf, 0) + sample.values[1]
    for fn, ns in sorted(totals.items(), key=lambda kv: -kv[1])[:40]:
        lines.append(f"  {ns / 1e6:10.1f} ms  {fn}")
    return "\n".join(lines) + "\n"


# -- heap ---------------------------------------------------------------------------------------
def heap_start() -> bool:
    """Start tracemalloc if it is off; True when this call started it."""
    if tracemalloc.is_tracing():
        return False
    tracemalloc.start(HEAP_FRAMES)
    return True


_DEF = re.compile(r"(\s*)(?:async\s+def|def|class)\s+([A-Za-z_][A-Za-z0-9_]*)")


@functools.lru_cache(maxsize=65536)
def _enclosing(filename: str, line: int) -> tuple[str, int]:
    """(qualified name, first line) of the function around ``line``, from the source text.

    A backwards scan by indentation (the nearest ``def`` less indented than the line, then
    the ``def``/``class`` lines around that): cheap, unlike parsing every file, and right
    for ordinary code.  ("<module>", 0) at top level or when the source is unavailable.
    """
    lines = linecache.getlines(filename)
    if not lines or not 0 < line <= len(lines):
        return "<module>", 0
    target = lines[line - 1]
    indent = len(target) - len(target.lstrip()) if target.strip() else 1 << 30
    names: list[str] = []
    first = 0
    for i in range(line - 1, -1, -1):
        text = lines[i]
        if not text.strip() or text.lstrip().startswith(("#", "@")):
            continue
        ind = len(text) - len(text.lstrip())
        m = _DEF.match(text)
        if m is not None and (ind < indent or (i == line - 1 and not names)):
            is_class = text.lstrip().startswith("class")
            if not names and is_class:
                return "<module>", 0  # a class body, not a function
            names.append(m.group(2) if is_class or not names else m.group(2) + ".<locals>")
            if len(names) == 1:
                first = i + 1
            indent = ind
            if ind == 0:
                break
        elif ind < indent and m is None:
            if not names:
                indent = ind  # a statement block (if/for/with) the line sits in
            if ind == 0 and names:
                break
            if ind == 0:
                return "<module>", 0
    if not names:
        return "<module>", 0
    return ".".join(reversed(names)), first


def _module_names() -> dict[str, str]:
    out = {}
    for name, mod in list(sys.modules.items()):
        f = getattr(mod, "__file__", None)
        if f:
            out[f] = name
    return out


def _function_at(filename: str, line: int, modules: dict[str, str]) -> tuple[str, int]:
    module = modules.get(filename) or os.path.splitext(os.path.basename(filename))[0]
    name, first = _enclosing(filename, line)
    return f"{module}.{name}", first


def heap_profile() -> tuple[ProfileBuilder, list[tuple[int, int, tuple[Frame, ...]]]]:
    """The live allocations tracemalloc knows, by stack: (profile, [(bytes, count, stack)])."""
    snap = tracemalloc.take_snapshot()
    # what the profiler itself allocates (its syntax-tree cache) is not the daemon's
    own = os.path.join(os.path.dirname(os.path.abspath(__file__)), "*")
    snap = snap.filter_traces([tracemalloc.Filter(False, tracemalloc.__file__),
                               tracemalloc.Filter(False, own, all_frames=True)])
    modules = _module_names()
    b = ProfileBuilder([("inuse_objects", "count"), ("inuse_space", "bytes")], period_type=("space", "bytes"),
                       period=1, comments=["pycontainerd: live Python allocations (tracemalloc)"])
    rows = []
    for stat in snap.statistics("traceback"):
        stack = []
        for fr in reversed(stat.traceback):  # tracemalloc lists oldest first; pprof wants the leaf first
            name, first = _function_at(fr.filename, fr.lineno, modules)
            stack.append(Frame(name, fr.filename, fr.lineno, first))
        frames = tuple(stack)
        b.add(frames, [stat.count, stat.size])
        rows.append((stat.size, stat.count, frames))
    return b, rows


def heap_text(rows: list[tuple[int, int, tuple[Frame, ...]]], started_now: bool) -> str:
    traced, peak = tracemalloc.get_traced_memory() if tracemalloc.is_tracing() else (0, 0)
    lines = [f"heap profile of pycontainerd pid {os.getpid()}: {traced} bytes traced (peak {peak})"]
    if started_now:
        lines.append("tracemalloc was off and has just been started: ask again to see allocations made since")
    total = sum(r[0] for r in rows)
    lines.append(f"{len(rows)} allocation sites, {total} bytes live")
    lines.append("")
    for size, count, frames in rows[:60]:
        lines.append(f"{size} bytes in {count} blocks")
        for f in frames[:8]:
            lines.append(f"#\t{f.function}\t{f.filename}:{f.line}")
        lines.append("")
    return "\n".join(lines)


def heap_stop() -> None:
    with contextlib.suppress(RuntimeError):
        tracemalloc.stop()
