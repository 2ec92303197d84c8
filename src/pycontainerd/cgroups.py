"""Task metrics read straight from the cgroup filesystem (v1 and v2).

The result is a plain dict shaped like ``io.containerd.cgroups.v1.Metrics`` or
``io.containerd.cgroups.v2.Metrics`` (proto field names), so the Tasks service can
``json_format.ParseDict`` it into the message that ``ctr tasks metrics`` decodes.

Which cgroup to read: the cgroups a live process of the task is in (``/proc/<pid>/cgroup``),
which is exact whatever the cgroup driver and whether the spec's cgroupsPath was absolute,
relative or systemd-style; when no pid is known the spec's cgroupsPath is used.

The host mode follows containerd: ``/sys/fs/cgroup`` being cgroup2 means unified (v2
metrics); anything else (legacy, or hybrid with ``/sys/fs/cgroup/unified``) means v1.

Parsing is pure (``parse_*`` functions over file text); reading goes through
``CgroupReader``, which takes the mount table so tests can point it at a directory tree.
Everything here is blocking file I/O: call it through ``asyncio.to_thread``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import errdefs

UINT64_MAX = (1 << 64) - 1
V1 = "v1"
V2 = "v2"


# -- pure parsers ------------------------------------------------------------------------------
def parse_uint(text: str) -> int:
    """A cgroup number; ``max`` (no limit) becomes UINT64_MAX, negatives clamp to 0."""
    t = text.strip()
    if not t:
        return 0
    if t == "max":
        return UINT64_MAX
    value = int(t)
    return value if value >= 0 else 0


def parse_flat_keyed(text: str) -> dict[str, int]:
    """``key value`` lines (memory.stat, cpu.stat, memory.events...)."""
    out: dict[str, int] = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 2:
            try:
                out[parts[0]] = parse_uint(parts[1])
            except ValueError:
                continue
    return out


def parse_proc_cgroup(text: str) -> dict[str, str]:
    """``/proc/<pid>/cgroup`` → {controller: path}; the v2 entry has key ``""``."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        _, controllers, path = parts
        if not controllers:
            out[""] = path
            continue
        for ctrl in controllers.split(","):
            out[ctrl] = path
    return out


@dataclass
class Mounts:
    """Where each cgroup hierarchy is mounted: {controller: mountpoint}, plus the v2 mount."""

    v1: dict[str, Path] = field(default_factory=dict)
    v2: Path | None = None
    mode: str = V1


def parse_mountinfo(text: str, unified_root: str = "/sys/fs/cgroup") -> Mounts:
    m = Mounts()
    for line in text.splitlines():
        left, sep, right = line.partition(" - ")
        if not sep:
            continue
        lf = left.split()
        rf = right.split()
        if len(lf) < 5 or len(rf) < 3:
            continue
        mountpoint = Path(lf[4].replace("\\040", " "))
        fstype = rf[0]
        if fstype == "cgroup2":
            if m.v2 is None or str(mountpoint) == unified_root:
                m.v2 = mountpoint
        elif fstype == "cgroup":
            for opt in rf[2].split(","):
                if opt in ("rw", "ro") or opt.startswith("release_agent") or opt == "clone_children":
                    continue
                m.v1.setdefault(opt, mountpoint)
    m.mode = V2 if m.v2 is not None and str(m.v2) == unified_root else V1
    return m


def systemd_path(cgroups_path: str) -> str:
    """``slice:prefix:name`` → ``/a.slice/a-b.slice/prefix-name.scope`` (runc's systemd layout)."""
    parts = cgroups_path.split(":")
    if len(parts) != 3:
        return cgroups_path
    slice_, prefix, name = parts
    slice_ = slice_ or "system.slice"
    out = ""
    if slice_ != "-.slice":
        base = slice_[: -len(".slice")] if slice_.endswith(".slice") else slice_
        acc = ""
        for comp in base.split("-"):
            acc = f"{acc}-{comp}" if acc else comp
            out += f"/{acc}.slice"
    unit = name if name.endswith((".scope", ".slice")) else f"{prefix}-{name}.scope" if prefix else f"{name}.scope"
    return f"{out}/{unit}"


def swap_accounting(sys_root: Path = Path("/sys"), proc_root: Path = Path("/proc")) -> bool:
    """Whether memory swap can be limited here (containerd's ``SwapControllerAvailable``): cgroup v1
    with ``memory.memsw.limit_in_bytes`` (swapaccount=1), or cgroup v2 with ``memory.swap.max``
    beside our own cgroup (the root cgroup has none: then any first-level group's is looked at)."""
    base = sys_root / "fs" / "cgroup"
    if not (base / "cgroup.controllers").exists():
        return (base / "memory" / "memory.memsw.limit_in_bytes").exists()
    own = parse_proc_cgroup(_read(proc_root / "self" / "cgroup") or "").get("", "/")
    if own.strip("/") and (base / own.strip("/") / "memory.swap.max").exists():
        return True
    try:
        return any((d / "memory.swap.max").exists() for d in base.iterdir() if d.is_dir())
    except OSError:
        return False


def hugetlb_controller(sys_root: Path = Path("/sys")) -> bool:
    """Whether the hugetlb controller is there (containerd's ``isHugetlbControllerPresent``): cgroup v2
    lists it in the root's ``cgroup.controllers``, cgroup v1 has its hierarchy ``/sys/fs/cgroup/hugetlb``."""
    base = sys_root / "fs" / "cgroup"
    controllers = _read(base / "cgroup.controllers")
    if controllers is not None:
        return "hugetlb" in controllers.split()
    return (base / "hugetlb").is_dir()


# -- readers -----------------------------------------------------------------------------------
def _read(path: Path) -> str | None:
    try:
        return path.read_text()
    except (FileNotFoundError, ProcessLookupError, NotADirectoryError):
        return None
    except OSError as exc:
        if exc.errno in (19, 22):  # ENODEV / EINVAL: knob not supported on this kernel
            return None
        raise


def _read_uint(path: Path) -> int | None:
    text = _read(path)
    if text is None:
        return None
    try:
        return parse_uint(text)
    except ValueError:
        return None


def _block_device_name(major: int, minor: int, sys_root: Path) -> str:
    try:
        target = os.readlink(sys_root / "dev" / "block" / f"{major}:{minor}")
    except OSError:
        return ""
    return "/dev/" + os.path.basename(target)


def _parse_blkio_v1(text: str | None, sys_root: Path) -> list[dict[str, Any]]:
    entries: list[dict[str, Any]] = []
    if not text:
        return entries
    for line in text.splitlines():
        parts = line.split()
        if len(parts) < 2 or parts[0] == "Total":
            continue
        dev = parts[0].split(":")
        if len(dev) != 2:
            continue
        try:
            major, minor = int(dev[0]), int(dev[1])
            if len(parts) == 3:
                op, value = parts[1], int(parts[2])
            else:
                op, value = "", int(parts[1])
        except ValueError:
            continue
        entries.append(
            {
                "op": op,
                "device": _block_device_name(major, minor, sys_root),
                "major": major,
                "minor": minor,
                "value": value,
            }
        )
    return entries


def parse_io_stat_v2(text: str) -> list[dict[str, int]]:
    out: list[dict[str, int]] = []
    for line in text.splitlines():
        parts = line.split()
        if not parts:
            continue
        dev = parts[0].split(":")
        if len(dev) != 2:
            continue
        entry = {"major": int(dev[0]), "minor": int(dev[1])}
        for kv in parts[1:]:
            k, _, v = kv.partition("=")
            if k in ("rbytes", "wbytes", "rios", "wios"):
                entry[k] = parse_uint(v)
        out.append(entry)
    return out


_MEM_V1_KEYS = {
    "cache": "cache",
    "rss": "rss",
    "rss_huge": "rss_huge",
    "mapped_file": "mapped_file",
    "dirty": "dirty",
    "writeback": "writeback",
    "pgpgin": "pg_pg_in",
    "pgpgout": "pg_pg_out",
    "pgfault": "pg_fault",
    "pgmajfault": "pg_maj_fault",
    "inactive_anon": "inactive_anon",
    "active_anon": "active_anon",
    "inactive_file": "inactive_file",
    "active_file": "active_file",
    "unevictable": "unevictable",
    "hierarchical_memory_limit": "hierarchical_memory_limit",
    "hierarchical_memsw_limit": "hierarchical_swap_limit",
}
for _k, _v in list(_MEM_V1_KEYS.items()):
    if _k.startswith("hierarchical"):
        continue
    _MEM_V1_KEYS["total_" + _k] = "total_" + _v

_MEM_V2_KEYS = (
    "anon", "file", "kernel_stack", "slab", "sock", "shmem", "file_mapped", "file_dirty", "file_writeback",
    "anon_thp", "inactive_anon", "active_anon", "inactive_file", "active_file", "unevictable",
    "slab_reclaimable", "slab_unreclaimable", "pgfault", "pgmajfault", "workingset_refault",
    "workingset_activate", "workingset_nodereclaim", "pgrefill", "pgscan", "pgsteal", "pgactivate",
    "pgdeactivate", "pglazyfree", "pglazyfreed", "thp_fault_alloc", "thp_collapse_alloc",
)  # fmt: skip


class CgroupReader:
    """Reads one task's cgroup statistics; ``mounts`` comes from the host's mountinfo."""

    def __init__(self, mounts: Mounts | None = None, *, proc_root: Path = Path("/proc"), sys_root: Path = Path("/sys")):
        self.proc_root = proc_root
        self.sys_root = sys_root
        if mounts is None:
            text = _read(proc_root / "self" / "mountinfo") or ""
            mounts = parse_mountinfo(text)
        self.mounts = mounts

    @property
    def mode(self) -> str:
        return self.mounts.mode

    def paths_of_pid(self, pid: int) -> dict[str, str] | None:
        text = _read(self.proc_root / str(pid) / "cgroup")
        return parse_proc_cgroup(text) if text else None

    def paths_of_spec(self, cgroups_path: str, *, systemd: bool = False) -> dict[str, str]:
        path = systemd_path(cgroups_path) if systemd or cgroups_path.count(":") == 2 else cgroups_path
        if not path.startswith("/"):
            path = "/" + path
        paths = {ctrl: path for ctrl in self.mounts.v1}
        paths[""] = path
        return paths

    def stats(self, paths: Mapping[str, str]) -> dict[str, Any]:
        """The metrics dict for the given cgroup paths; NotFound when the cgroup is gone."""
        if self.mode == V2:
            return self._stats_v2(paths.get("", "/"))
        return self._stats_v1(paths)

    # -- v1 -----------------------------------------------------------------------------------
    def _dir(self, paths: Mapping[str, str], ctrl: str) -> Path | None:
        mount = self.mounts.v1.get(ctrl)
        rel = paths.get(ctrl)
        if mount is None or rel is None:
            return None
        return mount / rel.lstrip("/")

    def _stats_v1(self, paths: Mapping[str, str]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        present = False

        pids_dir = self._dir(paths, "pids")
        if pids_dir is not None and pids_dir.is_dir():
            present = True
            limit = _read_uint(pids_dir / "pids.max")
            out["pids"] = {
                "current": _read_uint(pids_dir / "pids.current") or 0,
                "limit": 0 if limit in (None, UINT64_MAX) else limit,
            }

        cpuacct = self._dir(paths, "cpuacct")
        cpu = self._dir(paths, "cpu")
        cpu_out: dict[str, Any] = {}
        if cpuacct is not None and cpuacct.is_dir():
            present = True
            usage: dict[str, Any] = {"total": _read_uint(cpuacct / "cpuacct.usage") or 0}
            percpu = _read(cpuacct / "cpuacct.usage_percpu")
            if percpu:
                usage["per_cpu"] = [int(x) for x in percpu.split()]
            stat = parse_flat_keyed(_read(cpuacct / "cpuacct.stat") or "")
            tick = os.sysconf("SC_CLK_TCK") or 100
            usage["user"] = stat.get("user", 0) * 1_000_000_000 // tick
            usage["kernel"] = stat.get("system", 0) * 1_000_000_000 // tick
            cpu_out["usage"] = usage
        if cpu is not None and cpu.is_dir():
            present = True
            st = parse_flat_keyed(_read(cpu / "cpu.stat") or "")
            cpu_out["throttling"] = {
                "periods": st.get("nr_periods", 0),
                "throttled_periods": st.get("nr_throttled", 0),
                "throttled_time": st.get("throttled_time", 0),
            }
        if cpu_out:
            out["cpu"] = cpu_out

        mem = self._dir(paths, "memory")
        if mem is not None and mem.is_dir():
            present = True
            raw = parse_flat_keyed(_read(mem / "memory.stat") or "")
            memory: dict[str, Any] = {_MEM_V1_KEYS[k]: v for k, v in raw.items() if k in _MEM_V1_KEYS}

            def entry(prefix: str) -> dict[str, int]:
                return {
                    "usage": _read_uint(mem / f"{prefix}.usage_in_bytes") or 0,
                    "limit": _read_uint(mem / f"{prefix}.limit_in_bytes") or 0,
                    "max": _read_uint(mem / f"{prefix}.max_usage_in_bytes") or 0,
                    "failcnt": _read_uint(mem / f"{prefix}.failcnt") or 0,
                }

            memory["usage"] = entry("memory")
            if (mem / "memory.memsw.usage_in_bytes").exists():
                memory["swap"] = entry("memory.memsw")
            if (mem / "memory.kmem.usage_in_bytes").exists():
                memory["kernel"] = entry("memory.kmem")
            if (mem / "memory.kmem.tcp.usage_in_bytes").exists():
                memory["kernel_tcp"] = entry("memory.kmem.tcp")
            out["memory"] = memory
            oom = parse_flat_keyed(_read(mem / "memory.oom_control") or "")
            out["memory_oom_control"] = {
                "oom_kill_disable": oom.get("oom_kill_disable", 0),
                "under_oom": oom.get("under_oom", 0),
                "oom_kill": oom.get("oom_kill", 0),
            }

        blk = self._dir(paths, "blkio")
        if blk is not None and blk.is_dir():
            present = True
            blkio: dict[str, Any] = {}
            # CFQ/BFQ files exist only with those schedulers; the throttle files always do.
            names = {
                "io_service_bytes_recursive": "io_service_bytes_recursive",
                "io_serviced_recursive": "io_serviced_recursive",
                "io_queued_recursive": "io_queued_recursive",
                "io_service_time_recursive": "io_service_time_recursive",
                "io_wait_time_recursive": "io_wait_time_recursive",
                "io_merged_recursive": "io_merged_recursive",
                "io_time_recursive": "time_recursive",
                "sectors_recursive": "sectors_recursive",
            }
            use_throttle = not (blk / "blkio.io_serviced_recursive").exists()
            for key, fname in names.items():
                if use_throttle:
                    if key not in ("io_service_bytes_recursive", "io_serviced_recursive"):
                        continue
                    text = _read(blk / f"blkio.throttle.{fname}")
                else:
                    text = _read(blk / f"blkio.{fname}")
                entries = _parse_blkio_v1(text, self.sys_root)
                if entries:
                    blkio[key] = entries
            out["blkio"] = blkio

        huge = self._dir(paths, "hugetlb")
        if huge is not None and huge.is_dir():
            stats = []
            for f in sorted(huge.glob("hugetlb.*.usage_in_bytes")):
                size = f.name.split(".")[1]
                stats.append(
                    {
                        "pagesize": size,
                        "usage": _read_uint(f) or 0,
                        "max": _read_uint(huge / f"hugetlb.{size}.max_usage_in_bytes") or 0,
                        "failcnt": _read_uint(huge / f"hugetlb.{size}.failcnt") or 0,
                    }
                )
            if stats:
                out["hugetlb"] = stats

        if not present:
            raise errdefs.NotFound(f"cgroup {dict(paths).get('memory', dict(paths).get('', '?'))} does not exist")
        return out

    # -- v2 -----------------------------------------------------------------------------------
    def _stats_v2(self, rel: str) -> dict[str, Any]:
        assert self.mounts.v2 is not None
        d = self.mounts.v2 / rel.lstrip("/")
        if not d.is_dir():
            raise errdefs.NotFound(f"cgroup {d} does not exist")
        out: dict[str, Any] = {}
        if (d / "pids.current").exists():
            limit = _read_uint(d / "pids.max")
            out["pids"] = {
                "current": _read_uint(d / "pids.current") or 0,
                "limit": 0 if limit in (None, UINT64_MAX) else limit,
            }
        cpu = parse_flat_keyed(_read(d / "cpu.stat") or "")
        if cpu:
            out["cpu"] = {
                k: cpu.get(k, 0)
                for k in (
                    "usage_usec",
                    "user_usec",
                    "system_usec",
                    "nr_periods",
                    "nr_throttled",
                    "throttled_usec",
                )
            }
        if (d / "memory.current").exists():
            raw = parse_flat_keyed(_read(d / "memory.stat") or "")
            memory: dict[str, Any] = {k: raw[k] for k in _MEM_V2_KEYS if k in raw}
            memory["usage"] = _read_uint(d / "memory.current") or 0
            memory["usage_limit"] = _read_uint(d / "memory.max") or 0
            memory["swap_usage"] = _read_uint(d / "memory.swap.current") or 0
            memory["swap_limit"] = _read_uint(d / "memory.swap.max") or 0
            peak = _read_uint(d / "memory.peak")
            if peak is not None:
                memory["max_usage"] = peak
            swap_peak = _read_uint(d / "memory.swap.peak")
            if swap_peak is not None:
                memory["swap_max_usage"] = swap_peak
            out["memory"] = memory
            events = parse_flat_keyed(_read(d / "memory.events") or "")
            if events:
                out["memory_events"] = {k: events.get(k, 0) for k in ("low", "high", "max", "oom", "oom_kill")}
        io = _read(d / "io.stat")
        if io:
            out["io"] = {"usage": parse_io_stat_v2(io)}
        huge = []
        for f in sorted(d.glob("hugetlb.*.current")):
            size = f.name.split(".")[1]
            huge.append(
                {
                    "pagesize": size,
                    "current": _read_uint(f) or 0,
                    "max": _read_uint(d / f"hugetlb.{size}.max") or 0,
                }
            )
        if huge:
            out["hugetlb"] = huge
        return out


def read_task_metrics(
    reader: CgroupReader, *, pid: int, cgroups_path: str, systemd: bool = False
) -> tuple[str, dict[str, Any]]:
    """(mode, metrics dict) for a task: by its pid's cgroups, else by the spec's cgroupsPath."""
    paths = reader.paths_of_pid(pid) if pid > 0 else None
    if paths is None:
        if not cgroups_path:
            raise errdefs.NotFound("task has no live process and its spec names no cgroupsPath")
        paths = reader.paths_of_spec(cgroups_path, systemd=systemd)
    return reader.mode, reader.stats(paths)


# -- placing a process ----------------------------------------------------------------------------
def place_process(path: str, pid: int, sys_root: Path = Path("/sys/fs/cgroup")) -> list[Path]:
    """Move ``pid`` into the cgroup ``path``, creating it where missing, as containerd does with
    its own process for ``[cgroup] path``: on cgroup v2 the one directory; on v1 that path in every
    mounted hierarchy (a new cpuset cgroup first inherits its parent's cpus and mems, which the
    kernel leaves empty and which must be set before a process may join).  Returns the cgroup
    directories joined; raises ``InvalidArgument`` naming the directory that refused."""
    rel = path.strip("/")
    if not rel or ".." in rel.split("/"):
        raise errdefs.InvalidArgument(f"cgroup path {path!r}: must be a path below the cgroup root")
    if (sys_root / "cgroup.controllers").exists():
        targets = [sys_root / rel]
    else:
        targets = [
            d / rel for d in sorted(sys_root.iterdir())
            if not d.is_symlink() and d.is_dir() and d.name != "unified" and (d / "cgroup.procs").exists()
        ]
    if not targets:
        raise errdefs.InvalidArgument(f"cgroup path {path!r}: no cgroup hierarchy mounted under {sys_root}")
    for target in targets:
        try:
            _make_cgroup(target)
            (target / "cgroup.procs").write_text(str(pid))
        except OSError as exc:
            raise errdefs.InvalidArgument(f"cgroup path {path!r}: cannot join {target}: {exc.strerror or exc}") from exc
    return targets


def _make_cgroup(target: Path) -> None:
    if target.is_dir():
        return
    _make_cgroup(target.parent)
    target.mkdir()
    for name in ("cpuset.cpus", "cpuset.mems"):  # v1 cpuset only: empty until set
        own = target / name
        if own.exists() and not own.read_text().strip():
            own.write_text((target.parent / name).read_text())
