"""Container stdio in the shim: FIFOs, pipes, the pty, log URIs and the copy loops.

Theory of operation (the same shape as containerd's runc shim):

* The client (``ctr``) makes FIFOs and opens its ends first: it reads stdout/stderr and
  writes stdin.  The shim opens the other ends — and for stdout/stderr *also* a read end of
  its own ("keeper"), so a FIFO always has a reader: when the client goes away our writes do
  not fail with EPIPE, they fill the FIFO and then apply back-pressure to the container,
  exactly like containerd.  A stdin FIFO opened ``O_RDONLY|O_NONBLOCK`` before its writer
  connects does not report readiness (the kernel only flags a hang-up once a writer has come
  and gone), so an early open is safe.
* The shim also holds a *write* end of the stdin FIFO ("stdin keeper", as containerd's runc
  shim does since containerd/containerd#661), so a process's stdin does not end when its
  writer goes away: ``ctr run -d`` exiting, a CRI daemon restarting (it holds the FIFO for
  ``crictl attach``) or an attach client leaving are detaches, and a later writer reaches
  the same stdin.  Stdin ends on CloseIO (which closes the keeper, forwards what is
  readable and closes the process's stdin); the keeper also goes when the process exits
  and on Delete.  The keeper is opened when the process is *started* (``keep_stdin``), and
  only if the FIFO has not already been hung up: a writer that came and went before Start
  (``echo x | ctr run --rm IMAGE id cat``: ctr 1.6 reads its EOF while Create runs and then
  loses the CloseIO, containerd/containerd#4489) ends stdin when its data is read instead
  of leaving the process waiting forever as containerd's shim does.
* The container never sees the FIFOs: runc is given pipes (or, with a terminal, hands the
  shim the pty master over ``--console-socket`` with SCM_RIGHTS) and the shim copies
  between pipes and FIFOs.  That is what lets the shim close the container's stdin on
  CloseIO, survive the daemon, and outlive clients that come and go.  Only the shim's ends
  are non-blocking: O_NONBLOCK belongs to the open file description, shared with whoever
  holds it, and a container writing to a non-blocking stdout faster than it is read gets
  EAGAIN (the same goes for a logging binary's fds).
* Stdout/stderr destinations (``Sink``) are FIFOs, regular files (``file:///path``: append,
  stdout and stderr to the same file) or a logging binary (``binary:///path?arg=v``: the
  shim starts it with the read ends of two pipes as fds 3 and 4, ``CONTAINER_ID`` and
  ``CONTAINER_NAMESPACE`` in its environment, and waits until it writes a byte to — or
  closes — fd 5).  An empty path means /dev/null.
* Copies are non-blocking ``Pump``s on the shim loop.  A sink that cannot take more data
  pauses the pumps feeding it until it drains.  ``drained`` completes when every output
  stream has reached EOF (all writers, i.e. the container's processes, are gone) and its
  data was handed to the sink: the shim reports an exit only after that, so a client that
  saw the exit has seen all output.
"""

from __future__ import annotations

import fcntl
import os
import select
import signal
import socket
import stat
import struct
import termios
from collections.abc import Callable
from urllib.parse import parse_qsl, urlsplit

from pycontainerd import errdefs
from pycontainerd.shim.loop import Future, Loop
from pycontainerd.shim.reaper import Reaper

CHUNK = 32768
LOGGER_READY_TIMEOUT = 10.0
LOGGER_TERM_TIMEOUT = 12.0


def parse_uri(uri: str) -> tuple[str, str, list[str]]:
    """``(scheme, path, args)`` of a stdio URI; a bare path is scheme ``fifo``.

    ``binary:///bin/logger?--tag=x&-v`` gives ``("binary", "/bin/logger", ["--tag", "x", "-v"])``
    (containerd 1.6 turns each query key into an argument followed by its value, if any).
    """
    if "://" not in uri:
        return "fifo", uri, []
    parts = urlsplit(uri)
    scheme = parts.scheme or "fifo"
    if scheme not in ("fifo", "file", "binary"):
        raise errdefs.InvalidArgument(f"unknown STDIO scheme {scheme}")
    args: list[str] = []
    for key, value in parse_qsl(parts.query, keep_blank_values=True):
        args.append(key)
        if value:
            args.append(value)
    if not parts.path:
        raise errdefs.InvalidArgument(f"stdio uri {uri!r} has no path")
    return scheme, parts.path, args


class Sink:
    """A destination fd shared by the pumps writing into it (stdout and stderr may share)."""

    def __init__(self, loop: Loop, fd: int, *, keeper: int = -1, name: str = "") -> None:
        self.loop = loop
        self.fd = fd
        self.keeper = keeper
        self.name = name
        self.refs = 0
        self.pending = bytearray()
        self.paused: list[Pump] = []
        self.broken = False
        self.closed = False
        self._close_when_flushed = False
        os.set_blocking(fd, False)

    def write(self, data: bytes, pump: Pump | None) -> bool:
        """Take ``data``; False means the caller must pause until ``resume()``."""
        if self.broken or self.closed:
            return True
        if self.pending:
            self.pending += data
        else:
            try:
                n = os.write(self.fd, data)
            except BlockingIOError:
                n = 0
            except OSError:
                self.broken = True  # reader gone for good (EPIPE): discard, keep draining
                return True
            if n == len(data):
                return True
            self.pending += data[n:]
            self.loop.add_writer(self.fd, self._flush)
        if pump is not None:
            self.paused.append(pump)
        return False

    def _flush(self) -> None:
        try:
            n = os.write(self.fd, self.pending)
        except BlockingIOError:
            return
        except OSError:
            n = len(self.pending)
            self.broken = True
        del self.pending[:n]
        if self.pending:
            return
        self.loop.remove_writer(self.fd)
        paused, self.paused = self.paused, []
        for pump in paused:
            pump.resume()
        if self._close_when_flushed:
            self._really_close()

    def release(self) -> None:
        """One user is done; the fd closes after the last one, once its data is written."""
        self.refs -= 1
        if self.refs <= 0:
            self.close()

    def close(self) -> None:
        if self.pending and not self.broken:
            self._close_when_flushed = True
            return
        self._really_close()

    def _really_close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.loop.forget_fd(self.fd)
        os.close(self.fd)
        if self.keeper >= 0:
            os.close(self.keeper)
            self.keeper = -1


class Pump:
    """Copies ``src`` into ``sink`` until EOF; ``done`` completes at EOF."""

    def __init__(self, loop: Loop, src: int, sink: Sink, *, on_eof: Callable[[], None] | None = None) -> None:
        self.loop = loop
        self.src = src
        self.sink = sink
        self.on_eof = on_eof
        self.done: Future[None] = Future()
        sink.refs += 1
        os.set_blocking(src, False)
        loop.add_reader(src, self._readable)

    def _readable(self) -> None:
        try:
            data = os.read(self.src, CHUNK)
        except BlockingIOError:
            return
        except OSError:
            data = b""  # EIO: pty master after the last slave fd closed
        if not data:
            self.finish()
            return
        if not self.sink.write(data, self):
            self.loop.remove_reader(self.src)

    def resume(self) -> None:
        if not self.done.done():
            self.loop.add_reader(self.src, self._readable)

    def drain_now(self) -> None:
        """Move whatever is readable right now (used before closing stdin)."""
        while not self.done.done():
            try:
                data = os.read(self.src, CHUNK)
            except BlockingIOError:
                return
            except OSError:
                data = b""
            if not data:
                self.finish()
                return
            self.sink.write(data, None)

    def finish(self, close_src: bool = True) -> None:
        if self.done.done():
            return
        self.loop.forget_fd(self.src)
        if close_src:
            os.close(self.src)
        if self in self.sink.paused:
            self.sink.paused.remove(self)
        self.sink.release()
        if self.on_eof is not None:
            self.on_eof()
        self.done.set_result(None)


def _open_output(path: str, name: str, loop: Loop) -> Sink:
    """Open a stdout/stderr destination given as a plain path (FIFO or existing file)."""
    try:
        st = os.stat(path)
        if stat.S_ISFIFO(st.st_mode):
            keeper = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
            try:
                fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC)
            except OSError:
                os.close(keeper)
                raise
            return Sink(loop, fd, keeper=keeper, name=name)
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC)
        return Sink(loop, fd, name=name)
    except OSError as exc:
        raise errdefs.from_oserror(exc, f"open {name} {path}") from exc


class ProcessIO:
    """The stdio of one container process; see the module docstring."""

    def __init__(self, loop: Loop, reaper: Reaper) -> None:
        self.loop = loop
        self.reaper = reaper
        self.child: tuple[int | None, int | None, int | None] = (None, None, None)
        self._child_fds: list[int] = []
        self._sinks: dict[str, Sink] = {}  # "stdout"/"stderr"
        self._pipes: dict[str, int] = {}  # our ends: "stdin" (write) "stdout" "stderr" (read)
        self._stdin_fifo = -1
        self._stdin_keeper = -1  # our write end of the stdin FIFO (see the module docstring)
        self.stdin_pump: Pump | None = None
        self.out_pumps: list[Pump] = []
        self.console_path: str | None = None
        self._console_sock: socket.socket | None = None
        self._console: Future[int] = Future()
        self.master = -1
        self.terminal = False
        self.logger_pid = 0
        self._logger_alive = False
        self.stdin_closed = False
        self.closed = False

    # -- setup ------------------------------------------------------------------------------
    @classmethod
    async def open(
        cls,
        loop: Loop,
        reaper: Reaper,
        *,
        container_id: str,
        namespace: str,
        stdin: str,
        stdout: str,
        stderr: str,
        terminal: bool,
        console_path: str,
        uid: int = -1,
        gid: int = -1,
    ) -> ProcessIO:
        pio = cls(loop, reaper)
        try:
            await pio._setup(container_id, namespace, stdin, stdout, stderr, terminal, console_path, uid, gid)
        except BaseException:
            pio.close()
            raise
        return pio

    async def _setup(
        self,
        container_id: str,
        namespace: str,
        stdin: str,
        stdout: str,
        stderr: str,
        terminal: bool,
        console_path: str,
        uid: int,
        gid: int,
    ) -> None:
        self.terminal = terminal
        scheme, path, args = parse_uri(stdout) if stdout else ("fifo", "", [])
        if scheme == "binary":
            await self._start_logger(path, args, container_id, namespace)
        elif scheme == "file":
            try:
                os.makedirs(os.path.dirname(path) or "/", exist_ok=True)
                # the container's output may hold secrets: owner only
                fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
            except OSError as exc:
                raise errdefs.from_oserror(exc, f"open log file {path}") from exc
            shared = Sink(self.loop, fd, name="log file")
            self._sinks["stdout"] = shared
            if not terminal:
                self._sinks["stderr"] = shared
        else:
            if path:
                self._sinks["stdout"] = _open_output(path, "stdout", self.loop)
            if stderr and not terminal:
                _, err_path, _ = parse_uri(stderr)
                if err_path == path and "stdout" in self._sinks:
                    self._sinks["stderr"] = self._sinks["stdout"]
                elif err_path:
                    self._sinks["stderr"] = _open_output(err_path, "stderr", self.loop)
        if stdin:
            try:
                self._stdin_fifo = os.open(stdin, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
            except OSError as exc:
                raise errdefs.from_oserror(exc, f"open stdin {stdin}") from exc
        if terminal:
            self._listen_console(console_path)
            return
        child: list[int | None] = [None, None, None]
        if self._stdin_fifo >= 0:
            r, w = os.pipe2(os.O_CLOEXEC)
            self._child_fds.append(r)
            self._pipes["stdin"] = w
            child[0] = r
        for idx, name in ((1, "stdout"), (2, "stderr")):
            if name in self._sinks:
                r, w = os.pipe2(os.O_CLOEXEC)
                self._child_fds.append(w)
                self._pipes[name] = r
                child[idx] = w
        if uid >= 0 or gid >= 0:
            for fd in self._child_fds:
                os.fchown(fd, uid, gid)
        self.child = (child[0], child[1], child[2])

    async def _start_logger(self, path: str, args: list[str], container_id: str, namespace: str) -> None:
        out_r, out_w = os.pipe2(os.O_CLOEXEC)
        err_r, err_w = os.pipe2(os.O_CLOEXEC)
        # blocking: O_NONBLOCK would be shared with the logger's end; we only poll ours
        ready_r, ready_w = os.pipe2(os.O_CLOEXEC)
        try:
            env = {"CONTAINER_ID": container_id, "CONTAINER_NAMESPACE": namespace}
            try:
                self.logger_pid = self.reaper.spawn(
                    [path, *args], extra_fds=(out_r, err_r, ready_w), env=env, on_exit=self._logger_exited
                )
            except OSError as exc:
                raise errdefs.from_oserror(exc, f"start logging binary {path}") from exc
            self._logger_alive = True
        finally:
            os.close(out_r)
            os.close(err_r)
            os.close(ready_w)
        self._sinks["stdout"] = Sink(self.loop, out_w, name="logger stdout")
        self._sinks["stderr"] = Sink(self.loop, err_w, name="logger stderr")
        try:
            ok = await self.loop.wait_for(self.loop.readable(ready_r), LOGGER_READY_TIMEOUT)
            if not ok:
                raise errdefs.DeadlineExceeded(f"logging binary {path} did not signal readiness on fd 5")
        finally:
            self.loop.forget_fd(ready_r)
            os.close(ready_r)

    def _logger_exited(self, status: int, at: int) -> None:
        self._logger_alive = False

    def _listen_console(self, path: str) -> None:
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.bind(path)
            os.chmod(path, 0o600)
            sock.listen(1)
            sock.setblocking(False)
        except OSError as exc:
            sock.close()
            raise errdefs.from_oserror(exc, f"console socket {path}") from exc
        self._console_sock = sock
        self.console_path = path
        self.loop.add_reader(sock.fileno(), self._console_accept)

    def _console_accept(self) -> None:
        assert self._console_sock is not None
        try:
            conn, _ = self._console_sock.accept()
        except BlockingIOError:
            return
        conn.setblocking(False)

        def receive() -> None:
            try:
                _msg, fds, _flags, _addr = socket.recv_fds(conn, 4096, 4)
            except BlockingIOError:
                return
            except OSError as exc:
                fds = []
                self._console.set_exception(errdefs.Unknown(f"receive console master: {exc}"))
            self.loop.forget_fd(conn.fileno())
            conn.close()
            if fds:
                for extra in fds[1:]:
                    os.close(extra)
                self._console.set_result(fds[0])
            elif not self._console.done():
                self._console.set_exception(errdefs.Unknown("runtime closed the console socket without a fd"))

        self.loop.add_reader(conn.fileno(), receive)

    def _close_console_socket(self) -> None:
        if self._console_sock is not None:
            self.loop.forget_fd(self._console_sock.fileno())
            self._console_sock.close()
            self._console_sock = None
            if self.console_path:
                try:
                    os.unlink(self.console_path)
                except OSError:
                    pass

    # -- after the runtime started the process ----------------------------------------------
    async def started(self) -> None:
        """The runtime has created the process: drop our copies of its fds, start copying."""
        for fd in self._child_fds:
            os.close(fd)
        self._child_fds = []
        if self.terminal:
            ok = await self.loop.wait_for(self._console, 5.0)
            self._close_console_socket()
            if not ok:
                raise errdefs.Unknown("runtime did not send the console master")
            self.master = self._console.result()
            os.set_blocking(self.master, False)
            if self._stdin_fifo >= 0:
                master_sink = Sink(self.loop, os.dup(self.master), name="pty master")
                self.stdin_pump = Pump(self.loop, self._stdin_fifo, master_sink, on_eof=self._terminal_stdin_eof)
                self._stdin_fifo = -1
            out = self._sinks.get("stdout")
            if out is not None:
                self.out_pumps.append(Pump(self.loop, os.dup(self.master), out))
            return
        if "stdin" in self._pipes:
            stdin_sink = Sink(self.loop, self._pipes.pop("stdin"), name="container stdin")
            self.stdin_pump = Pump(self.loop, self._stdin_fifo, stdin_sink)
            self._stdin_fifo = -1
        for name in ("stdout", "stderr"):
            if name in self._pipes:
                self.out_pumps.append(Pump(self.loop, self._pipes.pop(name), self._sinks[name]))

    def _terminal_stdin_eof(self) -> None:
        # EOF on the stdin FIFO of a terminal: send the terminal's EOF character (^D), as a
        # user typing it would, instead of hanging up the pty.
        if self.master >= 0:
            try:
                os.write(self.master, b"\x04")
            except OSError:
                pass

    @property
    def drained(self) -> Future[None]:
        """Completes once every output stream reached EOF."""
        fut: Future[None] = Future()
        pending = [p.done for p in self.out_pumps if not p.done.done()]
        if not pending:
            fut.set_result(None)
            return fut
        count = [len(pending)]

        def one(_f: Future[None]) -> None:
            count[0] -= 1
            if count[0] == 0:
                fut.set_result(None)

        for p in pending:
            p.add_done_callback(one)
        return fut

    # -- operations -------------------------------------------------------------------------
    def keep_stdin(self) -> None:
        """The process started: hold a write end of its stdin FIFO from now until CloseIO, its
        exit or Delete, so that its writer leaving does not end its stdin.

        Not if stdin is closed already, nor if the FIFO was hung up (POLLHUP: a writer came and
        went and none is left) -- that writer finished before the process even started, and
        its EOF is delivered once its data is read."""
        pump = self.stdin_pump
        if self.stdin_closed or self.closed or self._stdin_keeper >= 0:
            return
        if pump is not None:
            if pump.done.done():
                return
            fifo = pump.src
        elif self._stdin_fifo >= 0:
            fifo = self._stdin_fifo
        else:
            return
        poller = select.poll()
        poller.register(fifo, select.POLLIN)
        if any(ev & select.POLLHUP for _, ev in poller.poll(0)):
            return
        try:
            # the FIFO we read, reopened for writing: never ENXIO (we are its reader), and the
            # same FIFO even if its path was removed or replaced meanwhile
            self._stdin_keeper = os.open(f"/proc/self/fd/{fifo}", os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError as exc:
            self.loop.report("hold the stdin FIFO open", exc)

    def release_stdin(self) -> None:
        """Drop our write end of the stdin FIFO (process exited): stdin ends with its last writer."""
        if self._stdin_keeper >= 0:
            os.close(self._stdin_keeper)
            self._stdin_keeper = -1

    def close_stdin(self) -> None:
        """CloseIO: forward what the client already wrote, then close the process's stdin."""
        self.release_stdin()
        if self.stdin_closed:
            return
        self.stdin_closed = True
        pump = self.stdin_pump
        if pump is not None:
            pump.drain_now()
            pump.finish()
        elif self._stdin_fifo >= 0:
            os.close(self._stdin_fifo)
            self._stdin_fifo = -1
        if "stdin" in self._pipes:  # not started yet
            os.close(self._pipes.pop("stdin"))

    def resize(self, width: int, height: int) -> None:
        if self.master < 0:
            raise errdefs.NotFound("process has no console to resize")
        try:
            fcntl.ioctl(self.master, termios.TIOCSWINSZ, struct.pack("HHHH", height, width, 0, 0))
        except OSError as exc:
            raise errdefs.from_oserror(exc, "resize console") from exc

    def close(self) -> None:
        """Release everything (process deleted or never started)."""
        if self.closed:
            return
        self.closed = True
        for fd in self._child_fds:
            os.close(fd)
        self._child_fds = []
        self._close_console_socket()
        self.release_stdin()
        if self.stdin_pump is not None:
            self.stdin_pump.finish()
        elif self._stdin_fifo >= 0:
            os.close(self._stdin_fifo)
            self._stdin_fifo = -1
        for pump in self.out_pumps:
            pump.finish()
        for fd in self._pipes.values():
            os.close(fd)
        self._pipes = {}
        for sink in set(self._sinks.values()):
            if sink.refs <= 0:
                sink.close()
        if self.master >= 0:
            os.close(self.master)
            self.master = -1
        elif self._console.done() and self._console.exception() is None:
            os.close(self._console.result())  # received but never used
        if self._logger_alive and self.logger_pid:
            self._terminate_logger()

    def _terminate_logger(self) -> None:
        pid = self.logger_pid
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            return

        def force() -> None:
            if self._logger_alive:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass

        self.loop.call_later(LOGGER_TERM_TIMEOUT, force)
