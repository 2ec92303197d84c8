"""Our ttrpc against the real thing: Debian's Go `containerd-shim-runc-v2` (containerd 1.6).

The test plays containerd's part: it runs the shim's ``start`` command in an OCI bundle the
way containerd does (flags ``-namespace -address -publish-binary -id start``, cwd = bundle,
``TTRPC_ADDRESS`` = the daemon's ttrpc socket, a ``log`` FIFO in the bundle), serves the
``containerd.services.events.ttrpc.v1.Events`` service on that socket with our ttrpc Server,
and drives a busybox container through the ``containerd.task.v2.Task`` API with our Client:
Connect, Create (overlay rootfs, stdout FIFO), State, Start, Pids, Wait, Kill, Delete,
Shutdown.  It proves both halves of our ttrpc interoperate with the Go implementation.

The same test drives our own shim (``containerd-shim-pyrunc-v2`` from the venv, the task.v2
server of ``pycontainerd.shim``): what the Go shim does there, ours must do too.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from google.protobuf import any_pb2, empty_pb2

from pycontainerd import errdefs
from pycontainerd.api.events import task_pb2 as ev_task_pb2
from pycontainerd.api.runtime.v2.runc.options import oci_pb2
from pycontainerd.api.runtime.v2.task import shim_pb2
from pycontainerd.api.services.ttrpc.events.v1 import events_pb2
from pycontainerd.api.types import mount_pb2
from pycontainerd.api.types.task import task_pb2
from pycontainerd.shim.v2layout import socket_address
from pycontainerd.ttrpc import CallContext, Client, Method, Server

from .shim_support import FifoReader, base_spec, build_rootfs, make_bundle, mounts_under, pid_alive, poll_until

pytestmark = pytest.mark.root

SHIM = Path("/usr/bin/containerd-shim-runc-v2")
OUR_SHIM = Path(sys.executable).parent / "containerd-shim-pyrunc-v2"
TASK = "containerd.task.v2.Task"
EVENTS = "containerd.services.events.ttrpc.v1.Events"
NS = "pycd-ttrpc"
OCI_PROCESS_URL = "types.containerd.io/opencontainers/runtime-spec/1/Process"


@pytest.fixture(scope="module")
def busybox() -> Iterator[tuple[Path, dict[str, Any]]]:
    if os.geteuid() != 0:
        pytest.skip("needs root")
    if not SHIM.exists() or not shutil.which("runc"):
        pytest.skip("containerd-shim-runc-v2 or runc is not installed (make deps)")
    root = Path(tempfile.mkdtemp(prefix="pycd-ttrpc-rootfs-"))
    try:
        yield build_rootfs(root), base_spec(root)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _shim_pids(shim: Path, cid: str) -> list[int]:
    """Pids of the shim processes serving ``cid`` (ours alone: the id embeds our pid)."""
    pids = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            argv = (d / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if bytes(shim) in argv[:2] and b"-id" in argv and cid.encode() in argv and NS.encode() in argv:
            pids.append(int(d.name))
    return pids


class LogDrain:
    """Reads the shim's ``log`` FIFO as it is written (the shim blocks if nobody reads it)."""

    def __init__(self, path: Path) -> None:
        os.mkfifo(path, 0o600)
        self.fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
        self.data = bytearray()
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(self.fd, self._read)

    def _read(self) -> None:
        try:
            chunk = os.read(self.fd, 65536)
        except BlockingIOError:
            return
        if chunk:
            self.data += chunk
        else:  # EOF: the shim exited (or has not opened it yet and closed it)
            self._loop.remove_reader(self.fd)

    def close(self) -> None:
        self._loop.remove_reader(self.fd)
        os.close(self.fd)

    def text(self) -> str:
        return self.data.decode(errors="replace")[-4000:]


class EventSink:
    """containerd's side of event forwarding: Events.Forward over ttrpc."""

    def __init__(self) -> None:
        self.envelopes: list[events_pb2.Envelope] = []
        self.metadata: list[dict[str, list[str]]] = []

    async def forward(self, req: events_pb2.ForwardRequest, ctx: CallContext) -> empty_pb2.Empty:
        self.envelopes.append(req.envelope)
        self.metadata.append(ctx.metadata)
        return empty_pb2.Empty()

    def topics(self) -> list[str]:
        return [e.topic for e in self.envelopes]

    def events(self, topic: str, cls: type[Any]) -> list[Any]:
        out = []
        for env in self.envelopes:
            if env.topic == topic:
                assert env.event.type_url == cls.DESCRIPTOR.full_name  # containerd's typeurl: no host prefix
                out.append(cls.FromString(env.event.value))
        return out

    def event(self, topic: str, cls: type[Any]) -> Any:
        (ev,) = self.events(topic, cls)
        return ev


@pytest.mark.parametrize("shim", [SHIM, OUR_SHIM], ids=["go-runc-v2", "pyrunc-v2"])
def test_real_go_shim_over_our_ttrpc(busybox: tuple[Path, dict[str, Any]], shim: Path) -> None:
    if not shim.exists():
        pytest.skip(f"{shim} is not installed")
    rootfs, spec = busybox
    tmp = Path(tempfile.mkdtemp(prefix="pycd-ttrpc-"))
    cid = f"ttrpc-{os.getpid()}"
    runc_root = tmp / "runc"
    bundles = tmp / "bundles"
    bundles.mkdir()
    bundle = make_bundle(bundles, spec, rootfs, cid, ["sh", "-c", "echo hello from busybox; exec sleep 300"])
    shim_pid = 0
    shim_address = ""

    async def body() -> None:
        nonlocal shim_pid, shim_address
        sink = EventSink()
        events_server = Server()
        events_server.register(EVENTS, {"Forward": Method(events_pb2.ForwardRequest, sink.forward)})
        events_sock = str(tmp / "containerd.sock.ttrpc")
        await events_server.start(events_sock)
        log = LogDrain(bundle.path / "log")
        stdout = FifoReader(bundle.fifo("stdout"))
        stderr = FifoReader(bundle.fifo("stderr"))  # the Go shim wants both or neither
        client: Client | None = None
        background: list[asyncio.Task[Any]] = []
        try:
            # 1. `start`, as containerd runs it: prints the address of the shim it launched
            proc = await asyncio.create_subprocess_exec(
                str(shim),
                "-namespace", NS,
                "-address", str(tmp / "containerd.sock"),
                "-publish-binary", "/usr/bin/containerd",
                "-id", cid,
                "start",
                cwd=bundle.path,
                env={**os.environ, "TTRPC_ADDRESS": events_sock},
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
            )  # fmt: skip
            out, err = await asyncio.wait_for(proc.communicate(), 30)
            assert proc.returncode == 0, err.decode()
            shim_address = out.decode().strip()
            assert shim_address.startswith("unix://"), shim_address
            assert (bundle.path / "address").read_text() == shim_address
            # containerd's shim.SocketAddress: the Go shim proves our formula (``ctr shim`` uses it)
            assert shim_address == socket_address(str(tmp / "containerd.sock"), NS, cid)

            client = await Client.connect(shim_address)
            # SO_PEERCRED names the process that listened: `start`, which bound the socket and
            # handed it to the shim it spawned
            assert client.peer_pid == proc.pid
            md = {"containerd-namespace-ttrpc": NS}  # what containerd's ttrpc client sends

            async def call(method: str, req: Any, resp_type: type[Any], timeout: float = 30) -> Any:
                assert client is not None
                return await client.call(TASK, method, req, resp_type, timeout=timeout, metadata=md)

            conn = await call("Connect", shim_pb2.ConnectRequest(id=cid), shim_pb2.ConnectResponse)
            assert conn.shim_pid in _shim_pids(shim, cid)
            shim_pid = conn.shim_pid
            assert conn.task_pid == 0  # nothing created yet

            # 2. Create: overlay rootfs mounted by the shim, runc state under our temp dir
            opts = any_pb2.Any(
                type_url=oci_pb2.Options.DESCRIPTOR.full_name,
                value=oci_pb2.Options(root=str(runc_root)).SerializeToString(),
            )
            create = shim_pb2.CreateTaskRequest(
                id=cid,
                bundle=str(bundle.path),
                rootfs=[mount_pb2.Mount(**m) for m in bundle.rootfs_mounts],
                stdout=str(bundle.path / "stdout"),
                stderr=str(bundle.path / "stderr"),
                options=opts,
            )
            pid = (await call("Create", create, shim_pb2.CreateTaskResponse)).pid
            assert pid > 0
            assert mounts_under(bundle.path) == [str(bundle.path / "rootfs")]
            st = await call("State", shim_pb2.StateRequest(id=cid), shim_pb2.StateResponse)
            assert (st.id, st.pid, st.status, st.bundle) == (cid, pid, task_pb2.CREATED, str(bundle.path))
            assert st.stdout == str(bundle.path / "stdout")

            # 3. Wait (blocks until exit) is in flight while we Start, look and Kill
            waiter = asyncio.create_task(call("Wait", shim_pb2.WaitRequest(id=cid), shim_pb2.WaitResponse, 60))
            background.append(waiter)
            assert (await call("Start", shim_pb2.StartRequest(id=cid), shim_pb2.StartResponse)).pid == pid
            await stdout.read_until(b"hello from busybox\n")
            st = await call("State", shim_pb2.StateRequest(id=cid), shim_pb2.StateResponse)
            assert (st.status, st.pid) == (task_pb2.RUNNING, pid)
            pids = await call("Pids", shim_pb2.PidsRequest(id=cid), shim_pb2.PidsResponse)
            assert pid in [p.pid for p in pids.processes]
            assert not waiter.done()
            conn = await call("Connect", shim_pb2.ConnectRequest(id=cid), shim_pb2.ConnectResponse)
            assert conn.task_pid == pid

            # an exec process: the OCI Process as JSON in an Any, its own stdio, Wait and Delete
            process = {**spec["process"], "args": ["sh", "-c", "echo exec-out; exit 3"], "terminal": False}
            exec_out = FifoReader(bundle.fifo("exec-out"))
            exec_err = FifoReader(bundle.fifo("exec-err"))
            exec_req = shim_pb2.ExecProcessRequest(
                id=cid,
                exec_id="e1",
                stdout=str(bundle.path / "exec-out"),
                stderr=str(bundle.path / "exec-err"),
                spec=any_pb2.Any(type_url=OCI_PROCESS_URL, value=json.dumps(process).encode()),
            )
            await call("Exec", exec_req, empty_pb2.Empty)
            exec_wait = asyncio.create_task(
                call("Wait", shim_pb2.WaitRequest(id=cid, exec_id="e1"), shim_pb2.WaitResponse)
            )
            background.append(exec_wait)
            exec_pid = (await call("Start", shim_pb2.StartRequest(id=cid, exec_id="e1"), shim_pb2.StartResponse)).pid
            assert exec_pid not in (0, pid)
            assert (await asyncio.wait_for(exec_wait, 30)).exit_status == 3
            assert await exec_out.read_until_eof() == b"exec-out\n"
            exec_out.close()
            exec_err.close()
            st = await call("State", shim_pb2.StateRequest(id=cid, exec_id="e1"), shim_pb2.StateResponse)
            # the 1.6 Go shim names the exec in `id` and leaves `exec_id` empty
            assert (st.id, st.status, st.exit_status) == ("e1", task_pb2.STOPPED, 3)
            deleted = await call("Delete", shim_pb2.DeleteRequest(id=cid, exec_id="e1"), shim_pb2.DeleteResponse)
            assert (deleted.pid, deleted.exit_status) == (exec_pid, 3)

            # errors come back as errdefs kinds: NotFound for an exec that does not exist
            with pytest.raises(errdefs.NotFound):
                await call("State", shim_pb2.StateRequest(id=cid, exec_id="nope"), shim_pb2.StateResponse)

            await call("Kill", shim_pb2.KillRequest(id=cid, signal=signal.SIGKILL), empty_pb2.Empty)
            waited = await asyncio.wait_for(waiter, 30)
            assert waited.exit_status == 128 + signal.SIGKILL
            assert waited.exited_at.seconds > 0
            st = await call("State", shim_pb2.StateRequest(id=cid), shim_pb2.StateResponse)
            assert (st.status, st.exit_status) == (task_pb2.STOPPED, 137)
            await stdout.read_until_eof()

            # 4. Delete: runc delete + the shim unmounts the rootfs
            deleted = await call("Delete", shim_pb2.DeleteRequest(id=cid), shim_pb2.DeleteResponse)
            assert (deleted.pid, deleted.exit_status) == (pid, 137)
            assert mounts_under(bundle.path) == []
            with pytest.raises(errdefs.NotFound):
                await call("State", shim_pb2.StateRequest(id=cid), shim_pb2.StateResponse)

            # 5. the shim forwarded its task events to our ttrpc Events server
            want = ["/tasks/create", "/tasks/start", "/tasks/exec-added", "/tasks/exec-started", "/tasks/delete"]
            await poll_until(
                lambda: all(t in sink.topics() for t in want) and sink.topics().count("/tasks/exit") == 2,
                timeout=15,
                what=f"events {want} and two exits",
            )
            firsts = [sink.topics().index(t) for t in want]
            assert firsts == sorted(firsts), sink.topics()
            assert {e.namespace for e in sink.envelopes} == {NS}
            # the Go ttrpc client sends the namespace as metadata too (our Server hands it over)
            assert all(md.get("containerd-namespace-ttrpc") == [NS] for md in sink.metadata)
            created = sink.event("/tasks/create", ev_task_pb2.TaskCreate)
            assert (created.container_id, created.pid, created.bundle) == (cid, pid, str(bundle.path))
            started = sink.event("/tasks/exec-started", ev_task_pb2.TaskExecStarted)
            assert (started.container_id, started.exec_id, started.pid) == (cid, "e1", exec_pid)
            exits = {(e.id, e.pid, e.exit_status) for e in sink.events("/tasks/exit", ev_task_pb2.TaskExit)}
            assert exits == {("e1", exec_pid, 3), (cid, pid, 137)}
            gone = sink.event("/tasks/delete", ev_task_pb2.TaskDelete)
            assert (gone.container_id, gone.pid, gone.exit_status) == (cid, pid, 137)

            # 6. Shutdown: the shim exits, the connection drops, its socket is removed
            # the Go shim may exit before its answer is out: containerd ignores ttrpc.ErrClosed
            # on Shutdown (runtime/v2/shim.go); ours flushes its replies before exiting
            closed_ok = (errdefs.Unavailable,) if shim == SHIM else ()
            with contextlib.suppress(*closed_ok):
                await call("Shutdown", shim_pb2.ShutdownRequest(id=cid), empty_pb2.Empty)
            await asyncio.wait_for(client.wait_closed(), 15)
            await poll_until(lambda: not pid_alive(shim_pid), timeout=15, what="shim exit")
            assert not Path(shim_address.removeprefix("unix://")).exists()
        except BaseException:
            print("shim log:\n" + log.text())
            raise
        finally:
            for task in background:
                task.cancel()
            await asyncio.gather(*background, return_exceptions=True)
            if client is not None:
                await client.close()
            await events_server.close(grace=1)
            stdout.close()
            stderr.close()
            log.close()

    try:
        asyncio.run(asyncio.wait_for(body(), 120))
    finally:
        subprocess.run(["runc", "--root", str(runc_root), "delete", "--force", cid], capture_output=True, check=False)
        for pid in {shim_pid, *_shim_pids(shim, cid)} - {0}:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        for m in reversed(mounts_under(tmp)):
            subprocess.run(["umount", "-l", m], capture_output=True, check=False)
        if shim_address:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(shim_address.removeprefix("unix://"))
        shutil.rmtree(tmp, ignore_errors=True)
