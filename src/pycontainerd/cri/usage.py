"""CPU and memory usage of a cgroup as the CRI reports them (containerd 1.6's numbers), pure.

``usage(data, mode)`` turns one cgroup's metrics dict (``pycontainerd.cgroups``, v1 or v2) into
the CRI's ``CpuUsage`` / ``MemoryUsage`` values: cumulative CPU time in nanoseconds; the memory
usage, the working set (usage minus the inactive file pages, never below 0), what is available
under the limit (limit minus working set; 0 without a limit), RSS (v1 ``total_rss``, v2 ``anon``
as cAdvisor) and the page faults (v1 ``total_pgfault`` / ``total_pgmajfault``, v2 ``pgfault`` /
``pgmajfault``).

``UsageRates`` is the per-container state containerd keeps for ``usage_nano_cores``: the previous
sample's cumulative CPU time and timestamp; the rate is the CPU time spent between two samples
divided by the time between them (0 for a first sample or a zero or negative interval).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

# a limit above this is "unlimited" (not MaxInt64: the kernel rounds it to its page size)
UNLIMITED_ABOVE = 1 << 62


@dataclass(frozen=True)
class Usage:
    cpu_ns: int
    memory_usage: int
    working_set: int
    available: int
    rss: int
    page_faults: int
    major_page_faults: int


def _int(m: Mapping[str, Any], key: str) -> int:
    return int(m.get(key) or 0)


def usage(data: Mapping[str, Any], mode: str) -> Usage:
    cpu = data.get("cpu") or {}
    mem = data.get("memory") or {}
    if mode == "v2":
        cpu_ns = _int(cpu, "usage_usec") * 1000
        used = _int(mem, "usage")
        inactive = _int(mem, "inactive_file")
        limit = _int(mem, "usage_limit")  # 0: memory.max says "max"
        rss, faults, major = _int(mem, "anon"), _int(mem, "pgfault"), _int(mem, "pgmajfault")
    else:
        cpu_ns = _int(cpu.get("usage") or {}, "total")
        counters = mem.get("usage") or {}
        used, limit = _int(counters, "usage"), _int(counters, "limit")
        inactive = int(mem.get("total_inactive_file", mem.get("inactive_file")) or 0)
        rss, faults, major = _int(mem, "total_rss"), _int(mem, "total_pg_fault"), _int(mem, "total_pg_maj_fault")
    working_set = used - inactive if inactive < used else 0
    limited = 0 < limit <= UNLIMITED_ABOVE
    available = max(limit - working_set, 0) if limited else 0
    return Usage(cpu_ns=cpu_ns, memory_usage=used, working_set=working_set, available=available,
                 rss=rss, page_faults=faults, major_page_faults=major)


class UsageRates:
    """The previous CPU sample of each container (or pod) and the rate since it."""

    def __init__(self) -> None:
        self._last: dict[str, tuple[int, int]] = {}  # key -> (cumulative cpu ns, timestamp ns)

    def nano_cores(self, key: str, cpu_ns: int, at_ns: int) -> int:
        """Core-nanoseconds a second since ``key``'s previous sample; this sample becomes the previous."""
        last = self._last.get(key)
        if last is not None and at_ns - last[1] <= 0:
            return 0  # containerd keeps the older sample then
        self._last[key] = (cpu_ns, at_ns)
        if last is None:
            return 0
        spent = cpu_ns - last[0]
        if spent <= 0:  # a restarted cgroup's counter starts again
            return 0
        return int(spent / (at_ns - last[1]) * 1_000_000_000)

    def forget(self, key: str) -> None:
        self._last.pop(key, None)

    def retain(self, keys: Iterable[str]) -> None:
        """Drop the samples of everything not in ``keys`` (removed containers)."""
        keep = set(keys)
        for key in [k for k in self._last if k not in keep]:
            del self._last[key]

    def __len__(self) -> int:
        return len(self._last)
