"""Async wrapper of the runc CLI (any OCI runtime with runc's CLI: crun works the same).

Every invocation is ``<binary> --root <root> --log <bundle>/log.json --log-format json
[--systemd-cgroup] <command> ...``, started through the reaper (never a second waitpid) and
awaited on the shim loop.  A failing command raises ``RuncError`` carrying runc's exit
status, its stderr and the error lines it appended to the JSON log; the message is the most
specific of those (the log's last ``error`` entry), as containerd's ``runtimeError`` does.

For ``create`` and ``exec`` the runtime's stdio *are* the container process's stdio (the
caller passes the pipe ends), so their stderr cannot be captured: the log file is the only
source of the error text for those.
"""

from __future__ import annotations

import json
import os
import re
import select
import shutil
import time
from collections.abc import Sequence
from typing import Any

from pycontainerd import errdefs
from pycontainerd.shim.loop import Future, Loop
from pycontainerd.shim.reaper import Reaper


class RuncError(errdefs.Unknown):
    """A runtime command failed; ``stderr`` and ``log`` hold what the runtime said."""

    def __init__(self, command: str, status: int, stderr: str, log: list[str]) -> None:
        lines = stderr.strip().splitlines()
        detail = log[-1] if log else (lines[-1] if lines else "")
        msg = f"runc {command} failed: {detail or 'no error message'}: exit status {status}"
        super().__init__(msg)
        self.command = command
        self.status = status
        self.stderr = stderr
        self.log = log
        self.detail = detail


_FOUND: dict[str, str] = {}  # bare runtime name -> its path on PATH, found once per process


def resolve_binary(binary: str, *, again: bool = False) -> str:
    """The runtime binary to exec: a bare name (``runc``) is looked up on PATH once and
    remembered — the launcher does it before it forks, so shims inherit the answer; exec'ing
    the bare name would walk PATH (a failed execve per entry) at every runc command.
    ``again``: forget what was found (it was not there any more)."""
    if "/" in binary:
        return binary
    if again:
        _FOUND.pop(binary, None)
    found = _FOUND.get(binary)
    if found is None:
        found = _FOUND[binary] = shutil.which(binary) or binary
    return found


# -- which runtime binary may be started without ``<runtime> start`` -------------------------
# ``runc start`` of a created container (runc 1.0 and 1.1: ``start.go`` -> ``Container.Exec``)
# opens ``<root>/<id>/exec.fifo`` for reading, reads it to EOF (``runc init`` writes one byte,
# then execs the user process, which closes its end), checks it got data and removes the
# FIFO: the FIFO's existence is what makes runc report "created".  The poststart hooks ran at
# ``create`` in those versions; later runc moved them to ``start`` (opencontainers/runc#5186),
# and other runtimes (crun) start differently.  So the shim releases the init itself only for
# a binary the launcher probed (``probe_runtime``) and found to be runc 1.0 or 1.1 — the very
# file: its identity (device, inode, size, times) is checked at each start, a replaced binary
# is unknown until the next launcher.
FIFO_START_VERSIONS = ((1, 0), (1, 1))
_RUNC_VERSION = re.compile(rb"^runc version (\d+)\.(\d+)\.(\d+)", re.MULTILINE)
_Identity = tuple[int, int, int, int, int]
_PROBED: dict[str, tuple[_Identity, tuple[int, int, int]]] = {}  # path -> (identity, version)


def _identity(path: str) -> _Identity | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def parse_runc_version(out: bytes) -> tuple[int, int, int] | None:
    m = _RUNC_VERSION.search(out)
    return (int(m[1]), int(m[2]), int(m[3])) if m else None


def probe_runtime(binary: str = "runc", timeout: float = 5.0) -> tuple[int, int, int] | None:
    """Run ``<binary> --version`` once and remember its runc version for that file (blocking:
    for the launcher, before it forks).  Returns the version, or None (not runc, not found,
    no answer within ``timeout``: the probe is then killed)."""
    path = resolve_binary(binary)
    ident = _identity(path)
    if ident is None:
        return None
    out = bytearray()
    try:
        r, w = os.pipe2(os.O_CLOEXEC)
    except OSError:
        return None
    pid = 0
    deadline = time.monotonic() + timeout
    try:
        devnull = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
        try:
            pid = os.posix_spawn(
                path,
                [path, "--version"],
                os.environ,
                file_actions=[
                    (os.POSIX_SPAWN_DUP2, devnull, 0),
                    (os.POSIX_SPAWN_DUP2, w, 1),
                    (os.POSIX_SPAWN_DUP2, devnull, 2),
                ],
            )
        finally:
            os.close(devnull)
            os.close(w)
        while len(out) < 4096:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([r], [], [], left)[0]:
                out.clear()  # no answer in time: unknown
                break
            chunk = os.read(r, 4096)
            if not chunk:
                break
            out += chunk
    except OSError:
        out.clear()
    finally:
        os.close(r)
        if pid:
            _reap(pid, deadline)
    version = parse_runc_version(bytes(out))
    if version is not None and _identity(path) == ident:
        _PROBED[path] = (ident, version)
    return version


def _reap(pid: int, deadline: float) -> None:
    """Collect the probe (the launcher ignores SIGCHLD: then the kernel already did); one
    still running at ``deadline`` is killed."""
    while True:
        try:
            done, _ = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            return
        if done:
            return
        if time.monotonic() >= deadline:
            try:
                os.kill(pid, 9)
                os.waitpid(pid, 0)
            except (ProcessLookupError, ChildProcessError):
                pass
            return
        time.sleep(0.001)


def starts_by_fifo(binary: str) -> bool:
    """True when ``binary`` is a runc the launcher probed whose ``start`` only releases the
    init through its exec FIFO (see ``FIFO_START_VERSIONS``), and the file is still that one."""
    path = resolve_binary(binary)
    probed = _PROBED.get(path)
    if probed is None:
        return False
    ident, version = probed
    return version[:2] in FIFO_START_VERSIONS and _identity(path) == ident


def _exit_code(status: int) -> int:
    if os.WIFEXITED(status):
        return os.WEXITSTATUS(status)
    if os.WIFSIGNALED(status):
        return 128 + os.WTERMSIG(status)
    return 255


class Runc:
    def __init__(
        self,
        loop: Loop,
        reaper: Reaper,
        *,
        binary: str = "runc",
        root: str,
        log_path: str,
        systemd_cgroup: bool = False,
    ) -> None:
        # never --debug, whatever the shim's own -debug: containerd's runc shim does not set
        # go-runc's Debug either (runc would write its debug lines, nsexec's too, into log.json)
        self.loop = loop
        self.reaper = reaper
        self.binary = binary
        self.root = root
        self.log_path = log_path
        self.systemd_cgroup = systemd_cgroup

    def _argv(self, args: Sequence[str], log_path: str | None = None) -> list[str]:
        log = self.log_path if log_path is None else log_path
        argv = [self.binary, "--root", self.root, "--log", log, "--log-format", "json"]
        if self.systemd_cgroup:
            argv.append("--systemd-cgroup")
        argv.extend(args)
        return argv

    def _log_offset(self) -> int:
        try:
            return os.stat(self.log_path).st_size
        except OSError:
            return 0

    def _log_errors(self, offset: int) -> list[str]:
        try:
            with open(self.log_path, "rb") as f:
                f.seek(offset)
                data = f.read(1 << 20)
        except OSError:
            return []
        out: list[str] = []
        for line in data.splitlines():
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            if isinstance(entry, dict) and entry.get("level") in ("error", "fatal"):
                out.append(str(entry.get("msg", "")))
        return out

    async def run(
        self,
        args: Sequence[str],
        *,
        input: bytes | None = None,
        stdio: tuple[int | None, int | None, int | None] | None = None,
        log_path: str | None = None,
    ) -> bytes:
        """Run one runtime command; return its stdout (empty when ``stdio`` is given).

        ``log_path`` overrides the JSON log (``os.devnull``: the command's errors are then
        known from its stderr only)."""
        offset = self._log_offset() if log_path is None else 0
        to_close: list[int] = []
        out_buf = bytearray()
        err_buf = bytearray()
        eofs: list[Future[None]] = []
        exit_fut: Future[tuple[int, int]] = Future()
        try:
            if stdio is not None:
                fds = stdio
            else:
                in_r: int | None = None
                if input is not None:
                    in_r, in_w = os.pipe2(os.O_CLOEXEC)
                    to_close.append(in_r)
                    # small payloads (resources JSON): fits the pipe buffer, write now
                    if len(input) > 60000:
                        raise errdefs.InvalidArgument("runc input larger than a pipe buffer")
                    os.write(in_w, input)
                    os.close(in_w)
                out_r, out_w = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
                err_r, err_w = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
                to_close += [out_w, err_w]
                eofs = [self._collect(out_r, out_buf), self._collect(err_r, err_buf)]
                fds = (in_r, out_w, err_w)
            argv = self._argv(args, log_path)
            for again in (False, True):
                argv[0] = resolve_binary(self.binary, again=again)
                try:
                    self.reaper.spawn(
                        argv,
                        stdin=fds[0],
                        stdout=fds[1],
                        stderr=fds[2],
                        on_exit=lambda status, at: exit_fut.set_result((status, at)),
                    )
                    break
                except FileNotFoundError as exc:
                    if again or argv[0] == self.binary:
                        raise errdefs.from_oserror(exc, f"start {self.binary}") from exc
                except OSError as exc:
                    raise errdefs.from_oserror(exc, f"start {self.binary}") from exc
        finally:
            for fd in to_close:
                os.close(fd)
        status, _ = await exit_fut
        for eof in eofs:
            await eof
        code = _exit_code(status)
        if code != 0:
            log = self._log_errors(offset) if log_path is None else []
            raise RuncError(args[0], code, err_buf.decode(errors="replace"), log)
        return bytes(out_buf)

    def _collect(self, fd: int, buf: bytearray) -> Future[None]:
        done: Future[None] = Future()

        def readable() -> None:
            try:
                data = os.read(fd, 65536)
            except BlockingIOError:
                return
            except OSError:
                data = b""
            if data:
                buf.extend(data)
                return
            self.loop.forget_fd(fd)
            os.close(fd)
            done.set_result(None)

        self.loop.add_reader(fd, readable)
        return done

    # -- commands ---------------------------------------------------------------------------
    async def create(
        self,
        container_id: str,
        *,
        bundle: str,
        pid_file: str,
        stdio: tuple[int | None, int | None, int | None],
        console_socket: str | None = None,
        no_pivot: bool = False,
        no_new_keyring: bool = False,
    ) -> None:
        args = ["create", "--bundle", bundle, "--pid-file", pid_file]
        if console_socket:
            args += ["--console-socket", console_socket]
        if no_pivot:
            args.append("--no-pivot")
        if no_new_keyring:
            args.append("--no-new-keyring")
        args.append(container_id)
        await self.run(args, stdio=stdio)

    async def start(self, container_id: str) -> None:
        await self.run(["start", container_id])

    async def exec(
        self,
        container_id: str,
        *,
        process_file: str,
        pid_file: str,
        stdio: tuple[int | None, int | None, int | None],
        console_socket: str | None = None,
    ) -> None:
        args = ["exec", "--process", process_file, "--detach", "--pid-file", pid_file]
        if console_socket:
            args += ["--console-socket", console_socket]
        args.append(container_id)
        await self.run(args, stdio=stdio)

    async def kill(self, container_id: str, signum: int, all: bool = False) -> None:
        args = ["kill"]
        if all:
            args.append("--all")
        await self.run([*args, container_id, str(signum)])

    async def pause(self, container_id: str) -> None:
        await self.run(["pause", container_id])

    async def resume(self, container_id: str) -> None:
        await self.run(["resume", container_id])

    async def delete(self, container_id: str, force: bool = False, log_path: str | None = None) -> None:
        args = ["delete"]
        if force:
            args.append("--force")
        await self.run([*args, container_id], log_path=log_path)

    async def ps(self, container_id: str) -> list[int]:
        out = await self.run(["ps", "--format", "json", container_id])
        pids = json.loads(out or b"[]")
        return [int(p) for p in pids or []]

    async def update(self, container_id: str, resources: dict[str, Any]) -> None:
        await self.run(["update", "--resources", "-", container_id], input=json.dumps(resources).encode())

    async def state(self, container_id: str) -> dict[str, Any]:
        out = await self.run(["state", container_id])
        result: dict[str, Any] = json.loads(out)
        return result

    async def stats(self, container_id: str) -> dict[str, Any]:
        out = await self.run(["events", "--stats", container_id])
        result: dict[str, Any] = json.loads(out)
        return result


def is_not_exist(err: RuncError) -> bool:
    text = f"{err.detail} {err.stderr}".lower()
    return "does not exist" in text or "not exist" in text or "no such file" in text


def is_not_running(err: RuncError) -> bool:
    text = f"{err.detail} {err.stderr}".lower()
    return (
        "not running" in text
        or "no such process" in text
        or "process already finished" in text
        or "container is stopped" in text
    )
