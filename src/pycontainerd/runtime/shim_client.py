"""The daemon's end of its shim fork server, and the exit file a shim leaves in a bundle.

Our shims are forked by a *launcher*: one pre-imported ``pycontainerd-shim-runc-v2 launcher``
process per daemon, started on first use and re-spawned if it died.  ``start_v2`` asks it
for a runtime v2 shim for a bundle (what ``containerd-shim-pyrunc-v2 start`` does, without
an interpreter's start-up: a fork takes a few ms, and the shims share the launcher's
pages); the daemon then speaks task.v2 over ttrpc to it (``runtime.v2.TaskShim``).  The
launcher exits when the daemon closes its end of the control socket (``protocol`` frames);
shims do not depend on it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import struct
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pycontainerd import errdefs
from pycontainerd.shim import protocol

_HEADER = struct.Struct(">I")


@dataclass
class ExitInfo:
    pid: int
    exit_status: int
    exited_at_ns: int


def read_exit(bundle: Path, exec_id: str = "") -> ExitInfo | None:
    """The exit the shim recorded in the bundle (``None`` if it recorded none)."""
    name = f"exec-{exec_id}.exit" if exec_id else "init.exit"
    try:
        data = json.loads((Path(bundle) / name).read_bytes())
    except (OSError, ValueError):
        return None
    return ExitInfo(int(data["pid"]), int(data["exit_status"]), int(data["exited_at_ns"]))


async def _read_frame(reader: asyncio.StreamReader) -> dict[str, Any]:
    header = await reader.readexactly(4)
    (size,) = _HEADER.unpack(header)
    if size > protocol.MAX_FRAME:
        raise protocol.ProtocolError(f"frame of {size} bytes exceeds the limit")
    body = await reader.readexactly(size)
    msg = json.loads(body)
    if not isinstance(msg, dict):
        raise protocol.ProtocolError("frame is not a JSON object")
    return msg


def _raise_error(err: Any) -> None:
    if not isinstance(err, dict):
        raise errdefs.Unknown(f"malformed error reply {err!r}")
    raise errdefs.from_code(str(err.get("code", "UNKNOWN")), str(err.get("message", "")))


def _python_env() -> dict[str, str]:
    env = dict(os.environ)
    src = str(Path(__file__).resolve().parents[2])  # the directory holding ``pycontainerd``
    parts = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    if src not in parts:
        env["PYTHONPATH"] = os.pathsep.join([src, *parts])
    return env


def _spawn_launcher(argv: list[str], control: socket.socket) -> subprocess.Popen[bytes]:
    """In a worker thread: start the launcher with ``control`` as its stdin (closed here, once
    the child has its copy).  Not the event loop's subprocess support: under uvloop that forks
    the whole daemon on the loop's thread and passes the daemon's inheritable descriptors on
    (``threads.run_process`` says more); ``Popen`` uses ``vfork`` and ``close_fds``."""
    try:
        return subprocess.Popen(argv, stdin=control.fileno(), stdout=subprocess.DEVNULL, start_new_session=True,
                                env=_python_env(), close_fds=True)
    finally:
        control.close()


class ShimLauncher:
    """The pre-imported fork server the shims are launched from (one per daemon)."""

    def __init__(self, python: str = sys.executable, owner: str = "") -> None:
        self.python = python
        # named on the launcher's command line, which every forked shim inherits, so an
        # operator (or a test's cleanup) can tell which daemon's state dir a shim belongs to
        self.owner = owner
        self._proc: subprocess.Popen[bytes] | None = None
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._lock = asyncio.Lock()
        self._next_id = 0

    @property
    def pid(self) -> int:
        return self._proc.pid if self._proc is not None else 0

    def _alive(self) -> bool:
        return (
            self._proc is not None
            and self._proc.poll() is None
            and self._writer is not None
            and not self._writer.is_closing()
        )

    async def start(self) -> None:
        """Start the launcher if it is not running (idempotent)."""
        if self._alive():
            return
        await self._stop()
        parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        argv = [self.python, "-s", "-m", "pycontainerd.shim.main", "launcher",
                *(["--owner", self.owner] if self.owner else [])]
        try:
            self._proc = await asyncio.to_thread(_spawn_launcher, argv, child)
        except BaseException:
            parent.close()  # a launcher started meanwhile exits at EOF (Popen reaps it later)
            raise
        self._reader, self._writer = await asyncio.open_unix_connection(sock=parent)

    async def start_v2(self, params: dict[str, Any]) -> tuple[str, int]:
        """Start a runtime v2 shim (task.v2 over ttrpc) for a bundle: params ``namespace``,
        ``id``, ``bundle``, ``address`` (the daemon's), ``ttrpc_address`` (events),
        ``options`` (runc options by field name), ``debug``; returns its address and pid."""
        result = await self._request("start_v2", params, on_abandoned=_stop_unused_shim)
        return str(result["address"]), int(result["pid"])

    async def _request(
        self, method: str, params: dict[str, Any], on_abandoned: Callable[[dict[str, Any]], None] | None = None
    ) -> dict[str, Any]:
        """One request, answered in order.  A caller cancelled meanwhile (its client went away)
        does not cancel the exchange: its reply is still read (or the next caller would get
        it), and handed to ``on_abandoned`` (a shim nobody will use)."""
        exchange = asyncio.ensure_future(self._exchange(method, params))
        try:
            return await asyncio.shield(exchange)
        except asyncio.CancelledError:
            if on_abandoned is not None:

                def done(fut: asyncio.Future[dict[str, Any]]) -> None:
                    if not fut.cancelled() and fut.exception() is None:
                        on_abandoned(fut.result())

                exchange.add_done_callback(done)
            raise

    async def _exchange(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        async with self._lock:
            for attempt in (1, 2):
                await self.start()
                assert self._reader is not None
                assert self._writer is not None
                self._next_id += 1
                try:
                    self._writer.write(protocol.request(self._next_id, method, params))
                    await self._writer.drain()
                    msg = await _read_frame(self._reader)
                    while msg.get("id") != self._next_id:  # never happens unless out of sync: resync
                        msg = await _read_frame(self._reader)
                except (ConnectionError, asyncio.IncompleteReadError, protocol.ProtocolError) as exc:
                    await self._stop()
                    if attempt == 2:
                        raise errdefs.Unavailable(f"shim launcher died: {exc}") from exc
                    continue
                if "error" in msg:
                    _raise_error(msg["error"])
                result = msg.get("result")
                if not isinstance(result, dict):
                    raise errdefs.Unknown(f"shim launcher: malformed {method} reply")
                return result
        raise errdefs.Unavailable("shim launcher unavailable")

    async def _stop(self) -> None:
        if self._writer is not None:
            self._writer.close()
            with contextlib.suppress(Exception):
                await self._writer.wait_closed()
        self._writer = self._reader = None
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            # it exits on EOF of its control socket; make sure it does not linger
            try:
                await asyncio.to_thread(proc.wait, 2.0)
            except subprocess.TimeoutExpired:
                proc.kill()
                await asyncio.to_thread(proc.wait)

    async def close(self) -> None:
        async with self._lock:
            await self._stop()


def _stop_unused_shim(result: dict[str, Any]) -> None:
    """A shim the launcher forked for a create whose caller went away: nobody will use it."""
    if not result.get("forked"):
        return  # the running shim of the container's group: not ours to stop
    with contextlib.suppress(OSError, ValueError):
        os.kill(int(result["pid"]), 9)
    with contextlib.suppress(OSError):
        os.unlink(str(result.get("address", "")).removeprefix("unix://"))
