"""ttrpc Client <-> Server over a real unix socket in a temp dir."""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import pytest
from google.protobuf import empty_pb2

from pycontainerd import errdefs
from pycontainerd.api.runtime.v2.task import shim_pb2
from pycontainerd.ttrpc import CallContext, Client, Method, Server
from pycontainerd.ttrpc import protocol as p

SVC = "containerd.task.v2.Task"


@pytest.fixture
def sock_dir() -> Iterator[Path]:
    d = Path(tempfile.mkdtemp(prefix="pycd-ttrpc-"))  # short: unix socket paths are limited to 108 bytes
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


async def _until(cond: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met")
        await asyncio.sleep(0.005)


class FakeTask:
    """A tiny Task service: State echoes, Kill fails, Wait blocks until released."""

    def __init__(self) -> None:
        self.contexts: list[CallContext] = []
        self.release: dict[str, asyncio.Event] = {}
        self.cancelled: list[str] = []

    async def state(self, req: shim_pb2.StateRequest, ctx: CallContext) -> shim_pb2.StateResponse:
        self.contexts.append(ctx)
        return shim_pb2.StateResponse(id=req.id, exec_id=req.exec_id, pid=42, bundle="/b/" + req.id)

    async def kill(self, req: shim_pb2.KillRequest, ctx: CallContext) -> empty_pb2.Empty:
        if req.id == "crash":
            raise ValueError("handler bug")
        raise errdefs.NotFound(f"container {req.id} not found")

    async def wait(self, req: shim_pb2.WaitRequest, ctx: CallContext) -> shim_pb2.WaitResponse:
        ev = self.release.setdefault(req.id, asyncio.Event())
        try:
            await ev.wait()
        except asyncio.CancelledError:
            self.cancelled.append(req.id)
            raise
        return shim_pb2.WaitResponse(exit_status=int(req.id.rsplit("-", 1)[-1]))

    async def big(self, req: shim_pb2.StatsRequest, ctx: CallContext) -> shim_pb2.StatsResponse:
        out = shim_pb2.StatsResponse()
        out.stats.value = b"s" * int(req.id)
        return out

    def methods(self) -> dict[str, Method]:
        return {
            "State": Method(shim_pb2.StateRequest, self.state),
            "Kill": Method(shim_pb2.KillRequest, self.kill),
            "Wait": Method(shim_pb2.WaitRequest, self.wait),
            "Stats": Method(shim_pb2.StatsRequest, self.big),
        }


def run(sock_dir: Path, body: Callable[[Server, FakeTask, str], Awaitable[None]], **server_kw: int) -> None:
    async def main() -> None:
        task = FakeTask()
        server = Server(**server_kw)
        server.register(SVC, task.methods())
        addr = f"unix://{sock_dir}/t.sock"
        await server.start(addr)
        try:
            await body(server, task, addr)
        finally:
            await server.close(grace=0)
        assert not (sock_dir / "t.sock").exists()

    asyncio.run(main())


def test_call_round_trip_with_metadata_and_deadline(sock_dir: Path) -> None:
    async def body(server: Server, task: FakeTask, addr: str) -> None:
        async with await Client.connect(addr) as c:
            assert c.peer_pid == os.getpid()
            resp = await c.call(
                SVC,
                "State",
                shim_pb2.StateRequest(id="c1", exec_id="e1"),
                shim_pb2.StateResponse,
                timeout=30,
                metadata={"containerd-namespace-ttrpc": "default", "multi": ["a", "b"]},
            )
            assert (resp.id, resp.exec_id, resp.pid, resp.bundle) == ("c1", "e1", 42, "/b/c1")
            (ctx,) = task.contexts
            assert (ctx.service, ctx.method) == (SVC, "State")
            assert ctx.metadata == {"containerd-namespace-ttrpc": ["default"], "multi": ["a", "b"]}
            assert ctx.timeout == pytest.approx(30)
            assert ctx.peer_pid == os.getpid()
            # no timeout: no deadline on the server either
            await c.call(SVC, "State", shim_pb2.StateRequest(id="c2"), shim_pb2.StateResponse)
            assert task.contexts[1].timeout is None

    run(sock_dir, body)


def test_errors_map_to_errdefs(sock_dir: Path) -> None:
    async def body(server: Server, task: FakeTask, addr: str) -> None:
        async with await Client.connect(addr) as c:
            with pytest.raises(errdefs.NotFound, match="container c9 not found"):
                await c.call(SVC, "Kill", shim_pb2.KillRequest(id="c9"), empty_pb2.Empty)
            with pytest.raises(errdefs.Unknown, match="handler bug"):
                await c.call(SVC, "Kill", shim_pb2.KillRequest(id="crash"), empty_pb2.Empty)
            with pytest.raises(errdefs.Unimplemented, match="Pause"):
                await c.call(SVC, "Pause", shim_pb2.PauseRequest(id="x"), empty_pb2.Empty)
            with pytest.raises(errdefs.Unimplemented, match=r"service nope\.Svc"):
                await c.call("nope.Svc", "State", shim_pb2.StateRequest(), shim_pb2.StateResponse)
            # the connection survives errors
            await c.call(SVC, "State", shim_pb2.StateRequest(id="ok"), shim_pb2.StateResponse)

    run(sock_dir, body)


def test_concurrent_calls_complete_out_of_order(sock_dir: Path) -> None:
    async def body(server: Server, task: FakeTask, addr: str) -> None:
        async with await Client.connect(addr) as c:
            calls = {
                n: asyncio.create_task(c.call(SVC, "Wait", shim_pb2.WaitRequest(id=n), shim_pb2.WaitResponse))
                for n in ("w-1", "w-2", "w-3")
            }
            await _until(lambda: len(task.release) == 3 and server.in_flight == 3)
            order = []
            for n in ("w-3", "w-1", "w-2"):
                task.release[n].set()
                order.append((await calls[n]).exit_status)
            assert order == [3, 1, 2]
            # a quick call is answered while a slow one is in flight
            slow = asyncio.create_task(c.call(SVC, "Wait", shim_pb2.WaitRequest(id="w-9"), shim_pb2.WaitResponse))
            await _until(lambda: "w-9" in task.release)
            await c.call(SVC, "State", shim_pb2.StateRequest(id="q"), shim_pb2.StateResponse)
            assert not slow.done()
            task.release["w-9"].set()
            assert (await slow).exit_status == 9

    run(sock_dir, body)


def test_timeout_raises_deadline_exceeded_and_cancels_the_handler(sock_dir: Path) -> None:
    async def body(server: Server, task: FakeTask, addr: str) -> None:
        async with await Client.connect(addr) as c:
            with pytest.raises(errdefs.DeadlineExceeded):
                await c.call(SVC, "Wait", shim_pb2.WaitRequest(id="t-1"), shim_pb2.WaitResponse, timeout=0.2)
            # the server enforces the same deadline on its side
            await _until(lambda: task.cancelled == ["t-1"])
            await _until(lambda: server.in_flight == 0)
            # the late response (if any) is dropped; the connection is still usable
            await c.call(SVC, "State", shim_pb2.StateRequest(id="x"), shim_pb2.StateResponse)

    run(sock_dir, body)


def test_client_disconnect_cancels_handlers(sock_dir: Path) -> None:
    async def body(server: Server, task: FakeTask, addr: str) -> None:
        c = await Client.connect(addr)
        call = asyncio.create_task(c.call(SVC, "Wait", shim_pb2.WaitRequest(id="d-1"), shim_pb2.WaitResponse))
        await _until(lambda: "d-1" in task.release)
        await c.close()
        with pytest.raises(errdefs.Unavailable):
            await call
        await _until(lambda: task.cancelled == ["d-1"])
        with pytest.raises(errdefs.Unavailable):
            await c.call(SVC, "State", shim_pb2.StateRequest(), shim_pb2.StateResponse)

    run(sock_dir, body)


def test_graceful_close_finishes_calls_in_flight(sock_dir: Path) -> None:
    async def main() -> None:
        task = FakeTask()
        server = Server()
        server.register(SVC, task.methods())
        path = str(sock_dir / "g.sock")
        await server.start(path)
        c = await Client.connect(path)
        call = asyncio.create_task(c.call(SVC, "Wait", shim_pb2.WaitRequest(id="g-7"), shim_pb2.WaitResponse))
        await _until(lambda: "g-7" in task.release)
        closing = asyncio.create_task(server.close(grace=30))
        await _until(lambda: server.closing)
        # while closing: no new connections, new calls on the open one are refused
        with pytest.raises(errdefs.Unavailable):
            await c.call(SVC, "State", shim_pb2.StateRequest(), shim_pb2.StateResponse)
        assert not closing.done()
        task.release["g-7"].set()
        assert (await call).exit_status == 7
        await closing
        await asyncio.wait_for(c.wait_closed(), 5)
        assert c.closed
        assert not os.path.exists(path)
        with pytest.raises(errdefs.Unavailable):
            await Client.connect(path)
        await c.close()

    asyncio.run(main())


def test_server_gone_fails_pending_calls(sock_dir: Path) -> None:
    async def main() -> None:
        task = FakeTask()
        server = Server()
        server.register(SVC, task.methods())
        path = str(sock_dir / "x.sock")
        await server.start(path)
        c = await Client.connect(path)
        call = asyncio.create_task(c.call(SVC, "Wait", shim_pb2.WaitRequest(id="x-1"), shim_pb2.WaitResponse))
        await _until(lambda: "x-1" in task.release)
        await server.close(grace=0)
        with pytest.raises(errdefs.Unavailable):
            await call
        assert task.cancelled == ["x-1"]
        await c.close()

    asyncio.run(main())


def test_oversized_messages(sock_dir: Path) -> None:
    async def body(server: Server, task: FakeTask, addr: str) -> None:
        # a client with a larger limit than the server: the server skips the frame and refuses
        async with await Client.connect(addr, limit=p.MAX_MESSAGE_LENGTH) as c:
            with pytest.raises(errdefs.ResourceExhausted):
                await c.call(SVC, "State", shim_pb2.StateRequest(id="i" * 5000), shim_pb2.StateResponse)
            # a response over the server's limit comes back as RESOURCE_EXHAUSTED
            with pytest.raises(errdefs.ResourceExhausted):
                await c.call(SVC, "Stats", shim_pb2.StatsRequest(id="5000"), shim_pb2.StatsResponse)
            resp = await c.call(SVC, "Stats", shim_pb2.StatsRequest(id="100"), shim_pb2.StatsResponse)
            assert len(resp.stats.value) == 100
        # the client refuses to send over its own limit
        async with await Client.connect(addr, limit=1024) as c:
            with pytest.raises(errdefs.ResourceExhausted):
                await c.call(SVC, "State", shim_pb2.StateRequest(id="i" * 5000), shim_pb2.StateResponse)

    run(sock_dir, body, limit=4096)


def test_raw_peer_even_stream_id_and_unknown_frames(sock_dir: Path) -> None:
    """A hand-written peer: the server answers protocol errors on the stream and goes on."""

    async def body(server: Server, task: FakeTask, addr: str) -> None:
        reader, writer = await asyncio.open_unix_connection(addr.removeprefix("unix://"))
        ok = p.Request(SVC, "State", shim_pb2.StateRequest(id="r").SerializeToString()).encode()
        writer.write(
            p.encode_frame(2, p.MessageType.REQUEST, ok)
            + p.encode_frame(1, p.MessageType.DATA, b"")
            + p.encode_frame(3, p.MessageType.REQUEST, ok)
        )
        dec = p.FrameDecoder()
        frames: list[p.Frame] = []
        while len(frames) < 2:
            for fr in dec.feed(await asyncio.wait_for(reader.read(4096), 5)):
                assert isinstance(fr, p.Frame)
                frames.append(fr)
        by_id = {fr.stream_id: p.Response.decode(fr.data) for fr in frames}
        assert by_id[2].status.code_name == "INVALID_ARGUMENT"
        assert by_id[3].status.ok
        assert shim_pb2.StateResponse.FromString(by_id[3].payload).id == "r"
        writer.close()
        await writer.wait_closed()

    run(sock_dir, body)


def test_connect_errors(sock_dir: Path) -> None:
    async def main() -> None:
        with pytest.raises(errdefs.Unavailable, match="no socket"):
            await Client.connect(str(sock_dir / "missing.sock"))
        # a socket file nobody listens on
        s = socket.socket(socket.AF_UNIX)
        s.bind(str(sock_dir / "dead.sock"))
        s.close()
        with pytest.raises(errdefs.Unavailable, match="refused"):
            await Client.connect(f"unix://{sock_dir}/dead.sock")

    asyncio.run(main())


def test_serve_on_an_inherited_socket_and_replace_a_stale_one(sock_dir: Path) -> None:
    async def main() -> None:
        task = FakeTask()
        # the shim way: the parent binds and listens, the server gets the socket object
        lsock = socket.socket(socket.AF_UNIX)
        lsock.bind(str(sock_dir / "fd.sock"))
        lsock.listen()
        server = Server()
        server.register(SVC, task.methods())
        await server.start(sock=lsock)
        # a stale socket file at a path is replaced
        stale = socket.socket(socket.AF_UNIX)
        stale.bind(str(sock_dir / "stale.sock"))
        stale.close()
        await server.start(str(sock_dir / "stale.sock"))
        for path in ("fd.sock", "stale.sock"):
            async with await Client.connect(str(sock_dir / path)) as c:
                r = await c.call(SVC, "State", shim_pb2.StateRequest(id=path), shim_pb2.StateResponse)
                assert r.id == path
        await server.close()
        with pytest.raises(errdefs.InvalidArgument):
            await Server().start()

    asyncio.run(main())
