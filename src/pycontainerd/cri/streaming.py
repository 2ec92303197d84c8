"""CRI streaming: Exec, Attach and PortForward (the RPCs' checks and URLs) and the runtime the server calls.

The RPCs validate like containerd (the container must be running, the pod ready; stdin,
stdout or stderr asked for; a terminal has no separate stderr) and answer a URL of the
daemon's streaming server (``pycontainerd.streaming``).  ``CriStreamRuntime`` is what the
server runs once a client connects:

* exec: an exec process through the task manager, with FIFOs in the container's state dir
  (``<state>/containers/<id>/<exec id>/``): stdin opened read-write by us (never blocks,
  and CloseIO after the client's EOF), stdout/stderr read by us (a keep-alive write end
  until Start), the terminal resized with ``resize_pty``.  The exit code comes after the
  output is drained.  However it ends — exit, client gone, idle timeout, daemon stop — the
  ``finally`` kills a still-running process, deletes it from the shim and removes the
  FIFO directory.
* attach: the container's own stdio, which the daemon holds since StartContainer
  (``crilog.FifoLogger``): output as it is logged, stdin into the held FIFO (closed for
  good at the client's EOF when the container has ``stdin_once``).
* port-forward: ``netns.dial`` in the pod's network namespace.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import signal
import socket
from collections.abc import Callable
from typing import Any

from .. import errdefs, netns
from ..api.cri.runtime.v1 import api_pb2 as pb
from ..streaming.runtime import AttachRequest, ExecRequest, InStream, OutStream, StreamIO, TerminalSize
from .containers import Containers
from .crilog import Subscriber
from .execio import ExecFifos
from .imagestore import NAMESPACE
from .sandbox import Sandboxes

log = logging.getLogger("pycontainerd.cri")

CHUNK = 32 * 1024
DRAIN_TIMEOUT = 5.0
KILL_WAIT = 5.0


def _resolve(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


async def _write_fd(fd: int, data: bytes) -> None:
    """All of ``data`` into a non-blocking pipe fd, waiting for room on the loop."""
    loop = asyncio.get_running_loop()
    view = memoryview(data)
    while view:
        try:
            n = os.write(fd, view)
        except BlockingIOError:
            fut: asyncio.Future[None] = loop.create_future()
            loop.add_writer(fd, _resolve, fut)
            try:
                await fut
            finally:
                loop.remove_writer(fd)
            continue
        view = view[n:]


async def _copy_out(fd: int, out: OutStream) -> None:
    """A FIFO's read end into the client until EOF (every writer closed); owns ``fd``."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=CHUNK * 4)
    transport, _ = await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader),
                                                os.fdopen(fd, "rb", buffering=0))
    try:
        while chunk := await reader.read(CHUNK):
            await out.write(chunk)
    finally:
        transport.close()


async def _resize(queue: asyncio.Queue[TerminalSize], containers: Containers, cid: str, exec_id: str) -> None:
    while True:
        size = await queue.get()
        if size.width <= 0 or size.height <= 0:
            continue
        try:
            await containers.tasks.resize_pty(NAMESPACE, cid, exec_id, size.width, size.height)
        except errdefs.ContainerdError as exc:
            log.debug("resize of %s/%s: %s", cid, exec_id or "init", exc)


class CriStreamRuntime:
    """``streaming.StreamRuntime`` over the CRI's containers and pods."""

    def __init__(self, containers: Containers, pods: Sandboxes) -> None:
        self.containers = containers
        self.pods = pods

    # -- exec -------------------------------------------------------------------------------------
    async def exec(self, request: ExecRequest, io: StreamIO) -> int:
        c = await self.containers.get(request.container_id)
        if c.state != pb.CONTAINER_RUNNING:
            raise errdefs.FailedPrecondition(f"container {c.id} is in {pb.ContainerState.Name(c.state)} state")
        exec_id = "exec-" + secrets.token_hex(16)
        d = self.containers.io_dir(c.id) / exec_id
        tasks = self.containers.tasks
        fifos = ExecFifos(d)  # nothing made yet: what close() undoes if create fails
        helpers: list[asyncio.Task[Any]] = []
        created = started = exited = False
        try:
            fifos = await ExecFifos.create(d, [name for name, want in (
                ("stdin", io.stdin), ("stdout", io.stdout), ("stderr", None if io.tty else io.stderr)) if want])
            proc = dict(c.spec.get("process") or {})
            proc["args"] = list(request.cmd)
            proc["terminal"] = io.tty
            if io.tty and not any(str(e).startswith("TERM=") for e in proc.get("env") or []):
                proc["env"] = [*(proc.get("env") or []), "TERM=xterm"]
            if io.tty and io.resize is not None:
                # the client's first size usually arrived with its streams: runc makes the pty
                # that size (a resize after start would race the process's first output)
                size = None
                while not io.resize.empty():
                    size = io.resize.get_nowait()
                if size is not None and size.width > 0 and size.height > 0:
                    proc["consoleSize"] = {"height": size.height, "width": size.width}
            await tasks.exec(NAMESPACE, c.id, exec_id, proc, fifos.task_io(terminal=io.tty))
            created = True
            # the read ends (open since create) become the copy tasks' once the exec exists
            readers = [asyncio.create_task(_copy_out(fifos.take_reader(name), out), name=f"exec-out-{exec_id}")
                       for name, out in (("stdout", io.stdout), ("stderr", io.stderr))
                       if name in fifos.paths and out is not None]
            helpers += readers
            wait = asyncio.create_task(tasks.wait(NAMESPACE, c.id, exec_id), name=f"exec-wait-{exec_id}")
            helpers.append(wait)
            await tasks.start_process(NAMESPACE, c.id, exec_id)
            started = True
            fifos.release_writers()  # the shim holds the write ends now: EOF comes when the process is gone
            if io.stdin is not None and fifos.stdin_fd >= 0:
                helpers.append(asyncio.create_task(self._copy_in(io.stdin, fifos, c.id, exec_id)))
            if io.resize is not None and io.tty:
                helpers.append(asyncio.create_task(_resize(io.resize, self.containers, c.id, exec_id)))
            code = (await wait).exit_status
            exited = True
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.gather(*readers), DRAIN_TIMEOUT)
            for t in readers:
                if t.done() and not t.cancelled() and t.exception() is not None:
                    raise ConnectionResetError(f"exec {exec_id}: client went away: {t.exception()}")
            return code
        finally:
            for t in helpers:
                t.cancel()
            await asyncio.shield(self._exec_cleanup(c.id, exec_id, fifos, created, started and not exited, helpers))

    async def _copy_in(self, source: InStream, fifos: ExecFifos, cid: str, exec_id: str) -> None:
        while data := await source.read():
            await _write_fd(fifos.stdin_fd, data)
        fifos.close_stdin()
        with contextlib.suppress(errdefs.ContainerdError):
            await self.containers.tasks.close_io(NAMESPACE, cid, exec_id)

    async def _exec_cleanup(self, cid: str, exec_id: str, fifos: ExecFifos, created: bool, running: bool,
                            helpers: list[asyncio.Task[Any]]) -> None:
        tasks = self.containers.tasks
        await asyncio.gather(*helpers, return_exceptions=True)
        try:
            if created:
                if running:  # the client went away (or the daemon stops): the process goes too
                    with contextlib.suppress(errdefs.ContainerdError):
                        await tasks.kill(NAMESPACE, cid, signal.SIGKILL, exec_id=exec_id)
                    with contextlib.suppress(errdefs.ContainerdError, TimeoutError):
                        await asyncio.wait_for(tasks.wait(NAMESPACE, cid, exec_id), KILL_WAIT)
                with contextlib.suppress(errdefs.ContainerdError):
                    await tasks.delete_process(NAMESPACE, cid, exec_id)
        finally:
            await fifos.close()

    # -- attach -----------------------------------------------------------------------------------
    async def attach(self, request: AttachRequest, io: StreamIO) -> None:
        c = await self.containers.get(request.container_id)
        if c.state != pb.CONTAINER_RUNNING:
            raise errdefs.FailedPrecondition(f"container {c.id} is in {pb.ContainerState.Name(c.state)} state")
        logger = self.containers.logger(c.id)
        if logger is None:
            raise errdefs.FailedPrecondition(f"container {c.id} has no stdio held by this daemon: cannot attach")
        sub = logger.subscribe()
        helpers: list[asyncio.Task[None]] = []
        try:
            if io.stdin is not None and logger.stdin_fd >= 0:
                # the end of the client's stdin (containerd 1.6's ContainerIO.Attach): a
                # ``stdin_once`` container's stdin is closed, unless the attach has a terminal;
                # otherwise the container's stdin stays open and this attach detaches (its output ends)
                close = bool(c.config.stdin_once) and not io.tty

                def detach(sub: Subscriber = sub) -> None:
                    logger.unsubscribe(sub)
                    sub.offer(None)

                helpers.append(asyncio.create_task(self._attach_stdin(io.stdin, c.id, close, detach)))
            if io.resize is not None and c.config.tty:
                helpers.append(asyncio.create_task(_resize(io.resize, self.containers, c.id, "")))
            while True:
                item = await sub.queue.get()
                if item is None:
                    return
                stream, data = item
                out = io.stdout if stream == "stdout" else io.stderr
                if out is not None:
                    await out.write(data)
        finally:
            logger.unsubscribe(sub)
            for t in helpers:
                t.cancel()
            await asyncio.gather(*helpers, return_exceptions=True)

    async def _attach_stdin(self, source: InStream, cid: str, close: bool, detach: Callable[[], None]) -> None:
        logger = self.containers.logger(cid)
        while data := await source.read():
            if logger is None or logger.stdin_fd < 0:
                break
            await _write_fd(logger.stdin_fd, data)
        if not close:
            detach()
        elif logger is not None:
            logger.close_stdin()
            with contextlib.suppress(errdefs.ContainerdError):
                await self.containers.tasks.close_io(NAMESPACE, cid)

    # -- port-forward -----------------------------------------------------------------------------
    async def dial(self, pod_id: str, port: int) -> socket.socket:
        sb = await self.pods.get(pod_id)
        if not sb.ready:
            raise errdefs.FailedPrecondition(f"pod sandbox {sb.id} is not ready: cannot forward to it")
        return await netns.dial(sb.netns, port)


# -- the RPCs' checks -------------------------------------------------------------------------------
async def exec_request(containers: Containers, req: pb.ExecRequest) -> ExecRequest:
    if not req.cmd:
        raise errdefs.InvalidArgument("exec needs a command")
    cid = await _checked_container(containers, req.container_id)
    _check_streams(req.stdin, req.stdout, req.stderr, req.tty)
    return ExecRequest(cid, tuple(req.cmd), tty=req.tty, stdin=req.stdin, stdout=req.stdout, stderr=req.stderr)


async def attach_request(containers: Containers, req: pb.AttachRequest) -> AttachRequest:
    cid = await _checked_container(containers, req.container_id)
    _check_streams(req.stdin, req.stdout, req.stderr, req.tty)
    return AttachRequest(cid, tty=req.tty, stdin=req.stdin, stdout=req.stdout, stderr=req.stderr)


async def _checked_container(containers: Containers, cid: str) -> str:
    c = await containers.get(cid)
    if c.state != pb.CONTAINER_RUNNING:
        raise errdefs.FailedPrecondition(f"container {c.id} is in {pb.ContainerState.Name(c.state)} state")
    return c.id


def _check_streams(stdin: bool, stdout: bool, stderr: bool, tty: bool) -> None:
    """kubelet's streaming request checks, as containerd applies them."""
    if not (stdin or stdout or stderr):
        raise errdefs.InvalidArgument("one of stdin, stdout, or stderr must be set")
    if tty and stderr:
        raise errdefs.InvalidArgument("tty and stderr cannot both be true")


async def port_forward_ports(pods: Sandboxes, req: pb.PortForwardRequest) -> tuple[str, tuple[int, ...]]:
    sb = await pods.get(req.pod_sandbox_id)
    if not sb.ready:
        raise errdefs.FailedPrecondition(f"sandbox {sb.id} is not running")
    for p in req.port:
        if not 0 < p < 65536:
            raise errdefs.InvalidArgument(f"invalid port {p}")
    return sb.id, tuple(req.port)
