"""Warm the launcher up before it forks shims, so the shims share more of its memory.

A forked shim pays (as private, copy-on-write pages) for every page of the launcher it
writes.  On CPython 3.11 two kinds of writes dominate: the specializing interpreter
rewriting the bytecode of functions the first times they run ("quickening"), and new small
objects landing in free slots of the launcher's half-used pymalloc pools.  So the launcher
runs the shim's hot paths — ttrpc frames through ``TaskV2`` (Create/Start/Wait/State/Pids/
Kill/Delete/Shutdown, with a stand-in runtime script), the events ``Forwarder``, the reaper,
``Runc.run``, pumps — enough times for the bytecode to specialize, then ``gc.freeze()``s
everything.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import tempfile
import time

from pycontainerd.shim import v2layout
from pycontainerd.shim.io import Pump, Sink
from pycontainerd.shim.loop import Future, Loop
from pycontainerd.shim.reaper import Reaper
from pycontainerd.shim.runc import Runc
from pycontainerd.shim.service import write_atomic

ROUNDS = 12


# A stand-in runtime: writes its own pid as the "container" pid and exits, so ``create``
# runs its whole path including adopting and reporting an exit.
FAKE_RUNTIME = """#!/bin/sh
while [ $# -gt 0 ]; do
  case "$1" in --pid-file) echo $$ > "$2"; shift;; esac
  shift
done
"""


def _round_io(tmp: str) -> None:
    """``Runc.run`` and a pump over a pipe to its EOF."""
    loop = Loop()
    reaper = Reaper(loop)
    runc = Runc(loop, reaper, binary="/bin/true", root=tmp, log_path=os.path.join(tmp, "log.json"))
    done = loop.spawn(runc.run(["state", "x"]))
    r, w = os.pipe2(os.O_CLOEXEC)
    sink_r, sink_w = os.pipe2(os.O_CLOEXEC)
    pump = Pump(loop, r, Sink(loop, sink_w, name="warmup"))
    os.write(w, b"x" * 100)
    os.close(w)
    timer: Future[bool] = loop.wait_for(pump.done, 5.0)
    while not (done.done() and timer.done()):
        loop.run_once(0.05)
    loop.run_once(0)
    write_atomic(os.path.join(tmp, "state.json"), b"{}")
    os.close(sink_r)
    loop._sel.close()
    os.close(loop._wake_r)
    os.close(loop._wake_w)


def _round_v2(tmp: str) -> None:
    """The runtime v2 shim's path: ttrpc frames in, task.v2 protobufs through ``TaskV2``
    (Create/Start/Wait/State/Pids/Delete/Shutdown with the stand-in runtime), events out to a
    ``Forwarder`` (a listening socket nobody answers)."""
    from google.protobuf import any_pb2
    from google.protobuf.message import Message

    from pycontainerd.api.runtime.v2.runc.options import oci_pb2
    from pycontainerd.api.runtime.v2.task import shim_pb2 as pb
    from pycontainerd.shim import taskv2
    from pycontainerd.shim.ttrpc_loop import Forwarder, TtrpcConnection, TtrpcServer
    from pycontainerd.ttrpc.protocol import ClientConnection, Request, ResponseReceived, metadata_pairs

    loop = Loop()
    reaper = Reaper(loop)
    events = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    events.bind(os.path.join(tmp, "events"))
    events.listen(4)
    forwarder = Forwarder(loop, os.path.join(tmp, "events"), "warmup")
    tasks = taskv2.TaskV2(loop, reaper, namespace="warmup", socket_path=os.path.join(tmp, "v2"), forwarder=forwarder)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(os.path.join(tmp, "v2"))
    listener.listen(4)
    server = TtrpcServer(loop, listener, tasks.methods())
    ours, theirs = socket.socketpair()
    server.connections.add(TtrpcConnection(server, ours))
    theirs.setblocking(False)
    client = ClientConnection()
    md = metadata_pairs({"containerd-namespace-ttrpc": "warmup"})
    options = oci_pb2.Options(binary_name=os.path.join(tmp, "runtime"), root=tmp)
    any_options = any_pb2.Any(type_url=f"containerd.io/{taskv2.RUNC_OPTIONS}", value=options.SerializeToString())

    def call(method: str, msg: Message) -> None:
        sid, data = client.send_request(Request(taskv2.TASK, method, msg.SerializeToString(), 0, md))
        theirs.sendall(data)
        deadline = time.monotonic() + 5.0
        while time.monotonic() < deadline:
            loop.run_once(0.05)
            try:
                got = theirs.recv(1 << 16)
            except BlockingIOError:
                continue
            if any(isinstance(ev, ResponseReceived) and ev.stream_id == sid for ev in client.receive_data(got)):
                return

    call("Create", pb.CreateTaskRequest(id="w", bundle=tmp, options=any_options))
    call("Start", pb.StartRequest(id="w"))
    call("Wait", pb.WaitRequest(id="w"))
    call("State", pb.StateRequest(id="w"))
    call("Pids", pb.PidsRequest(id="w"))
    call("Kill", pb.KillRequest(id="w", signal=9))
    call("Connect", pb.ConnectRequest(id="w"))
    call("Delete", pb.DeleteRequest(id="w"))
    call("State", pb.StateRequest(id="nosuch"))
    call("Shutdown", pb.ShutdownRequest(id="w"))
    server.close()
    forwarder.close()
    theirs.close()
    events.close()
    loop._sel.close()
    os.close(loop._wake_r)
    os.close(loop._wake_w)
    for name in ("v2", "events", v2layout.OPTIONS_FILE):
        with contextlib.suppress(OSError):
            os.unlink(os.path.join(tmp, name))


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
                _round_io(tmp)
                _round_v2(tmp)
    except Exception as exc:
        os.write(2, f"pycontainerd-shim launcher: warm-up failed: {exc!r}\n".encode())
    finally:
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGCHLD, signal.SIG_IGN)
