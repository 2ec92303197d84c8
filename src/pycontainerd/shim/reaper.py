"""Child reaping for the shim: one owner of every ``waitpid``.

The shim is a *child subreaper* (``PR_SET_CHILD_SUBREAPER``): when ``runc create`` or
``runc exec --detach`` exits, the container's init (or exec'd process) is re-parented to the
shim, which must reap it and report its exit status.  The classic trap is having two
reapers: a SIGCHLD handler calling ``waitpid(-1)`` steals the exit status of ``runc`` that a
subprocess library was about to ``waitpid(pid)`` for.  Here there is exactly one: every
child (runc invocations, logging binaries, adopted container processes) is started with
``spawn`` or adopted with ``watch``, and on SIGCHLD the reaper drains ``waitpid(-1, WNOHANG)``
and dispatches each ``(pid, status)`` to whoever watches that pid.

Exits of pids nobody watches yet are *not* kept forever (pids get reused).  An operation
that will learn a pid only after the process may already have exited (``runc exec
--detach`` returns after the exec'd process started, and it may be gone by then) opens a
*window* before starting runc: every unclaimed exit during the window is kept in it, and
``claim(window, pid)`` finds it.
"""

from __future__ import annotations

import ctypes
import os
import signal
import time
from collections.abc import Callable, Mapping, Sequence

from pycontainerd.shim.loop import Future, Loop

PR_SET_CHILD_SUBREAPER = 36
_libc = ctypes.CDLL(None, use_errno=True)
# looked up here, in the launcher, once: CDLL makes the function object on first access
_prctl = _libc.prctl

Exit = tuple[int, int]


def _environ() -> Mapping[str, str] | Mapping[bytes, bytes]:
    """This process's environment for ``posix_spawn``: ``os.environ``'s own dict of bytes
    (what it reads and writes on POSIX, so always current), which ``posix_spawn`` takes as
    it is, where ``os.environ`` itself would run its Python per variable (decoding each key
    and value) in every spawn: code and allocations that cost every shim ~14 pages."""
    data = getattr(os.environ, "_data", None)
    return data if isinstance(data, dict) else os.environ  # (waitpid status, exited_at_ns)


def set_subreaper() -> None:
    if _prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"prctl(PR_SET_CHILD_SUBREAPER): {os.strerror(err)}")


class Reaper:
    def __init__(self, loop: Loop) -> None:
        self._loop = loop
        self._watchers: dict[int, list[Callable[[int, int], None]]] = {}
        self._windows: list[dict[int, Exit]] = []
        loop.add_signal_handler(signal.SIGCHLD, self.reap)

    def reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            self._dispatch(pid, status, time.time_ns())

    def _dispatch(self, pid: int, status: int, at_ns: int) -> None:
        watchers = self._watchers.pop(pid, None)
        if watchers:
            for cb in watchers:
                try:
                    cb(status, at_ns)
                except Exception as exc:
                    self._loop.report(f"exit callback for pid {pid}", exc)
            return
        for window in self._windows:
            window[pid] = (status, at_ns)

    def watch(self, pid: int, cb: Callable[[int, int], None]) -> None:
        """Call ``cb(status, exited_at_ns)`` when child ``pid`` exits."""
        self._watchers.setdefault(pid, []).append(cb)

    def exited(self, pid: int) -> Future[Exit]:
        fut: Future[Exit] = Future()
        self.watch(pid, lambda status, at: fut.set_result((status, at)))
        return fut

    def open_window(self) -> dict[int, Exit]:
        window: dict[int, Exit] = {}
        self._windows.append(window)
        return window

    def close_window(self, window: dict[int, Exit]) -> None:
        if window in self._windows:
            self._windows.remove(window)

    def adopt(self, window: dict[int, Exit], pid: int, cb: Callable[[int, int], None]) -> None:
        """Watch ``pid``, a process that was re-parented to us while ``window`` was open."""
        if pid in window:
            status, at = window.pop(pid)
            self._loop.call_soon(lambda: cb(status, at))
            return
        self.watch(pid, cb)
        if not _is_our_child(pid):
            # Not re-parented to us (the runtime may be a subreaper itself): we cannot
            # waitpid it, so fall back to a pidfd and an unknown exit status.
            self._watchers.pop(pid, None)
            self._watch_foreign(pid, cb)

    def _watch_foreign(self, pid: int, cb: Callable[[int, int], None]) -> None:
        try:
            pidfd = os.pidfd_open(pid)
        except ProcessLookupError:
            self._loop.call_soon(lambda: cb(255 << 8, time.time_ns()))
            return

        def gone() -> None:
            self._loop.forget_fd(pidfd)
            os.close(pidfd)
            cb(255 << 8, time.time_ns())

        self._loop.add_reader(pidfd, gone)

    def spawn(
        self,
        argv: Sequence[str],
        *,
        stdin: int | None = None,
        stdout: int | None = None,
        stderr: int | None = None,
        extra_fds: Sequence[int] = (),
        env: dict[str, str] | None = None,
        on_exit: Callable[[int, int], None] | None = None,
    ) -> int:
        """Start ``argv`` (posix_spawn: vfork speed) with the given fds as 0/1/2 (and
        ``extra_fds`` as 3, 4, ...; ``None`` means /dev/null); its exit goes to ``on_exit``.
        Must be called from the loop, so the SIGCHLD drain cannot run before ``watch``."""
        wanted = [stdin, stdout, stderr, *extra_fds]
        to_close: list[int] = []
        try:
            devnull = -1
            if any(fd is None for fd in wanted):
                devnull = os.open("/dev/null", os.O_RDWR | os.O_CLOEXEC)
                to_close.append(devnull)
            # Sources inside the target range are dup'ed above it first, so that one dup2
            # cannot clobber the source of a later one.
            actions: list[tuple[int, ...]] = []
            for target, fd in enumerate(wanted):
                src = devnull if fd is None else fd
                if src < len(wanted):
                    src = os.dup(src)
                    to_close.append(src)
                actions.append((os.POSIX_SPAWN_DUP2, src, target))
            pid = os.posix_spawnp(
                argv[0],
                list(argv),
                env if env is not None else _environ(),
                file_actions=actions,
                setsigdef=(signal.SIGPIPE, signal.SIGXFSZ, signal.SIGCHLD, signal.SIGINT, signal.SIGTERM),
                setsigmask=(),
            )
        finally:
            for fd in to_close:
                os.close(fd)
        if on_exit is not None:
            self.watch(pid, on_exit)
        else:
            self.watch(pid, lambda status, at: None)
        return pid


def _is_our_child(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        # Already gone: if it was ours it is a zombie (stat still readable) — so it was not.
        return False
    # field 4 (ppid) follows the ")" that ends the command name
    fields = stat[stat.rindex(b")") + 2 :].split()
    return int(fields[1]) == os.getpid()
