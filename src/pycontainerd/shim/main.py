"""``pycontainerd-shim-runc-v2``: the shim process and its launcher.

Subcommands::

    launcher   a pre-imported fork server: reads launch requests (protocol frames) on fd 0,
               a unix socket shared with the daemon; for each one binds the shim socket,
               forks, and answers {"pid"}.  Exits when the daemon closes its end.
    serve      run one shim in the foreground:
               --namespace NS --id ID --bundle DIR --socket PATH
               [--runtime runc] [--runtime-root DIR] [--systemd-cgroup] [--debug]
    delete     clean up after a shim that is gone (same flags, no --socket): runc delete
               --force, unmount <bundle>/rootfs, print the recorded exit as JSON.

Given containerd's runtime v2 command line instead (``-namespace NS -id ID -address ADDR
-publish-binary BIN [-debug] start|delete``, also installed as ``containerd-shim-pyrunc-v2``),
the shim serves ``containerd.task.v2.Task`` over ttrpc: see ``v2main``.

Why a launcher: a fresh interpreter that imports the shim takes ~80 ms and ~4.5 MiB PSS;
a fork of a warm launcher takes ~1-2 ms and shares its pages.  The forked shim calls
``setsid()`` (its own session: terminal signals to the daemon do not reach it), replaces
its stdio (/dev/null in, ``<socket dir>/shim-<pid>.log`` out), closes the launcher's channel
and becomes a child subreaper, so nothing ties it to the daemon or the launcher: kill -9 of
either leaves it running, re-parented to init.

Shim hosts: one forked shim process serves up to ``PYCONTAINERD_SHIM_GROUP`` containers
(default 16; 1 restores one process per container), each with its own socket, ``Service``
and ``Server`` on the process's one loop and reaper — as containerd's runc shim serves all
containers of a pod.  A forked shim still costs ~2.5 MiB of private memory (pages the
interpreter writes after the fork); shared by 16 containers that is ~0.2 MiB each, and
adding a container to a running host needs no fork at all.  The launcher keeps a control
socket (``SOCK_SEQPACKET``) to each host it forked and hands it a new container's bound
listener with ``SCM_RIGHTS``; a full host answers ``full`` and the launcher forks a new one.
A host exits once its last container is gone; it takes no new containers once the
launcher is gone (a daemon restart starts a new launcher and new hosts), and keeps serving
the ones it has.  The cost is a shared fate: a host that dies takes the shims of all its
containers with it (the containers keep running; the daemon tombstones their tasks, as
for any dead shim).

Only the standard library and the shim modules are imported here — no grpc, no protobuf,
no asyncio (see ``loop`` for the numbers).
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
from pycontainerd.shim.server import Server, bind_listener
from pycontainerd.shim.service import Service, ShimConfig, exit_file, write_atomic

ADDRESS_FILE = "address"
PID_FILE = "shim.pid"


GROUP_ENV = "PYCONTAINERD_SHIM_GROUP"
DEFAULT_GROUP = 16
HOST_REPLY_TIMEOUT = 10.0


def group_size() -> int:
    try:
        return max(1, int(os.environ.get(GROUP_ENV, DEFAULT_GROUP)))
    except ValueError:
        return DEFAULT_GROUP


def _write_address(config: ShimConfig) -> None:
    write_atomic(os.path.join(config.bundle, ADDRESS_FILE), f"unix://{config.socket_path}".encode())
    write_atomic(os.path.join(config.bundle, PID_FILE), str(os.getpid()).encode())


class Host:
    """The shim process's containers: one ``Server``/``Service`` each, one loop and reaper.

    ``ctl`` is the launcher's channel (``None`` for ``serve``): requests to add a container
    arrive on it with the container's bound listener.  The process ends when its last
    container is gone (``run`` returns)."""

    def __init__(self, ctl: socket.socket | None = None, cap: int = 1) -> None:
        self.loop = Loop()
        self.reaper = Reaper(self.loop)
        self.ctl = ctl
        self.cap = cap
        self.servers: dict[Server, ShimConfig] = {}
        self.closing = False  # the last container went: exiting, take no new one
        if ctl is not None:
            ctl.setblocking(False)
            self.loop.add_reader(ctl.fileno(), self._ctl_readable)

    def add(self, config: ShimConfig, listener: socket.socket) -> None:
        service = Service(self.loop, self.reaper, config)
        server = Server(self.loop, listener, service, on_stop=self._release)
        self.servers[server] = config
        _write_address(config)

    def _release(self, server: Server) -> None:
        config = self.servers.pop(server, None)
        server.close()
        if config is not None:
            try:
                os.unlink(config.socket_path)
            except OSError:
                pass
        if not self.servers:
            self.closing = True
            self.loop.stop()

    def _ctl_readable(self) -> None:
        assert self.ctl is not None
        try:
            data, fds, _flags, _addr = socket.recv_fds(self.ctl, 1 << 16, 4)
        except BlockingIOError:
            return
        except OSError:
            data, fds = b"", []
        if not data:  # the launcher is gone: serve what we have, take nothing new
            self.loop.forget_fd(self.ctl.fileno())
            self.ctl.close()
            self.ctl = None
            for fd in fds:
                os.close(fd)
            if not self.servers:
                self.closing = True
                self.loop.stop()
            return
        reply: dict[str, Any]
        listener: socket.socket | None = socket.socket(fileno=fds[0]) if fds else None
        for fd in fds[1:]:
            os.close(fd)
        try:
            if self.closing or len(self.servers) >= self.cap:
                reply = {"full": True}
            elif listener is None:
                raise errdefs.InvalidArgument("launch request without a listener")
            else:
                self.add(_config(json.loads(data)), listener)
                listener = None
                reply = {"ok": True}
        except errdefs.ContainerdError as exc:
            reply = {"error": {"code": exc.code, "message": str(exc)}}
        except Exception as exc:
            reply = {"error": {"code": "UNKNOWN", "message": f"add container: {exc!r}"}}
        finally:
            if listener is not None:
                listener.close()
        try:
            self.ctl.send(json.dumps(reply).encode())
        except OSError:
            pass

    def run(self) -> None:
        """Serve until the last container is gone (blocking; the process's whole life)."""
        try:
            self.loop.run_forever()
        finally:
            for server in list(self.servers):
                self._release(server)


def run(config: ShimConfig, listener: socket.socket) -> None:
    """Serve one container until shutdown (blocking)."""
    host = Host()
    host.add(config, listener)
    host.run()


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


def _become_shim(config: ShimConfig) -> None:
    log_path = os.path.join(os.path.dirname(config.socket_path), f"shim-{os.getpid()}.log")
    become_shim(os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600))


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


def _drop_empty_log(config: ShimConfig) -> None:
    """At a clean exit: the host's log goes unless something was written to it."""
    path = os.path.join(os.path.dirname(config.socket_path), f"shim-{os.getpid()}.log")
    try:
        if os.stat(path).st_size == 0:
            os.unlink(path)
    except OSError:
        pass


def _config(params: dict[str, Any]) -> ShimConfig:
    try:
        return ShimConfig(
            namespace=str(params["namespace"]),
            container_id=str(params["id"]),
            bundle=str(params["bundle"]),
            socket_path=str(params.get("socket") or ""),
            runtime_binary=str(params.get("runtime") or "runc"),
            runtime_root=str(params.get("runtime_root") or ""),
            systemd_cgroup=bool(params.get("systemd_cgroup")),
            debug=bool(params.get("debug")),
        )
    except KeyError as exc:
        raise errdefs.InvalidArgument(f"launch request misses {exc}") from exc


class HostHandle:
    """The launcher's end of a shim host it forked."""

    def __init__(self, pid: int, ctl: socket.socket) -> None:
        self.pid = pid
        self.ctl = ctl
        ctl.settimeout(HOST_REPLY_TIMEOUT)

    def add(self, params: dict[str, Any], listener: socket.socket) -> bool:
        """Hand the host a container; False if it is full.  OSError/EOFError: it is gone."""
        socket.send_fds(self.ctl, [json.dumps(params).encode()], [listener.fileno()])
        try:
            data = self.ctl.recv(1 << 16)
        except TimeoutError as exc:
            # it may still take the listener later: do not hand it to another host
            raise errdefs.Unavailable(f"shim host {self.pid} did not answer in {HOST_REPLY_TIMEOUT}s") from exc
        if not data:
            raise EOFError(f"shim host {self.pid} is gone")
        reply = json.loads(data)
        if reply.get("ok"):
            return True
        if reply.get("full"):
            return False
        err = reply.get("error") or {}
        raise errdefs.from_code(str(err.get("code", "UNKNOWN")), str(err.get("message", "")))

    def close(self) -> None:
        self.ctl.close()


def _fork_host(config: ShimConfig, listener: socket.socket, hosts: list[HostHandle], cap: int) -> HostHandle:
    """Fork a new shim host serving ``config``'s container first."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    pid = os.fork()
    if pid == 0:  # the shim host

        def body() -> None:
            ours.close()
            for h in hosts:  # so that every host sees EOF when the launcher goes
                h.ctl.close()
            _become_shim(config)
            host = Host(theirs, cap)
            host.add(config, listener)
            host.run()
            _drop_empty_log(config)

        run_child(body)
    theirs.close()
    return HostHandle(pid, ours)


def launch(params: dict[str, Any], hosts: list[HostHandle] | None = None, cap: int = 1) -> dict[str, Any]:
    """In the launcher: bind the shim socket and give it to a shim host (the newest one with
    room, else a newly forked one); return the host's pid."""
    config = _config(params)
    if not os.path.isdir(config.bundle):
        raise errdefs.NotFound(f"bundle {config.bundle} does not exist")
    hosts = [] if hosts is None else hosts
    listener = bind_listener(config.socket_path)
    try:
        for host in reversed(list(hosts)):
            try:
                if host.add(params, listener):
                    return {"pid": host.pid}
            except (OSError, EOFError, ValueError):
                hosts.remove(host)  # exited (empty) or broken: forget it
                host.close()
        host = _fork_host(config, listener, hosts, cap)
        if cap > 1:
            hosts.append(host)
        else:
            host.close()
        return {"pid": host.pid}
    finally:
        listener.close()


def launcher_main() -> int:
    import gc

    control = socket.socket(fileno=0)
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # shims that exit are reaped by the kernel
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    from pycontainerd.shim.warmup import warm_up

    warm_up()
    gc.collect()
    gc.freeze()  # keep the collector off the shared pages in every forked shim
    decoder = protocol.Decoder()
    hosts: list[HostHandle] = []
    cap = group_size()
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
                if msg.get("method") != "launch":
                    raise errdefs.Unimplemented(f"launcher method {msg.get('method')!r}")
                frame = protocol.reply(req_id, launch(msg.get("params") or {}, hosts, cap))
            except errdefs.ContainerdError as exc:
                frame = protocol.error(req_id, exc.code, str(exc))
            except OSError as exc:
                kind = errdefs.from_oserror(exc, "launch shim")
                frame = protocol.error(req_id, kind.code, str(kind))
            except Exception as exc:
                frame = protocol.error(req_id, "UNKNOWN", f"launch shim: {exc!r}")
            control.sendall(frame)


def _flags(argv: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    it = iter(argv)
    for arg in it:
        if not arg.startswith("--"):
            raise SystemExit(f"unexpected argument {arg!r}")
        key = arg[2:].replace("-", "_")
        if key in ("systemd_cgroup", "debug"):
            out[key] = True
        else:
            try:
                out[key] = next(it)
            except StopIteration:
                raise SystemExit(f"{arg} needs a value") from None
    return out


def serve_main(argv: list[str]) -> int:
    config = _config(_flags(argv))
    if not config.socket_path:
        raise SystemExit("--socket is required")
    listener = bind_listener(config.socket_path)
    set_subreaper()
    run(config, listener)
    return 0


def cleanup(config: ShimConfig) -> dict[str, Any]:
    """After a shim is gone: ``runc delete --force`` the container, unmount <bundle>/rootfs,
    and return the init process's recorded exit (``pid``/``exit_status``/``exited_at_ns``;
    exit 255 at time 0 when none was recorded).  Problems are written to stderr."""
    from pycontainerd.shim import mount as mnt
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
        mnt.unmount_tree(os.path.join(config.bundle, "rootfs"))
    except OSError as exc:
        sys.stderr.write(f"{exc}\n")
    exit_info: dict[str, Any] = {"pid": 0, "exit_status": 255, "exited_at_ns": 0}
    try:
        with open(exit_file(config.bundle)) as f:
            exit_info.update(json.load(f))
    except (OSError, ValueError):
        pass
    return exit_info


def delete_main(argv: list[str]) -> int:
    """Clean up after a dead shim (runc state, rootfs mount) and print its recorded exit."""
    exit_info = cleanup(_config(_flags(argv)))
    sys.stdout.write(json.dumps(exit_info) + "\n")
    return 0


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
    cmd, rest = args[0], args[1:]
    if cmd == "launcher":
        return launcher_main()
    if cmd == "serve":
        return serve_main(rest)
    if cmd == "delete":
        return delete_main(rest)
    sys.stderr.write(f"unknown command {cmd!r}\n")
    return 2


if __name__ == "__main__":
    sys.exit(main())
