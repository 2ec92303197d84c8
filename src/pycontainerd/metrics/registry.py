"""One Prometheus registry per daemon, and the collectors that read tasks and the engine.

Task metrics follow containerd's cgroups collector: namespace ``container``, labels
``container_id`` and ``namespace``, names like ``container_memory_usage_bytes``,
``container_pids_current`` (cgroup v2; a v1 host gets the v1 names:
``container_memory_usage_usage_bytes``...).  Two deliberate differences, both so that
``promtool check metrics`` accepts the output: values that only grow and that containerd
names ``..._total`` are counters (a ``_total`` name is a counter), and CPU times are in
the base unit, seconds (``container_cpu_usage_seconds`` where containerd has
``container_cpu_usage_microseconds``, ``container_cpu_total_seconds`` for its v1
``container_cpu_total_nanoseconds``): promtool rejects micro- and nanoseconds.

Engine metrics containerd lacks are prefixed ``pycontainerd_``: shims and their memory,
event-loop lag, garbage collections (runs, pauses, what they removed), content ingested
(pulls write through it), layers applied (unpack bytes and seconds), plus the Python
process' own (``process_*``, ``python_gc_*``).

Scraping must not block the loop: the HTTP handler takes a snapshot of the running tasks
on the loop (a list copy) and renders in a worker thread, where the collectors read
``/proc`` and the cgroup files.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
import time
from collections.abc import Iterator, Sequence
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector

from .. import cgroups
from . import cgroupstats

log = logging.getLogger("pycontainerd.metrics")

TASK_LABELS = ("container_id", "namespace")
# a limit this high is "none": cgroup v2 says "max", v1 a page-rounded 2^63 (reported as 0)
UNLIMITED = 1 << 62
# (cgroup v2 stats key, metric name, help, unit, counter?)
# (cgroup v2 stats key, metric name, help, unit, counter?, scale)
_V2_CPU = (
    ("usage_usec", "cpu_usage", "Total cpu usage (cgroup v2)", "seconds", False, 1e-6),
    ("user_usec", "cpu_user_usage", "Current cpu usage in user space (cgroup v2)", "seconds", False, 1e-6),
    ("system_usec", "cpu_kernel_usage", "Current cpu usage in kernel space (cgroup v2)", "seconds", False, 1e-6),
    ("nr_periods", "cpu_nr_periods", "Current cpu number of periods (only if controller is enabled)", "", True, 1),
    ("nr_throttled", "cpu_nr_throttled", "Total number of times tasks have been throttled", "", True, 1),
    ("throttled_usec", "cpu_throttled", "Total time duration for which tasks have been throttled",
     "seconds", False, 1e-6),
)
_V2_MEMORY_MAIN = (
    ("usage", "memory_usage", "Current memory usage (cgroup v2)"),
    ("usage_limit", "memory_usage_limit", "Current memory usage limit (cgroup v2)"),
    ("swap_usage", "memory_swap_usage", "Current swap usage (cgroup v2)"),
    ("swap_limit", "memory_swap_limit", "Current swap usage limit (cgroup v2)"),
)
_V2_MEMORY_STAT = ("file_mapped", "file_dirty", "file_writeback", "inactive_anon", "active_anon", "inactive_file",
                   "active_file", "unevictable", "anon", "file", "kernel_stack", "slab", "sock", "shmem",
                   "anon_thp", "slab_reclaimable", "slab_unreclaimable")
_V2_MEMORY_EVENTS = ("oom", "oom_kill")


class TaskCgroupCollector(Collector):
    """containerd's cgroups collector over a snapshot of the running tasks (set before each scrape)."""

    def __init__(self) -> None:
        self.tasks: Sequence[Any] = ()
        self._reader: cgroupstats.Reader | None = None

    def collect(self) -> Iterator[Metric]:
        if self._reader is None:
            self._reader = cgroupstats.Reader()
        reader = self._reader
        families: dict[str, Metric] = {}

        def fam(name: str, doc: str, unit: str = "", counter: bool = False, extra: tuple[str, ...] = ()) -> Metric:
            full = f"container_{name}" + (f"_{unit}" if unit else "")
            m = families.get(full)
            if m is None:
                labels = [*TASK_LABELS, *extra]
                m = CounterMetricFamily(full, doc, labels=labels) if counter else GaugeMetricFamily(full, doc,
                                                                                                   labels=labels)
                families[full] = m
            return m

        v2 = reader.mode == cgroups.V2
        for t in self.tasks:
            try:
                st = reader.stats(t.pid, t.cgroups_path, t.systemd_cgroup)
            except OSError:
                st = None
            if st is None:  # the task ended between the snapshot and now
                continue
            lv = [t.id, t.namespace]
            if v2:
                self._v2(fam, lv, st)
            else:
                self._v1(fam, lv, st)
        reader.forget_except({t.pid for t in self.tasks})
        yield from families.values()

    @staticmethod
    def _pids(fam: Any, lv: list[str], st: cgroupstats.Stats) -> None:
        if st.pids_current is not None:
            limit = st.pids_limit or 0
            fam("pids_limit", "The limit to the number of pids allowed").add_metric(
                lv, 0 if limit >= UNLIMITED else limit)
            fam("pids_current", "The current number of pids").add_metric(lv, st.pids_current)

    @classmethod
    def _v2(cls, fam: Any, lv: list[str], st: cgroupstats.Stats) -> None:
        cls._pids(fam, lv, st)
        if st.cpu:
            for key, name, doc, unit, counter, scale in _V2_CPU:
                fam(name, doc, unit, counter).add_metric(lv, st.cpu.get(key.encode(), 0) * scale)
        if st.memory_usage is not None:
            fam("memory_usage", "Current memory usage (cgroup v2)", "bytes").add_metric(lv, st.memory_usage)
            limit = st.memory_limit or 0
            fam("memory_usage_limit", "Current memory usage limit (cgroup v2)", "bytes").add_metric(
                lv, 0 if limit >= UNLIMITED else limit)
            for key in _V2_MEMORY_STAT:
                value = st.memory_stat.get(key.encode())
                if value is not None:
                    fam(f"memory_{key}", f"The {key} amount", "bytes").add_metric(lv, value)
        for key in _V2_MEMORY_EVENTS:
            if key.encode() in st.memory_events:
                fam(f"memory_{key}", f"The number of {key} events", "", True).add_metric(
                    lv, st.memory_events[key.encode()])
        for e in st.io:
            dev = [*lv, str(e.get("major", 0)), str(e.get("minor", 0))]
            mm = ("major", "minor")
            fam("io_rbytes", "IO bytes read", "bytes", extra=mm).add_metric(dev, e.get("rbytes", 0))
            fam("io_wbytes", "IO bytes written", "bytes", extra=mm).add_metric(dev, e.get("wbytes", 0))
            fam("io_rios", "Number of read IOs", "", True, mm).add_metric(dev, e.get("rios", 0))
            fam("io_wios", "Number of write IOs", "", True, mm).add_metric(dev, e.get("wios", 0))

    @classmethod
    def _v1(cls, fam: Any, lv: list[str], st: cgroupstats.Stats) -> None:
        cls._pids(fam, lv, st)
        if b"usage_ns" in st.cpu:
            fam("cpu_total", "The total cpu time", "seconds").add_metric(lv, st.cpu[b"usage_ns"] / 1e9)
            fam("cpu_kernel", "The total kernel cpu time", "seconds").add_metric(lv, st.cpu[b"system_ns"] / 1e9)
            fam("cpu_user", "The total user cpu time", "seconds").add_metric(lv, st.cpu[b"user_ns"] / 1e9)
        if st.memory_usage is not None:
            fam("memory_usage_usage", "The memory usage", "bytes").add_metric(lv, st.memory_usage)
            fam("memory_usage_max", "The memory maximum usage", "bytes").add_metric(lv, st.memory_max_usage or 0)
            limit = st.memory_limit or 0
            fam("memory_usage_limit", "The memory limit", "bytes").add_metric(
                lv, 0 if limit >= UNLIMITED else limit)
        for device, op, value in st.blkio:
            major, _, minor = device.partition(":")
            fam("blkio_io_service_bytes_recursive", "The blkio io service bytes recursive", "bytes",
                extra=("op", "major", "minor")).add_metric([*lv, op, major, minor], value)


def _rss_of(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/statm", "rb") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


class ShimCollector(Collector):
    """Shims running and each one's resident memory (from /proc)."""

    def __init__(self) -> None:
        self.tasks: Sequence[Any] = ()

    def collect(self) -> Iterator[Metric]:
        count = GaugeMetricFamily("pycontainerd_shims", "Shim processes running for this daemon.")
        rss = GaugeMetricFamily("pycontainerd_shim_memory_rss_bytes", "Resident memory of each task's shim.",
                                labels=list(TASK_LABELS))
        seen: set[int] = set()
        for t in self.tasks:
            if t.shim_pid and t.shim_pid not in seen:
                seen.add(t.shim_pid)
                rss.add_metric([t.id, t.namespace], _rss_of(t.shim_pid))
        count.add_metric([], len(seen))
        yield count
        yield rss


class DaemonMetrics:
    """The registry and the instruments the daemon's code updates."""

    def __init__(self, *, task_cgroups: bool = True) -> None:
        """``task_cgroups`` False (``[plugins."io.containerd.monitor.v1.cgroups"] no_prometheus``):
        no per-task ``container_*`` cgroup metrics, as containerd's cgroups monitor then registers none."""
        # no ``*_created`` series: containerd (client_golang) has none, and they double the output
        disable_created_metrics()  # type: ignore[no-untyped-call]
        r = self.registry = CollectorRegistry(auto_describe=False)
        ProcessCollector(registry=r)
        GCCollector(registry=r)
        PlatformCollector(registry=r)
        self.tasks = TaskCgroupCollector()
        self.shims = ShimCollector()
        if task_cgroups:
            r.register(self.tasks)
        r.register(self.shims)
        self.loop_lag = Gauge("pycontainerd_event_loop_lag_seconds",
                              "How late the event loop woke a due timer (last probe).", registry=r)
        self.loop_lag_hist = Histogram("pycontainerd_event_loop_lag_probe_seconds",
                                       "Event-loop lag at each probe (every 0.5 s).",
                                       buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
                                       registry=r)
        self.gc_runs = Counter("pycontainerd_gc_runs", "Garbage collections of the metadata store.", registry=r)
        self.gc_seconds = Histogram("pycontainerd_gc_pause_seconds",
                                    "Duration of each metadata garbage collection.",
                                    buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0), registry=r)
        self.gc_removed = Counter("pycontainerd_gc_removed", "What garbage collection removed, by kind.",
                                  ["kind"], registry=r)
        self.gc_freed = Counter("pycontainerd_gc_freed_bytes", "Disk space of the content blobs garbage "
                                "collection removed.", registry=r)
        self.ingest_bytes = Counter("pycontainerd_content_ingested_bytes",
                                    "Bytes committed to the content store (pulls, imports, pushes in).", registry=r)
        self.ingest_seconds = Histogram("pycontainerd_content_ingest_seconds",
                                        "Duration of each content ingest, open to commit.",
                                        buckets=(0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0),
                                        registry=r)
        self.apply_bytes = Counter("pycontainerd_diff_applied_bytes",
                                   "Compressed layer bytes applied to snapshots (unpack).", registry=r)
        self.apply_seconds = Histogram("pycontainerd_diff_apply_seconds", "Duration of each layer apply (unpack).",
                                       buckets=(0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0),
                                       registry=r)
        self._render = threading.Lock()
        self._lag_task: asyncio.Task[None] | None = None

    def set_tasks(self, tasks: Sequence[Any]) -> None:
        self.tasks.tasks = tasks
        self.shims.tasks = tasks

    # -- hooks for the engine's code --------------------------------------------------------------
    def on_gc(self, stats: Any) -> None:
        self.gc_runs.inc()
        self.gc_seconds.observe(stats.seconds)
        self.gc_freed.inc(getattr(stats, "blob_bytes", 0))
        for kind in ("leases", "content", "snapshots", "blobs"):
            n = getattr(stats, kind, 0)
            if n:
                self.gc_removed.labels(kind).inc(n)

    def on_ingest(self, size: int, seconds: float) -> None:
        self.ingest_bytes.inc(size)
        self.ingest_seconds.observe(seconds)

    def on_apply(self, size: int, seconds: float) -> None:
        self.apply_bytes.inc(size)
        self.apply_seconds.observe(seconds)

    # -- event-loop lag ------------------------------------------------------------------------------
    def start_lag_probe(self, interval: float = 0.5) -> None:
        if self._lag_task is None:
            self._lag_task = asyncio.get_running_loop().create_task(self._probe(interval), name="metrics-lag-probe")

    async def _probe(self, interval: float) -> None:
        loop = asyncio.get_running_loop()
        while True:  # how late the loop wakes a timer that is due
            t0 = loop.time()
            await asyncio.sleep(interval)
            lag = max(0.0, loop.time() - t0 - interval)
            self.loop_lag.set(lag)
            self.loop_lag_hist.observe(lag)

    async def close(self) -> None:
        if self._lag_task is not None:
            self._lag_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._lag_task
            self._lag_task = None

    def render(self) -> bytes:
        """The exposition text (blocking: call in a thread)."""
        from prometheus_client import generate_latest

        with self._render:
            t0 = time.perf_counter()
            body = generate_latest(self.registry)
            log.debug("metrics rendered in %.1f ms (%d bytes)", (time.perf_counter() - t0) * 1000, len(body))
            return body
