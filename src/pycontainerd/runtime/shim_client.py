"""The daemon's side of the shim protocol (see ``pycontainerd.shim.protocol``).

``ShimClient.launch`` starts one shim per container; ``ShimClient.connect`` finds it again
after a daemon restart (the shim writes ``<bundle>/address``).  Every call is one request
frame; replies are matched by id, so calls may overlap (a ``wait`` stays pending while
``kill`` goes through).  Error replies come back as the errdefs kind the shim raised.  A
shim that goes away fails the calls in flight with ``Unavailable``.

Shims are forked by a *launcher*: one pre-imported ``pycontainerd-shim-runc-v2 launcher``
process per daemon, started on first use (or by ``ShimLauncher.start``/``prestart``) and
re-spawned if it died.  Forking a warm launcher takes ~1-2 ms instead of ~80 ms for a fresh
interpreter, and the shims share its pages.  The launcher exits when the daemon closes its
end of the control socket; shims do not depend on it.

Sockets live at ``<state_dir>/s/<sha256(state_dir/ns/id)[:32]>`` (a filesystem path, mode
0600 — never an abstract socket, CVE-2020-15257); if that path would exceed the 107-byte
unix socket limit they go to ``/run/pycontainerd/s/`` instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import socket
import struct
import sys
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pycontainerd import errdefs
from pycontainerd.shim import protocol

EVENT_QUEUE_LIMIT = 1024
_HEADER = struct.Struct(">I")
_FALLBACK_SOCKET_DIR = "/run/pycontainerd/s"
_SOCKET_PATH_LIMIT = 100  # leaves room for the console sockets' ".cN" suffix within 107


@dataclass
class ExitInfo:
    pid: int
    exit_status: int
    exited_at_ns: int


@dataclass
class ProcessState:
    id: str
    pid: int
    status: str  # "created" | "running" | "paused" | "pausing" | "stopped" | "unknown"
    stdin: str
    stdout: str
    stderr: str
    terminal: bool
    exit_status: int
    exited_at_ns: int


@dataclass
class ProcessInfo:
    pid: int
    exec_id: str  # "" for processes not started by exec


def socket_path(state_dir: Path, namespace: str, container_id: str) -> str:
    digest = hashlib.sha256(f"{state_dir}/{namespace}/{container_id}".encode()).hexdigest()[:32]
    path = os.path.join(state_dir, "s", digest)
    if len(path) > _SOCKET_PATH_LIMIT:
        path = os.path.join(_FALLBACK_SOCKET_DIR, digest)
    return path


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


class ShimLauncher:
    """The pre-imported fork server the shims are launched from (one per daemon)."""

    def __init__(self, python: str = sys.executable, owner: str = "") -> None:
        self.python = python
        # named on the launcher's command line, which every forked shim inherits, so an
        # operator (or a test's cleanup) can tell which daemon's state dir a shim belongs to
        self.owner = owner
        self._proc: asyncio.subprocess.Process | None = None
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
            and self._proc.returncode is None
            and self._writer is not None
            and not self._writer.is_closing()
        )

    async def start(self) -> None:
        """Start the launcher if it is not running (idempotent)."""
        if self._alive():
            return
        await self._stop()
        parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            self._proc = await asyncio.create_subprocess_exec(
                self.python,
                "-s",
                "-m",
                "pycontainerd.shim.main",
                "launcher",
                *(["--owner", self.owner] if self.owner else []),
                stdin=child.fileno(),
                stdout=asyncio.subprocess.DEVNULL,
                start_new_session=True,
                env=_python_env(),
            )
        except BaseException:
            parent.close()
            raise
        finally:
            child.close()
        self._reader, self._writer = await asyncio.open_unix_connection(sock=parent)

    async def launch(self, params: dict[str, Any]) -> int:
        """Fork a shim; returns its pid once its socket accepts connections."""
        return int((await self._request("launch", params))["pid"])

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
        if proc is not None and proc.returncode is None:
            # it exits on EOF of its control socket; make sure it does not linger
            try:
                await asyncio.wait_for(proc.wait(), 2.0)
            except TimeoutError:
                proc.kill()
                await proc.wait()

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


_default_launcher: ShimLauncher | None = None


def default_launcher() -> ShimLauncher:
    """The launcher ``ShimClient.launch`` uses unless given one (created lazily)."""
    global _default_launcher
    if _default_launcher is None:
        _default_launcher = ShimLauncher()
    return _default_launcher


class ShimClient:
    """A connection to one container's shim."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, address: str, pid: int) -> None:
        self.address = address
        self.pid = pid
        self._reader = reader
        self._writer = writer
        self._pending: dict[int, asyncio.Future[Any]] = {}
        self._next_id = 0
        self._events: deque[tuple[str, dict[str, Any]] | None] = deque()
        self._event_signal = asyncio.Event()
        self._closed = False
        self._read_task = asyncio.get_running_loop().create_task(self._read_loop())

    # -- lifecycle --------------------------------------------------------------------------
    @classmethod
    async def launch(
        cls,
        *,
        namespace: str,
        container_id: str,
        bundle: Path,
        state_dir: Path,
        runtime_binary: str = "runc",
        runtime_root: str | None = None,
        systemd_cgroup: bool = False,
        debug: bool = False,
        launcher: ShimLauncher | None = None,
    ) -> ShimClient:
        """Start the shim for a container whose bundle (with config.json) exists."""
        path = socket_path(Path(state_dir), namespace, container_id)
        params = {
            "namespace": namespace,
            "id": container_id,
            "bundle": str(bundle),
            "socket": path,
            "runtime": runtime_binary,
            "runtime_root": runtime_root or "",
            "systemd_cgroup": systemd_cgroup,
            "debug": debug,
        }
        pid = await (launcher or default_launcher()).launch(params)
        return await cls._open(path, pid)

    @classmethod
    async def connect(cls, bundle: Path) -> ShimClient:
        """Reconnect to the shim of ``bundle`` (after a daemon restart); NotFound if gone."""
        try:
            address = (Path(bundle) / "address").read_text().strip()
        except FileNotFoundError as exc:
            raise errdefs.NotFound(f"no shim address in bundle {bundle}") from exc
        path = address.removeprefix("unix://")
        client = await cls._open(path, 0)
        try:
            info = await client._call("connect", {})
        except BaseException:
            await client.close()
            raise
        client.pid = int(info["pid"])
        return client

    @classmethod
    async def _open(cls, path: str, pid: int) -> ShimClient:
        try:
            reader, writer = await asyncio.open_unix_connection(path)
        except (FileNotFoundError, ConnectionRefusedError) as exc:
            raise errdefs.NotFound(f"shim at {path} is gone: {exc}") from exc
        except OSError as exc:
            raise errdefs.from_oserror(exc, f"connect to shim {path}") from exc
        client = cls(reader, writer, f"unix://{path}", pid)
        sub = client._send("subscribe", {})  # the reply is not awaited; events start flowing
        sub.add_done_callback(lambda f: f.cancelled() or f.exception())
        return client

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._writer.close()
        with contextlib.suppress(Exception):
            await self._writer.wait_closed()
        self._read_task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await self._read_task
        self._fail_pending(errdefs.Unavailable("shim client closed"))

    @staticmethod
    async def cleanup(
        *,
        namespace: str,
        container_id: str,
        bundle: Path,
        runtime_binary: str = "runc",
        runtime_root: str | None = None,
    ) -> ExitInfo:
        """After the shim died: ``runc delete --force``, unmount ``<bundle>/rootfs`` and
        return the exit the shim recorded (exit status 255 if it recorded none)."""
        args = ["--namespace", namespace, "--id", container_id, "--bundle", str(bundle), "--runtime", runtime_binary]
        if runtime_root:
            args += ["--runtime-root", runtime_root]
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-s",
            "-m",
            "pycontainerd.shim.main",
            "delete",
            *args,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=_python_env(),
        )
        out, err = await proc.communicate()
        if proc.returncode != 0:
            raise errdefs.Unknown(f"shim cleanup failed: {err.decode(errors='replace').strip()}")
        data = json.loads(out)
        return ExitInfo(int(data["pid"]), int(data["exit_status"]), int(data["exited_at_ns"]))

    # -- plumbing ---------------------------------------------------------------------------
    def _send(self, method: str, params: dict[str, Any]) -> asyncio.Future[Any]:
        if self._closed or self._read_task.done():
            raise errdefs.Unavailable(f"shim {self.address} connection is closed")
        self._next_id += 1
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending[self._next_id] = fut
        self._writer.write(protocol.request(self._next_id, method, params))
        return fut

    async def _call(self, method: str, params: dict[str, Any]) -> Any:
        fut = self._send(method, params)
        try:
            await self._writer.drain()
        except ConnectionError as exc:
            raise errdefs.Unavailable(f"shim {self.address}: {exc}") from exc
        return await fut

    async def _read_loop(self) -> None:
        error: errdefs.ContainerdError = errdefs.Unavailable(f"shim {self.address} closed the connection")
        try:
            while True:
                msg = await _read_frame(self._reader)
                if "event" in msg:
                    ev = msg["event"]
                    self._push_event((str(ev.get("topic", "")), dict(ev.get("payload") or {})))
                    continue
                fut = self._pending.pop(msg.get("id", -1), None)
                if fut is None or fut.done():
                    continue
                if "error" in msg:
                    try:
                        _raise_error(msg["error"])
                    except errdefs.ContainerdError as exc:
                        fut.set_exception(exc)
                else:
                    fut.set_result(msg.get("result"))
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        except protocol.ProtocolError as exc:
            error = errdefs.Unknown(f"shim {self.address} sent a bad frame: {exc}")
        finally:
            self._fail_pending(error)
            self._push_event(None)

    def _fail_pending(self, exc: errdefs.ContainerdError) -> None:
        pending, self._pending = self._pending, {}
        for fut in pending.values():
            if not fut.done():
                fut.set_exception(exc)

    def _push_event(self, item: tuple[str, dict[str, Any]] | None) -> None:
        self._events.append(item)
        while len(self._events) > EVENT_QUEUE_LIMIT:
            self._events.popleft()
        self._event_signal.set()

    async def events(self) -> AsyncIterator[tuple[str, dict[str, Any]]]:
        """Events pushed by the shim, ``(topic, payload)``; ends when the connection does."""
        while True:
            while not self._events:
                self._event_signal.clear()
                await self._event_signal.wait()
            item = self._events.popleft()
            if item is None:
                self._events.appendleft(None)  # keep the end marker for other readers
                return
            yield item

    # -- task API ---------------------------------------------------------------------------
    async def create(
        self,
        *,
        rootfs: list[dict[str, Any]],
        stdin: str,
        stdout: str,
        stderr: str,
        terminal: bool,
        options: dict[str, Any] | None = None,
    ) -> int:
        params = {
            "rootfs": rootfs,
            "stdin": stdin,
            "stdout": stdout,
            "stderr": stderr,
            "terminal": terminal,
            "options": options or {},
        }
        result = await self._call("create", params)
        return int(result["pid"])

    async def start(self, exec_id: str = "") -> int:
        return int((await self._call("start", {"exec_id": exec_id}))["pid"])

    async def delete(self, exec_id: str = "") -> ExitInfo:
        r = await self._call("delete", {"exec_id": exec_id})
        return ExitInfo(int(r["pid"]), int(r["exit_status"]), int(r["exited_at_ns"]))

    async def exec(
        self, exec_id: str, spec: dict[str, Any], *, stdin: str, stdout: str, stderr: str, terminal: bool
    ) -> None:
        params = {
            "exec_id": exec_id,
            "spec": spec,
            "stdin": stdin,
            "stdout": stdout,
            "stderr": stderr,
            "terminal": terminal,
        }
        await self._call("exec", params)

    async def kill(self, exec_id: str, signal: int, all: bool = False) -> None:
        await self._call("kill", {"exec_id": exec_id, "signal": int(signal), "all": all})

    async def state(self, exec_id: str = "") -> ProcessState:
        r = await self._call("state", {"exec_id": exec_id})
        return ProcessState(
            id=str(r["id"]),
            pid=int(r["pid"]),
            status=str(r["status"]),
            stdin=str(r["stdin"]),
            stdout=str(r["stdout"]),
            stderr=str(r["stderr"]),
            terminal=bool(r["terminal"]),
            exit_status=int(r["exit_status"]),
            exited_at_ns=int(r["exited_at_ns"]),
        )

    async def pids(self) -> list[ProcessInfo]:
        r = await self._call("pids", {})
        return [ProcessInfo(int(p["pid"]), str(p.get("exec_id") or "")) for p in r["processes"]]

    async def pause(self) -> None:
        await self._call("pause", {})

    async def resume(self) -> None:
        await self._call("resume", {})

    async def resize_pty(self, exec_id: str, width: int, height: int) -> None:
        await self._call("resize_pty", {"exec_id": exec_id, "width": width, "height": height})

    async def close_io(self, exec_id: str, stdin: bool = True) -> None:
        await self._call("close_io", {"exec_id": exec_id, "stdin": stdin})

    async def update(self, resources: dict[str, Any]) -> None:
        await self._call("update", {"resources": resources})

    async def stats(self) -> dict[str, Any]:
        """runc's ``events --stats`` data for the container (cgroup metrics)."""
        result: dict[str, Any] = await self._call("stats", {})
        return result

    async def wait(self, exec_id: str = "") -> ExitInfo:
        r = await self._call("wait", {"exec_id": exec_id})
        return ExitInfo(int(r["pid"]), int(r["exit_status"]), int(r["exited_at_ns"]))

    async def shutdown(self) -> None:
        """Ask the shim to exit; it does only once no process is left (after delete)."""
        try:
            await self._call("shutdown", {})
        except errdefs.Unavailable:
            pass  # it exited before or right after answering
