"""Task manager logic against a working in-memory shim (no runc, no root).

The fake implements the shim protocol with a real little state machine (created → running
→ stopped on kill, exit status 128+signal) so the manager's own rules are exercised:
runtime names, bundle writing, Wait before Start, delete preconditions, exec ids, events,
tombstones for vanished shims, restore after restart.  Real runc runs in tests/integration.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from pycontainerd import errdefs
from pycontainerd.events import Exchange
from pycontainerd.metadata.containers import Container, ContainerStore, TypedValue
from pycontainerd.metadata.db import Database
from pycontainerd.runtime import bundle as bundlemod
from pycontainerd.runtime import signals
from pycontainerd.runtime.task_manager import TaskManager, check_runtime
from pycontainerd.runtime.task_types import RootfsMount, RuntimeDefaults, TaskIO
from tests.fixtures.procs import wait_for_async

SPEC_URL = "types.containerd.io/opencontainers/runtime-spec/1/Spec"


@dataclass
class _Exit:
    pid: int
    exit_status: int
    exited_at_ns: int


@dataclass
class _State:
    id: str
    pid: int
    status: str
    stdin: str = ""
    stdout: str = ""
    stderr: str = ""
    terminal: bool = False
    exit_status: int = 0
    exited_at_ns: int = 0


@dataclass
class _Pid:
    pid: int
    exec_id: str


@dataclass
class _Proc:
    pid: int
    status: str = "created"
    exit: _Exit | None = None
    done: asyncio.Event = field(default_factory=asyncio.Event)


class FakeShim:
    next_pid = 1000

    def __init__(self, cid: str, bundle: Path) -> None:
        self.cid = cid
        self.bundle = bundle
        self.address = f"unix://{bundle}/fake.sock"
        self.pid = 99
        self.procs: dict[str, _Proc] = {}
        self.q: asyncio.Queue[tuple[str, dict[str, Any]] | None] = asyncio.Queue()
        self.shut = False
        self.gone = asyncio.Event()
        self.calls: list[str] = []
        self.start_error: Exception | None = None  # set: Start of the init fails with it

    def _pid(self) -> int:
        FakeShim.next_pid += 1
        return FakeShim.next_pid

    def _p(self, exec_id: str) -> _Proc:
        if exec_id not in self.procs:
            raise errdefs.NotFound(f"process {exec_id} not found")
        return self.procs[exec_id]

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
        assert (self.bundle / "config.json").exists()
        self.procs[""] = _Proc(self._pid())
        return self.procs[""].pid

    async def start(self, exec_id: str = "") -> int:
        p = self._p(exec_id)
        if self.start_error is not None and not exec_id:
            raise self.start_error
        p.status = "running"
        if exec_id:
            self.q.put_nowait(("/tasks/exec-started", {"container_id": self.cid, "exec_id": exec_id, "pid": p.pid}))
        return p.pid

    def _exit(self, exec_id: str, status: int) -> None:
        p = self.procs[exec_id]
        p.status = "stopped"
        p.exit = _Exit(p.pid, status, time.time_ns())
        p.done.set()
        self.q.put_nowait(
            (
                "/tasks/exit",
                {
                    "container_id": self.cid,
                    "id": exec_id or self.cid,
                    "pid": p.pid,
                    "exit_status": status,
                    "exited_at": "2024-01-01T00:00:00.000000001Z",
                },
            )
        )

    async def kill(self, exec_id: str, signal: int, all: bool = False) -> None:
        p = self._p(exec_id)
        if p.status == "stopped":
            raise errdefs.NotFound("process already finished")
        self._exit(exec_id, 128 + signal)

    async def delete(self, exec_id: str = "") -> _Exit:
        p = self._p(exec_id)
        if p.status == "created":
            self._exit(exec_id, 137)
        assert p.exit is not None
        del self.procs[exec_id]
        return p.exit

    async def exec(
        self, exec_id: str, spec: dict[str, Any], *, stdin: str, stdout: str, stderr: str, terminal: bool
    ) -> None:
        if exec_id in self.procs:
            raise errdefs.AlreadyExists(f"id {exec_id}")
        self.procs[exec_id] = _Proc(self._pid())

    async def state(self, exec_id: str = "") -> _State:
        self.calls.append(f"state {exec_id}")
        p = self._p(exec_id)
        e = p.exit
        return _State(
            exec_id or self.cid,
            p.pid,
            p.status,
            exit_status=e.exit_status if e else 0,
            exited_at_ns=e.exited_at_ns if e else 0,
        )

    async def pids(self) -> list[_Pid]:
        return [_Pid(p.pid, k) for k, p in self.procs.items()]

    async def pause(self) -> None:
        self.procs[""].status = "paused"
        self.q.put_nowait(("/tasks/paused", {"container_id": self.cid}))

    async def resume(self) -> None:
        self.procs[""].status = "running"
        self.q.put_nowait(("/tasks/resumed", {"container_id": self.cid}))

    async def resize_pty(self, exec_id: str, width: int, height: int) -> None:
        self._p(exec_id)

    async def close_io(self, exec_id: str, stdin: bool = True) -> None:
        self._p(exec_id)

    async def update(self, resources: dict[str, Any]) -> None:
        self.calls.append(f"update {json.dumps(resources)}")

    async def wait(self, exec_id: str = "") -> _Exit:
        p = self._p(exec_id)
        done = asyncio.create_task(p.done.wait())
        gone = asyncio.create_task(self.gone.wait())
        await asyncio.wait({done, gone}, return_when=asyncio.FIRST_COMPLETED)
        done.cancel()
        gone.cancel()
        if p.exit is None:
            raise errdefs.Unavailable("connection to shim lost")
        return p.exit

    async def shutdown(self) -> None:
        self.shut = True
        self.q.put_nowait(None)

    async def events(self) -> AsyncIterator[tuple[str, dict[str, Any]]]:
        while True:
            item = await self.q.get()
            if item is None:
                return
            yield item

    async def close(self) -> None:
        self.q.put_nowait(None)

    def vanish(self) -> None:
        """The shim process dies: its event stream ends, pending calls fail."""
        self.shut = True
        self.gone.set()
        self.q.put_nowait(None)


class FakeLauncher:
    def __init__(self) -> None:
        self.shims: dict[Path, FakeShim] = {}
        self.cleaned: list[str] = []
        self.closed = False
        self.hold: asyncio.Event | None = None  # set: cleanup waits for it (a slow runc delete)
        self.start_error: Exception | None = None  # given to the shims it launches
        self.groups: dict[str, str | None] = {}  # container id -> the group the manager named

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
    ) -> FakeShim:
        self.groups[container_id] = group
        s = FakeShim(container_id, bundle)
        s.start_error = self.start_error
        self.shims[bundle] = s
        return s

    async def cleanup(
        self,
        *,
        namespace: str,
        container_id: str,
        bundle: Path,
        runtime_binary: str = "runc",
        runtime_root: str | None = None,
    ) -> _Exit:
        self.cleaned.append(container_id)
        if self.hold is not None:
            await self.hold.wait()
        return _Exit(0, 255, time.time_ns())

    async def close(self) -> None:
        self.closed = True

    async def connect(self, bundle: Path) -> FakeShim:
        s = self.shims.get(bundle)
        if s is None or s.shut:
            raise errdefs.NotFound(f"shim for {bundle} is gone")
        # a reconnect gets a fresh event stream
        s.q = asyncio.Queue()
        return s


class Env:
    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.db = Database(tmp / "meta.db")
        self.ex = Exchange()
        self.store = ContainerStore(self.db, self.ex)
        self.launcher = FakeLauncher()
        self.rootfs = tmp / "rootfs"
        (self.rootfs / "bin").mkdir(parents=True)
        self.events: list[tuple[str, dict[str, Any]]] = []
        self._sub: asyncio.Task[None] | None = None

    def manager(self) -> TaskManager:
        return TaskManager(
            root=self.tmp / "state",
            containers=self.store,
            exchange=self.ex,
            launcher=self.launcher,
            defaults=RuntimeDefaults(binary_name="/nonexistent/runc"),
            shim_state=self.tmp,
        )

    async def __aenter__(self) -> Env:
        await self.db.open()

        async def collect() -> None:
            async for env in self.ex.subscribe():
                self.events.append((env.topic, dict(env.payload)))

        self._sub = asyncio.create_task(collect())
        await asyncio.sleep(0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._sub is not None
        self._sub.cancel()
        await asyncio.to_thread(self.db.close)

    async def container(
        self, cid: str, *, runtime: str = "io.containerd.runc.v2", spec: Any = None, raw: bytes | None = None
    ) -> None:
        if spec is None:
            spec = {
                "ociVersion": "1.0.2",
                "process": {"args": ["sh"], "oomScoreAdj": -999},
                "root": {"path": str(self.rootfs)},
                "linux": {"cgroupsPath": f"/default/{cid}"},
            }
        value = raw if raw is not None else json.dumps(spec).encode()
        await self.store.create("default", Container(id=cid, runtime_name=runtime, spec=TypedValue(SPEC_URL, value)))

    def topics(self) -> list[str]:
        return [t for t, _ in self.events]


def test_check_runtime_and_signals() -> None:
    for name in ("io.containerd.runc.v2", "io.containerd.runc.v1", "io.containerd.runtime.v1.linux"):
        check_runtime(name)
    with pytest.raises(errdefs.NotFound, match="containerd-shim-kata-v2"):
        check_runtime("io.containerd.kata.v2")
    with pytest.raises(errdefs.InvalidArgument, match="invalid runtime name"):
        check_runtime("nonsense")
    assert signals.parse("KILL") == 9
    assert signals.parse("sigterm") == 15
    assert signals.parse("9") == 9
    with pytest.raises(errdefs.InvalidArgument):
        signals.parse("SIGFOO")
    with pytest.raises(errdefs.InvalidArgument):
        signals.validate(0)
    with pytest.raises(errdefs.InvalidArgument):
        signals.validate(200)


def test_bundle_spec_rules(tmp_path: Path) -> None:
    with pytest.raises(errdefs.InvalidArgument, match="not valid JSON"):
        bundlemod.parse_spec(b"{nope")
    with pytest.raises(errdefs.InvalidArgument, match="JSON object"):
        bundlemod.parse_spec(b"[1]")
    spec = {"process": {"oomScoreAdj": -500}}
    assert bundlemod.adjust_spec(spec, min_oom_score_adj=0)["process"]["oomScoreAdj"] == 0
    assert bundlemod.adjust_spec(spec, min_oom_score_adj=-1000)["process"]["oomScoreAdj"] == -500
    assert spec["process"]["oomScoreAdj"] == -500  # the input is not modified
    with pytest.raises(errdefs.InvalidArgument, match="no rootfs"):
        bundlemod.check_root({}, tmp_path, have_rootfs_mounts=False)
    with pytest.raises(errdefs.FailedPrecondition, match="no rootfs"):
        bundlemod.check_root({"root": {"path": "rootfs"}}, tmp_path, have_rootfs_mounts=False)
    bundlemod.check_root({"root": {"path": "rootfs"}}, tmp_path, have_rootfs_mounts=True)
    with pytest.raises(errdefs.NotFound, match="does not exist"):
        bundlemod.check_rootfs_mounts(
            [{"type": "overlay", "source": "overlay", "options": [f"lowerdir={tmp_path}/gone:{tmp_path}"]}]
        )


def test_lifecycle(tmp_path: Path) -> None:
    async def run() -> None:
        async with Env(tmp_path) as env:
            tm = env.manager()
            await env.container("c1")
            with pytest.raises(errdefs.NotFound, match="task c1 not found"):
                await tm.get("default", "c1")
            pid = await tm.create("default", "c1", io=TaskIO(stdout="/tmp/out"))
            bundle = tmp_path / "state" / "default" / "c1"
            cfg = json.loads((bundle / "config.json").read_text())
            assert cfg["process"]["oomScoreAdj"] >= bundlemod.own_oom_score_adj()
            assert (await tm.get("default", "c1")).status == "created"
            with pytest.raises(errdefs.AlreadyExists, match="task c1: already exists"):
                await tm.create("default", "c1")
            waiter = asyncio.create_task(tm.wait("default", "c1"))  # Wait before Start
            assert await tm.start_process("default", "c1") == pid
            # exec: id required, in-use id refused
            with pytest.raises(errdefs.InvalidArgument, match="exec id cannot be empty"):
                await tm.exec("default", "c1", "", {"args": ["true"]})
            await tm.exec("default", "c1", "e1", {"args": ["true"]})
            with pytest.raises(errdefs.AlreadyExists, match="e1"):
                await tm.exec("default", "c1", "e1", {"args": ["true"]})
            await tm.start_process("default", "c1", "e1")
            assert {p.exec_id for p in await tm.pids("default", "c1")} == {"", "e1"}
            await tm.kill("default", "c1", 15, exec_id="e1")
            assert (await tm.wait("default", "c1", "e1")).exit_status == 143
            assert (await tm.delete_process("default", "c1", "e1")).exit_status == 143
            await tm.pause("default", "c1")
            assert (await tm.get("default", "c1")).status == "paused"
            with pytest.raises(errdefs.FailedPrecondition, match="task must be stopped before deletion: paused"):
                await tm.delete("default", "c1")
            await tm.resume("default", "c1")
            await tm.update("default", "c1", {"pids": {"limit": 10}})
            with pytest.raises(errdefs.InvalidArgument):
                await tm.kill("default", "c1", 0)
            assert [p.id for p in await tm.list_tasks("default")] == ["c1"]
            assert await tm.list_tasks("other") == []
            with pytest.raises(errdefs.Unimplemented):
                await tm.checkpoint("default", "c1")
            await tm.kill("default", "c1", 9)
            assert (await asyncio.wait_for(waiter, 5)).exit_status == 137
            assert (await tm.wait("default", "c1")).exit_status == 137  # answers at once afterwards
            # the exit came as an event: Delete does not ask the shim for the state again
            await wait_for_async(lambda: "/tasks/exit" in env.topics(), 5, "/tasks/exit")
            fake = env.launcher.shims[bundle]
            before = len(fake.calls)
            e = await tm.delete("default", "c1")
            assert "state " not in fake.calls[before:], fake.calls
            assert e.exit_status == 137
            assert e.pid == pid
            assert not bundle.exists()
            with pytest.raises(errdefs.NotFound):
                await tm.get("default", "c1")
            await wait_for_async(lambda: "/tasks/delete" in env.topics(), 5, "/tasks/delete")
            topics = env.topics()
            for t in (
                "/containers/create",
                "/tasks/create",
                "/tasks/start",
                "/tasks/exec-started",
                "/tasks/paused",
                "/tasks/resumed",
                "/tasks/exit",
                "/tasks/delete",
            ):
                assert t in topics, t
            assert topics.index("/tasks/create") < topics.index("/tasks/start") < topics.index("/tasks/delete")
            create = dict(env.events)["/tasks/create"]
            assert create["container_id"] == "c1"
            assert create["pid"] == pid
            assert create["io"]["stdout"] == "/tmp/out"
            await tm.close()

    asyncio.run(run())


def test_bad_inputs(tmp_path: Path) -> None:
    async def run() -> None:
        async with Env(tmp_path) as env:
            tm = env.manager()
            with pytest.raises(errdefs.NotFound, match='container "nope"'):
                await tm.create("default", "nope")
            await env.container("badrt", runtime="io.containerd.foo.v1")
            with pytest.raises(errdefs.NotFound, match=r"runtime .* not installed"):
                await tm.create("default", "badrt")
            await env.container("badjson", raw=b"{not json")
            with pytest.raises(errdefs.InvalidArgument, match="not valid JSON"):
                await tm.create("default", "badjson")
            await env.container("noroot", spec={"process": {"args": ["sh"]}})
            with pytest.raises(errdefs.InvalidArgument, match="no rootfs"):
                await tm.create("default", "noroot")
            await env.container("gone", spec={"process": {"args": ["sh"]}, "root": {"path": "rootfs"}})
            with pytest.raises(errdefs.NotFound, match="does not exist"):
                await tm.create(
                    "default",
                    "gone",
                    rootfs=[RootfsMount("overlay", "overlay", "", (f"lowerdir={tmp_path}/missing",))],
                )
            # nothing left behind by the failures
            assert not any((tmp_path / "state").rglob("config.json"))
            assert await tm.list_tasks("default") == []
            await tm.close()

    asyncio.run(run())


def test_vanished_shim_leaves_tombstone(tmp_path: Path) -> None:
    async def run() -> None:
        async with Env(tmp_path) as env:
            tm = env.manager()
            await env.container("c1")
            pid = await tm.create("default", "c1")
            await tm.start_process("default", "c1")
            waiter = asyncio.create_task(tm.wait("default", "c1"))
            await asyncio.sleep(0)
            env.launcher.shims[tmp_path / "state" / "default" / "c1"].vanish()
            e = await asyncio.wait_for(waiter, 15)
            assert e.exit_status == 255
            assert e.pid == pid
            st = await tm.get("default", "c1")
            assert st.status == "stopped"
            assert st.exit_status == 255
            assert not (tmp_path / "state" / "default" / "c1").exists()
            await wait_for_async(lambda: "/tasks/exit" in env.topics(), 5, "/tasks/exit")
            assert (await tm.delete("default", "c1")).exit_status == 255
            with pytest.raises(errdefs.NotFound):
                await tm.get("default", "c1")
            await tm.close()

    asyncio.run(run())


def test_running_pid_is_what_the_manager_saw(tmp_path: Path) -> None:
    """running_pid (the CRI's sandbox check without a State call): the init pid only between
    a start and an exit, pause or vanished shim the manager saw; 0 whenever it must ask."""

    async def run() -> None:
        async with Env(tmp_path) as env:
            tm = env.manager()
            assert tm.running_pid("default", "c1") == 0  # no task
            await env.container("c1")
            pid = await tm.create("default", "c1")
            assert tm.running_pid("default", "c1") == 0  # created, not started
            await tm.start_process("default", "c1")
            assert tm.running_pid("default", "c1") == pid
            fake = env.launcher.shims[tmp_path / "state" / "default" / "c1"]
            before = len(fake.calls)
            assert tm.running_pid("default", "c1") == pid
            assert fake.calls[before:] == []  # answered without the shim
            await tm.pause("default", "c1")
            assert tm.running_pid("default", "c1") == 0
            await tm.resume("default", "c1")
            assert tm.running_pid("default", "c1") == pid
            await tm.kill("default", "c1", 9)
            await wait_for_async(lambda: tm.running_pid("default", "c1") == 0, 5, "the exit seen")
            await tm.delete("default", "c1")
            await env.container("c2")
            await tm.create("default", "c2")
            await tm.start_process("default", "c2")
            env.launcher.shims[tmp_path / "state" / "default" / "c2"].vanish()
            await wait_for_async(lambda: tm.running_pid("default", "c2") == 0, 15, "the shim's loss seen")
            await tm.close()

    asyncio.run(run())


def test_create_with_start(tmp_path: Path) -> None:
    """create(start=True), the CRI's StartContainer: one call, the task running, its create
    recorded in the bundle (pid), create's event before start's; a failed start leaves the
    task created and raises the start's error."""

    async def run() -> None:
        async with Env(tmp_path) as env:
            tm = env.manager()
            await env.container("c1")
            pid = await tm.create("default", "c1", start=True)
            assert (await tm.get("default", "c1")).status == "running"
            assert tm.running_pid("default", "c1") == pid
            meta = bundlemod.read_meta(tmp_path / "state" / "default" / "c1")
            assert meta is not None and meta.pid == pid
            await wait_for_async(lambda: "/tasks/start" in env.topics(), 5, "/tasks/start")
            topics = env.topics()
            assert topics.index("/tasks/create") < topics.index("/tasks/start")
            await tm.kill("default", "c1", 9)
            await tm.wait("default", "c1")
            await tm.delete("default", "c1")

            await env.container("c2")
            env.launcher.start_error = errdefs.FailedPrecondition("exec: sleep: not found")
            with pytest.raises(errdefs.FailedPrecondition, match="not found"):
                await tm.create("default", "c2", start=True)
            assert (await tm.get("default", "c2")).status == "created"
            assert tm.running_pid("default", "c2") == 0
            await tm.delete("default", "c2")

            # record=: the caller's copy of the record (just written) is used, not read again
            env.launcher.start_error = None
            await env.container("c3")
            rec = await env.store.get("default", "c3")
            assert rec.spec is not None
            spec = json.loads(rec.spec.value)
            spec["process"]["args"] = ["from", "the", "caller"]
            rec.spec = TypedValue(SPEC_URL, json.dumps(spec).encode())
            await tm.create("default", "c3", start=True, record=rec)
            cfg = json.loads((tmp_path / "state" / "default" / "c3" / "config.json").read_text())
            assert cfg["process"]["args"] == ["from", "the", "caller"]
            await tm.kill("default", "c3", 9)
            await tm.wait("default", "c3")
            await tm.delete("default", "c3")
            await tm.close()

    asyncio.run(run())


def test_create_names_the_shim_group_of_the_spec(tmp_path: Path) -> None:
    """The launcher is told the shim group the spec names (the CRI's sandbox id, the group
    annotation), else the container's own id: it need not read config.json back."""

    async def run() -> None:
        async with Env(tmp_path) as env:
            tm = env.manager()
            await env.container("alone")
            spec = {"ociVersion": "1.0.2", "process": {"args": ["sh"]}, "root": {"path": str(env.rootfs)},
                    "annotations": {"io.kubernetes.cri.sandbox-id": "pod1"}}
            await env.container("in-pod", spec=spec)
            spec = {**spec, "annotations": {"io.containerd.runc.v2.group": "g", "io.kubernetes.cri.sandbox-id": "p"}}
            await env.container("grouped", spec=spec)
            for cid in ("alone", "in-pod", "grouped"):
                await tm.create("default", cid)
            assert env.launcher.groups == {"alone": "alone", "in-pod": "pod1", "grouped": "g"}
            for cid in ("alone", "in-pod", "grouped"):
                await tm.delete("default", cid)
            await tm.close()

    asyncio.run(run())


def test_shim_group() -> None:
    assert bundlemod.shim_group({"annotations": {"io.kubernetes.cri.sandbox-id": "s"}}, "c") == "s"
    assert bundlemod.shim_group({"annotations": {"io.kubernetes.cri.sandbox-id": ""}}, "c") == "c"
    assert bundlemod.shim_group({"annotations": {"io.containerd.runc.v2.group": 3}}, "c") == "c"
    assert bundlemod.shim_group({"annotations": None}, "c") == "c"
    assert bundlemod.shim_group([], "c") == "c"


def test_calls_while_a_dead_shim_is_cleaned_up(tmp_path: Path) -> None:
    """Between the shim's death and its tombstone, Get/Wait wait for the tombstone and the
    calls that need a shim answer Unavailable (they used to fail an assertion: UNKNOWN)."""

    async def run() -> None:
        async with Env(tmp_path) as env:
            tm = env.manager()
            await env.container("c1")
            await tm.create("default", "c1")
            await tm.start_process("default", "c1")
            env.launcher.hold = asyncio.Event()
            env.launcher.shims[tmp_path / "state" / "default" / "c1"].vanish()
            await wait_for_async(lambda: "c1" in env.launcher.cleaned, 5, "cleanup under way")  # no tombstone yet
            getter = asyncio.create_task(tm.get("default", "c1"))
            waiter = asyncio.create_task(tm.wait("default", "c1"))
            with pytest.raises(errdefs.Unavailable):
                await tm.kill("default", "c1", 9)
            assert not getter.done() and not waiter.done()
            env.launcher.hold.set()
            st = await asyncio.wait_for(getter, 5)
            assert (st.status, st.exit_status) == ("stopped", 255)
            assert (await asyncio.wait_for(waiter, 5)).exit_status == 255
            await tm.delete("default", "c1")
            await tm.close()

    asyncio.run(run())


def test_restore_after_restart(tmp_path: Path) -> None:
    async def run() -> None:
        async with Env(tmp_path) as env:
            tm = env.manager()
            for cid in ("live", "exited", "dead"):
                await env.container(cid)
                await tm.create("default", cid)
                await tm.start_process("default", cid)
            await tm.close()  # daemon goes away; shims live on
            shims = env.launcher.shims
            state = tmp_path / "state" / "default"
            await shims[state / "exited"].kill("", 15)  # exits while the daemon is down
            shims[state / "dead"].vanish()  # shim gone while the daemon is down

            tm2 = env.manager()
            await tm2.restore()
            got = {p.id: p for p in await tm2.list_tasks("default")}
            assert got["live"].status == "running"
            assert got["live"].pid > 0
            assert got["exited"].status == "stopped"
            assert got["exited"].exit_status == 143
            assert got["dead"].status == "stopped"
            assert got["dead"].exit_status == 255
            assert (await tm2.wait("default", "exited")).exit_status == 143
            assert (await tm2.delete("default", "exited")).exit_status == 143
            assert (await tm2.delete("default", "dead")).exit_status == 255
            assert not (state / "dead").exists()
            await tm2.kill("default", "live", 9)
            assert (await tm2.wait("default", "live")).exit_status == 137
            await tm2.delete("default", "live")
            assert not state.exists()
            await tm2.close()

    asyncio.run(run())


def test_started_at_is_the_same_after_a_restart(tmp_path: Path) -> None:
    """started_at (the CRI's ContainerStatus.started_at) of a task started by create(start=True)
    or start_process is, after a restart, exactly the time reported before (kept in the bundle's
    record); 0 for a task created and never started."""

    async def run() -> None:
        async with Env(tmp_path) as env:
            tm = env.manager()
            for cid in ("both", "apart", "created"):
                await env.container(cid)
            await tm.create("default", "both", start=True)
            await tm.create("default", "apart")
            await tm.start_process("default", "apart")
            await tm.create("default", "created")
            before = {cid: tm.started_at("default", cid) for cid in ("both", "apart", "created")}
            assert before["both"] > 0 and before["apart"] > 0 and before["created"] == 0, before
            await tm.close()  # daemon goes away; shims live on

            tm2 = env.manager()
            await tm2.restore()
            assert {cid: tm2.started_at("default", cid) for cid in before} == before
            for cid in before:
                await tm2.kill("default", cid, 9)
                await tm2.wait("default", cid)
                await tm2.delete("default", cid)
            await tm2.close()

    asyncio.run(run())


def test_state_after_the_exit_comes_from_the_recorded_exit(tmp_path: Path) -> None:
    """Once Wait saw the init exit (before its /tasks/exit event arrives, which comes on another
    connection), Get and Delete answer from that exit without asking the shim (``ctr run --rm``:
    Wait, Get, Delete); an exec's state still comes from the shim."""

    async def run() -> None:
        async with Env(tmp_path) as env:
            tm = env.manager()
            await env.container("c1")
            pid = await tm.create("default", "c1", io=TaskIO(stdin="/tmp/in", stdout="/tmp/out", terminal=True))
            await tm.start_process("default", "c1")
            await tm.exec("default", "c1", "e1", {"args": ["true"]})
            fake = env.launcher.shims[tmp_path / "state" / "default" / "c1"]
            exited_ns = 1_700_000_000_000_000_001
            p = fake.procs[""]
            p.status = "stopped"  # the init exits; its event is not here yet
            p.exit = _Exit(p.pid, 3, exited_ns)
            p.done.set()
            e = await tm.wait("default", "c1")
            assert (e.pid, e.exit_status) == (pid, 3)
            before = len(fake.calls)
            st = await tm.get("default", "c1")
            assert (st.status, st.pid, st.exit_status, st.exited_at_ns) == ("stopped", pid, 3, exited_ns)
            assert (st.stdin, st.stdout, st.stderr, st.terminal) == ("/tmp/in", "/tmp/out", "", True)
            assert [t.status for t in await tm.list_tasks("default")] == ["stopped"]
            assert "state " not in fake.calls[before:], fake.calls
            assert (await tm.get("default", "c1", "e1")).status == "created"
            assert fake.calls[-1] == "state e1"
            await tm.delete_process("default", "c1", "e1")
            before = len(fake.calls)
            assert (await tm.delete("default", "c1")).exit_status == 3
            assert "state " not in fake.calls[before:], fake.calls
            await tm.close()

    asyncio.run(run())
