"""CRI streaming on our daemon: Exec, Attach and PortForward URLs served by its streaming server.

Clients are independent of our code: the ``websockets`` library speaks remotecommand v5 /
v4 and port-forward over WebSocket to the URLs the RPCs return.  The pods and images are
test_cri_pods' (a pause-like image and busybox, from a registry on 127.0.0.1).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import socket
import struct
import threading
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import ClientConnection, connect

from pycontainerd.api.cri.runtime.v1 import api_pb2 as pb
from pycontainerd.api.cri.runtime.v1 import api_pb2_grpc as pb_grpc
from pycontainerd.streaming.spdyio import SpdySession
from tests.fixtures.containerd import CriOptions, cri_config
from tests.fixtures.procs import wait_for

from .daemon import running_daemon
from .test_cri_pods import (  # noqa: F401 - the fixtures
    Engine,
    busybox,
    container_config,
    engine,
    ours,
    pod_config,
    setup,
    theirs,
)

pytestmark = pytest.mark.root
# the fixtures imported above are parameters here
# ruff: noqa: F811

V5 = "v5.channel.k8s.io"
CRI_STATE = "io.containerd.grpc.v1.cri"


@pytest.fixture(scope="module")
def pod(ours: Engine, busybox: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    tmp = tmp_path_factory.mktemp("streaming")
    podcfg = pod_config(tmp)
    pod = ours.crictl("runp", str(podcfg)).stdout.strip()
    ours.crictl("pull", busybox)
    try:
        yield pod, podcfg
    finally:
        ours.crictl("stopp", pod, check=False)
        ours.crictl("rmp", pod, check=False)


def start_container(engine: Engine, pod: tuple[str, Path], image: str, tmp: Path, script: str, name: str,
                    **extra: Any) -> str:
    cid = engine.crictl("create", pod[0], str(container_config(tmp, image, script, name=name, **extra)),
                        str(pod[1])).stdout.strip()
    engine.crictl("start", cid)
    return cid


@pytest.fixture(scope="module")
def box(ours: Engine, pod: tuple[str, Path], busybox: str, tmp_path_factory: pytest.TempPathFactory) -> str:
    return start_container(ours, pod, busybox, tmp_path_factory.mktemp("box"), "sleep 100000", "box")


def url_of(engine: Engine, method: str, request: Any) -> str:
    code, resp = engine.call(method, request)
    assert code.name == "OK", (code, resp)
    return str(resp.url)


def ws(url: str, protocol: str = V5, **kw: Any) -> ClientConnection:
    return connect(url.replace("http", "ws", 1), subprotocols=[protocol], max_size=None, **kw)  # type: ignore[list-item]


def collect(conn: ClientConnection) -> dict[int, bytes]:
    out: dict[int, bytes] = {}
    for msg in conn:
        assert isinstance(msg, bytes)
        out[msg[0]] = out.get(msg[0], b"") + msg[1:]
    return out


def exec_url(engine: Engine, cid: str, *cmd: str, stdin: bool = False, tty: bool = False) -> str:
    return url_of(engine, "Exec", pb.ExecRequest(container_id=cid, cmd=list(cmd), stdin=stdin, stdout=True,
                                                 stderr=not tty, tty=tty))


def test_exec_exit_codes_over_websocket_v5_and_v4(ours: Engine, box: str) -> None:
    url = exec_url(ours, box, "sh", "-c", "read x; echo got-$x; echo oops >&2; exit 3", stdin=True)
    assert url.startswith("http://127.0.0.1:") and "/exec/" in url
    with ws(url) as c:
        c.send(b"\x00hello\n")
        c.send(b"\xff\x00")  # v5: stdin closed
        out = collect(c)
    assert out[1] == b"got-hello\n" and out[2] == b"oops\n"
    status = json.loads(out[3])
    assert status["status"] == "Failure" and status["reason"] == "NonZeroExitCode"
    assert status["details"]["causes"] == [{"reason": "ExitCode", "message": "3"}]
    with ws(exec_url(ours, box, "true"), "v4.channel.k8s.io") as c:
        assert json.loads(collect(c)[3]) == {"metadata": {}, "status": "Success"}
    # the token was used: the same URL again is refused, as is one never issued
    with pytest.raises(InvalidStatus) as exc:
        ws(url)
    assert exc.value.response.status_code == 404


def test_status_names_the_streaming_server(ours: Engine) -> None:
    code, resp = ours.call("Status", pb.StatusRequest(verbose=True))
    assert code.name == "OK"
    assert json.loads(resp.info["streamServer"]).startswith("http://127.0.0.1:")
    assert "streaming server listening at http://127.0.0.1:" in ours.log.read_text()


def test_exec_checks(ours: Engine, box: str) -> None:
    code, _ = ours.call("Exec", pb.ExecRequest(container_id=box, cmd=["true"]))
    assert code.name == "INVALID_ARGUMENT"  # no stream at all
    code, _ = ours.call("Exec", pb.ExecRequest(container_id=box, cmd=["true"], tty=True, stdout=True, stderr=True))
    assert code.name == "INVALID_ARGUMENT"
    code, _ = ours.call("Exec", pb.ExecRequest(container_id="nope", cmd=["true"], stdout=True))
    assert code.name == "NOT_FOUND"


def test_exec_tty_resize_reaches_the_process(ours: Engine, box: str) -> None:
    script = ('read x; for i in $(seq 100); do [ "$(stty size)" = "30 100" ] && break; sleep 0.05; done; '
              'echo size=$(stty size)')
    with ws(exec_url(ours, box, "sh", "-c", script, stdin=True, tty=True)) as c:
        c.send(b"\x04" + json.dumps({"Width": 100, "Height": 30}).encode())
        c.send(b"\x00go\n")
        out = collect(c)
    assert b"size=30 100" in out[1], out
    assert json.loads(out[3])["status"] == "Success"


def test_attach_to_a_container_with_stdin_and_tty(ours: Engine, pod: tuple[str, Path], busybox: str,
                                                  tmp_path: Path) -> None:
    cid = start_container(ours, pod, busybox, tmp_path, "sh", "attached", stdin=True, tty=True,
                          command=["sh"], args=[])
    url = url_of(ours, "Attach", pb.AttachRequest(container_id=cid, stdin=True, stdout=True, tty=True))
    assert "/attach/" in url
    with ws(url) as c:
        c.send(b"\x00echo hello-$((40+2))\n")
        got = b""
        deadline = time.monotonic() + 20
        while b"hello-42" not in got and time.monotonic() < deadline:
            msg = c.recv(timeout=deadline - time.monotonic())
            assert isinstance(msg, bytes)
            if msg[0] == 1:
                got += msg[1:]
        assert b"hello-42" in got
        c.send(b"\x00exit 0\n")  # the shell ends: the attach ends with it
        out = collect(c)
    assert json.loads(out[3])["status"] == "Success"
    # a terminal's output is in the CRI log too, as stdout
    log = Path(json.loads(ours.crictl("inspect", cid).stdout)["status"]["logPath"])
    wait_for(lambda: "hello-42" in log.read_text(), 10, "the tty output in the CRI log")
    assert " stdout F " in log.read_text() or " stdout P " in log.read_text()


@pytest.fixture(scope="module")
def web(ours: Engine, pod: tuple[str, Path], busybox: str, tmp_path_factory: pytest.TempPathFactory) -> str:
    """busybox httpd on 127.0.0.1:8080 inside the pod, serving /big (10 MiB); its sha256."""
    cid = start_container(ours, pod, busybox, tmp_path_factory.mktemp("web"),
                          "mkdir -p /www && head -c 10485760 /dev/urandom > /www/big.part && mv /www/big.part "
                          "/www/big && exec httpd -f -p 127.0.0.1:8080 -h /www", "web")

    def served() -> bool:
        r = ours.crictl("exec", "-s", cid, "wget", "-q", "--spider", "http://127.0.0.1:8080/big", check=False)
        return r.returncode == 0

    wait_for(served, 30, "httpd in the pod", interval=0.2)
    return ours.crictl("exec", "-s", cid, "sha256sum", "/www/big").stdout.split()[0]


def _http_body(raw: bytes) -> bytes:
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.") and b" 200 " in head.split(b"\r\n")[0], head[:200]
    return body


def test_port_forward_over_websocket_carries_10_mib(ours: Engine, pod: tuple[str, Path], web: str) -> None:
    url = url_of(ours, "PortForward", pb.PortForwardRequest(pod_sandbox_id=pod[0], port=[8080]))
    assert "/portforward/" in url
    with ws(url + "?port=8080", "v4.channel.k8s.io") as c:
        port = struct.pack("<H", 8080)
        assert c.recv(timeout=10) == b"\x00" + port
        assert c.recv(timeout=10) == b"\x01" + port
        c.send(b"\x00GET /big HTTP/1.0\r\n\r\n")
        out = collect(c)
    body = _http_body(out[0])
    assert len(body) == 10 * 1024 * 1024
    assert hashlib.sha256(body).hexdigest() == web
    # a port nobody listens on: the error channel says so
    url = url_of(ours, "PortForward", pb.PortForwardRequest(pod_sandbox_id=pod[0], port=[9]))
    with ws(url, "v4.channel.k8s.io") as c:
        out = collect(c)
    assert b"connect" in out[1], out


async def _spdy(url: str, protocol: str) -> SpdySession:
    """The upgrade as client-go sends it, then a client-role SPDY session."""
    u = urllib.parse.urlsplit(url)
    reader, writer = await asyncio.open_connection(u.hostname, u.port)
    writer.write(f"POST {u.path} HTTP/1.1\r\nHost: {u.netloc}\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\n"
                 f"X-Stream-Protocol-Version: {protocol}\r\nContent-Length: 0\r\n\r\n".encode())
    head = await reader.readuntil(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 101 "), head
    assert f"X-Stream-Protocol-Version: {protocol}".encode() in head
    return SpdySession(reader, writer, client=True)


async def _read_all(stream: Any) -> bytes:
    out = b""
    while chunk := await stream.read():
        out += chunk
    return out


def test_exec_over_spdy_v4(ours: Engine, box: str) -> None:
    async def main() -> None:
        url = exec_url(ours, box, "sh", "-c", "read x; echo spdy-$x; exit 6", stdin=True)
        async with await _spdy(url, "v4.channel.k8s.io") as session:
            error = await session.open_stream({"streamType": "error"})
            stdin = await session.open_stream({"streamType": "stdin"})
            stdout = await session.open_stream({"streamType": "stdout"})
            stderr = await session.open_stream({"streamType": "stderr"})
            await stdin.write(b"ok\n")
            await stdin.close()
            assert await _read_all(stdout) == b"spdy-ok\n"
            assert await _read_all(stderr) == b""
            status = json.loads(await _read_all(error))
            assert status["details"]["causes"] == [{"reason": "ExitCode", "message": "6"}]

    asyncio.run(asyncio.wait_for(main(), 30))


def test_port_forward_over_spdy_from_a_local_port(ours: Engine, pod: tuple[str, Path], web: str) -> None:
    """kubectl's shape: a listener on 127.0.0.1, each accepted connection an error+data stream pair."""
    async def main() -> None:
        url = url_of(ours, "PortForward", pb.PortForwardRequest(pod_sandbox_id=pod[0], port=[8080]))
        session = await _spdy(url, "portforward.k8s.io")
        ids = iter(range(1000))

        async def forward(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            rid = str(next(ids))
            await session.open_stream({"streamType": "error", "port": "8080", "requestID": rid})
            data = await session.open_stream({"streamType": "data", "port": "8080", "requestID": rid})

            async def up() -> None:
                while chunk := await reader.read(65536):
                    await data.write(chunk)
                await data.close()

            task = asyncio.create_task(up())
            while chunk := await data.read():
                writer.write(chunk)
                await writer.drain()
            writer.close()
            await task

        listener = await asyncio.start_server(forward, "127.0.0.1", 0)
        port = listener.sockets[0].getsockname()[1]
        try:
            async with session:
                for _ in range(2):  # two connections through one session
                    r, w = await asyncio.open_connection("127.0.0.1", port)
                    w.write(b"GET /big HTTP/1.0\r\n\r\n")
                    body = _http_body(await r.read())
                    w.close()
                    assert len(body) == 10 * 1024 * 1024
                    assert hashlib.sha256(body).hexdigest() == web
        finally:
            listener.close()

    asyncio.run(asyncio.wait_for(main(), 60))


def _daemon_sockets(pid: int) -> int:
    n = 0
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            if os.readlink(f"/proc/{pid}/fd/{fd}").startswith("socket:"):
                n += 1
        except OSError:
            pass
    return n


def test_20_concurrent_execs_one_client_vanishing_leaks_nothing(ours: Engine, box: str) -> None:
    d = ours.daemon
    io_dir = Path(d.state) / CRI_STATE / "containers" / box
    task_pids = len(ours.ctr("tasks", "ps", box).splitlines())
    sockets = _daemon_sockets(d.pid)
    shim = _parent(int(ours.crictl_json("inspect", box)["info"]["pid"]))  # the shim: the subreaper of the init
    assert "shim" in Path(f"/proc/{shim}/cmdline").read_text(), Path(f"/proc/{shim}/cmdline").read_text()
    shim_fds = len(os.listdir(f"/proc/{shim}/fd"))
    results: dict[int, Any] = {}

    def session(i: int) -> None:
        try:
            if i == 0:  # starts a long-running exec, then vanishes without a close handshake
                with contextlib.suppress(OSError, ConnectionClosed), \
                        ws(exec_url(ours, box, "sh", "-c", "echo started; exec sleep 1000")) as c:
                    got = b""
                    while b"started" not in got:
                        msg = c.recv(timeout=20)
                        assert isinstance(msg, bytes)
                        got += msg[1:]
                    c.socket.shutdown(socket.SHUT_RDWR)  # gone: no close frame, no FIN-ACK dance
                    c.socket.close()
                    results[i] = "dropped"
                return
            with ws(exec_url(ours, box, "sh", "-c", f"read x; echo $x-{i}; exit {i % 7}", stdin=True)) as c:
                c.send(b"\x00hi\n")
                c.send(b"\xff\x00")
                results[i] = collect(c)
        except Exception as exc:
            results[i] = exc

    threads = [threading.Thread(target=session, args=(i,)) for i in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert results[0] == "dropped"
    for i in range(1, 20):
        out = results[i]
        assert isinstance(out, dict), out
        assert out[1] == f"hi-{i}\n".encode()
        status = json.loads(out[3])
        if i % 7:
            assert status["details"]["causes"][0]["message"] == str(i % 7)
        else:
            assert status["status"] == "Success"

    def clean() -> bool:
        return (len(ours.ctr("tasks", "ps", box).splitlines()) == task_pids
                and not any(p.name.startswith("exec-") for p in io_dir.iterdir())
                and _daemon_sockets(d.pid) <= sockets
                and len(os.listdir(f"/proc/{shim}/fd")) <= shim_fds)

    wait_for(clean, 20, "no exec process, FIFO, socket or shim fd left", interval=0.1)


def _parent(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("PPid:"):
            return int(line.split()[1])
    raise AssertionError(f"no parent of {pid}")


def test_attach_after_a_daemon_restart(ours: Engine, pod: tuple[str, Path], busybox: str, tmp_path: Path) -> None:
    """The restarted daemon reopens the container's output FIFOs: attach sees what it prints next.
    (Stdin across a restart: ``test_stdin_survives_a_daemon_kill_9_and_restart``.)"""
    cid = start_container(ours, pod, busybox, tmp_path, "i=0; while true; do i=$((i+1)); echo tick-$i; sleep 0.1; done",
                          "ticker", tty=True)
    ours.restart()
    url = url_of(ours, "Attach", pb.AttachRequest(container_id=cid, stdout=True, tty=True))
    with ws(url) as c:
        got = b""
        deadline = time.monotonic() + 20
        while got.count(b"tick-") < 3 and time.monotonic() < deadline:
            msg = c.recv(timeout=deadline - time.monotonic())
            assert isinstance(msg, bytes)
            if msg[0] == 1:
                got += msg[1:]
        assert got.count(b"tick-") >= 3, got


def _attach_line(engine: Engine, cid: str, line: bytes, expect: bytes) -> bytes:
    """Attach with stdin, send ``line``, read stdout until ``expect``; the client then leaves
    (closing its stdin: for a container without ``stdin_once`` that is a detach)."""
    url = url_of(engine, "Attach", pb.AttachRequest(container_id=cid, stdin=True, stdout=True, stderr=True))
    got = b""
    with ws(url) as c:
        c.send(b"\x00" + line)
        deadline = time.monotonic() + 20
        while expect not in got and time.monotonic() < deadline:
            msg = c.recv(timeout=deadline - time.monotonic())
            assert isinstance(msg, bytes)
            if msg[0] == 1:
                got += msg[1:]
        c.send(b"\xff\x00")  # v5: our stdin is closed
    assert expect in got, got
    return got


def test_stdin_survives_a_daemon_kill_9_and_restart(ours: Engine, pod: tuple[str, Path], busybox: str,
                                                    tmp_path: Path) -> None:
    """The daemon holds a stdin container's FIFO for attach; when it dies, the shim's own write
    end keeps the container's stdin open (containerd's runc shim does the same): the restarted
    daemon's attach writes to the same stdin, and the container never saw EOF."""
    cid = start_container(ours, pod, busybox, tmp_path, "while read l; do echo got-$l; done; echo EOF-SEEN",
                          "reader", stdin=True)
    _attach_line(ours, cid, b"one\n", b"got-one")
    d = ours.daemon
    d.kill9()
    d.start()
    assert ours.crictl_json("inspect", cid)["status"]["state"] == "CONTAINER_RUNNING"
    got = _attach_line(ours, cid, b"two\n", b"got-two")
    assert b"EOF-SEEN" not in got
    log = Path(json.loads(ours.crictl("inspect", cid).stdout)["status"]["logPath"])
    assert "EOF-SEEN" not in log.read_text()
    assert ours.crictl_json("inspect", cid)["status"]["state"] == "CONTAINER_RUNNING"


def test_started_at_is_the_same_after_a_daemon_kill_9_and_restart(engine: Engine, busybox: str,
                                                                  tmp_path: Path) -> None:
    """A running container's ContainerStatus.started_at (and created_at, and its pod's created_at)
    after the daemon was killed (SIGKILL) and started again is exactly what it was before:
    containerd keeps the time it stamped in its container's status; ours reported the record's
    time, taken before the task was made (up to tens of ms earlier)."""
    podcfg = pod_config(tmp_path)
    pod = engine.crictl("runp", str(podcfg)).stdout.strip()

    def times() -> tuple[int, int, int]:
        code, resp = engine.call("ContainerStatus", pb.ContainerStatusRequest(container_id=cid))
        assert code == grpc.StatusCode.OK, resp
        assert resp.status.state == pb.CONTAINER_RUNNING, resp.status
        code, podst = engine.call("PodSandboxStatus", pb.PodSandboxStatusRequest(pod_sandbox_id=pod))
        assert code == grpc.StatusCode.OK, podst
        return resp.status.created_at, resp.status.started_at, podst.status.created_at

    try:
        engine.crictl("pull", busybox)
        cid = start_container(engine, (pod, podcfg), busybox, tmp_path, "sleep 100000", "timed")
        before = times()
        assert before[1] >= before[0] > 0, before
        engine.kill9_and_start()
        assert times() == before
    finally:
        engine.crictl("rmp", "-f", pod, check=False)


def test_attach_of_a_stdin_once_container_ends_its_stdin(ours: Engine, pod: tuple[str, Path], busybox: str,
                                                        tmp_path: Path) -> None:
    """``stdin_once``: the first attach's end closes the container's stdin (CloseIO), as containerd's CRI."""
    cid = start_container(ours, pod, busybox, tmp_path, "while read l; do echo got-$l; done; echo EOF-SEEN",
                          "once", stdin=True, stdin_once=True)
    _attach_line(ours, cid, b"one\n", b"got-one")
    log = Path(json.loads(ours.crictl("inspect", cid).stdout)["status"]["logPath"])
    wait_for(lambda: "EOF-SEEN" in log.read_text(), 20, "the container to see EOF after the attach ended")
    wait_for(lambda: ours.crictl_json("inspect", cid)["status"]["state"] == "CONTAINER_EXITED", 20,
             "the container to exit")


def test_a_streaming_port_in_use_leaves_the_rest_of_the_cri_serving(tmp_path: Path) -> None:
    """containerd fails its CRI plugin then; we keep it and Exec/Attach/PortForward say why."""
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    try:
        port = taken.getsockname()[1]
        config = "version = 2\n" + cri_config(tmp_path, CriOptions(sandbox_image="x/pause:1").resolved(), "overlayfs")
        config = config.replace('stream_server_port = "0"', f'stream_server_port = "{port}"')
        with running_daemon(config) as d, grpc.insecure_channel(f"unix:{d.address}") as ch:
            rt = pb_grpc.RuntimeServiceStub(ch)
            assert rt.Version(pb.VersionRequest(), timeout=30).runtime_name == "pycontainerd"
            with pytest.raises(grpc.RpcError) as exc:
                rt.Exec(pb.ExecRequest(container_id="x", cmd=["true"], stdout=True), timeout=30)
            assert exc.value.code() == grpc.StatusCode.UNAVAILABLE
            assert "streaming server did not start" in str(exc.value.details())
            assert f"127.0.0.1:{port}" in str(exc.value.details())
    finally:
        taken.close()


async def _spdy_attach(engine: Engine, cid: str, *, tty: bool) -> tuple[SpdySession, Any, Any, Any]:
    """An attach with stdin and stdout as kubectl opens it (error, stdin, stdout, then resize or stderr)."""
    url = url_of(engine, "Attach", pb.AttachRequest(container_id=cid, stdin=True, stdout=True, stderr=not tty,
                                                    tty=tty))
    session = await _spdy(url, "v4.channel.k8s.io")
    error = await session.open_stream({"streamType": "error"})
    stdin = await session.open_stream({"streamType": "stdin"})
    stdout = await session.open_stream({"streamType": "stdout"})
    await session.open_stream({"streamType": "resize" if tty else "stderr"})
    return session, error, stdin, stdout


async def _read_until(stream: Any, want: bytes) -> bytes:
    got = b""
    while want not in got:
        chunk = await stream.read()
        assert chunk, f"the stream ended before {want!r}: {got!r}"
        got += chunk
    return got


@pytest.mark.parametrize(("tty", "once"), [(True, True), (False, True), (False, False)],
                         ids=["once-tty", "once", "plain"])
def test_the_end_of_an_attach_stdin(engine: Engine, busybox: str, tmp_path: Path, tty: bool, once: bool) -> None:
    """containerd 1.6 (ContainerIO.Attach): when the client's stdin ends, a ``stdin_once``
    container's stdin is closed only if the attach has no terminal (the container sees EOF, the
    attach goes on until its output ends); otherwise (a terminal, or no ``stdin_once``) the
    container's stdin stays open and the attach detaches (its output ends now), so a later attach
    still writes to the container."""
    podcfg = pod_config(tmp_path)
    pod = engine.crictl("runp", str(podcfg)).stdout.strip()
    try:
        engine.crictl("pull", busybox)
        cid = start_container(engine, (pod, podcfg), busybox, tmp_path,
                              "while read l; do echo got-$l; done; echo EOF-SEEN", "once-tty",
                              stdin=True, stdin_once=once, tty=tty)

        async def attach_once(line: bytes) -> bytes:
            session, _error, stdin, stdout = await _spdy_attach(engine, cid, tty=tty)
            async with session:
                await stdin.write(line + b"\n")
                got = await _read_until(stdout, b"got-" + line)
                await stdin.close()
                return got + await _read_all(stdout)  # ends: detached (tty), the container's EOF (no tty)

        rest = asyncio.run(asyncio.wait_for(attach_once(b"one"), 30))
        if once and not tty:
            assert b"EOF-SEEN" in rest
            wait_for(lambda: engine.crictl_json("inspect", cid)["status"]["state"] == "CONTAINER_EXITED", 20,
                     "the container to exit after its stdin closed")
            return
        assert b"EOF-SEEN" not in rest
        assert engine.crictl_json("inspect", cid)["status"]["state"] == "CONTAINER_RUNNING"
        asyncio.run(asyncio.wait_for(attach_once(b"two"), 30))  # the stdin is still open
        assert engine.crictl_json("inspect", cid)["status"]["state"] == "CONTAINER_RUNNING"
    finally:
        engine.crictl("stopp", pod, check=False)
        engine.crictl("rmp", pod, check=False)
