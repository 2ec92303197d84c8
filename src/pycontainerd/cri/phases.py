"""Per-phase timing of a CRI call, logged at debug level (``--log-level debug``)::

    phases = Phases("StartContainer", cid)
    ...; phases.mark("record")
    ...; phases.mark("runc create")
    phases.done()   # "StartContainer 1a2b3c4d5e6f: record 0.8ms, runc create 41.0ms (total 47.3ms)"

A mark is the time since the previous mark (or the start).  Nothing is measured or formatted
when debug logging is off, so the calls can stay on the hot paths.
"""

from __future__ import annotations

import logging
import time

log = logging.getLogger("pycontainerd.cri.phases")


class Phases:
    __slots__ = ("call", "ident", "last", "marks", "t0")

    def __init__(self, call: str, ident: str = "") -> None:
        self.call = call
        self.ident = ident
        self.marks: list[tuple[str, float]] | None = [] if log.isEnabledFor(logging.DEBUG) else None
        self.t0 = self.last = time.perf_counter() if self.marks is not None else 0.0

    def mark(self, name: str) -> None:
        if self.marks is None:
            return
        now = time.perf_counter()
        self.marks.append((name, now - self.last))
        self.last = now

    def done(self, ident: str = "") -> None:
        if self.marks is None:
            return
        total = time.perf_counter() - self.t0
        parts = ", ".join(f"{name} {dt * 1000:.1f}ms" for name, dt in self.marks)
        log.debug("%s %s: %s (total %.1fms)", self.call, (ident or self.ident)[:12], parts, total * 1000)
