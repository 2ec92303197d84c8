"""OOM notifications for a container's cgroup, for ``/tasks/oom`` events.

cgroup v1: an eventfd registered on ``memory.oom_control`` through ``cgroup.event_control``
becomes readable on each OOM.  cgroup v2: ``memory.events`` signals changes with POLLPRI
(kernfs notify); a private epoll set watches it for EPOLLPRI and is itself watched by the
shim loop, and an increase of its ``oom_kill`` counter is an OOM.
"""

from __future__ import annotations

import os
import select
from collections.abc import Callable

from pycontainerd.shim.loop import Loop

CGROUP_ROOT = "/sys/fs/cgroup"


def _cgroup_paths(pid: int) -> dict[str, str]:
    """controller -> path (``""`` key for the v2 unified hierarchy)."""
    out: dict[str, str] = {}
    with open(f"/proc/{pid}/cgroup") as f:
        for line in f:
            _, controllers, path = line.rstrip("\n").split(":", 2)
            for c in controllers.split(","):
                out[c] = path
    return out


class OOMWatcher:
    def __init__(self, loop: Loop, pid: int, on_oom: Callable[[], None]) -> None:
        self.loop = loop
        self.on_oom = on_oom
        self._fds: list[int] = []
        self._watch_fd = -1
        self._v2_events = ""
        self._last_kills = 0
        self._ep: select.epoll | None = None
        paths = _cgroup_paths(pid)
        if "memory" in paths:
            self._watch_v1(os.path.join(CGROUP_ROOT, "memory", paths["memory"].lstrip("/")))
        elif "" in paths and os.path.exists(os.path.join(CGROUP_ROOT, "cgroup.controllers")):
            self._watch_v2(os.path.join(CGROUP_ROOT, paths[""].lstrip("/")))

    def _watch_v1(self, cgdir: str) -> None:
        efd = os.eventfd(0, os.EFD_CLOEXEC | os.EFD_NONBLOCK)
        self._fds.append(efd)
        ocfd = os.open(os.path.join(cgdir, "memory.oom_control"), os.O_RDONLY | os.O_CLOEXEC)
        self._fds.append(ocfd)
        with open(os.path.join(cgdir, "cgroup.event_control"), "w") as f:
            f.write(f"{efd} {ocfd}")
        self._watch_fd = efd

        def fired() -> None:
            try:
                os.eventfd_read(efd)
            except BlockingIOError:
                return
            # the eventfd also fires when the cgroup is removed
            if os.path.exists(cgdir):
                self.on_oom()
            else:
                self.close()

        self.loop.add_reader(efd, fired)

    def _watch_v2(self, cgdir: str) -> None:
        self._v2_events = os.path.join(cgdir, "memory.events")
        fd = os.open(self._v2_events, os.O_RDONLY | os.O_CLOEXEC)
        self._fds.append(fd)
        self._last_kills = self._read_kills()
        ep = select.epoll()
        self._ep = ep
        ep.register(fd, select.EPOLLPRI | select.EPOLLERR)
        self._watch_fd = ep.fileno()

        def fired() -> None:
            ep.poll(0)
            kills = self._read_kills()
            if kills > self._last_kills:
                self._last_kills = kills
                self.on_oom()

        self.loop.add_reader(self._watch_fd, fired)

    def _read_kills(self) -> int:
        try:
            with open(self._v2_events) as f:
                for line in f:
                    key, _, value = line.partition(" ")
                    if key == "oom_kill":
                        return int(value)
        except OSError:
            pass
        return 0

    def close(self) -> None:
        if self._watch_fd >= 0:
            self.loop.forget_fd(self._watch_fd)
            self._watch_fd = -1
        if self._ep is not None:
            self._ep.close()
            self._ep = None
        for fd in self._fds:
            os.close(fd)
        self._fds = []
