"""cri/usage.py: the CRI's CPU and memory figures from cgroup v1 and v2 metrics, containerd 1.6's way."""

from __future__ import annotations

from pycontainerd.cri.usage import UsageRates, usage

V1_UNLIMITED = 9223372036854771712  # what memory.limit_in_bytes says without a limit (page-rounded MaxInt64)


def _v1(usage_: int, limit: int, inactive: int) -> dict[str, object]:
    return {"cpu": {"usage": {"total": 5_000}},
            "memory": {"usage": {"usage": usage_, "limit": limit}, "total_inactive_file": inactive,
                       "inactive_file": 1, "total_rss": 300, "rss": 1, "total_pg_fault": 40, "pg_fault": 1,
                       "total_pg_maj_fault": 2}}


def test_v1_fields() -> None:
    u = usage(_v1(10_000, 64 << 20, 4_000), "v1")
    assert (u.cpu_ns, u.memory_usage, u.working_set) == (5_000, 10_000, 6_000)
    assert u.available == (64 << 20) - 6_000
    assert (u.rss, u.page_faults, u.major_page_faults) == (300, 40, 2)  # the hierarchy's totals


def test_v1_unlimited_and_inactive_above_usage() -> None:
    u = usage(_v1(10_000, V1_UNLIMITED, 20_000), "v1")
    assert u.working_set == 0 and u.available == 0


def test_v2_fields() -> None:
    data = {"cpu": {"usage_usec": 7}, "memory": {"usage": 10_000, "usage_limit": 1 << 20, "inactive_file": 3_000,
                                                 "anon": 500, "pgfault": 9, "pgmajfault": 1}}
    u = usage(data, "v2")
    assert (u.cpu_ns, u.memory_usage, u.working_set, u.available) == (7_000, 10_000, 7_000, (1 << 20) - 7_000)
    assert (u.rss, u.page_faults, u.major_page_faults) == (500, 9, 1)
    data["memory"]["usage_limit"] = 0  # memory.max "max"
    assert usage(data, "v2").available == 0


def test_empty_metrics() -> None:
    u = usage({}, "v2")
    assert (u.cpu_ns, u.memory_usage, u.working_set, u.available, u.rss) == (0, 0, 0, 0, 0)


def test_nano_cores_from_the_previous_sample() -> None:
    r = UsageRates()
    assert r.nano_cores("a", 1_000_000, 10_000_000_000) == 0  # first sample
    # 1 s of CPU in 2 s: half a core
    assert r.nano_cores("a", 1_001_000_000, 12_000_000_000) == 500_000_000
    assert r.nano_cores("b", 10, 12_000_000_000) == 0  # each key its own
    # a zero or negative interval answers 0 and keeps the older sample
    assert r.nano_cores("a", 900_000_000, 12_000_000_000) == 0
    assert r.nano_cores("a", 2_501_000_000, 13_000_000_000) == 1_500_000_000
    # a counter that went back (a new cgroup): 0, and the new sample is the base
    assert r.nano_cores("a", 100, 14_000_000_000) == 0
    assert r.nano_cores("a", 1_000_000_100, 15_000_000_000) == 1_000_000_000
    r.retain(["a"])
    assert len(r) == 1
    r.forget("a")
    assert len(r) == 0
    assert r.nano_cores("a", 5, 16_000_000_000) == 0
