"""Task metrics: the cgroup statistics of running tasks (the tasks service's Metrics).

``TaskMetricsReader`` is owned by ``task_manager.TaskManager``, which hands it the records of
its tasks (``task_record.TaskRecord``); it keeps the cgroup reader (made at the first use
unless one was given) and reads each task's cgroup in a worker thread.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

from .. import errdefs

if TYPE_CHECKING:
    from .. import cgroups
from . import bundle as bundlemod
from .task_record import TaskRecord
from .task_types import TaskMetrics


class TaskMetricsReader:
    def __init__(self, cgroup_reader: cgroups.CgroupReader | None = None) -> None:
        self._cgroups = cgroup_reader

    async def collect(
        self, namespace: str, tasks: Iterable[TaskRecord], filter_exprs: Sequence[str] = ()
    ) -> list[TaskMetrics]:
        """Metrics of the tasks of ``namespace`` among ``tasks`` (in their order) that match
        the filters and whose shim says they are neither stopped nor unknown."""
        from .. import filters  # the filter language (and regexp) at the first filtered call: W6, idle PSS
        flt = filters.parse_all(list(filter_exprs))
        out: list[TaskMetrics] = []
        for t in tasks:
            if t.namespace != namespace or t.shim is None:
                continue

            def adaptor(path: tuple[str, ...], t: TaskRecord = t) -> str | None:
                if not path:
                    return None
                if path[0] == "id":
                    return t.id
                if path[0] == "namespace":
                    return t.namespace
                if path[0] == "runtime":
                    return t.meta.runtime_name
                return None

            if not flt.match(adaptor):
                continue
            try:
                st = await t.shim.state("")
            except Exception:
                continue
            if st.status in ("stopped", "unknown"):
                continue
            try:
                mode, data = await asyncio.to_thread(self._read_metrics, st.pid or t.meta.pid, t.meta)
            except errdefs.NotFound:
                continue
            out.append(TaskMetrics(t.id, time.time_ns(), mode, data))
        return out

    def _read_metrics(self, pid: int, meta: bundlemod.BundleMeta) -> tuple[str, dict[str, Any]]:
        from .. import cgroups  # the cgroup readers at the first metrics call (W6, idle PSS)

        if self._cgroups is None:
            self._cgroups = cgroups.CgroupReader()
        return cgroups.read_task_metrics(
            self._cgroups, pid=pid, cgroups_path=meta.cgroups_path, systemd=meta.systemd_cgroup
        )
