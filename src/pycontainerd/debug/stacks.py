"""What the daemon is doing: every thread's stack and every asyncio task's stack, named.

Go's goroutine dump has one entry per goroutine; ours has one per OS thread Python knows
(``sys._current_frames``, named from ``threading.enumerate``) and one per asyncio task of
the daemon's loop (``asyncio.all_tasks``, its coroutine chain followed through ``await``s
and the task's name).  Threads gRPC core runs in C have no Python frames and are not
listed.  ``text()`` is the person-readable form (``debug=2``: one block per entry;
``debug=1``: identical stacks counted together); ``profile()`` the pprof form, one sample
per distinct stack with a count, labelled ``thread``/``task``.
"""

from __future__ import annotations

import asyncio
import os
import sys
import threading
import types
from collections import Counter
from dataclasses import dataclass

from .profile import Frame, ProfileBuilder

MAX_DEPTH = 128


@dataclass(frozen=True)
class Entry:
    kind: str  # "thread" or "task"
    name: str
    state: str
    stack: tuple[Frame, ...]  # leaf first


def _frame(f: types.FrameType, lineno: int | None = None) -> Frame:
    code = f.f_code
    qual = getattr(code, "co_qualname", code.co_name)
    module = f.f_globals.get("__name__", "")
    name = f"{module}.{qual}" if module else qual
    return Frame(name, code.co_filename, (lineno if lineno is not None else f.f_lineno) or 0, code.co_firstlineno or 0)


def frames_of(top: types.FrameType | None) -> tuple[Frame, ...]:
    out: list[Frame] = []
    f = top
    while f is not None and len(out) < MAX_DEPTH:
        out.append(_frame(f))
        f = f.f_back
    return tuple(out)


def _coro_stack(coro: object) -> tuple[Frame, ...]:
    """A coroutine's chain (outermost first as we walk ``cr_await``), returned leaf first."""
    chain: list[Frame] = []
    obj: object = coro
    while obj is not None and len(chain) < MAX_DEPTH:
        frame = getattr(obj, "cr_frame", None) or getattr(obj, "gi_frame", None) or getattr(obj, "ag_frame", None)
        if frame is None:
            code = getattr(obj, "cr_code", None) or getattr(obj, "gi_code", None)
            if code is not None:
                chain.append(Frame(getattr(code, "co_qualname", code.co_name), code.co_filename,
                                   code.co_firstlineno, code.co_firstlineno))
            break
        chain.append(_frame(frame))
        obj = getattr(obj, "cr_await", None) or getattr(obj, "gi_yieldfrom", None) or getattr(obj, "ag_await", None)
    chain.reverse()
    return tuple(chain)


def thread_entries() -> list[Entry]:
    names = {t.ident: t for t in threading.enumerate()}
    out = []
    for ident, frame in sys._current_frames().items():
        t = names.get(ident)
        name = t.name if t is not None else f"thread-{ident}"
        native = getattr(t, "native_id", None) if t is not None else None
        label = f"{name} (tid {native})" if native else name
        state = "main" if t is threading.main_thread() else "daemon" if t is not None and t.daemon else "thread"
        out.append(Entry("thread", label, state, frames_of(frame)))
    return out


def task_entries(loop: asyncio.AbstractEventLoop | None = None) -> list[Entry]:
    """The tasks of ``loop`` (the running loop by default); must run on that loop's thread."""
    try:
        tasks = asyncio.all_tasks(loop)
    except RuntimeError:
        return []
    out = []
    for task in tasks:
        coro = task.get_coro()
        state = "done" if task.done() else "pending"
        out.append(Entry("task", task.get_name(), state, _coro_stack(coro)))
    out.sort(key=lambda e: e.name)
    return out


def all_entries(loop: asyncio.AbstractEventLoop | None = None) -> list[Entry]:
    return thread_entries() + task_entries(loop)


def text(entries: list[Entry], debug: int = 2) -> str:
    header = f"pycontainerd pid {os.getpid()}: {sum(e.kind == 'thread' for e in entries)} threads, " \
             f"{sum(e.kind == 'task' for e in entries)} asyncio tasks\n\n"
    if debug >= 2:
        blocks = []
        for e in entries:
            lines = [f"{e.kind} {e.name!r} [{e.state}]:"]
            for f in e.stack:
                lines.append(f"{f.function}(...)")
                lines.append(f"\t{f.filename}:{f.line}")
            blocks.append("\n".join(lines))
        return header + "\n\n".join(blocks) + "\n"
    counts = Counter((e.kind, e.stack) for e in entries)
    names: dict[tuple[str, tuple[Frame, ...]], list[str]] = {}
    for e in entries:
        names.setdefault((e.kind, e.stack), []).append(e.name)
    blocks = []
    for (kind, stack), n in counts.most_common():
        lines = [f"{n} @ {kind}s: {', '.join(names[(kind, stack)][:8])}"]
        for f in stack:
            lines.append(f"#\t{f.function}\t{f.filename}:{f.line}")
        blocks.append("\n".join(lines))
    return header + "\n\n".join(blocks) + "\n"


def profile(entries: list[Entry]) -> bytes:
    b = ProfileBuilder([("goroutine", "count")], period_type=("goroutine", "count"), period=1,
                       comments=["pycontainerd: one sample per OS thread and per asyncio task"])
    for e in entries:
        b.add(e.stack or (Frame(f"<{e.kind} without Python frames>", "", 0),), [1], {e.kind: e.name})
    return b.encode()
