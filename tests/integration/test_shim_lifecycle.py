"""The shim with real runc, overlayfs and busybox: lifecycle, stdio, exec, signals, pty.

Driven as the daemon drives it: forked by the fork server, over the runtime v2 shim API
(``runtime.v2.TaskShim``: task.v2 over ttrpc), events through the shim manager's ttrpc
Events service."""

from __future__ import annotations

import asyncio
import os
import signal
from typing import Any

import pytest

from pycontainerd import errdefs
from pycontainerd.runtime.shim_client import read_exit

from .shim_fixtures import ShimEnv, busybox, env, run
from .shim_support import FifoReader, mounts_under, pid_alive, poll_until

__all__ = ["busybox", "env"]  # fixtures, used by name

pytestmark = pytest.mark.root


def test_create_start_wait_stdout_stderr(env: ShimEnv) -> None:
    async def body() -> None:
        bundle, c = await env.launch("c1", ["sh", "-c", "echo out; echo err >&2; exit 7"])
        out_path, err_path = bundle.fifo("stdout"), bundle.fifo("stderr")
        out, err = FifoReader(out_path), FifoReader(err_path)
        events: list[tuple[str, dict[str, Any]]] = []

        async def collect() -> None:
            async for ev in c.events():
                events.append(ev)

        collector = asyncio.create_task(collect())
        pid = await c.create(rootfs=bundle.rootfs_mounts, stdin="", stdout=out_path, stderr=err_path, terminal=False)
        assert pid > 0
        assert (await c.state()).status == "created"
        waiter = asyncio.create_task(c.wait())  # ctr waits before it starts
        await asyncio.sleep(0)
        assert await c.start() == pid
        exit_info = await waiter
        assert exit_info.exit_status == 7
        assert exit_info.pid == pid
        assert await out.read_until_eof() == b"out\n"
        assert await err.read_until_eof() == b"err\n"
        st = await c.state()
        assert (st.status, st.exit_status) == ("stopped", 7)
        recorded = read_exit(bundle.path)
        assert recorded is not None
        assert recorded.exit_status == 7
        # wait after the fact returns at once
        assert (await c.wait()).exit_status == 7
        with pytest.raises(errdefs.NotFound):
            await c.kill("", signal.SIGKILL)
        deleted = await c.delete()
        assert deleted.exit_status == 7
        with pytest.raises(errdefs.NotFound):
            await c.state()
        await poll_until(lambda: any(t == "/tasks/exit" for t, _ in events), what="exit event")
        _, payload = next(e for e in events if e[0] == "/tasks/exit")
        assert payload["container_id"] == "c1"
        assert payload["exit_status"] == 7
        assert payload["pid"] == pid
        assert payload["exited_at"].endswith("Z")
        await env.finish(c, bundle)
        collector.cancel()
        out.close()
        err.close()

    run(env, body())


def test_stdin_eof_and_close_io(env: ShimEnv) -> None:
    async def body() -> None:
        # 1: the client closing its end after Start is a detach (the shim holds a write end of
        # its own, as containerd's): cat reads what a later writer sends; CloseIO ends it
        bundle, c = await env.launch("cat1", ["cat"])
        in_path, out_path = bundle.fifo("stdin"), bundle.fifo("stdout")
        out = FifoReader(out_path)
        await c.create(rootfs=bundle.rootfs_mounts, stdin=in_path, stdout=out_path, stderr="", terminal=False)
        w = os.open(in_path, os.O_WRONLY | os.O_NONBLOCK)  # the shim has its read end open
        await c.start()
        os.write(w, b"hello stdin\n")
        await out.read_until(b"hello stdin\n")
        os.close(w)
        w = os.open(in_path, os.O_WRONLY | os.O_NONBLOCK)  # ENXIO if the shim had closed stdin
        os.write(w, b"again\n")
        os.close(w)
        await out.read_until(b"hello stdin\nagain\n")
        assert (await c.state()).status == "running"
        await c.close_io("", stdin=True)
        assert (await c.wait()).exit_status == 0
        assert await out.read_until_eof() == b"hello stdin\nagain\n"
        await c.delete()
        await env.finish(c, bundle)
        out.close()

        # 1b: a writer that came and went before Start (``echo x | ctr run --rm``, whose
        # CloseIO ctr 1.6 loses): its EOF reaches cat once the data is read
        bundle, c = await env.launch("cat1b", ["cat"])
        in_path, out_path = bundle.fifo("stdin"), bundle.fifo("stdout")
        out = FifoReader(out_path)
        await c.create(rootfs=bundle.rootfs_mounts, stdin=in_path, stdout=out_path, stderr="", terminal=False)
        w = os.open(in_path, os.O_WRONLY | os.O_NONBLOCK)
        os.write(w, b"early\n")
        os.close(w)
        await c.start()
        assert (await c.wait()).exit_status == 0
        assert await out.read_until_eof() == b"early\n"
        await c.delete()
        await env.finish(c, bundle)
        out.close()

        # 2: CloseIO while the client still holds the FIFO open; data written before it
        # is forwarded first
        bundle, c = await env.launch("cat2", ["cat"])
        in_path, out_path = bundle.fifo("stdin"), bundle.fifo("stdout")
        out = FifoReader(out_path)
        await c.create(rootfs=bundle.rootfs_mounts, stdin=in_path, stdout=out_path, stderr="", terminal=False)
        w = os.open(in_path, os.O_WRONLY | os.O_NONBLOCK)
        await c.start()
        os.write(w, b"before close\n")
        await c.close_io("", stdin=True)
        assert (await c.wait()).exit_status == 0
        assert await out.read_until_eof() == b"before close\n"
        os.close(w)
        await c.delete()
        await env.finish(c, bundle)
        out.close()

    run(env, body())


def test_exec_kill_pids(env: ShimEnv) -> None:
    async def body() -> None:
        bundle, c = await env.launch("ex1", ["sleep", "1000"])
        init_pid = await c.create(rootfs=bundle.rootfs_mounts, stdin="", stdout="", stderr="", terminal=False)
        await c.start()
        assert (await c.state()).status == "running"

        out_path = bundle.fifo("exec-out")
        out = FifoReader(out_path)
        proc_spec = dict(env.spec["process"], args=["sh", "-c", "echo from exec; exit 5"], terminal=False)
        await c.exec("e1", proc_spec, stdin="", stdout=out_path, stderr="", terminal=False)
        with pytest.raises(errdefs.AlreadyExists):
            await c.exec("e1", proc_spec, stdin="", stdout="", stderr="", terminal=False)
        assert (await c.state("e1")).status == "created"
        waiter = asyncio.create_task(c.wait("e1"))
        epid = await c.start("e1")
        assert epid > 0
        assert (await waiter).exit_status == 5
        assert await out.read_until_eof() == b"from exec\n"
        assert (await c.delete("e1")).exit_status == 5
        with pytest.raises(errdefs.NotFound):
            await c.state("e1")

        sleeper = dict(env.spec["process"], args=["sleep", "1000"], terminal=False)
        await c.exec("e2", sleeper, stdin="", stdout="", stderr="", terminal=False)
        e2 = await c.start("e2")
        pids = await c.pids()
        assert {p.pid for p in pids} >= {init_pid, e2}
        assert next(p for p in pids if p.pid == e2).exec_id == "e2"
        assert next(p for p in pids if p.pid == init_pid).exec_id == ""
        with pytest.raises(errdefs.FailedPrecondition):
            await c.delete("e2")  # running
        await c.kill("e2", signal.SIGKILL)
        assert (await c.wait("e2")).exit_status == 128 + signal.SIGKILL
        await c.delete("e2")

        with pytest.raises(errdefs.FailedPrecondition):
            await c.delete()
        await c.kill("", signal.SIGKILL)
        assert (await c.wait()).exit_status == 137
        await c.delete()
        await env.finish(c, bundle)
        out.close()

    run(env, body())


def test_pause_resume_update(env: ShimEnv) -> None:
    async def body() -> None:
        bundle, c = await env.launch("pz", ["sleep", "1000"])
        events: list[str] = []

        async def collect() -> None:
            async for topic, _ in c.events():
                events.append(topic)

        collector = asyncio.create_task(collect())
        await c.create(rootfs=bundle.rootfs_mounts, stdin="", stdout="", stderr="", terminal=False)
        with pytest.raises(errdefs.FailedPrecondition):
            await c.pause()  # created
        await c.start()
        await c.pause()
        assert (await c.state()).status == "paused"
        with pytest.raises(errdefs.FailedPrecondition):
            await c.pause()
        await c.resume()
        assert (await c.state()).status == "running"
        await c.update({"pids": {"limit": 64}})
        stats = await c.stats()
        assert stats.type_url.endswith(("io.containerd.cgroups.v1.Metrics", "io.containerd.cgroups.v2.Metrics"))
        await poll_until(lambda: "/tasks/resumed" in events, what="resumed event")
        assert events.index("/tasks/paused") < events.index("/tasks/resumed")
        # kill while paused: the shim resumes the frozen cgroup so the exit is seen
        await c.pause()
        await c.kill("", signal.SIGKILL)
        assert (await c.wait()).exit_status == 137
        await c.delete()
        await env.finish(c, bundle)
        collector.cancel()

    run(env, body())


def test_delete_created_task(env: ShimEnv) -> None:
    async def body() -> None:
        bundle, c = await env.launch("cr", ["true"])
        pid = await c.create(rootfs=bundle.rootfs_mounts, stdin="", stdout="", stderr="", terminal=False)
        assert pid_alive(pid)
        info = await c.delete()
        assert info.pid == pid
        assert not pid_alive(pid)
        await env.finish(c, bundle)

    run(env, body())


def test_create_failure_reports_runtime_error(env: ShimEnv) -> None:
    async def body() -> None:
        bundle, c = await env.launch("bad", ["/no/such/binary"])
        with pytest.raises(errdefs.ContainerdError) as info:
            await c.create(rootfs=bundle.rootfs_mounts, stdin="", stdout="", stderr="", terminal=False)
        assert "no such file" in str(info.value).lower() or "not found" in str(info.value).lower()
        assert mounts_under(bundle.path) == []
        await env.finish(c, bundle)

    run(env, body())


def test_terminal(env: ShimEnv) -> None:
    async def body() -> None:
        bundle, c = await env.launch("tty1", ["sh", "-c", "stty size; tty; read line; echo got:$line"], terminal=True)
        in_path, out_path = bundle.fifo("stdin"), bundle.fifo("stdout")
        out = FifoReader(out_path)
        await c.create(rootfs=bundle.rootfs_mounts, stdin=in_path, stdout=out_path, stderr="", terminal=True)
        w = os.open(in_path, os.O_WRONLY | os.O_NONBLOCK)
        await c.resize_pty("", 100, 40)
        await c.start()
        await out.read_until(b"/dev/pts/")
        os.write(w, b"typed\n")
        assert (await c.wait()).exit_status == 0
        text = (await out.read_until_eof()).replace(b"\r", b"")
        assert b"40 100\n" in text
        assert b"got:typed" in text
        os.close(w)
        await c.delete()
        await env.finish(c, bundle)
        out.close()

    run(env, body())


def test_log_uri_file_and_binary(env: ShimEnv) -> None:
    async def body() -> None:
        log = env.tmp / "logs" / "c.log"
        bundle, c = await env.launch("lf", ["sh", "-c", "echo to-out; echo to-err >&2"])
        await c.create(
            rootfs=bundle.rootfs_mounts, stdin="", stdout=f"file://{log}", stderr=f"file://{log}", terminal=False
        )
        await c.start()
        assert (await c.wait()).exit_status == 0
        assert sorted(log.read_text().splitlines()) == ["to-err", "to-out"]
        await c.delete()
        await env.finish(c, bundle)

        # binary logger: fds 3/4 are the streams, closing fd 5 says "ready"
        logdir = env.tmp / "binlog"
        logdir.mkdir()
        script = env.tmp / "logger.sh"
        script.write_text(
            "#!/bin/sh\n"
            'echo "$CONTAINER_NAMESPACE/$CONTAINER_ID" > "$2/who"\n'
            '/bin/cat <&3 5>&- > "$2/out" &\n'
            '/bin/cat <&4 5>&- > "$2/err" &\n'
            "exec 5>&-\n"
            "wait\n"
        )
        script.chmod(0o755)
        bundle, c = await env.launch("lb", ["sh", "-c", "echo b-out; echo b-err >&2"])
        uri = f"binary://{script}?dir={logdir}"
        await c.create(rootfs=bundle.rootfs_mounts, stdin="", stdout=uri, stderr=uri, terminal=False)
        await c.start()
        assert (await c.wait()).exit_status == 0
        await poll_until(lambda: (logdir / "err").exists() and (logdir / "err").read_text() == "b-err\n")
        await poll_until(lambda: (logdir / "out").exists() and (logdir / "out").read_text() == "b-out\n")
        assert (logdir / "who").read_text() == "shimtest/lb\n"
        await c.delete()
        await env.finish(c, bundle)

    run(env, body())
