"""Warm the launcher up before it forks shims, so the shims share more of its memory.

A forked shim pays (as private, copy-on-write pages) for every page of the launcher it
writes.  On CPython 3.11 two kinds of writes dominate: the specializing interpreter
rewriting the bytecode of functions the first times they run ("quickening"), and new small
objects landing in free slots of the launcher's half-used pymalloc pools.  So the launcher
runs the shim's hot paths — loop, protocol, server/service request handling, the reaper
``create``/``wait``/``delete`` and ``Runc.run`` (with a stand-in runtime script), pumps — enough times for the bytecode
to specialize, then ``gc.freeze()``s everything.  Measured: a fresh shim's private memory
after startup drops from ~3.1 MiB (cold) to ~1.9 MiB.  (Filling free pool slots with
ballast saved another ~0.1 MiB private but cost more than that in shared pages: not done.)
"""

from __future__ import annotations

import os
import signal
import socket
import tempfile

from pycontainerd import timestamps
from pycontainerd.shim import protocol
from pycontainerd.shim.io import Pump, Sink
from pycontainerd.shim.loop import Future, Loop
from pycontainerd.shim.reaper import Reaper
from pycontainerd.shim.runc import Runc
from pycontainerd.shim.server import Connection, Server
from pycontainerd.shim.service import Service, ShimConfig, write_atomic

ROUNDS = 12


def _requests() -> bytes:
    frames = [
        protocol.request(1, "subscribe", {}),
        protocol.request(2, "connect", {}),
        protocol.request(3, "state", {"exec_id": ""}),
        protocol.request(4, "wait", {"exec_id": "x"}),
        protocol.request(5, "kill", {"exec_id": "", "signal": 9, "all": False}),
        protocol.request(6, "exec", {"exec_id": "e", "spec": {}, "stdin": "", "stdout": "", "stderr": ""}),
        protocol.request(7, "delete", {"exec_id": ""}),
        protocol.request(8, "nosuch", {}),
    ]
    return b"".join(frames)


# A stand-in runtime: writes its own pid as the "container" pid and exits, so ``create``
# runs its whole path including adopting and reporting an exit.
FAKE_RUNTIME = """#!/bin/sh
while [ $# -gt 0 ]; do
  case "$1" in --pid-file) echo $$ > "$2"; shift;; esac
  shift
done
"""


def _lifecycle(loop: Loop, service: Service) -> None:
    async def run() -> None:
        await service.create({"rootfs": [], "stdin": "", "stdout": "", "stderr": "", "terminal": False})
        await service.wait({"exec_id": ""})
        await service.state({"exec_id": ""})
        await service.delete({"exec_id": ""})
        await service.shutdown({})  # waits for the deferred runtime delete

    task = loop.spawn(run())
    while not task.done():
        loop.run_once(0.05)
    task.result()


def _round(tmp: str) -> None:
    loop = Loop()
    reaper = Reaper(loop)
    runtime = os.path.join(tmp, "runtime")
    config = ShimConfig("warmup", "warmup", tmp, os.path.join(tmp, "sock"), runtime_binary=runtime)
    service = Service(loop, reaper, config)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(os.path.join(tmp, "sock"))
    listener.listen(4)
    server = Server(loop, listener, service)
    ours, theirs = socket.socketpair()
    server.connections.add(Connection(server, ours))
    theirs.sendall(_requests())
    _lifecycle(loop, service)
    runc = Runc(loop, reaper, binary="/bin/true", root=tmp, log_path=os.path.join(tmp, "log.json"))
    done = loop.spawn(runc.run(["state", "x"]))
    # a pump over a pipe, with an EOF
    r, w = os.pipe2(os.O_CLOEXEC)
    sink_r, sink_w = os.pipe2(os.O_CLOEXEC)
    pump = Pump(loop, r, Sink(loop, sink_w, name="warmup"))
    os.write(w, b"x" * 100)
    os.close(w)
    timer: Future[bool] = loop.wait_for(pump.done, 5.0)
    while not (done.done() and timer.done()):
        loop.run_once(0.05)
    loop.run_once(0)
    loop.run_once(0)
    theirs.setblocking(False)
    try:
        decoder = protocol.Decoder()
        decoder.feed(theirs.recv(1 << 16))
    except BlockingIOError:
        pass
    service.publish(protocol.TASK_EXIT, {"container_id": "w", "exit_status": 0, "exited_at": timestamps.format_ns(1)})
    write_atomic(os.path.join(tmp, "state.json"), b"{}")
    server.close()
    theirs.close()
    os.close(sink_r)
    loop._sel.close()
    os.close(loop._wake_r)
    os.close(loop._wake_w)


def warm_up() -> None:
    """Run the hot paths (never raises: warming up is an optimization only)."""
    try:
        with tempfile.TemporaryDirectory(prefix="pycd-shim-warmup-") as tmp:
            with open(os.path.join(tmp, "runtime"), "w") as f:
                f.write(FAKE_RUNTIME)
            os.chmod(os.path.join(tmp, "runtime"), 0o755)
            with open(os.path.join(tmp, "config.json"), "w") as f:
                f.write('{"linux": {"namespaces": [{"type": "pid"}]}}')
            for _ in range(ROUNDS):
                _round(tmp)
                os.unlink(os.path.join(tmp, "sock"))
    except Exception as exc:
        os.write(2, f"pycontainerd-shim launcher: warm-up failed: {exc!r}\n".encode())
    finally:
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGCHLD, signal.SIG_IGN)
