"""The FIFOs of an exec process (ExecSync and the streaming server's exec share them).

An exec's stdio are FIFOs in its own directory, ``<state>/containers/<container id>/<exec id>/``
(0700), named ``stdin``, ``stdout`` and ``stderr`` as asked.  The daemon opens them before the
shim does, so nothing blocks and no output is lost:

* stdin is opened read-write by the daemon (the open never blocks; the daemon writes into it
  and closes it, then CloseIO, at the client's EOF);
* stdout and stderr are opened for reading by the daemon, plus a write end of its own held until
  the process has started (the shim holds its write ends by then), so the read ends see EOF only
  when the process and the shim are done with them.

``close`` closes whatever the caller has not taken over and removes the directory.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
from collections.abc import Iterable
from pathlib import Path

from ..fsmodes import private_dir
from ..runtime.task_types import TaskIO

STREAMS = ("stdin", "stdout", "stderr")
_NONBLOCK = os.O_NONBLOCK | os.O_CLOEXEC


class ExecFifos:
    """One exec process's FIFOs; made with :meth:`create`, ended with :meth:`close` (always)."""

    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self.paths: dict[str, str] = {}
        self.stdin_fd = -1
        self._readers: dict[str, int] = {}
        self._keep: list[int] = []

    @classmethod
    async def create(cls, directory: Path, streams: Iterable[str]) -> ExecFifos:
        """The directory and a FIFO for each of ``streams`` (``stdin``/``stdout``/``stderr``), opened
        as the module docstring says.  On failure what was made is undone."""
        fifos = cls(directory)
        try:
            await asyncio.to_thread(private_dir, directory)
            names = [s for s in STREAMS if s in set(streams)]
            for name in names:
                fifos.paths[name] = str(directory / name)
                os.mkfifo(fifos.paths[name], 0o600)
            if "stdin" in fifos.paths:
                fifos.stdin_fd = os.open(fifos.paths["stdin"], os.O_RDWR | _NONBLOCK)
            for name in names:
                if name != "stdin":
                    fifos._readers[name] = os.open(fifos.paths[name], os.O_RDONLY | _NONBLOCK)
                    fifos._keep.append(os.open(fifos.paths[name], os.O_WRONLY | _NONBLOCK))
        except BaseException:
            await fifos.close()
            raise
        return fifos

    def task_io(self, terminal: bool = False) -> TaskIO:
        """The paths for the task manager's exec."""
        return TaskIO(stdin=self.paths.get("stdin", ""), stdout=self.paths.get("stdout", ""),
                      stderr=self.paths.get("stderr", ""), terminal=terminal)

    def take_reader(self, name: str) -> int:
        """The read end of ``stdout`` or ``stderr``; the caller owns (and closes) it from now on."""
        return self._readers.pop(name)

    def release_writers(self) -> None:
        """Once the process started (the shim holds its own write ends): EOF comes when it is gone."""
        for fd in self._keep:
            with contextlib.suppress(OSError):
                os.close(fd)
        self._keep.clear()

    def close_stdin(self) -> None:
        if self.stdin_fd >= 0:
            fd, self.stdin_fd = self.stdin_fd, -1
            with contextlib.suppress(OSError):
                os.close(fd)

    async def close(self) -> None:
        """Every fd still ours closed, the directory removed."""
        self.close_stdin()
        self.release_writers()
        for fd in self._readers.values():
            with contextlib.suppress(OSError):
                os.close(fd)
        self._readers.clear()
        await asyncio.to_thread(shutil.rmtree, self.dir, True)
