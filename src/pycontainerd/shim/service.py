"""The shim's task logic: one container (its init process) and its exec'd processes.

Every method is a coroutine on the shim loop taking the request's params and returning the
result dict; ``taskv2`` translates the task.v2 requests into them.  State checks come from the pure table in
``process``; the I/O is runc (``runc``), stdio (``io``), mounts (``mount``) and reaping
(``reaper``).

Exits: the reaper calls ``_on_exit`` with the waitpid status.  The exit is recorded at once
(state becomes stopped, ``<bundle>/init.exit`` or ``exec-<id>.exit`` is written atomically),
then — once the process's output has drained (bounded by ``DRAIN_TIMEOUT``) — pending
``wait`` calls are answered and ``/tasks/exit`` is published.  An exit that arrives while
``start`` is still waiting for runc is held back until ``start`` has recorded the running
state, so the transitions are always created -> running -> stopped.

Events go to ``event_sink`` (``taskv2``: the events ``Forwarder``, which retries while the
daemon is down).
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pycontainerd import errdefs, timestamps
from pycontainerd.mount import core as mounts
from pycontainerd.shim import process as ps
from pycontainerd.shim import protocol
from pycontainerd.shim.execfifo import FifoStart
from pycontainerd.shim.io import ProcessIO
from pycontainerd.shim.loop import Future, Loop
from pycontainerd.shim.oom import OOMWatcher
from pycontainerd.shim.reaper import Reaper
from pycontainerd.shim.runc import Runc, RuncError, is_not_exist, is_not_running, starts_by_fifo

DRAIN_TIMEOUT = 2.0
DELETE_EXIT_TIMEOUT = 5.0


@dataclass
class ShimConfig:
    namespace: str
    container_id: str
    bundle: str
    socket_path: str
    runtime_binary: str = "runc"
    runtime_root: str = ""
    systemd_cgroup: bool = False
    debug: bool = False  # the shim's -debug (not passed on to runc: see shim.runc.Runc)

    @property
    def root(self) -> str:
        return self.runtime_root or f"/run/pycontainerd/runc/{self.namespace}"


class Proc:
    """A process record plus the live handles the shim holds for it."""

    def __init__(self, record: ps.ProcessRecord) -> None:
        self.rec = record
        self.io: ProcessIO | None = None
        self.reported: Future[None] = Future()  # exit recorded, output drained, waiters may go
        self.starting = False
        self.deferred_exit: tuple[int, int] | None = None
        self.spec: dict[str, Any] | None = None
        self.close_stdin_on_start = False
        self.fifo_start: FifoStart | None = None  # the init's release, while it runs

    def exit_info(self) -> dict[str, int]:
        return {"pid": self.rec.pid, "exit_status": self.rec.exit_status, "exited_at_ns": self.rec.exited_at_ns}


def write_atomic(path: str, data: bytes) -> None:
    """Write ``path`` whole or not at all: a temp file renamed over it.

    No fsync: these are runtime-state files in the bundle (exit records, exec specs, the
    shim's address and pid).  They must survive a crash of any process — and a rename of a
    fully written file does, the data is in the page cache — but not a reboot, after which
    the containers they describe are gone anyway (a file emptied by a power cut reads as
    "no record": exit 255, as containerd reports).  Skipping the two flushes keeps ~0.5 ms
    per file off ``Create`` and off the exit -> ``Wait`` path."""
    tmp = f"{path}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
    finally:
        os.close(fd)
    os.rename(tmp, path)


def exit_file(bundle: str, exec_id: str = "") -> str:
    return os.path.join(bundle, f"exec-{exec_id}.exit" if exec_id else "init.exit")


def _read_pid(path: str) -> int:
    with open(path) as f:
        return int(f.read().strip())


def _check_exec_id(exec_id: str) -> None:
    if not exec_id or "/" in exec_id or exec_id.startswith(".") or len(exec_id) > 76:
        raise errdefs.InvalidArgument(f"invalid exec id {exec_id!r}")


class Service:
    def __init__(self, loop: Loop, reaper: Reaper, config: ShimConfig) -> None:
        self.loop = loop
        self.reaper = reaper
        self.config = config
        self.runc = Runc(
            loop,
            reaper,
            binary=config.runtime_binary,
            root=config.root,
            log_path=os.path.join(config.bundle, "log.json"),
            systemd_cgroup=config.systemd_cgroup,
        )
        self.init: Proc | None = None
        self.execs: dict[str, Proc] = {}
        self.mounted_rootfs = ""  # <bundle>/rootfs once the rootfs mounts are on it
        self.oom: OOMWatcher | None = None
        self.kill_all_on_exit = False
        self.poststart_hooks = False  # the spec has some: left to ``runc start`` (later runc runs them there)
        # set by the task.v2 (ttrpc) server: gets every event as (topic, payload)
        self.event_sink: Callable[[str, dict[str, Any]], None] | None = None
        self.exiting = False
        self.teardown: Future[None] | None = None  # runc delete running after Delete answered
        self._console_seq = 0
        self.methods = {
            "create": self.create,
            "start": self.start,
            "delete": self.delete,
            "exec": self.exec,
            "kill": self.kill,
            "state": self.state,
            "pids": self.pids,
            "pause": self.pause,
            "resume": self.resume,
            "resize_pty": self.resize_pty,
            "close_io": self.close_io,
            "update": self.update,
            "stats": self.stats,
            "wait": self.wait,
            "connect": self.connect,
            "shutdown": self.shutdown,
        }

    # -- helpers ----------------------------------------------------------------------------
    @property
    def id(self) -> str:
        return self.config.container_id

    def publish(self, topic: str, payload: dict[str, Any]) -> None:
        if self.event_sink is not None:
            self.event_sink(topic, payload)

    def _proc(self, exec_id: str) -> Proc:
        if not exec_id:
            if self.init is None:
                raise errdefs.NotFound(f"task {self.id} not found: not created")
            if self.init.rec.state == ps.DELETED:
                raise errdefs.NotFound(f"task {self.id} not found: deleted")
            return self.init
        proc = self.execs.get(exec_id)
        if proc is None:
            raise errdefs.NotFound(f"process {exec_id} not found in task {self.id}")
        return proc

    def _console_path(self) -> str:
        self._console_seq += 1
        return f"{self.config.socket_path}.c{self._console_seq}"

    def _runtime_error(self, err: RuncError, what: str) -> errdefs.ContainerdError:
        if is_not_exist(err):
            return errdefs.NotFound(f"{what}: {err.detail or err}")
        return err

    # -- exits ------------------------------------------------------------------------------
    def _on_exit(self, proc: Proc, status: int, at_ns: int) -> None:
        if proc.starting:
            proc.deferred_exit = (status, at_ns)
            if proc.fifo_start is not None:
                proc.fifo_start.init_exited()
            return
        was = proc.rec.state
        if not proc.rec.exited(ps.wait_status_to_exit_code(status), at_ns):
            return
        if proc.io is not None:
            proc.io.release_stdin()  # nobody reads it any more: no reason to hold the FIFO open
        try:
            record = {"exec_id": proc.rec.exec_id, **proc.exit_info()}
            write_atomic(exit_file(self.config.bundle, proc.rec.exec_id), json.dumps(record).encode())
        except OSError as exc:
            self.loop.report("record exit", exc)
        if proc is self.init:
            if was in (ps.PAUSED, ps.PAUSING):
                self.loop.spawn(self._quiet(self.runc.resume(self.id)))
            if self.kill_all_on_exit:
                self.loop.spawn(self._quiet(self.runc.kill(self.id, signal.SIGKILL, all=True)))
        self.loop.spawn(self._report_exit(proc))

    async def _quiet(self, coro: Any) -> None:
        try:
            await coro
        except errdefs.ContainerdError:
            pass

    async def _report_exit(self, proc: Proc) -> None:
        if proc.io is not None:
            await self.loop.wait_for(proc.io.drained, DRAIN_TIMEOUT)
        self.publish(
            protocol.TASK_EXIT,
            {
                "container_id": self.id,
                "id": proc.rec.exec_id or self.id,
                "pid": proc.rec.pid,
                "exit_status": proc.rec.exit_status,
                "exited_at": timestamps.format_ns(proc.rec.exited_at_ns),
            },
        )
        proc.reported.set_result(None)

    def _start_done(self, proc: Proc) -> None:
        proc.starting = False
        if proc.deferred_exit is not None:
            status, at = proc.deferred_exit
            proc.deferred_exit = None
            self._on_exit(proc, status, at)

    # -- methods ----------------------------------------------------------------------------
    async def connect(self, params: dict[str, Any]) -> dict[str, Any]:
        return {
            "pid": os.getpid(),
            "id": self.id,
            "namespace": self.config.namespace,
            "bundle": self.config.bundle,
        }

    async def create(self, params: dict[str, Any]) -> dict[str, Any]:
        if self.init is not None and self.init.rec.state != ps.DELETED:
            raise errdefs.AlreadyExists(f"task {self.id}: already exists")
        opts = protocol.CreateOptions.from_wire(params.get("options"))
        if opts.binary_name:
            self.runc.binary = opts.binary_name
        if opts.systemd_cgroup:
            self.runc.systemd_cgroup = True
        bundle = self.config.bundle
        try:
            # a small local file; the shim loop has nothing else to serve meanwhile
            with open(os.path.join(bundle, "config.json"), "rb") as f:  # noqa: ASYNC230
                spec = json.load(f)
        except OSError as exc:
            raise errdefs.from_oserror(exc, "read the bundle's OCI spec") from exc
        namespaces = (spec.get("linux") or {}).get("namespaces") or []
        self.kill_all_on_exit = not any(n.get("type") == "pid" and not n.get("path") for n in namespaces)
        self.poststart_hooks = bool((spec.get("hooks") or {}).get("poststart"))
        rec = ps.ProcessRecord(
            ps.INIT,
            self.id,
            stdin=str(params.get("stdin") or ""),
            stdout=str(params.get("stdout") or ""),
            stderr=str(params.get("stderr") or ""),
            terminal=bool(params.get("terminal")),
        )
        proc = Proc(rec)
        rootfs_mounts = params.get("rootfs") or []
        if rootfs_mounts:
            rootfs = os.path.join(bundle, "rootfs")
            try:
                # in the daemon's 0700 bundle; 0711 as the daemon makes it (runtime.bundle)
                os.makedirs(rootfs, mode=0o711, exist_ok=True)
            except OSError as exc:
                raise errdefs.from_oserror(exc, "mount rootfs") from exc
            mounts.mount_all([_mount(m) for m in rootfs_mounts], rootfs)  # a few syscalls; errdefs kinds
            self.mounted_rootfs = rootfs
        window = self.reaper.open_window()
        pio: ProcessIO | None = None
        try:
            pio = await ProcessIO.open(
                self.loop,
                self.reaper,
                container_id=self.id,
                namespace=self.config.namespace,
                stdin=rec.stdin,
                stdout=rec.stdout,
                stderr=rec.stderr,
                terminal=rec.terminal,
                console_path=self._console_path(),
                uid=opts.io_uid or -1,  # 0: root's already
                gid=opts.io_gid or -1,
            )
            proc.io = pio
            pid_file = os.path.join(bundle, "init.pid")
            try:
                await self.runc.create(
                    self.id,
                    bundle=bundle,
                    pid_file=pid_file,
                    stdio=pio.child,
                    console_socket=pio.console_path,
                    no_pivot=opts.no_pivot_root,
                    no_new_keyring=opts.no_new_keyring,
                )
            except RuncError as err:
                raise errdefs.Unknown(f"OCI runtime create failed: {err.detail or err}") from err
            rec.pid = _read_pid(pid_file)
            self.init = proc
            self.reaper.adopt(window, rec.pid, lambda status, at: self._on_exit(proc, status, at))
            await pio.started()
        except BaseException:
            if pio is not None:
                pio.close()
            if self.init is proc:
                self.init = None
            await self._quiet(self.runc.delete(self.id, force=True))
            self._unmount()
            raise
        finally:
            self.reaper.close_window(window)
        # right after the reply went out (before the next request is read): the cgroup
        # lookups are not on Create's path
        self.loop.call_soon(lambda: self._watch_oom(proc))
        return {"pid": rec.pid}

    def _watch_oom(self, proc: Proc) -> None:
        if self.init is not proc or proc.rec.state == ps.DELETED or self.oom is not None:
            return
        try:
            self.oom = OOMWatcher(self.loop, proc.rec.pid, self._on_oom)
        except OSError:
            self.oom = None

    def _on_oom(self) -> None:
        self.publish(protocol.TASK_OOM, {"container_id": self.id})

    def _unmount(self) -> None:
        if self.mounted_rootfs:
            try:
                mounts.unmount_all(self.mounted_rootfs)  # stacked mounts and those below, deepest first
            except (OSError, errdefs.ContainerdError) as exc:
                self.loop.report("unmount rootfs", exc)
            self.mounted_rootfs = ""

    async def start(self, params: dict[str, Any]) -> dict[str, Any]:
        exec_id = str(params.get("exec_id") or "")
        proc = self._proc(exec_id)
        proc.rec.check("start")
        if proc.starting:
            raise errdefs.FailedPrecondition(f"process {exec_id or self.id} is already starting")
        proc.starting = True
        try:
            if not exec_id:
                await self._start_init(proc)
            else:
                await self._start_exec(proc)
            if proc.io is not None:
                proc.io.keep_stdin()  # before a deferred exit (``_start_done``) releases it
            proc.rec.advance("start")
        finally:
            self._start_done(proc)
        if exec_id:
            self.publish(protocol.TASK_EXEC_STARTED, {"container_id": self.id, "exec_id": exec_id, "pid": proc.rec.pid})
        return {"pid": proc.rec.pid}

    async def _start_init(self, proc: Proc) -> None:
        """Release the created init: by its exec FIFO where that is all ``runc start`` would
        do (``runc.starts_by_fifo``: a probed runc 1.0/1.1; no poststart hooks; no
        NOTIFY_SOCKET, which ``runc start`` would wait on), saving a runtime process;
        otherwise, or when the FIFO is not there, with ``runc start``."""
        release = None
        if not self.poststart_hooks and "NOTIFY_SOCKET" not in os.environ and starts_by_fifo(self.runc.binary):
            release = FifoStart.open(self.loop, self.runc.root, self.id)
        if release is None:
            try:
                await self.runc.start(self.id)
            except RuncError as err:
                raise errdefs.Unknown(f"OCI runtime start failed: {err.detail or err}") from err
            return
        proc.fifo_start = release
        if proc.deferred_exit is not None:
            release.init_exited()
        try:
            await release.done
        except errdefs.ContainerdError as err:
            raise errdefs.Unknown(f"OCI runtime start failed: {err}") from err
        finally:
            proc.fifo_start = None

    async def _start_exec(self, proc: Proc) -> None:
        rec = proc.rec
        bundle = self.config.bundle
        spec_path = os.path.join(bundle, f"exec-{rec.exec_id}.json")
        pid_file = os.path.join(bundle, f"exec-{rec.exec_id}.pid")
        process_spec = dict(proc.spec or {})
        process_spec["terminal"] = rec.terminal
        write_atomic(spec_path, json.dumps(process_spec).encode())
        pio = await ProcessIO.open(
            self.loop,
            self.reaper,
            container_id=self.id,
            namespace=self.config.namespace,
            stdin=rec.stdin,
            stdout=rec.stdout,
            stderr=rec.stderr,
            terminal=rec.terminal,
            console_path=self._console_path(),
        )
        window = self.reaper.open_window()
        try:
            try:
                await self.runc.exec(
                    self.id, process_file=spec_path, pid_file=pid_file, stdio=pio.child, console_socket=pio.console_path
                )
            except RuncError as err:
                raise errdefs.Unknown(f"OCI runtime exec failed: {err.detail or err}") from err
            rec.pid = _read_pid(pid_file)
            proc.io = pio
            self.reaper.adopt(window, rec.pid, lambda status, at: self._on_exit(proc, status, at))
            await pio.started()
            if proc.close_stdin_on_start:
                pio.close_stdin()
        except BaseException:
            pio.close()
            raise
        finally:
            self.reaper.close_window(window)

    async def exec(self, params: dict[str, Any]) -> dict[str, Any]:
        exec_id = str(params.get("exec_id") or "")
        _check_exec_id(exec_id)
        init = self._proc("")
        init.rec.check("exec")
        if exec_id in self.execs:
            raise errdefs.AlreadyExists(f"id {exec_id}: already exists")
        spec = params.get("spec")
        if not isinstance(spec, dict):
            raise errdefs.InvalidArgument("exec needs an OCI process spec object")
        rec = ps.ProcessRecord(
            ps.EXEC,
            exec_id,
            exec_id=exec_id,
            stdin=str(params.get("stdin") or ""),
            stdout=str(params.get("stdout") or ""),
            stderr=str(params.get("stderr") or ""),
            terminal=bool(params.get("terminal")),
        )
        proc = Proc(rec)
        proc.spec = spec
        self.execs[exec_id] = proc
        self.publish(protocol.TASK_EXEC_ADDED, {"container_id": self.id, "exec_id": exec_id})
        return {}

    async def delete(self, params: dict[str, Any]) -> dict[str, Any]:
        exec_id = str(params.get("exec_id") or "")
        proc = self._proc(exec_id)
        rec = proc.rec
        rec.check("delete")
        if proc.starting:
            raise errdefs.FailedPrecondition(f"cannot delete process {exec_id or self.id} while it starts")
        if exec_id:
            if proc.io is not None:
                if rec.state == ps.STOPPED:
                    await self.loop.wait_for(proc.reported, DRAIN_TIMEOUT + 1)
                proc.io.close()
            rec.advance("delete")
            proc.reported.set_result(None)
            del self.execs[exec_id]
            for suffix in ("json", "pid"):
                try:
                    os.unlink(os.path.join(self.config.bundle, f"exec-{exec_id}.{suffix}"))
                except OSError:
                    pass
            return proc.exit_info()
        deferred = False
        if rec.state == ps.CREATED:
            try:
                await self.runc.delete(self.id, force=True)
            except RuncError as err:
                if not is_not_exist(err):
                    raise self._runtime_error(err, "OCI runtime delete failed") from err
            if not await self.loop.wait_for(proc.reported, DELETE_EXIT_TIMEOUT):
                proc.rec.exited(255, time.time_ns())
        elif not self.kill_all_on_exit and proc.reported.done():
            # The container had its own pid namespace and its init's exit is reported: the
            # kernel reaped every other process of it before that, so nothing runs in it and
            # nothing holds the rootfs.  What is left for runc is bookkeeping (state dir,
            # cgroup): that runs after the reply (see ``_teardown``), ~5 ms off Delete.
            deferred = True
        else:
            await self.loop.wait_for(proc.reported, DRAIN_TIMEOUT + 1)
            try:
                await self.runc.delete(self.id, force=True)
            except RuncError as err:
                if not is_not_exist(err):
                    raise self._runtime_error(err, "OCI runtime delete failed") from err
        if proc.io is not None:
            proc.io.close()
        if self.oom is not None:
            self.oom.close()
            self.oom = None
        self._unmount()
        rec.advance("delete")
        proc.reported.set_result(None)
        for other in list(self.execs.values()):
            if other.io is not None:
                other.io.close()
            other.reported.set_result(None)
        self.execs.clear()
        if deferred:
            self.teardown = self.loop.spawn(self._runtime_delete())
        return proc.exit_info()

    async def _runtime_delete(self) -> None:
        """``runc delete --force`` after Delete answered; ``shutdown`` waits for it, and the
        daemon reuses the container id only once this shim is gone."""
        try:
            # not into <bundle>/log.json: the daemon moves the bundle away once Delete answered
            await self.runc.delete(self.id, force=True, log_path=os.devnull)
        except RuncError as err:
            if not is_not_exist(err):
                self.loop.report("OCI runtime delete (after Delete) failed", err)

    async def kill(self, params: dict[str, Any]) -> dict[str, Any]:
        exec_id = str(params.get("exec_id") or "")
        signum = int(params.get("signal") or signal.SIGTERM)
        proc = self._proc(exec_id)
        rec = proc.rec
        rec.check("kill")
        if rec.state == ps.STOPPED:
            raise errdefs.NotFound("process already finished")
        if exec_id:
            if rec.pid == 0:
                raise errdefs.FailedPrecondition(f"process {exec_id} not started")
            try:
                os.kill(rec.pid, signum)
            except ProcessLookupError as exc:
                raise errdefs.NotFound("process already finished") from exc
            return {}
        try:
            await self.runc.kill(self.id, signum, all=bool(params.get("all")))
        except RuncError as err:
            if is_not_running(err) or is_not_exist(err):
                raise errdefs.NotFound("process already finished") from err
            raise errdefs.Unknown(f"OCI runtime kill failed: {err.detail or err}") from err
        return {}

    async def state(self, params: dict[str, Any]) -> dict[str, Any]:
        exec_id = str(params.get("exec_id") or "")
        rec = self._proc(exec_id).rec
        return {
            "id": exec_id or self.id,
            "exec_id": exec_id,
            "pid": rec.pid,
            "status": rec.public_status,
            "stdin": rec.stdin,
            "stdout": rec.stdout,
            "stderr": rec.stderr,
            "terminal": rec.terminal,
            "exit_status": rec.exit_status,
            "exited_at_ns": rec.exited_at_ns,
            "bundle": self.config.bundle,
        }

    async def pids(self, params: dict[str, Any]) -> dict[str, Any]:
        self._proc("")
        try:
            pids = await self.runc.ps(self.id)
        except RuncError as err:
            raise self._runtime_error(err, "OCI runtime ps failed") from err
        by_pid = {p.rec.pid: eid for eid, p in self.execs.items() if p.rec.pid}
        return {"processes": [{"pid": pid, "exec_id": by_pid.get(pid, "")} for pid in pids]}

    async def pause(self, params: dict[str, Any]) -> dict[str, Any]:
        rec = self._proc("").rec
        rec.check("pause")
        rec.advance("pause")
        try:
            await self.runc.pause(self.id)
        except RuncError as err:
            if rec.state == ps.PAUSING:
                rec.advance("pause_failed")
            raise errdefs.Unknown(f"OCI runtime pause failed: {err.detail or err}") from err
        if rec.state == ps.PAUSING:
            rec.advance("paused")
        self.publish(protocol.TASK_PAUSED, {"container_id": self.id})
        return {}

    async def resume(self, params: dict[str, Any]) -> dict[str, Any]:
        rec = self._proc("").rec
        rec.check("resume")
        try:
            await self.runc.resume(self.id)
        except RuncError as err:
            raise errdefs.Unknown(f"OCI runtime resume failed: {err.detail or err}") from err
        if rec.state == ps.PAUSED:
            rec.advance("resume")
        self.publish(protocol.TASK_RESUMED, {"container_id": self.id})
        return {}

    async def resize_pty(self, params: dict[str, Any]) -> dict[str, Any]:
        proc = self._proc(str(params.get("exec_id") or ""))
        proc.rec.check("resize")
        if proc.io is None:
            raise errdefs.FailedPrecondition("process has no console yet: start it first")
        proc.io.resize(int(params.get("width") or 0), int(params.get("height") or 0))
        return {}

    async def close_io(self, params: dict[str, Any]) -> dict[str, Any]:
        proc = self._proc(str(params.get("exec_id") or ""))
        if params.get("stdin", True):
            if proc.io is None:
                proc.close_stdin_on_start = True
            else:
                proc.io.close_stdin()
        return {}

    async def update(self, params: dict[str, Any]) -> dict[str, Any]:
        rec = self._proc("").rec
        rec.check("update")
        resources = params.get("resources")
        if not isinstance(resources, dict):
            raise errdefs.InvalidArgument("update needs an OCI LinuxResources object")
        try:
            await self.runc.update(self.id, resources)
        except RuncError as err:
            raise errdefs.Unknown(f"OCI runtime update failed: {err.detail or err}") from err
        return {}

    async def stats(self, params: dict[str, Any]) -> dict[str, Any]:
        self._proc("")
        try:
            out = await self.runc.stats(self.id)
        except RuncError as err:
            raise self._runtime_error(err, "OCI runtime events --stats failed") from err
        data = out.get("data")
        return data if isinstance(data, dict) else {}

    async def wait(self, params: dict[str, Any]) -> dict[str, Any]:
        proc = self._proc(str(params.get("exec_id") or ""))
        await proc.reported
        return proc.exit_info()

    async def shutdown(self, params: dict[str, Any]) -> dict[str, Any]:
        if self.init is not None and self.init.rec.state != ps.DELETED and not params.get("now"):
            return {"exiting": False}
        if self.teardown is not None:
            await self.teardown  # never raises: failures are logged
        self.exiting = True
        return {"exiting": True}


def _mount(m: dict[str, Any]) -> mounts.Mount:
    """A rootfs mount of the Create request (``{"type", "source", "target", "options"}``)."""
    return mounts.Mount(
        type=str(m.get("type") or ""),
        source=str(m.get("source") or ""),
        options=[str(o) for o in m.get("options") or []],
        target=str(m.get("target") or ""),
    )
