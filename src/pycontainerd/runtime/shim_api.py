"""What the task manager needs from a shim: the ``Shim``, ``ShimLauncher`` and ``ExternalShims``
protocols and the values they answer with.

``runtime.v2.TaskShim`` is the real ``Shim`` (the runtime v2 shim API over ttrpc),
``runtime.v2.ForkLauncher`` the daemon's own launcher, ``runtime.v2.ShimManager`` the
``ExternalShims``; tests drive the manager with fakes of the same shape.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any, Protocol


class ExitLike(Protocol):
    @property
    def pid(self) -> int: ...
    @property
    def exit_status(self) -> int: ...
    @property
    def exited_at_ns(self) -> int: ...


class StateLike(Protocol):
    @property
    def id(self) -> str: ...
    @property
    def pid(self) -> int: ...
    @property
    def status(self) -> str: ...
    @property
    def stdin(self) -> str: ...
    @property
    def stdout(self) -> str: ...
    @property
    def stderr(self) -> str: ...
    @property
    def terminal(self) -> bool: ...
    @property
    def exit_status(self) -> int: ...
    @property
    def exited_at_ns(self) -> int: ...


class PidLike(Protocol):
    @property
    def pid(self) -> int: ...
    @property
    def exec_id(self) -> str: ...


class Shim(Protocol):
    address: str
    pid: int

    async def create(
        self,
        *,
        rootfs: list[dict[str, Any]],
        stdin: str,
        stdout: str,
        stderr: str,
        terminal: bool,
        options: dict[str, Any] | None = None,
    ) -> int: ...
    async def start(self, exec_id: str = "") -> int: ...
    async def delete(self, exec_id: str = "") -> ExitLike: ...
    async def exec(
        self, exec_id: str, spec: dict[str, Any], *, stdin: str, stdout: str, stderr: str, terminal: bool
    ) -> None: ...
    async def kill(self, exec_id: str, signal: int, all: bool = False) -> None: ...
    async def state(self, exec_id: str = "") -> StateLike: ...
    async def pids(self) -> Sequence[PidLike]: ...
    async def pause(self) -> None: ...
    async def resume(self) -> None: ...
    async def resize_pty(self, exec_id: str, width: int, height: int) -> None: ...
    async def close_io(self, exec_id: str, stdin: bool = True) -> None: ...
    async def update(self, resources: dict[str, Any]) -> None: ...
    async def wait(self, exec_id: str = "") -> ExitLike: ...
    async def shutdown(self) -> None: ...
    def events(self) -> AsyncIterator[tuple[str, dict[str, Any]]]: ...
    async def close(self) -> None: ...


class ShimLauncher(Protocol):
    async def launch(
        self,
        *,
        namespace: str,
        container_id: str,
        bundle: Path,
        state_dir: Path,
        runtime_binary: str = "runc",
        runtime_root: str | None = None,
        systemd_cgroup: bool = False,
        debug: bool = False,
        group: str | None = None,
    ) -> Shim:
        """Start (or join) the shim of a written bundle.  ``group``: the shim group its spec
        names (``bundle.shim_group``), when the caller has the spec at hand; else the
        launcher reads it from the bundle if it needs it."""
        ...

    async def connect(self, bundle: Path) -> Shim: ...

    async def cleanup(
        self,
        *,
        namespace: str,
        container_id: str,
        bundle: Path,
        runtime_binary: str = "runc",
        runtime_root: str | None = None,
    ) -> ExitLike:
        """After the shim died: runc delete --force, unmount the rootfs, the recorded exit."""
        ...

    async def close(self) -> None: ...


class ExternalShims(Protocol):
    """Shims of runtimes other than the daemon's own (``runtime.v2.ShimManager``): external
    binaries found by containerd's rules, started with the runtime v2 ``start`` handshake."""

    def resolve(self, runtime_name: str) -> str | None:
        """The shim binary for ``runtime_name``; None when the manager's own launcher serves it."""
        ...

    async def launch(
        self,
        *,
        namespace: str,
        container_id: str,
        bundle: Path,
        binary: str,
        options: tuple[str, bytes] | None = None,
        runc: dict[str, Any] | None = None,
        debug: bool = False,
    ) -> Shim: ...

    async def connect(self, bundle: Path) -> Shim: ...

    async def cleanup(self, *, namespace: str, container_id: str, bundle: Path) -> ExitLike: ...

    async def start(self) -> None: ...

    async def close(self) -> None: ...
