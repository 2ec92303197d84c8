"""Start a created runc container without running ``runc start``: release its init through
the exec FIFO, as ``runc start`` does (runc 1.0/1.1; see ``runc.starts_by_fifo`` for when
the shim may).

``runc create`` leaves ``runc init`` blocked opening ``<runc root>/<id>/exec.fifo`` for
writing; ``runc start`` opens it for reading, which lets the init write one byte, run the
startContainer hooks and exec the user process (the write end is close-on-exec, so the
reader sees EOF once that exec happened, or once the init died).  ``runc start`` reads to
EOF, fails if it read nothing ("cannot start an already running container"), and removes
the FIFO: from then on runc reports the container "running".  An init that dies before it
opens the FIFO would leave the reader waiting forever: runc checks the init every 100 ms;
the shim hears of the exit from its reaper (``init_exited``), reads what the pipe holds
(an init that wrote its byte and then died, e.g. a process that exited at once, was
started) and answers.

The reader is non-blocking on the shim loop.  Opened with ``O_NONBLOCK`` before any writer
is there, a FIFO reports no hang-up until a writer has come and gone, so readiness means
data or the init's end closing.  An init killed while it was opening the FIFO closes its end
without data: Start fails as ``runc start`` would ("cannot start an already running
container"), and the exit the reaper reports next makes the task stopped.
"""

from __future__ import annotations

import os
import stat

from pycontainerd import errdefs
from pycontainerd.shim.loop import Future, Loop

FIFO_NAME = "exec.fifo"


class StartFailed(errdefs.Unknown):
    """The init could not be released (the message says why, in runc's words)."""


class FifoStart:
    """One release in progress: ``done`` resolves when the init was released (the FIFO is
    gone) or fails with ``StartFailed``."""

    def __init__(self, loop: Loop, path: str, fd: int) -> None:
        self.loop = loop
        self.path = path
        self.fd = fd
        self.data = bytearray()
        self.done: Future[None] = Future()
        loop.add_reader(fd, self._readable)

    @classmethod
    def open(cls, loop: Loop, runtime_root: str, container_id: str) -> FifoStart | None:
        """Begin releasing ``container_id``'s init; None when its FIFO is not there (or is
        not a FIFO): the container is not in runc's "created" state, and ``runc start``
        should say what it is."""
        path = os.path.join(runtime_root, container_id, FIFO_NAME)
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOFOLLOW)
        except OSError:
            return None
        try:
            is_fifo = stat.S_ISFIFO(os.fstat(fd).st_mode)
        except OSError:
            is_fifo = False
        if not is_fifo:
            os.close(fd)
            return None
        return cls(loop, path, fd)

    def _drain(self) -> bool:
        """Read what the pipe holds; True at EOF (no writer any more)."""
        while True:
            try:
                chunk = os.read(self.fd, 512)
            except BlockingIOError:
                return False
            except OSError:
                return True
            if not chunk:
                return True
            self.data += chunk

    def _readable(self) -> None:
        if self._drain():
            self._finish("cannot start an already running container")

    def init_exited(self) -> None:
        """The init is gone: whatever it wrote before dying is in the pipe (it was released);
        nothing means it died before its start."""
        if not self.done.done():
            self._drain()
            self._finish("container process is already dead")

    def _finish(self, error: str) -> None:
        if self.done.done():
            return
        self.loop.forget_fd(self.fd)
        os.close(self.fd)
        if not self.data:
            self.done.set_exception(StartFailed(error))
            return
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass
        except OSError as exc:
            self.done.set_exception(StartFailed(f"remove {self.path}: {exc.strerror}"))
            return
        self.done.set_result(None)
