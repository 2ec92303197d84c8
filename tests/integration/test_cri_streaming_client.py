"""CRI streaming clients (client/streaming.py, pycrictl exec/attach/port-forward) against a real streaming server.

containerd 1.6's CRI serves Exec/Attach/PortForward with kubelet's Go streaming code (moby
spdystream for SPDY/3.1, x/net/websocket for WebSocket): that is the interoperability proof.
The same tests run against our daemon's streaming server (``streaming/``).

One pod per engine (module scope) holds two containers: ``box`` runs busybox httpd on 8080
serving a 10 MiB random file, and ``term`` runs ``sh`` with stdin and a TTY (for attach).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest

from pycontainerd import errdefs
from pycontainerd.api.cri.runtime.v1 import api_pb2 as pb
from pycontainerd.client.cri import CriClient
from pycontainerd.client.streaming import (
    ExecStreams,
    SpdyPortForward,
    stream_remotecommand,
    websocket_port_forward,
)
from tests.fixtures.procs import wait_for

from .test_cri_pods import PYCRICTL, Engine, _ours, _theirs, pod_config
from .test_cri_pods import setup as setup  # the module-scoped images + registry fixture

pytestmark = pytest.mark.root

BIG_SIZE = 10 << 20
HTTP_PORT = 8080


@dataclass
class World:
    engine: Engine
    pod: str
    box: str
    term: str
    big_sha256: str


def _streaming_served(e: Engine) -> bool:
    code, _ = e.call("Exec", pb.ExecRequest(container_id="f" * 64, cmd=["true"], stdout=True))
    return code != grpc.StatusCode.UNIMPLEMENTED


def _make_world(e: Engine, busybox: str, tmp: Path) -> World:
    podcfg = pod_config(tmp)
    pod = e.crictl("runp", str(podcfg)).stdout.strip()
    e.crictl("pull", busybox)
    script = (f"mkdir -p /www && dd if=/dev/urandom of=/www/big bs=1048576 count={BIG_SIZE >> 20} 2>/dev/null"
              f" && sha256sum /www/big > /www/big.sha && httpd -p {HTTP_PORT} -h /www && exec sleep 2147483647")
    box_cfg = {"metadata": {"name": "box", "attempt": 0}, "image": {"image": busybox},
               "command": ["sh", "-c", script], "log_path": "box.log", "linux": {}}
    term_cfg = {"metadata": {"name": "term", "attempt": 0}, "image": {"image": busybox},
                "command": ["sh"], "stdin": True, "tty": True, "log_path": "term.log", "linux": {}}
    ids = []
    for cfg in (box_cfg, term_cfg):
        path = tmp / f"{cfg['metadata']['name']}.json"  # type: ignore[index]
        path.write_text(json.dumps(cfg))
        cid = e.crictl("create", pod, str(path), str(podcfg)).stdout.strip()
        e.crictl("start", cid)
        ids.append(cid)
    box, term = ids
    sha = wait_for(lambda: e.crictl("exec", "-s", box, "cat", "/www/big.sha", check=False).stdout.split()[:1],
                   60, "the 10 MiB file in the pod")[0]
    return World(e, pod, box, term, sha)


@pytest.fixture(scope="module", params=["containerd", "pycontainerd"])
def world(request: pytest.FixtureRequest, setup) -> Iterator[World]:
    cm = _theirs(setup) if request.param == "containerd" else _ours(setup)
    with cm as e:
        if request.param == "pycontainerd" and not _streaming_served(e):
            pytest.fail("our CRI answers Exec with Unimplemented: the streaming server is not served")
        tmp = Path(tempfile.mkdtemp(prefix="pycd-stream-", dir="/tmp"))
        try:
            yield _make_world(e, setup.busybox_ref, tmp)
        finally:
            e.remove_all_pods()
            shutil.rmtree(tmp, ignore_errors=True)


async def _exec(w: World, cmd: list[str], *, transport: str, stdin: bytes | None = None,
                stderr: bool = True) -> tuple[int, bytes, bytes]:
    out, err = bytearray(), bytearray()

    async def to_out(data: bytes) -> None:
        out.extend(data)

    async def to_err(data: bytes) -> None:
        err.extend(data)

    chunks = [stdin, b""] if stdin is not None else []

    async def source() -> bytes:
        return chunks.pop(0) if chunks else b""

    async with CriClient(w.engine.endpoint) as cri:
        url = await cri.exec(w.box, cmd, stdin=stdin is not None, stdout=True, stderr=stderr)
        res = await asyncio.wait_for(stream_remotecommand(
            url, ExecStreams(stdin=source if stdin is not None else None, stdout=to_out,
                             stderr=to_err if stderr else None), transport=transport), 30)
    return res.exit_code, bytes(out), bytes(err)


@pytest.mark.parametrize("transport", ["spdy", "websocket"])
def test_exec_exit_codes_and_streams(world: World, transport: str) -> None:
    code, out, err = asyncio.run(_exec(world, ["sh", "-c", "echo out; echo err >&2; exit 3"], transport=transport))
    assert (code, out, err) == (3, b"out\n", b"err\n")
    code, out, _ = asyncio.run(_exec(world, ["true"], transport=transport))
    assert (code, out) == (0, b"")
    # stdin: SPDY half-closes it, so cat ends; WebSocket v4 cannot end stdin, so read a fixed count
    cmd = ["cat"] if transport == "spdy" else ["head", "-c", "11"]
    code, out, _ = asyncio.run(_exec(world, cmd, transport=transport, stdin=b"hello stdin"))
    assert (code, out) == (0, b"hello stdin")
    # a command that does not exist: the runtime's error Status (no exit code), with its message
    with pytest.raises(errdefs.Unknown, match="/no/such/binary"):
        asyncio.run(_exec(world, ["/no/such/binary"], transport=transport))


@pytest.mark.parametrize("transport", ["spdy", "websocket"])
def test_pycrictl_exec_propagates_exit_code(world: World, transport: str) -> None:
    r = world.engine.crictl("exec", "--transport", transport, world.box, "sh", "-c", "echo hi; exit 5", check=False)
    assert (r.returncode, r.stdout) == (5, "hi\n"), r
    r = world.engine.crictl("exec", "-r", transport, world.box, "sh", "-c", "echo oops >&2", check=False)
    assert (r.returncode, r.stderr) == (0, "oops\n"), r
    if transport == "spdy":  # stdin to EOF (SPDY half-closes it; WebSocket before v5 cannot)
        p = subprocess.run([PYCRICTL, "-r", world.engine.endpoint, "exec", "-i", world.box, "wc", "-c"],
                           input=b"x" * 300000, capture_output=True, timeout=60, check=False)
        assert (p.returncode, p.stdout.strip()) == (0, b"300000"), p


# --- a terminal, through tmux ------------------------------------------------------------------


class Tmux:
    def __init__(self, tmp: Path) -> None:
        self.sock = str(tmp / "tmux.sock")
        self.session = f"pycd{uuid.uuid4().hex[:8]}"

    def run(self, *args: str) -> str:
        return subprocess.run(["tmux", "-S", self.sock, *args], capture_output=True, text=True, check=True,
                              timeout=30).stdout

    def screen(self) -> str:
        return self.run("capture-pane", "-p", "-t", self.session)

    def keys(self, *keys: str) -> None:
        self.run("send-keys", "-t", self.session, *keys)

    def wait(self, pattern: str, what: str, timeout: float = 20) -> str:
        rx = re.compile(pattern, re.M)
        try:
            return wait_for(lambda: (s := self.screen()) and rx.search(s) and s, timeout, what, interval=0.1)
        except TimeoutError as exc:
            raise AssertionError(f"{exc}; the screen:\n{self.screen()}") from None

    def kill(self) -> None:
        subprocess.run(["tmux", "-S", self.sock, "kill-server"], capture_output=True, timeout=30, check=False)


@pytest.fixture
def tmux(tmp_path: Path) -> Iterator[Tmux]:
    if shutil.which("tmux") is None:
        pytest.skip("needs tmux")
    t = Tmux(tmp_path)
    try:
        yield t
    finally:
        t.kill()


@pytest.mark.parametrize("transport", ["spdy", "websocket"])
def test_exec_it_in_tmux(world: World, tmux: Tmux, tmp_path: Path, transport: str) -> None:
    status = tmp_path / "status"
    cmd = (f"{PYCRICTL} -r {world.engine.endpoint} exec -it --transport {transport} {world.box} sh; "
           f"echo $? > {status}; sleep 60")
    tmux.run("new-session", "-d", "-s", tmux.session, "-x", "100", "-y", "30", cmd)
    tmux.wait(r"^/ #", "the container's shell prompt")
    tmux.keys("stty size; echo READY-$((6*7))", "Enter")
    tmux.wait(r"^30 100\s*$", "the initial terminal size in the container")
    tmux.wait(r"^READY-42", "the shell answering")
    tmux.run("resize-window", "-t", tmux.session, "-x", "120", "-y", "40")
    tmux.keys("clear; stty size", "Enter")
    tmux.wait(r"^40 120\s*$", "the resized terminal in the container")
    # ^C reaches the container's foreground process, not pycrictl
    tmux.keys("sleep 1000; echo SLEPT-$((1+1))", "Enter")
    wait_for(lambda: "sleep 1000" in world.engine.crictl("exec", "-s", world.box, "ps", check=False).stdout,
             20, "sleep to run in the container")
    tmux.keys("C-c")
    tmux.keys("echo AFTER-INT-$((2+2))", "Enter")
    screen = tmux.wait(r"^AFTER-INT-4", "the shell after ^C")
    assert "SLEPT-2" not in screen
    tmux.keys("exit 4", "Enter")
    wait_for(lambda: status.exists() and status.read_text().strip(), 20, "pycrictl to exit")
    assert status.read_text().strip() == "4"


def test_attach_to_a_tty_container(world: World, tmux: Tmux, tmp_path: Path) -> None:
    status = tmp_path / "status"
    cmd = f"{PYCRICTL} -r {world.engine.endpoint} attach -it {world.term}; echo $? > {status}; sleep 60"
    tmux.run("new-session", "-d", "-s", tmux.session, "-x", "90", "-y", "25", cmd)

    def prompt() -> bool:  # the shell is already running: each Enter that reaches it prints a prompt
        tmux.keys("Enter")
        return "/ #" in tmux.screen()

    wait_for(prompt, 20, "the attached shell's prompt", interval=0.5)
    tmux.keys("stty size; echo ATTACHED-$((3*3))", "Enter")
    tmux.wait(r"^ATTACHED-9", "the attached shell answering")
    tmux.wait(r"^25 90\s*$", "the attach's terminal size")
    tmux.keys("C-p", "C-q")  # crictl's detach keys
    wait_for(lambda: status.exists() and status.read_text().strip(), 20, "pycrictl attach to detach")
    assert status.read_text().strip() == "0"
    st = world.engine.crictl_json("inspect", world.term)["status"]
    assert st["state"] == "CONTAINER_RUNNING"  # detaching leaves it running


# --- port-forward -----------------------------------------------------------------------------------


def _fetch(port: int, path: str) -> bytes:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=60) as resp:
        return bytes(resp.read())


@pytest.mark.parametrize("transport", ["spdy", "websocket"])
def test_pycrictl_port_forward_10mib(world: World, transport: str) -> None:
    p = subprocess.Popen([PYCRICTL, "-r", world.engine.endpoint, "port-forward", "--transport", transport,
                          world.pod, f":{HTTP_PORT}"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert p.stdout is not None
        line = p.stdout.readline()
        m = re.fullmatch(r"Forwarding from 127\.0\.0\.1:(\d+) -> 8080\n", line)
        assert m, (line, p.stderr.read() if p.poll() is not None and p.stderr else "")
        port = int(m.group(1))
        body = _fetch(port, "/big")
        assert len(body) == BIG_SIZE
        assert hashlib.sha256(body).hexdigest() == world.big_sha256
        assert _fetch(port, "/big.sha").split()[0].decode() == world.big_sha256  # a second connection
    finally:
        p.send_signal(signal.SIGINT)
        try:
            p.wait(10)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(10)


async def _forward_once(cri: CriClient, w: World, transport: str, port: int, request: bytes) -> tuple[bytes, str]:
    """One connection through the library: a socketpair stands for the accepted local connection."""
    ours, theirs = socket.socketpair()
    reader, writer = await asyncio.open_connection(sock=ours)
    peer_r, peer_w = await asyncio.open_connection(sock=theirs)
    url = await cri.port_forward(w.pod, [port])
    pf = await SpdyPortForward.connect(url) if transport == "spdy" else None
    try:
        task = asyncio.ensure_future(pf.forward(port, reader, writer) if pf is not None
                                     else websocket_port_forward(url, port, reader, writer))
        peer_w.write(request)
        await peer_w.drain()
        got = bytearray()
        while chunk := await asyncio.wait_for(peer_r.read(65536), 30):
            got += chunk
        peer_w.close()
        err = await asyncio.wait_for(task, 30)
        writer.close()
        return bytes(got), err
    finally:
        if pf is not None:
            await pf.aclose()


@pytest.mark.parametrize("transport", ["spdy", "websocket"])
def test_port_forward_library_and_a_closed_port(world: World, transport: str) -> None:
    async def main() -> None:
        async with CriClient(world.engine.endpoint) as cri:
            got, err = await _forward_once(cri, world, transport, HTTP_PORT, b"GET /big.sha HTTP/1.0\r\n\r\n")
            assert got.startswith(b"HTTP/1.") and world.big_sha256.encode() in got, got[:300]
            assert err == ""
            # nothing listens on port 1 in the pod: the connection ends and the error stream says why
            got, err = await _forward_once(cri, world, transport, 1, b"hello")
            assert got == b""
            assert "connection refused" in err, err

    asyncio.run(main())
