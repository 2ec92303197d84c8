"""runtime.v2 without root: binary resolution, command lines, options, and the ttrpc wire.

The wire tests use our real ttrpc Server and Client on a temp unix socket: a scripted
``containerd.task.v2.Task`` server stands in for a shim (the lowest seam), and the shim
manager's own Events server receives forwarded events.  The Go shim itself runs in
tests/integration/test_runtime_v2_external.py.
"""

from __future__ import annotations

import asyncio
import functools
import json
import os
import stat
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from google.protobuf import any_pb2, empty_pb2, message

from pycontainerd import errdefs
from pycontainerd.api.events import task_pb2 as ev_task_pb2
from pycontainerd.api.runtime.v2.runc.options import oci_pb2
from pycontainerd.api.runtime.v2.task import shim_pb2
from pycontainerd.api.services.ttrpc.events.v1 import events_pb2
from pycontainerd.api.types.task import task_pb2
from pycontainerd.events import Envelope, Exchange
from pycontainerd.metadata.containers import Container, TypedValue
from pycontainerd.runtime import bundle as bundlemod
from pycontainerd.runtime.task_manager import TaskManager
from pycontainerd.runtime.task_types import Timeouts
from pycontainerd.runtime.v2 import ShimManager, TaskShim, binary, runc_options
from pycontainerd.ttrpc import CallContext, Client, Method, Server
from tests.fixtures.procs import wait_for_async

from .test_runtime_task_manager import SPEC_URL, Env, FakeShim, _Exit


# -- binary names and paths ------------------------------------------------------------------------
def test_binary_name() -> None:
    assert binary.binary_name("io.containerd.runc.v2") == "containerd-shim-runc-v2"
    assert binary.binary_name("io.containerd.kata.v2") == "containerd-shim-kata-v2"
    assert binary.binary_name("foo.v1") == "containerd-shim-foo-v1"
    assert binary.binary_name("runc") == ""
    assert binary.binary_name("io.containerd.") == ""


def _exe(path: Path) -> Path:
    path.write_text("#!/bin/sh\n")
    path.chmod(0o755)
    return path


def test_resolve_runtime_path(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    shim = _exe(b / "containerd-shim-foo-v2")
    search = f"{a}{os.pathsep}{b}"
    assert binary.resolve_runtime_path("io.containerd.foo.v2", search_path=search) == str(shim)
    # the first on PATH wins
    first = _exe(a / "containerd-shim-foo-v2")
    assert binary.resolve_runtime_path("io.containerd.foo.v2", search_path=search) == str(first)
    # not on PATH: beside the daemon's executable
    own = tmp_path / "own"
    own.mkdir()
    beside = _exe(own / "containerd-shim-bar-v1")
    assert binary.resolve_runtime_path("io.containerd.bar.v1", search_path=str(a), self_dir=str(own)) == str(beside)
    with pytest.raises(errdefs.NotFound, match="binary not installed 'containerd-shim-bar-v1'"):
        binary.resolve_runtime_path("io.containerd.bar.v1", search_path=str(a))
    # an absolute path is the binary itself, and must exist
    assert binary.resolve_runtime_path(str(shim)) == str(shim)
    with pytest.raises(errdefs.NotFound, match="invalid custom binary path"):
        binary.resolve_runtime_path(str(tmp_path / "missing"))
    for bad in ("runc", "x/io.containerd.runc.v2", "./containerd-shim-runc-v2"):
        with pytest.raises(errdefs.InvalidArgument, match="invalid runtime name"):
            binary.resolve_runtime_path(bad, search_path=search)
    with pytest.raises(errdefs.InvalidArgument, match="no runtime name"):
        binary.resolve_runtime_path("")


def test_command_lines_and_env() -> None:
    common: dict[str, Any] = dict(
        namespace="ns1", address="/run/d.sock", publish_binary="/usr/bin/pycontainerd", container_id="c1"
    )
    assert binary.start_args("/bin/shim", **common) == [
        "/bin/shim", "-namespace", "ns1", "-address", "/run/d.sock", "-publish-binary", "/usr/bin/pycontainerd",
        "-id", "c1", "start",
    ]  # fmt: skip
    assert binary.start_args("/bin/shim", **common, debug=True)[-2:] == ["-debug", "start"]
    assert binary.delete_args("/bin/shim", **common, bundle="/b/c1") == [
        "/bin/shim", "-namespace", "ns1", "-address", "/run/d.sock", "-publish-binary", "/usr/bin/pycontainerd",
        "-id", "c1", "-bundle", "/b/c1", "delete",
    ]  # fmt: skip
    env = binary.shim_env("/run/d.sock", {"PATH": "/bin", "GOMAXPROCS": "8"})
    assert env == {"PATH": "/bin", "GOMAXPROCS": "8", "TTRPC_ADDRESS": "/run/d.sock.ttrpc"}
    assert binary.shim_env("unix:///run/d.sock", {})["GOMAXPROCS"] == "2"
    assert binary.ttrpc_address("unix:///run/d.sock") == "/run/d.sock.ttrpc"


# -- options ------------------------------------------------------------------------------------------
def _opts(a: any_pb2.Any | None) -> oci_pb2.Options:
    assert a is not None
    assert a.type_url.endswith("containerd.runc.v1.Options")
    return oci_pb2.Options.FromString(a.value)


def test_runc_options_fill_unset_fields_from_the_daemon() -> None:
    defaults = {"binary_name": "runc", "root": "/state/runc", "systemd_cgroup": True, "not_a_field": 1}
    made = _opts(runc_options(None, defaults))
    assert (made.binary_name, made.root, made.systemd_cgroup) == ("runc", "/state/runc", True)
    given = oci_pb2.Options(root="/mine", no_pivot_root=True, criu_path="/usr/sbin/criu", io_uid=1000)
    url = "containerd.runc.v1.Options"
    merged = _opts(runc_options((url, given.SerializeToString()), defaults))
    # every field the container gave goes through; the daemon fills the rest
    assert (merged.root, merged.no_pivot_root, merged.io_uid) == ("/mine", True, 1000)
    assert merged.criu_path == "/usr/sbin/criu"
    assert (merged.binary_name, merged.systemd_cgroup) == ("runc", True)
    # another shim's options go through untouched
    foreign = runc_options(("io.kata.Options", b"\x01\x02"), defaults)
    assert foreign is not None and (foreign.type_url, foreign.value) == ("io.kata.Options", b"\x01\x02")
    assert runc_options(None, {}) is None
    with pytest.raises(errdefs.InvalidArgument):
        runc_options((url, b"\xff\xff\xff"), {})


# -- the task manager with an external shim ---------------------------------------------------------------
class FakeExternal:
    """``ExternalShims`` with in-memory shims: records what the manager asks of it."""

    def __init__(self) -> None:
        self.shims: dict[Path, FakeShim] = {}
        self.launches: list[dict[str, Any]] = []
        self.connects: list[Path] = []
        self.cleaned: list[str] = []
        self.started = False

    def resolve(self, runtime_name: str) -> str | None:
        if runtime_name in ("io.containerd.runc.v2",):
            return None
        if runtime_name == "io.containerd.ext.v2" or runtime_name.startswith("/"):
            return "/opt/bin/containerd-shim-ext-v2" if not runtime_name.startswith("/") else runtime_name
        raise errdefs.NotFound(f"runtime {runtime_name!r} binary not installed")

    async def launch(self, **kw: Any) -> FakeShim:
        self.launches.append(kw)
        s = FakeShim(kw["container_id"], kw["bundle"])
        self.shims[kw["bundle"]] = s
        return s

    async def connect(self, bundle: Path) -> FakeShim:
        self.connects.append(bundle)
        s = self.shims.get(bundle)
        if s is None or s.shut:
            raise errdefs.NotFound(f"shim for {bundle} is gone")
        s.q = asyncio.Queue()
        return s

    async def cleanup(self, *, namespace: str, container_id: str, bundle: Path) -> _Exit:
        self.cleaned.append(container_id)
        return _Exit(0, 137, time.time_ns())

    async def start(self) -> None:
        self.started = True

    async def close(self) -> None:
        pass


def _manager(env: Env, ext: FakeExternal) -> TaskManager:
    m = env.manager()
    m.external = ext
    return m


def test_manager_routes_external_runtimes_to_the_shim_manager(tmp_path: Path) -> None:
    async def body() -> None:
        async with Env(tmp_path) as env:
            ext = FakeExternal()
            m = _manager(env, ext)
            await m.start()
            assert ext.started
            given = oci_pb2.Options(root="/custom", no_new_keyring=True).SerializeToString()
            spec = {"ociVersion": "1.0.2", "process": {"args": ["sh"]}, "root": {"path": str(env.rootfs)}}
            await env.store.create(
                "default",
                Container(
                    id="e1",
                    runtime_name="io.containerd.ext.v2",
                    spec=TypedValue(SPEC_URL, json.dumps(spec).encode()),
                    runtime_options=TypedValue("containerd.runc.v1.Options", given),
                ),
            )
            await env.container("own1")  # io.containerd.runc.v2: the daemon's own launcher
            await m.create("default", "e1")
            await m.create("default", "own1")
            assert [k["container_id"] for k in ext.launches] == ["e1"]
            assert list(env.launcher.shims) == [tmp_path / "state" / "default" / "own1"]
            (launch,) = ext.launches
            assert launch["binary"] == "/opt/bin/containerd-shim-ext-v2"
            assert launch["options"] == ("containerd.runc.v1.Options", given)
            runc_root = str(tmp_path / "runc")
            assert launch["runc"] == {"binary_name": "/nonexistent/runc", "root": runc_root}
            meta = bundlemod.read_meta(tmp_path / "state" / "default" / "e1")
            assert meta is not None and meta.extra["shim_binary"] == "/opt/bin/containerd-shim-ext-v2"
            # the task request's options win over the container's (containerd's TaskOptions)
            await env.container("e2", runtime="io.containerd.ext.v2")
            task_opts = TypedValue("containerd.runc.v1.Options", oci_pb2.Options(root="/t").SerializeToString())
            await m.create("default", "e2", task_options=task_opts)
            assert ext.launches[-1]["options"] == (task_opts.type_url, task_opts.value)
            # an absolute runtime_path in the request is a binary too
            await env.container("e3")
            await m.create("default", "e3", runtime_path="/usr/bin/containerd-shim-runc-v2")
            assert ext.launches[-1]["binary"] == "/usr/bin/containerd-shim-runc-v2"
            await env.container("bad", runtime="io.containerd.nope.v1")
            with pytest.raises(errdefs.NotFound, match="binary not installed"):
                await m.create("default", "bad")

            # restart: external bundles reconnect through the shim manager, the others through
            # the launcher; a gone external shim is cleaned up by its binary's delete
            await m.close()
            ext.shims[tmp_path / "state" / "default" / "e2"].vanish()
            m2 = _manager(env, ext)
            await m2.restore()
            assert sorted(p.name for p in ext.connects) == ["e1", "e2", "e3"]
            assert ext.cleaned == ["e2"]
            st = await m2.get("default", "e2")
            assert (st.status, st.exit_status) == ("stopped", 137)
            assert (await m2.get("default", "own1")).status == "created"
            await m2.close()

    asyncio.run(body())


# -- the wire: TaskShim against a scripted Task server, and the events service ------------------------------
class ScriptedTask:
    """A ``containerd.task.v2.Task`` server that answers like containerd 1.6's Go shim."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, message.Message, dict[str, list[str]]]] = []

    def methods(self) -> dict[str, Method]:
        def h(name: str, req_type: type[message.Message], answer: Any) -> Method:
            async def handler(req: Any, ctx: CallContext) -> message.Message:
                self.requests.append((name, req, ctx.metadata))
                out: message.Message = answer(req)
                return out

            return Method(req_type, handler)

        def state(req: shim_pb2.StateRequest) -> shim_pb2.StateResponse:
            if req.exec_id == "gone":
                raise errdefs.NotFound("process gone does not exist")
            if req.exec_id:  # the Go shim names the exec in `id`, not in `exec_id`
                return shim_pb2.StateResponse(id=req.exec_id, pid=77, status=task_pb2.STOPPED, exit_status=3)
            return shim_pb2.StateResponse(id=req.id, pid=42, status=task_pb2.RUNNING, stdout="/fifo/out")

        details = oci_pb2.ProcessDetails(exec_id="x1").SerializeToString()
        return {
            "Connect": h("Connect", shim_pb2.ConnectRequest, lambda r: shim_pb2.ConnectResponse(shim_pid=4242)),
            "Create": h("Create", shim_pb2.CreateTaskRequest, lambda r: shim_pb2.CreateTaskResponse(pid=42)),
            "Start": h("Start", shim_pb2.StartRequest, lambda r: shim_pb2.StartResponse(pid=77 if r.exec_id else 42)),
            "State": h("State", shim_pb2.StateRequest, state),
            "Pids": h(
                "Pids",
                shim_pb2.PidsRequest,
                lambda r: shim_pb2.PidsResponse(
                    processes=[
                        task_pb2.ProcessInfo(pid=42),
                        task_pb2.ProcessInfo(
                            pid=77, info=any_pb2.Any(type_url="containerd.runc.v1.ProcessDetails", value=details)
                        ),
                    ]
                ),
            ),
            "Wait": h("Wait", shim_pb2.WaitRequest, lambda r: shim_pb2.WaitResponse(exit_status=3)),
            "Kill": h("Kill", shim_pb2.KillRequest, lambda r: empty_pb2.Empty()),
            "Exec": h("Exec", shim_pb2.ExecProcessRequest, lambda r: empty_pb2.Empty()),
            "Update": h("Update", shim_pb2.UpdateTaskRequest, lambda r: empty_pb2.Empty()),
            "Delete": h("Delete", shim_pb2.DeleteRequest, lambda r: shim_pb2.DeleteResponse(pid=42, exit_status=137)),
        }


async def _task_server(path: Path) -> tuple[Server, ScriptedTask]:
    script = ScriptedTask()
    server = Server()
    server.register("containerd.task.v2.Task", script.methods())
    await server.start(str(path))
    return server, script


def test_task_shim_speaks_task_v2(tmp_path: Path) -> None:
    async def body() -> None:
        server, script = await _task_server(tmp_path / "shim.sock")
        client = await Client.connect(f"unix://{tmp_path}/shim.sock")
        opts = runc_options(None, {"root": "/r"})
        shim = TaskShim(client, namespace="ns1", container_id="c1", bundle=tmp_path, address="a", pid=0, options=opts)
        try:
            await shim.connect()
            assert shim.pid == 4242
            mounts = [{"type": "overlay", "source": "overlay", "options": ["lowerdir=/l"]}]
            assert await shim.create(rootfs=mounts, stdin="", stdout="/o", stderr="/e", terminal=False) == 42
            _, create, md = script.requests[-1]
            assert isinstance(create, shim_pb2.CreateTaskRequest)
            assert (create.id, create.bundle, create.stdout, create.rootfs[0].options[0]) == (
                "c1", str(tmp_path), "/o", "lowerdir=/l",
            )  # fmt: skip
            assert oci_pb2.Options.FromString(create.options.value).root == "/r"
            assert md["containerd-namespace-ttrpc"] == ["ns1"]
            st = await shim.state()
            assert (st.id, st.pid, st.status, st.stdout) == ("c1", 42, "running", "/fifo/out")
            await shim.exec("x1", {"args": ["true"]}, stdin="", stdout="", stderr="", terminal=False)
            _, exec_req, _ = script.requests[-1]
            assert isinstance(exec_req, shim_pb2.ExecProcessRequest)
            assert exec_req.spec.type_url.endswith("runtime-spec/1/Process")
            assert json.loads(exec_req.spec.value) == {"args": ["true"]}
            assert await shim.start("x1") == 77
            st = await shim.state("x1")
            assert (st.id, st.status, st.exit_status) == ("x1", "stopped", 3)
            waited = await shim.wait("x1")
            assert (waited.pid, waited.exit_status) == (77, 3)  # Wait answers no pid: the one from Start
            assert [(p.pid, p.exec_id) for p in await shim.pids()] == [(42, ""), (77, "x1")]
            await shim.update({"cpu": {"shares": 512}})
            _, upd, _ = script.requests[-1]
            assert isinstance(upd, shim_pb2.UpdateTaskRequest)
            assert json.loads(upd.resources.value) == {"cpu": {"shares": 512}}
            with pytest.raises(errdefs.NotFound):
                await shim.state("gone")
            assert (await shim.delete()).exit_status == 137
        finally:
            await shim.close()
            await server.close()

    asyncio.run(body())


async def _collecting(exchange: Exchange) -> tuple[list[Envelope], asyncio.Task[None]]:
    """Every envelope ``exchange`` publishes from now on, in a list filled by the returned task
    (already subscribed when this returns; cancel it when done)."""
    got: list[Envelope] = []

    async def collect() -> None:
        async for env in exchange.subscribe():
            got.append(env)

    sub = asyncio.create_task(collect())
    await asyncio.sleep(0)
    return got, sub


def test_events_service_routes_to_the_shim_or_the_exchange(tmp_path: Path) -> None:
    async def body() -> None:
        exchange = Exchange()
        got, sub = await _collecting(exchange)
        manager = ShimManager(exchange=exchange, grpc_address=str(tmp_path / "d.sock"), publish_binary="/bin/true")
        await manager.start()
        assert stat.S_IMODE(os.stat(tmp_path / "d.sock.ttrpc").st_mode) == 0o600
        server, _ = await _task_server(tmp_path / "shim.sock")
        # a connected shim of ns1/c1 (launch and connect register theirs the same way)
        shim = TaskShim(
            await Client.connect(str(tmp_path / "shim.sock")),
            namespace="ns1", container_id="c1", bundle=tmp_path, address="a", pid=1,
        )  # fmt: skip
        manager._register(shim)
        events = shim.events()

        async def forward(ns: str, topic: str, msg: message.Message) -> None:
            env = events_pb2.Envelope(namespace=ns, topic=topic)
            env.timestamp.seconds = 1_700_000_000
            env.event.Pack(msg, type_url_prefix="")
            env.event.type_url = msg.DESCRIPTOR.full_name
            async with await Client.connect(str(tmp_path / "d.sock.ttrpc")) as c:
                await c.call(
                    "containerd.services.events.ttrpc.v1.Events", "Forward",
                    events_pb2.ForwardRequest(envelope=env), empty_pb2.Empty, timeout=5,
                )  # fmt: skip

        try:
            await forward("ns1", "/tasks/exit", ev_task_pb2.TaskExit(container_id="c1", id="c1", pid=9, exit_status=3))
            topic, payload = await asyncio.wait_for(anext(aiter(events)), 5)
            assert topic == "/tasks/exit"
            assert (payload["container_id"], payload["pid"], payload["exit_status"]) == ("c1", 9, 3)
            # not ours: to the exchange as it came; /tasks/create|start|delete: the manager's own
            await forward("ns1", "/tasks/delete", ev_task_pb2.TaskDelete(container_id="other"))
            await forward("ns2", "/tasks/oom", ev_task_pb2.TaskOOM(container_id="c1"))
            await wait_for_async(lambda: len(got) >= 1, 5, "the forwarded event")
            (env,) = got
            assert (env.namespace, env.topic, env.timestamp_ns) == ("ns2", "/tasks/oom", 1_700_000_000 * 10**9)
            assert env.raw is not None and env.raw[0] == "containerd.events.TaskOOM"
            # the shim going away ends its event stream (the task manager's cue)
            await server.close()
            rest = [t async for t, _ in _drain(events)]
            assert rest == []
        finally:
            await shim.close()
            await manager.close()
            sub.cancel()
        assert not (tmp_path / "d.sock.ttrpc").exists()

    asyncio.run(body())


def test_deferred_shims_make_the_manager_on_the_first_event_connection(tmp_path: Path) -> None:
    """The task plugin's ``DeferredShims``: resolving the daemon's own runtime needs no
    manager; ``start()`` binds the events socket (0600) without one; the first connection there
    makes the manager, which serves it (the event reaches the exchange) and removes it at close."""
    from types import SimpleNamespace

    from pycontainerd.config import parse_config
    from pycontainerd.runtime.task_plugin import DeferredShims, defaults_from_config
    from pycontainerd.runtime.task_types import Timeouts

    async def body() -> None:
        exchange = Exchange()
        got, sub = await _collecting(exchange)
        cfg = parse_config("version = 2\n")
        daemon = SimpleNamespace(config=cfg, address=tmp_path / "d.sock", state=tmp_path / "state", exchange=exchange)
        shims = DeferredShims(daemon, defaults_from_config(cfg), Timeouts())
        events_sock = tmp_path / "d.sock.ttrpc"
        try:
            assert shims.resolve("io.containerd.runc.v2") is None
            assert not shims.loaded
            await shims.start()
            assert stat.S_ISSOCK(os.lstat(events_sock).st_mode)
            assert stat.S_IMODE(os.lstat(events_sock).st_mode) == 0o600
            assert not shims.loaded
            env = events_pb2.Envelope(namespace="ns", topic="/tasks/oom")
            env.event.Pack(ev_task_pb2.TaskOOM(container_id="c9"), type_url_prefix="")
            env.event.type_url = "containerd.events.TaskOOM"
            async with await Client.connect(str(events_sock)) as c:
                await c.call(
                    "containerd.services.events.ttrpc.v1.Events", "Forward",
                    events_pb2.ForwardRequest(envelope=env), empty_pb2.Empty, timeout=5,
                )  # fmt: skip
            assert shims.loaded
            await wait_for_async(lambda: len(got) >= 1, 5, "the forwarded event")
            assert (got[0].namespace, got[0].topic, got[0].payload["container_id"]) == ("ns", "/tasks/oom", "c9")
        finally:
            await shims.close()
            sub.cancel()
        assert not events_sock.exists()

    asyncio.run(body())


def test_deferred_shims_close_unused(tmp_path: Path) -> None:
    """A daemon that never ran a shim stops without loading the manager; the socket goes."""
    from types import SimpleNamespace

    from pycontainerd.config import parse_config
    from pycontainerd.runtime.task_plugin import DeferredShims, defaults_from_config
    from pycontainerd.runtime.task_types import Timeouts

    async def body() -> None:
        cfg = parse_config("version = 2\n")
        daemon = SimpleNamespace(config=cfg, address=tmp_path / "d.sock", state=tmp_path / "state", exchange=Exchange())
        shims = DeferredShims(daemon, defaults_from_config(cfg), Timeouts())
        (tmp_path / "d.sock.ttrpc").write_bytes(b"")  # not a socket: never removed as stale
        with pytest.raises(OSError):
            await shims.start()
        os.unlink(tmp_path / "d.sock.ttrpc")
        shims = DeferredShims(daemon, defaults_from_config(cfg), Timeouts())
        await shims.start()
        await shims.launcher.close()
        await shims.close()
        assert not shims.loaded
        assert not (tmp_path / "d.sock.ttrpc").exists()

    asyncio.run(body())


async def _drain(it: AsyncIterator[tuple[str, dict[str, Any]]]) -> AsyncIterator[tuple[str, dict[str, Any]]]:
    async with asyncio.timeout(10):
        async for item in it:
            yield item


class _CountingForkServer:
    """A fork server that 'starts' the scripted shim at ``address`` (pid 4242) and counts it."""

    def __init__(self, address: str, pid: int = 4242) -> None:
        self.address = address
        self.pid = pid  # 0: the launcher found the group's socket taken (the manager asks Connect)
        self.calls: list[str] = []

    async def start_v2(self, params: dict[str, Any]) -> tuple[str, int]:
        self.calls.append(str(params["id"]))
        return self.address, self.pid

    async def close(self) -> None:
        pass


def test_a_container_joins_its_groups_running_shim_without_the_fork_server(tmp_path: Path) -> None:
    def bundle(cid: str, group: str) -> Path:
        b = tmp_path / "ns1" / cid
        b.mkdir(parents=True)
        (b / "config.json").write_text(json.dumps({"annotations": {"io.kubernetes.cri.sandbox-id": group}}))
        return b

    async def body() -> None:
        server, _ = await _task_server(tmp_path / "shim.sock")
        fork = _CountingForkServer(f"unix://{tmp_path}/shim.sock")
        mgr = ShimManager(exchange=Exchange(), grpc_address=str(tmp_path / "d.sock"), publish_binary="/bin/true")
        shims: list[TaskShim] = []
        try:
            for cid, group in (("pod1", "pod1"), ("c1", "pod1"), ("other", "pod2")):
                shims.append(await mgr.launch_forked(namespace="ns1", container_id=cid, bundle=bundle(cid, group),
                                                     fork=fork))
            # the pod's container joined the pod's shim directly; another group went to the fork server
            assert fork.calls == ["pod1", "other"]
            assert shims[1].pid == 4242 and shims[1].address == shims[0].address
            assert (tmp_path / "ns1" / "c1" / "address").read_text() == shims[0].address
            assert shims[1].shares_shim()
            for s in shims:  # each connection served (accepted) before the server goes
                await s.connect()
            # the group's shim gone (its connections closed): the fork server decides again
            await server.close()
            for s in shims:
                await wait_for_async(functools.partial(getattr, s, "closed"), 10, f"the connection of {s.id} to close")
            server, _ = await _task_server(tmp_path / "shim.sock")
            shims.append(await mgr.launch_forked(namespace="ns1", container_id="c2", bundle=bundle("c2", "pod1"),
                                                 fork=fork))
            assert fork.calls == ["pod1", "other", "c2"]
        finally:
            for s in shims:
                await s.close()
            await server.close()

    asyncio.run(body())


@pytest.mark.parametrize("fork_pid", [4242, 0])
def test_every_task_shim_of_a_forked_launch_gets_the_managers_settings(tmp_path: Path, fork_pid: int) -> None:
    # launched through the fork server or joined to its group's shim: the same TaskShim, with
    # the [timeouts] shim shutdown, the runc options and its log drain; a pid the fork server
    # did not know (0) is asked with Connect, a known one is not
    async def body() -> None:
        server, script = await _task_server(tmp_path / "shim.sock")
        fork = _CountingForkServer(f"unix://{tmp_path}/shim.sock", fork_pid)
        mgr = ShimManager(exchange=Exchange(), grpc_address=str(tmp_path / "d.sock"), publish_binary="/bin/true",
                          timeouts=Timeouts(shim_shutdown=7.5))
        shims: list[TaskShim] = []
        try:
            for cid in ("pod1", "c1"):
                b = tmp_path / "ns1" / cid
                b.mkdir(parents=True)
                (b / "config.json").write_text(json.dumps({"annotations": {"io.kubernetes.cri.sandbox-id": "pod1"}}))
                shims.append(await mgr.launch_forked(namespace="ns1", container_id=cid, bundle=b, fork=fork,
                                                     runc={"root": "/run/x"}))
            assert fork.calls == ["pod1"]  # c1 joined
            assert [s.pid for s in shims] == [4242, 4242]
            assert [name for name, _, _ in script.requests] == ([] if fork_pid else ["Connect"])
            for s in shims:
                assert s.shutdown_timeout == 7.5
                assert s.address == f"unix://{tmp_path}/shim.sock"
                assert s.options is not None and s.options.type_url == "containerd.runc.v1.Options"
                assert oci_pb2.Options.FromString(s.options.value).root == "/run/x"
                assert s._log_drain is not None and s._log_drain.path == tmp_path / "ns1" / s.id / "log"
        finally:
            for s in shims:
                await s.close()
            await server.close()

    asyncio.run(body())
