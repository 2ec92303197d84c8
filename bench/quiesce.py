"""When is a daemon done?  Quiescence, so that one sample's deferred work never lands in the next.

A reply is not the end of the work: our Delete answers before ``runc delete`` and the bundle
removal finish, and containerd, too, reaps its shim after ``ctr`` returns.  Before each sample
the bench waits until both daemons are *quiescent*, and after each sample it measures how long
the sampled daemon took to get there: its *deferred* time.

A daemon is quiescent when, polled every ``POLL`` seconds, its fingerprint has not changed for
``WINDOW`` seconds.  The fingerprint of a daemon (``Fingerprint.of``):

- its processes: the daemon, its shims and helpers (``Target.shim_pids``: processes tied to its
  temp dir) and every descendant of those (runc, container processes), as ``(pid, comm)``;
  a live ``runc`` among them is busy by definition (never quiescent);
- its task bundle dirs: the entries of ``<state>/io.containerd.runtime.v2.task/<ns>/``;
- its metadata database files (``<root>/io.containerd.metadata.v1.*/*``: bolt, or SQLite + WAL):
  size and mtime;
- CPU: the daemon's and its shims' utime + stime, which may grow by at most ``IDLE_TICKS`` clock
  ticks per poll (an idle Go or Python runtime wakes up now and then).

The deferred time is from the end of the sample to the poll at which the fingerprint was first
seen in its final, stable form (so it does not include the ``WINDOW`` of confirming it).  It is
bounded by ``DEADLINE``: a daemon that never settles gets ``DEADLINE`` and a note.
"""

from __future__ import annotations

import dataclasses
import glob
import os
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .targets import Target

POLL = 0.02
WINDOW = 0.15
DEADLINE = 20.0
IDLE_TICKS = 1
BUSY_COMMS = ("runc", "runc:[0:PARENT]", "runc:[1:CHILD]", "runc:[2:INIT]")


def proc_table() -> dict[int, tuple[int, str, int]]:
    """pid → (ppid, comm, utime + stime in clock ticks), from /proc/*/stat."""
    out: dict[int, tuple[int, str, int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                stat = fh.read()
        except OSError:
            continue
        comm = stat[stat.index("(") + 1:stat.rindex(")")]
        rest = stat.rsplit(")", 1)[1].split()
        out[int(entry)] = (int(rest[1]), comm, int(rest[11]) + int(rest[12]))
    return out


@dataclasses.dataclass(frozen=True)
class Fingerprint:
    procs: frozenset[tuple[int, str]]
    bundles: tuple[str, ...]
    db: tuple[tuple[str, int, int], ...]
    ticks: int
    busy: bool

    @classmethod
    def of(cls, t: Target) -> Fingerprint:
        table = proc_table()
        roots = ([t.daemon_pid] if t.daemon_pid else []) + t.shim_pids()
        own = set(roots)
        frontier = list(roots)
        children: dict[int, list[int]] = {}
        for pid, (ppid, _, _) in table.items():
            children.setdefault(ppid, []).append(pid)
        while frontier:
            for c in children.get(frontier.pop(), []):
                if c not in own:
                    own.add(c)
                    frontier.append(c)
        procs = frozenset((p, table[p][1]) for p in own if p in table)
        bundles: tuple[str, ...] = ()
        db: tuple[tuple[str, int, int], ...] = ()
        if t.base is not None:
            bundles = tuple(sorted(glob.glob(str(t.base / "state" / "io.containerd.runtime.v2.task" / "*" / "*"))))
            stats = []
            for f in sorted(glob.glob(str(t.base / "root" / "io.containerd.metadata.v1.*" / "*"))):
                try:
                    st = os.stat(f)
                except OSError:
                    continue
                stats.append((f, st.st_size, st.st_mtime_ns))
            db = tuple(stats)
        ticks = sum(table[p][2] for p in roots if p in table)
        return cls(procs, bundles, db, ticks, any(c in BUSY_COMMS for _, c in procs))

    def same_as(self, other: Fingerprint) -> bool:
        return (not self.busy and self.procs == other.procs and self.bundles == other.bundles
                and self.db == other.db and 0 <= self.ticks - other.ticks <= IDLE_TICKS)


@dataclasses.dataclass
class Settled:
    deferred_s: float
    quiescent: bool  # False: the deadline passed first
    first_look_s: float = 0.0  # from `since` to the end of the first fingerprint: deferred 0 means "by then"


def settle(targets: Sequence[Target], since: float | None = None, *, deadline: float = DEADLINE) -> dict[str, Settled]:
    """Wait until every target is quiescent; per target label, the time from `since` (default: now)
    to the start of the poll that first saw its final fingerprint (0: final at the first look)."""
    t0 = time.perf_counter() if since is None else since
    last: dict[str, Fingerprint] = {}
    looked: dict[str, float] = {}
    for t in targets:
        last[t.label] = Fingerprint.of(t)
        looked[t.label] = time.perf_counter() - t0
    stable_since = {t.label: t0 for t in targets}
    done: dict[str, Settled] = {}
    end = time.perf_counter() + deadline
    while len(done) < len(targets):
        time.sleep(POLL)
        for t in targets:
            if t.label in done:
                continue
            now = time.perf_counter()
            fp = Fingerprint.of(t)
            if not fp.same_as(last[t.label]):
                stable_since[t.label] = now
                last[t.label] = fp
            elif now - stable_since[t.label] >= WINDOW:
                done[t.label] = Settled(max(0.0, stable_since[t.label] - t0), True, looked[t.label])
            if now > end and t.label not in done:
                done[t.label] = Settled(now - t0, False, looked[t.label])
    return done
