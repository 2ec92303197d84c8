"""A container writing its stdio fast to a slower reader, with real runc: it blocks, never fails.

O_NONBLOCK belongs to an open file description, which a pipe end shares with every process
holding it: were the container's end of a stdio pipe non-blocking, a container writing faster
than its reader would get EAGAIN (busybox dd: "write error: Resource temporarily unavailable")
instead of waiting.  Only the shim's own ends may be non-blocking.  The readers here are FIFOs
polled like ``ctr`` reads them, far slower than ``dd`` writes.

runc itself clears O_NONBLOCK on the stdio it hands to the container (Go's ``File.Fd``), so the
container floods pass even with non-blocking ends from the shim (checked); the shim's side is
pinned without runc by tests/unit/test_shim_io.py.  A logging binary (``binary://``) is started
by the shim directly: its readiness fd was non-blocking (fails on the old code).
"""

from __future__ import annotations

import os

import pytest

from tests.fixtures.procs import wait_for_async

from .shim_fixtures import ShimEnv, busybox, env, run
from .shim_support import FifoReader

__all__ = ["busybox", "env"]  # fixtures, used by name

pytestmark = pytest.mark.root


SIZE = 8 << 20
# 1 MiB write(2)s: one into a non-blocking pipe (64 KiB) returns short, the next fails EAGAIN
FLOOD_OUT = f"busybox dd if=/dev/zero bs=1M count={SIZE >> 20} 2>/dev/null || echo dd-stdout-failed-$? >&2"
FLOOD_ERR = f"busybox dd if=/dev/zero bs=1M count={SIZE >> 20} >&2 2>/dev/null || echo dd-stderr-failed-$?"
SCRIPT = f"{FLOOD_OUT}; {FLOOD_ERR}"


def _failures(*readers: FifoReader) -> list[bytes]:
    """What a failed dd said (on the other stream, before or after that stream's flood)."""
    return [bytes(end) for r in readers for end in (r.data[:64], r.data[-64:]) if b"failed" in end]


async def _read_both(out: FifoReader, err: FifoReader, what: str) -> None:
    """Poll both FIFOs (as ctr does) until each has SIZE bytes or a dd reported failing."""
    def done() -> bool:
        out.poll()
        err.poll()
        return (len(out.data) >= SIZE and len(err.data) >= SIZE) or bool(_failures(out, err))

    try:
        await wait_for_async(done, 60, f"{what}: 8 MiB on stdout and stderr")
    except TimeoutError as exc:
        raise TimeoutError(f"{exc}: got {len(out.data)} + {len(err.data)} bytes, "
                           f"ends {bytes(out.data[-64:])!r} {bytes(err.data[-64:])!r}") from None


def _check(what: str, out: FifoReader, err: FifoReader) -> None:
    assert not _failures(out, err), what  # shown before the sizes
    assert (len(out.data), len(err.data)) == (SIZE, SIZE), what
    assert out.data.count(0) == SIZE and err.data.count(0) == SIZE, what


def test_init_and_exec_stdout_and_stderr_floods_reach_a_slow_reader(env: ShimEnv) -> None:
    async def body() -> None:
        bundle, c = await env.launch("flood", ["sh", "-c", f"{SCRIPT}; exec sleep 1000"])
        out_path, err_path = bundle.fifo("stdout"), bundle.fifo("stderr")
        out, err = FifoReader(out_path), FifoReader(err_path)
        try:
            await c.create(rootfs=bundle.rootfs_mounts, stdin="", stdout=out_path, stderr=err_path, terminal=False)
            await c.start()
            # the init floods both streams, then sleeps (keeping them open) for the exec
            await _read_both(out, err, "init")
            _check("init", out, err)

            eo_path, ee_path = bundle.fifo("exec-out"), bundle.fifo("exec-err")
            eo, ee = FifoReader(eo_path), FifoReader(ee_path)
            try:
                spec = dict(env.spec["process"], args=["sh", "-c", SCRIPT], terminal=False)
                await c.exec("x1", spec, stdin="", stdout=eo_path, stderr=ee_path, terminal=False)
                await c.start("x1")
                await _read_both(eo, ee, "exec")
                assert (await c.wait("x1")).exit_status == 0
                await eo.read_until_eof()
                await ee.read_until_eof()
                _check("exec", eo, ee)
                await c.delete("x1")
            finally:
                eo.close()
                ee.close()
            await c.kill("", 9)
            assert (await c.wait()).exit_status == 137
            await c.delete()
            await env.finish(c, bundle)
        finally:
            out.close()
            err.close()

    run(env, body(), timeout=180)


def test_a_logging_binary_gets_blocking_fds_and_the_whole_flood(env: ShimEnv) -> None:
    # binary:// logger: fds 3/4 (the streams) and 5 (readiness) are its ends, blocking too
    async def body() -> None:
        logdir = env.tmp / "binlog"
        logdir.mkdir()
        script = env.tmp / "logger.sh"
        script.write_text(
            "#!/bin/sh\n"
            'grep -h flags /proc/$$/fdinfo/3 /proc/$$/fdinfo/4 /proc/$$/fdinfo/5 > "$2/flags"\n'
            '/bin/cat <&3 5>&- > "$2/out" &\n'
            '/bin/cat <&4 5>&- > "$2/err" &\n'
            "exec 5>&-\n"
            "wait\n"
        )
        script.chmod(0o755)
        bundle, c = await env.launch("flog", ["sh", "-c", SCRIPT])
        uri = f"binary://{script}?dir={logdir}"
        await c.create(rootfs=bundle.rootfs_mounts, stdin="", stdout=uri, stderr=uri, terminal=False)
        await c.start()
        assert (await c.wait()).exit_status == 0
        flags = [int(line.split()[1], 8) for line in (logdir / "flags").read_text().splitlines()]
        assert len(flags) == 3 and not any(f & os.O_NONBLOCK for f in flags), flags

        def sizes() -> tuple[int, int]:
            return (logdir / "out").stat().st_size, (logdir / "err").stat().st_size

        await wait_for_async(lambda: sizes() == (SIZE, SIZE), 30, "the logger to write both streams")
        await c.delete()
        await env.finish(c, bundle)

    run(env, body(), timeout=120)
