"""The task manager's own value types: what its API takes (runc options, rootfs mounts, stdio)
and answers (exits, process status and pids, metrics, running tasks), and the daemon's runc
defaults."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Timeouts:
    """containerd's ``[timeouts]`` that the runtime honours (seconds; containerd's defaults):

    ``shim_cleanup`` (``io.containerd.timeout.shim.cleanup``): a dead shim's binary ``delete``;
    ``shim_load`` (``...shim.load``): reconnecting to a shim at start-up (dial and Connect);
    ``shim_shutdown`` (``...shim.shutdown``): the Shutdown call that lets a shim exit;
    ``task_state`` (``...task.state``): the State call behind the tasks service's Get/List (a
    shim that does not answer in time is reported with status unknown, as containerd does).
    """

    shim_cleanup: float = 5.0
    shim_load: float = 5.0
    shim_shutdown: float = 3.0
    task_state: float = 2.0


@dataclass(frozen=True)
class RuncOptions:
    """The runc runtime options a task is created with (from ``containerd.runc.v1.Options``)."""

    binary_name: str = ""
    root: str = ""
    systemd_cgroup: bool = False
    no_pivot_root: bool = False
    no_new_keyring: bool = False
    io_uid: int = 0
    io_gid: int = 0


@dataclass(frozen=True)
class RootfsMount:
    type: str
    source: str
    target: str = ""
    options: tuple[str, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        return {
            "type": self.type,
            "source": self.source,
            "target": self.target,
            "options": list(self.options),
        }


@dataclass(frozen=True)
class TaskIO:
    stdin: str = ""
    stdout: str = ""
    stderr: str = ""
    terminal: bool = False


@dataclass(frozen=True)
class Exit:
    pid: int
    exit_status: int
    exited_at_ns: int


@dataclass(frozen=True)
class ProcessStatus:
    container_id: str
    id: str
    pid: int
    status: str  # created | running | stopped | paused | pausing | unknown
    stdin: str = ""
    stdout: str = ""
    stderr: str = ""
    terminal: bool = False
    exit_status: int = 0
    exited_at_ns: int = 0


@dataclass(frozen=True)
class ProcessPid:
    pid: int
    exec_id: str = ""


@dataclass(frozen=True)
class TaskMetrics:
    id: str
    collected_at_ns: int
    cgroup_version: str  # "v1" | "v2"
    data: dict[str, Any]


@dataclass
class RuntimeDefaults:
    """The daemon's defaults for runc (from its config): binary, root, cgroup driver, flags."""

    binary_name: str = "runc"
    root: str = ""
    systemd_cgroup: bool = False
    no_pivot_root: bool = False
    no_new_keyring: bool = False
    io_uid: int = 0
    io_gid: int = 0
    restrict_oom_score_adj: bool = True
    shim_debug: bool = False
    # tasks of runtime io.containerd.runtime.v1.linux: [plugins.linux] runtime / runtime_root
    # (empty: as the other runc tasks)
    v1_binary_name: str = ""
    v1_root: str = ""


@dataclass(frozen=True)
class RunningTask:
    namespace: str
    id: str
    pid: int
    shim_pid: int
    cgroups_path: str
    systemd_cgroup: bool
