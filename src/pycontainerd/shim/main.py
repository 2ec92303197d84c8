"""``pycontainerd-shim-runc-v2`` / ``containerd-shim-pyrunc-v2``: our runtime v2 shim and its fork server.

Given containerd's runtime v2 command line (``-namespace NS -id ID -address ADDR
-publish-binary BIN [-debug] start|delete``) the binary serves ``containerd.task.v2.Task``
over ttrpc: see ``v2main``.  The other command::

    launcher   the daemon's pre-imported fork server: reads requests (``protocol`` frames) on
               fd 0, a unix socket shared with the daemon.  ``start_v2`` does what ``start``
               does (socket at containerd's path for the container's group, ``<bundle>/address``,
               a forked shim serving task.v2, events to the daemon's ``<address>.ttrpc``)
               without an interpreter's start-up, and answers {"address", "pid", "forked"}.
               Exits when the daemon closes its end.

Why a fork server: a fresh interpreter that imports the shim takes ~80 ms (~0.2 s with
protobuf) and ~4.5 MiB PSS; a fork of a warm launcher takes a few ms and shares its pages.
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
from typing import Any, NoReturn

# as in the daemon (``pycontainerd.daemon``): the launcher and the shims fork, and should
# anything they run ever load grpc, its fork handlers must be off (grpc/grpc#43055)
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")

from pycontainerd import errdefs
from pycontainerd.shim import protocol
from pycontainerd.shim.loop import Loop
from pycontainerd.shim.reaper import Reaper, set_subreaper
from pycontainerd.shim.service import ShimConfig, exit_file

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


def start_v2(params: dict[str, Any]) -> dict[str, Any]:
    """In the launcher: start a runtime v2 shim (task.v2 over ttrpc) for a bundle, as
    ``containerd-shim-pyrunc-v2 start`` would, without the exec — the shim socket at
    containerd's path for the container's group, ``<bundle>/address`` written, events to
    ``ttrpc_address``.  Answers ``{"address", "pid", "forked"}`` (the new shim's, or the group's running one)."""
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
    address, pid, forked = v2main.start_shim(
        flags, dict(options) if isinstance(options, dict) else {}, ttrpc_address=str(params.get("ttrpc_address") or "")
    )
    return {"address": address, "pid": pid, "forked": forked}


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
    decoder = protocol.Decoder()
    while True:
        try:
            data = control.recv(65536)
        except InterruptedError:
            continue
        if not data:
            return 0
        for msg in decoder.feed(data):
            req_id = msg.get("id", 0)
            try:
                method = msg.get("method")
                if method != "start_v2":
                    raise errdefs.Unimplemented(f"launcher method {method!r}")
                frame = protocol.reply(req_id, start_v2(msg.get("params") or {}))
            except errdefs.ContainerdError as exc:
                frame = protocol.error(req_id, exc.code, str(exc))
            except OSError as exc:
                kind = errdefs.from_oserror(exc, "launch shim")
                frame = protocol.error(req_id, kind.code, str(kind))
            except Exception as exc:
                frame = protocol.error(req_id, "UNKNOWN", f"launch shim: {exc!r}")
            try:
                control.sendall(frame)
            except OSError:  # the daemon is gone
                return 0


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
