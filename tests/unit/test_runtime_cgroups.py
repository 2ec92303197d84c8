"""Cgroup metrics: parsers, v1/v2 readers over a directory tree, and the host's own cgroup."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from google.protobuf import json_format

from pycontainerd import cgroups, errdefs
from pycontainerd.api.cgroups.v1 import metrics_pb2 as v1
from pycontainerd.api.cgroups.v2 import metrics_pb2 as v2

MOUNTINFO = """\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw,relatime - cgroup cgroup rw,cpu,cpuacct
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,xattr,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
"""


def test_parsers() -> None:
    assert cgroups.parse_uint("max\n") == cgroups.UINT64_MAX
    assert cgroups.parse_uint("-1") == 0
    assert cgroups.parse_flat_keyed("a 1\nb 2\nbad\n") == {"a": 1, "b": 2}
    assert cgroups.parse_proc_cgroup("4:cpu,cpuacct:/default/x\n0::/y\n") == {
        "cpu": "/default/x",
        "cpuacct": "/default/x",
        "": "/y",
    }
    m = cgroups.parse_mountinfo(MOUNTINFO)
    assert m.mode == cgroups.V1
    assert m.v1["cpuacct"] == Path("/sys/fs/cgroup/cpu,cpuacct")
    assert m.v1["name=systemd"] == Path("/sys/fs/cgroup/systemd")
    assert "xattr" in m.v1  # harmless extra key
    unified = cgroups.parse_mountinfo("30 1 0:26 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n")
    assert unified.mode == cgroups.V2
    assert cgroups.systemd_path("system.slice:cri:abc") == "/system.slice/cri-abc.scope"
    assert cgroups.systemd_path("kubepods-besteffort.slice:cri:x") == (
        "/kubepods.slice/kubepods-besteffort.slice/cri-x.scope"
    )
    assert cgroups.parse_io_stat_v2("8:0 rbytes=10 wbytes=20 rios=1 wios=2 dbytes=0\n") == [
        {"major": 8, "minor": 0, "rbytes": 10, "wbytes": 20, "rios": 1, "wios": 2}
    ]


def _w(p: Path, text: str) -> None:
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(text)


def test_v1_tree(tmp_path: Path) -> None:
    mounts = cgroups.Mounts(
        v1={c: tmp_path / c for c in ("cpu", "cpuacct", "memory", "pids", "blkio")}, mode=cgroups.V1
    )
    rel = "default/t1"
    _w(tmp_path / "pids" / rel / "pids.current", "3\n")
    _w(tmp_path / "pids" / rel / "pids.max", "max\n")
    _w(tmp_path / "cpuacct" / rel / "cpuacct.usage", "123456\n")
    _w(tmp_path / "cpuacct" / rel / "cpuacct.usage_percpu", "100000 23456 \n")
    _w(tmp_path / "cpuacct" / rel / "cpuacct.stat", "user 2\nsystem 1\n")
    _w(tmp_path / "cpu" / rel / "cpu.stat", "nr_periods 5\nnr_throttled 1\nthrottled_time 99\n")
    _w(
        tmp_path / "memory" / rel / "memory.stat",
        "cache 4096\nrss 8192\npgpgin 7\ntotal_rss 8192\nhierarchical_memory_limit 9223372036854771712\n",
    )
    _w(tmp_path / "memory" / rel / "memory.usage_in_bytes", "12288\n")
    _w(tmp_path / "memory" / rel / "memory.limit_in_bytes", "9223372036854771712\n")
    _w(tmp_path / "memory" / rel / "memory.max_usage_in_bytes", "20000\n")
    _w(tmp_path / "memory" / rel / "memory.failcnt", "0\n")
    _w(tmp_path / "memory" / rel / "memory.oom_control", "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n")
    _w(
        tmp_path / "blkio" / rel / "blkio.throttle.io_service_bytes_recursive",
        "8:0 Read 4096\n8:0 Write 0\nTotal 4096\n",
    )
    _w(tmp_path / "blkio" / rel / "blkio.throttle.io_serviced_recursive", "8:0 Read 1\nTotal 1\n")
    reader = cgroups.CgroupReader(mounts, proc_root=tmp_path / "proc", sys_root=tmp_path / "sys")
    mode, data = cgroups.read_task_metrics(reader, pid=0, cgroups_path="/default/t1")
    assert mode == cgroups.V1
    assert data["pids"] == {"current": 3, "limit": 0}
    assert data["cpu"]["usage"]["total"] == 123456
    assert data["cpu"]["usage"]["per_cpu"] == [100000, 23456]
    assert data["cpu"]["usage"]["user"] == 2 * 1_000_000_000 // os.sysconf("SC_CLK_TCK")
    assert data["cpu"]["throttling"] == {"periods": 5, "throttled_periods": 1, "throttled_time": 99}
    assert data["memory"]["cache"] == 4096
    assert data["memory"]["pg_pg_in"] == 7
    assert data["memory"]["total_rss"] == 8192
    assert data["memory"]["usage"]["usage"] == 12288
    assert data["memory"]["usage"]["max"] == 20000
    assert data["memory_oom_control"]["oom_kill"] == 2
    assert data["blkio"]["io_service_bytes_recursive"][0] == {
        "op": "Read",
        "device": "",
        "major": 8,
        "minor": 0,
        "value": 4096,
    }
    msg = json_format.ParseDict(data, v1.Metrics())  # the shape the Tasks service packs
    assert msg.memory.usage.usage == 12288
    with pytest.raises(errdefs.NotFound):
        reader.stats(reader.paths_of_spec("/default/gone"))


def test_v2_tree(tmp_path: Path) -> None:
    mounts = cgroups.Mounts(v2=tmp_path, mode=cgroups.V2)
    d = tmp_path / "default" / "t1"
    _w(
        d / "cpu.stat",
        "usage_usec 10\nuser_usec 6\nsystem_usec 4\nnr_periods 0\nnr_throttled 0\nthrottled_usec 0\n",
    )
    _w(d / "memory.current", "4096\n")
    _w(d / "memory.max", "max\n")
    _w(d / "memory.stat", "anon 1\nfile 2\npgfault 3\n")
    _w(d / "memory.events", "low 0\nhigh 0\nmax 1\noom 1\noom_kill 1\n")
    _w(d / "pids.current", "1\n")
    _w(d / "pids.max", "100\n")
    _w(d / "io.stat", "8:0 rbytes=1 wbytes=2 rios=3 wios=4\n")
    reader = cgroups.CgroupReader(mounts, proc_root=tmp_path / "proc")
    mode, data = cgroups.read_task_metrics(reader, pid=0, cgroups_path="default/t1")
    assert mode == cgroups.V2
    assert data["cpu"]["usage_usec"] == 10
    assert data["memory"]["usage"] == 4096
    assert data["memory"]["usage_limit"] == cgroups.UINT64_MAX
    assert data["pids"] == {"current": 1, "limit": 100}
    msg = json_format.ParseDict(data, v2.Metrics())
    assert msg.memory_events.oom_kill == 1
    assert msg.io.usage[0].wios == 4


def test_host_reader_reads_own_cgroup() -> None:
    reader = cgroups.CgroupReader()
    paths = reader.paths_of_pid(os.getpid())
    assert paths is not None
    data = reader.stats(paths)
    assert data  # whatever the host mode, something is readable for a live process
