"""The debug socket (``[debug] address``): pprof endpoints and ``/debug/vars``, as containerd's.

Paths are the ones ``ctr pprof`` requests: ``/debug/pprof/goroutine``, ``heap``,
``profile?seconds=N``, ``block``, ``threadcreate``, ``trace``.  With ``debug=1``/``2`` the
answer is text a person reads, without it the gzipped pprof protobuf that ``go tool
pprof`` opens.  ``block``, ``threadcreate`` and ``trace`` answer 501 saying why (Python has
no blocking-event, thread-creation or scheduler-trace hooks to build them from).
``/debug/vars`` is JSON like Go's expvar: uptime, tasks, shims, open fds, database size,
event subscribers, the Python version and memory.

The socket is a unix socket, mode 0600 and owned by root unless ``[debug] uid``/``gid``
say otherwise (then 0660, that owner and group): a profile shows every thread's stack and
``/debug/vars`` the daemon's innards, so other users are kept out by the kernel.

The server runs in its own thread and event loop (``DebugServer``), so it answers while the
main loop is stuck.  The SIGUSR1 dump (``dump_stacks``) writes the same goroutine text to the log and to
``<state>/pycontainerd.<time>.stacks.log``, then the daemon goes on serving.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import resource
import socket
import sys
import threading
import time
from pathlib import Path
from typing import Any

from .. import __version__, errdefs, fsmodes
from .http import BadRequest, HTTPServer, Request, Response, text

log = logging.getLogger("pycontainerd.debug")

PROFILE_CT = "application/octet-stream"

_UNSUPPORTED = {
    "block": "the block profile needs the runtime to record where threads wait on locks and channels; "
             "CPython keeps no such record (see /debug/pprof/goroutine?debug=2 for where everything waits now)",
    "mutex": "the mutex profile needs lock-contention hooks that CPython does not have",
    "threadcreate": "CPython keeps no stack of where each thread was created; "
                    "/debug/pprof/goroutine lists every thread by name",
    "trace": "a Go execution trace records the Go scheduler; a Python process has none to record "
             "(use /debug/pprof/profile for CPU time per stack)",
    "allocs": "allocation sampling since start-up is not recorded; /debug/pprof/heap gives live allocations",
}


def _debug_level(req: Request) -> int:
    raw = req.arg("debug", "0") or "0"
    try:
        return int(raw)
    except ValueError:
        raise BadRequest(400, f"debug={raw[:20]!r}: expected an integer") from None


def _seconds(req: Request, default: float) -> float:
    from . import pprof

    raw = req.arg("seconds", "")
    if not raw:
        return default
    try:
        value = float(raw.rstrip("s"))
    except ValueError:
        raise BadRequest(400, f"seconds={raw[:20]!r}: expected a number") from None
    if not 0 < value <= pprof.MAX_PROFILE_SECONDS:
        raise BadRequest(400, f"seconds={raw[:20]!r}: must be in (0, {pprof.MAX_PROFILE_SECONDS:g}]")
    return value


def open_fds() -> int:
    try:
        return len(os.listdir("/proc/self/fd"))
    except OSError:
        return -1


def _rss_bytes() -> int:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def daemon_vars(daemon: Any, started: float, loop: asyncio.AbstractEventLoop | None = None) -> dict[str, Any]:
    """The numbers ``/debug/vars`` shows (cheap: no I/O beyond /proc and one stat)."""
    from ..plugin import types

    tasks = shims = 0
    try:
        manager = daemon.plugins.get(types.RUNTIME_V2, "task")
    except errdefs.NotFound:  # no runtime plugin (disabled, failed): the rest still answers
        manager = None
    if manager is not None:
        running = manager.running_tasks()
        tasks = len(running)
        shims = len({r.shim_pid for r in running if r.shim_pid})
    db_size = 0
    for suffix in ("", "-wal"):
        try:
            db_size += os.stat(str(daemon.db.path) + suffix).st_size
        except (OSError, AttributeError):
            pass
    ru = resource.getrusage(resource.RUSAGE_SELF)
    cfg = daemon.config
    metrics = getattr(getattr(daemon, "ops", None), "metrics", None)
    bound = metrics.addresses[0] if metrics is not None and metrics.addresses else None
    return {
        "config_file": cfg.source or "",
        "root": str(cfg.root),
        "state": str(cfg.state),
        "address": str(daemon.address),
        "metrics_address": f"{bound[0]}:{bound[1]}" if bound else "",
        "version": __version__,
        "python": sys.version.split()[0],
        "pid": os.getpid(),
        "uptime_seconds": round(time.monotonic() - started, 3),
        "tasks": tasks,
        "shims": shims,
        "open_fds": open_fds(),
        "db_size_bytes": db_size,
        "event_subscribers": daemon.exchange.subscriber_count,
        "threads": len(sys._current_frames()),
        "asyncio_tasks": len(asyncio.all_tasks(loop)),
        "rss_bytes": _rss_bytes(),
        "cpu_user_seconds": ru.ru_utime,
        "cpu_system_seconds": ru.ru_stime,
        "cmdline": sys.argv,
    }


class DebugServer:
    """Serves the debug socket from its own thread and event loop.

    A stuck daemon is when the debug socket matters most, and a stuck daemon is usually a
    busy or blocked main loop: on that loop the socket would not answer.  In its own thread
    it does (Python hands the GIL over every few milliseconds even to a busy loop), and the
    goroutine dump shows where the main loop is.  Handlers only read the daemon's state.
    """

    def __init__(self, daemon: Any, address: str, *, uid: int = 0, gid: int = 0) -> None:
        self.daemon = daemon
        self.address = address
        self.uid = uid
        self.gid = gid
        self.started = time.monotonic()
        self.main_loop: asyncio.AbstractEventLoop | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._profiling: asyncio.Lock | None = None
        self.http = HTTPServer({
            "/debug/vars": self._vars,
            "/debug/pprof/": self._pprof,
            "/debug/pprof": self._index,
        }, name="debug server")

    async def start(self) -> None:
        self.main_loop = asyncio.get_running_loop()
        sock = await asyncio.to_thread(self._bind)
        ready = threading.Event()
        failure: list[BaseException] = []

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            try:
                self._profiling = asyncio.Lock()
                loop.run_until_complete(self.http.start_unix(sock=sock))
            except BaseException as exc:
                failure.append(exc)
                ready.set()
                loop.close()
                return
            ready.set()
            try:
                loop.run_forever()
            finally:
                loop.run_until_complete(loop.shutdown_default_executor())
                loop.close()

        self._thread = threading.Thread(target=run, name="debug-server", daemon=True)
        self._thread.start()
        await asyncio.to_thread(ready.wait)
        if failure:
            sock.close()
            raise failure[0]
        log.info("debug server listening on %s", self.address)

    def _bind(self) -> socket.socket:
        path = Path(self.address)
        if not path.parent.exists():
            fsmodes.top_dir(path.parent)
        if path.is_socket() or path.is_symlink():
            path.unlink()
        elif path.exists():
            raise FileExistsError(f"debug address {path} exists and is not a socket")
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            # no umask games (the umask is the whole process'): a fresh socket nobody else may
            # write to (connect needs write permission) is made 0600 before it listens
            sock.bind(str(path))
            os.chmod(path, 0o660 if (self.uid or self.gid) else 0o600)
            if self.uid or self.gid:
                os.chown(path, self.uid or -1, self.gid or -1)
        except BaseException:
            sock.close()
            raise
        return sock

    async def close(self) -> None:
        loop, thread = self._loop, self._thread
        if loop is not None and thread is not None and thread.is_alive():
            fut = asyncio.run_coroutine_threadsafe(self.http.close(), loop)
            try:
                await asyncio.wait_for(asyncio.wrap_future(fut), 5)
            except Exception:
                log.warning("debug server: closing took too long")
            loop.call_soon_threadsafe(loop.stop)
            await asyncio.to_thread(thread.join, 5)
        self._loop = self._thread = None
        await asyncio.to_thread(self._remove_socket)

    def _remove_socket(self) -> None:
        try:
            if Path(self.address).is_socket():
                os.unlink(self.address)
        except OSError:
            pass

    # -- handlers -------------------------------------------------------------------------------
    async def _vars(self, req: Request) -> Response:
        body = json.dumps(daemon_vars(self.daemon, self.started, self.main_loop), indent=2, sort_keys=True)
        return Response(200, body.encode() + b"\n", "application/json; charset=utf-8")

    async def _index(self, req: Request) -> Response:
        names = ["goroutine", "heap", "profile", *sorted(_UNSUPPORTED)]
        return text(200, "pycontainerd pprof endpoints:\n" + "\n".join(f"  /debug/pprof/{n}" for n in names))

    async def _pprof(self, req: Request) -> Response:
        name = req.path[len("/debug/pprof/"):]
        if name == "":
            return await self._index(req)
        if name in ("goroutine", "goroutines"):
            return self.goroutine(_debug_level(req))
        if name == "heap":
            return await self._heap(_debug_level(req))
        if name == "profile":
            return await self._profile(_seconds(req, 30.0), _debug_level(req))
        if name in _UNSUPPORTED:
            return text(501, f"/debug/pprof/{name} is not available in pycontainerd: {_UNSUPPORTED[name]}")
        return text(404, f"unknown profile {name!r}")

    def goroutine(self, debug: int) -> Response:
        from . import stacks  # the stack walker and pprof builder at the first dump (W6, idle PSS)

        entries = stacks.all_entries(self.main_loop)
        if debug > 0:
            return text(200, stacks.text(entries, debug))
        return Response(200, stacks.profile(entries), PROFILE_CT)

    async def _heap(self, debug: int) -> Response:
        from . import pprof

        assert self._profiling is not None
        async with self._profiling:
            started = pprof.heap_start()
            if started:
                log.info("tracemalloc started for the heap profile (it stays on until the daemon stops)")
            b, rows = await asyncio.to_thread(pprof.heap_profile)
        if debug > 0:
            return text(200, pprof.heap_text(rows, started))
        return Response(200, await asyncio.to_thread(b.encode), PROFILE_CT)

    async def _profile(self, seconds: float, debug: int) -> Response:
        from . import pprof

        assert self._profiling is not None
        if self._profiling.locked():
            return text(503, "another profile is being taken; retry when it is done")
        async with self._profiling:
            b, per_thread = await asyncio.to_thread(pprof.cpu_profile, seconds)
        if debug > 0:
            return text(200, pprof.cpu_text(b, per_thread, seconds))
        return Response(200, await asyncio.to_thread(b.encode), PROFILE_CT)


def dump_stacks(state_dir: Path, loop: asyncio.AbstractEventLoop | None = None) -> Path | None:
    """SIGUSR1: every thread's and task's stack to the log and to a file under the state dir."""
    from . import stacks  # at the first dump (W6, idle PSS); pprof (tracemalloc, the CPU sampler) at the first profile

    body = stacks.text(stacks.all_entries(loop), 2)
    log.info("=== BEGIN stack dump (SIGUSR1) ===\n%s=== END stack dump ===", body)
    name = f"pycontainerd.{time.strftime('%Y%m%dT%H%M%S')}.{time.time_ns() % 10**9:09d}.stacks.log"
    path = state_dir / name
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, fsmodes.PRIVATE_FILE)
        with os.fdopen(fd, "w") as f:
            f.write(body)
    except OSError as exc:
        log.warning("stack dump: cannot write %s: %s", path, exc)
        return None
    log.info("stack dump written to %s", path)
    return path
