"""``pycontainerd-shim-runc-v2`` / ``containerd-shim-pyrunc-v2``: our runtime v2 shim and its fork server.

Given containerd's runtime v2 command line (``-namespace NS -id ID -address ADDR
-publish-binary BIN [-debug] start|delete``) the binary serves ``containerd.task.v2.Task``
over ttrpc: see ``v2main``.  The other command::

    launcher   the daemon's pre-imported fork server: requests (``protocol`` frames) come on
               fd 0, a unix socket shared with the daemon, one at a time.  For each, the
               launcher forks a child that reads it and answers it: ``start_v2`` does what
               ``start`` does (socket at containerd's path for the container's group,
               ``<bundle>/address``, events to the daemon's ``<address>.ttrpc``) without an
               interpreter's start-up, the child itself becoming the shim serving task.v2,
               and answers {"address", "pid", "forked"} (a child that started no shim exits).
               Exits when the daemon closes its end.

Why a fork server: a fresh interpreter that imports the shim takes ~80 ms (~0.2 s with
protobuf) and ~4.5 MiB PSS; a fork of a warm launcher takes a few ms and shares its pages.
Why the child reads the request: a page the launcher writes after a fork stays, as the old
copy, private to the shim forked last, so the launcher does nothing between two forks but
wait (``bare_fork`` spares the interpreter's at-fork work for the same reason).
The forked shim calls ``setsid()`` (its own session: terminal signals to the daemon do not
reach it), replaces its stdio (/dev/null in, the bundle's ``log`` FIFO out), closes the
launcher's channel and becomes a child subreaper, so nothing ties it to the daemon or the
launcher: kill -9 of either leaves it running, re-parented to init.

One shim process per container, unless the spec annotation ``io.containerd.runc.v2.group``
(or ``io.kubernetes.cri.sandbox-id``) groups containers into one shim, as containerd's runc
v2 shim does; a shim exits once its last container is gone.

Only the standard library and the shim modules are imported at the top — the launcher
imports the task.v2 modules (protobuf) once, before it forks.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sys
import traceback
from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING, Any, NoReturn

# as in the daemon (``pycontainerd.daemon``): the launcher and the shims fork, and should
# anything they run ever load grpc, its fork handlers must be off (grpc/grpc#43055)
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")

from pycontainerd import errdefs
from pycontainerd.shim import protocol, v2layout
from pycontainerd.shim.loop import Loop
from pycontainerd.shim.reaper import Reaper, set_subreaper
from pycontainerd.shim.service import ShimConfig, exit_file

if TYPE_CHECKING:
    from pycontainerd.shim.v2main import ClaimedShim

ADDRESS_FILE = "address"
PID_FILE = "shim.pid"


def become_shim(out_fd: int) -> None:
    """Detach from the parent: own session, stdin /dev/null, stdout/stderr ``out_fd`` (the
    shim's log), cwd /, subreaper."""
    os.setsid()
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGPIPE, signal.SIGCHLD):
        signal.signal(sig, signal.SIG_DFL if sig != signal.SIGPIPE else signal.SIG_IGN)
    devnull = os.open("/dev/null", os.O_RDWR)
    os.dup2(devnull, 0)
    os.dup2(out_fd, 1)
    os.dup2(out_fd, 2)
    os.close(devnull)
    if out_fd > 2:
        os.close(out_fd)
    os.chdir("/")
    set_subreaper()


def run_child(body: Callable[[], None]) -> NoReturn:
    """In a forked child: run ``body`` and leave with ``os._exit`` (0, or 1 after printing
    the traceback) — never return into the parent's code."""
    code = 0
    try:
        body()
    except BaseException:
        traceback.print_exc()
        code = 1
    finally:
        try:
            sys.stderr.flush()
        finally:
            os._exit(code)


def start_v2(
    params: dict[str, Any], socket_root: str = v2layout.SOCKET_ROOT
) -> tuple[dict[str, Any], ClaimedShim | None]:
    """In a child of the launcher: claim a runtime v2 shim (task.v2 over ttrpc) for a bundle,
    as ``containerd-shim-pyrunc-v2 start`` would, this process becoming the shim — the
    socket at containerd's path for the container's group, ``<bundle>/address`` written,
    events to ``ttrpc_address``.  The answer ``{"address", "pid", "forked"}`` (this
    process's, or the group's running shim's: pid 0, nothing to run) and the shim to run."""
    from pycontainerd.shim import v2main

    try:
        flags = v2main.Flags(
            namespace=str(params["namespace"]),
            id=str(params["id"]),
            address=str(params["address"]),
            bundle=str(params["bundle"]),
            debug=bool(params.get("debug")),
        )
    except KeyError as exc:
        raise errdefs.InvalidArgument(f"start request misses {exc}") from exc
    if not os.path.isdir(flags.bundle):
        raise errdefs.NotFound(f"bundle {flags.bundle} does not exist")
    options = params.get("options") or {}
    address, pid, shim = v2main.claim_shim(
        flags,
        dict(options) if isinstance(options, dict) else {},
        ttrpc_address=str(params.get("ttrpc_address") or ""),
        socket_root=socket_root,
        group=str(params.get("group") or ""),
    )
    return {"address": address, "pid": pid, "forked": shim is not None}, shim


def _recv_exactly(sock: socket.socket, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        data = sock.recv(n - len(buf))
        if not data:
            raise protocol.ProtocolError("the daemon closed the control channel mid-request")
        buf += data
    return buf


def read_request(control: socket.socket) -> dict[str, Any]:
    """The daemon's next request frame, and nothing after it (blocking; the daemon sends one
    request at a time and waits for its answer)."""
    header = _recv_exactly(control, protocol.HEADER_SIZE)
    return protocol.decode_body(_recv_exactly(control, protocol.frame_size(header)))


def answer_request(control: socket.socket, socket_root: str = v2layout.SOCKET_ROOT) -> ClaimedShim | None:
    """Read one request from the daemon and answer it; the shim this process is to become
    if it claimed one (the caller runs it), else None.  ``socket_root``: where the group
    sockets go (another directory only in the warm-up's rehearsal)."""
    msg = read_request(control)
    req_id = msg.get("id", 0)
    shim: ClaimedShim | None = None
    try:
        method = msg.get("method")
        if method != "start_v2":
            raise errdefs.Unimplemented(f"launcher method {method!r}")
        result, shim = start_v2(msg.get("params") or {}, socket_root)
        frame = protocol.reply(req_id, result)
    except errdefs.ContainerdError as exc:
        frame = protocol.error(req_id, exc.code, str(exc))
    except OSError as exc:
        kind = errdefs.from_oserror(exc, "launch shim")
        frame = protocol.error(req_id, kind.code, str(kind))
    except Exception as exc:
        frame = protocol.error(req_id, "UNKNOWN", f"launch shim: {exc!r}")
    try:
        control.sendall(frame)
    except OSError:  # the daemon is gone: nobody will use the shim
        if shim is not None:
            shim.abandon()
        return None
    return shim


def _launcher_child(control: socket.socket, done: int) -> None:
    """A child of the launcher: answers the daemon's next request, tells the launcher
    (``done``), then runs the shim it claimed, if any."""
    shim = answer_request(control)
    os.write(done, b"\0")
    os.close(done)
    if shim is not None:
        shim.run()


def threading_idle() -> bool:
    """No thread but this one (the launcher never starts any; ``bare_fork`` needs that)."""
    threading = sys.modules.get("threading")
    return threading is None or threading.active_count() == 1


def bare_fork() -> Callable[[], int]:
    """libc's ``fork()``, called with the GIL held and without CPython's at-fork work.

    ``os.fork`` runs, in the child, the handlers modules registered (``threading``'s
    ``_after_fork`` rebuilding its registry of threads and locks, ``random`` reseeding) and
    re-initializes the interpreter's locks; in a shim that work alone writes ~100 of the
    launcher's pages (0.4 MiB a shim, measured).  The launcher needs none of it: it has one
    thread (``threading_idle``), holds no lock when it forks (no import, no thread, no
    ``random`` user in a shim: tempfile reseeds its own generator in a new pid), and that
    thread is the child's only one, with the same identity.  Falls back to ``os.fork``
    where libc's is not reachable."""
    try:
        import ctypes

        libc = ctypes.PyDLL(None, use_errno=True)  # PyDLL: the GIL stays held across the call
        fork = libc.fork
        fork.restype = ctypes.c_int
        fork.argtypes = []
    except (OSError, AttributeError):
        return os.fork

    def call() -> int:
        pid = int(fork())
        if pid < 0:
            errno = ctypes.get_errno()
            raise OSError(errno, os.strerror(errno))
        return pid

    return call


def close_inherited_fds() -> None:
    """Close every descriptor above stdio this process was started with: the launcher's
    spawner (uvloop's spawn) leaves inheritable copies of its stdio (the daemon's socket,
    /dev/null, daemon.log), which every forked shim, and every runc it runs, would inherit."""
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        if fd > 2:
            try:
                os.close(fd)
            except OSError:  # the listing's own descriptor, already closed
                pass


def launcher_main() -> int:
    close_inherited_fds()  # first: nothing of ours is open yet
    control = socket.socket(fileno=0)
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # shims that exit are reaped by the kernel
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # the runtime v2 shim's modules (protobuf, task.v2): imported once here, shared by every fork
    from pycontainerd.shim import taskv2, ttrpc_loop, v2main  # noqa: F401
    from pycontainerd.shim.warmup import prepare_memory

    prepare_memory()
    fork = bare_fork() if threading_idle() else os.fork
    # Every page this process writes after a fork stays, as the old copy, with the shim
    # forked last: so the launcher does nothing between forks but wait for a request and
    # fork the child that reads, answers and serves it.
    while True:
        try:
            if not control.recv(1, socket.MSG_PEEK):
                return 0  # the daemon closed its end
        except InterruptedError:
            continue
        except OSError:
            return 0
        done_r, done_w = os.pipe2(os.O_CLOEXEC)
        if fork() == 0:
            os.close(done_r)
            run_child(partial(_launcher_child, control, done_w))
        os.close(done_w)
        try:
            answered = os.read(done_r, 1)
        finally:
            os.close(done_r)
        if not answered:
            # the child died before answering: the request stream is out of step; the
            # daemon sees the channel close and starts a new launcher
            return 1


def cleanup(config: ShimConfig) -> dict[str, Any]:
    """After a shim is gone: ``runc delete --force`` the container, unmount <bundle>/rootfs,
    and return the init process's recorded exit (``pid``/``exit_status``/``exited_at_ns``;
    exit 255 at time 0 when none was recorded).  Problems are written to stderr."""
    from pycontainerd.mount import core as mounts
    from pycontainerd.shim.runc import Runc, RuncError

    loop = Loop()
    reaper = Reaper(loop)
    runc = Runc(
        loop,
        reaper,
        binary=config.runtime_binary,
        root=config.root,
        log_path=os.path.join(config.bundle, "log.json"),
        systemd_cgroup=config.systemd_cgroup,
    )
    # no state dir: runc knows no such container (the usual case after a clean Delete, when
    # containerd runs the v2 ``delete`` anyway) — spare the exec
    if os.path.exists(os.path.join(config.root, config.container_id)):
        try:
            loop.run_until_complete(loop.spawn(runc.delete(config.container_id, force=True)))
        except RuncError as err:
            sys.stderr.write(f"{err}\n")
    try:
        mounts.unmount_all(os.path.join(config.bundle, "rootfs"))  # what is mounted below first
    except (OSError, errdefs.ContainerdError) as exc:
        sys.stderr.write(f"{exc}\n")
    exit_info: dict[str, Any] = {"pid": 0, "exit_status": 255, "exited_at_ns": 0}
    try:
        with open(exit_file(config.bundle)) as f:
            exit_info.update(json.load(f))
    except (OSError, ValueError):
        pass
    return exit_info


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args and args[0].startswith("-") and args[0] != "--help":
        # containerd's runtime v2 command line (``-namespace NS -id ID ... start|delete``):
        # the task.v2 API over ttrpc (``v2main``; imports protobuf, so only here)
        from pycontainerd.shim import v2main

        return v2main.main(args)
    if not args:
        sys.stderr.write(__doc__ or "")
        return 2
    if args[0] == "launcher":
        return launcher_main()
    sys.stderr.write(f"unknown command {args[0]!r}\n")
    return 2


if __name__ == "__main__":
    sys.exit(main())
