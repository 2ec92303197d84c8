"""The shim binary as containerd 1.6 runs a runtime v2 shim (``containerd-shim-pyrunc-v2``).

Command line (Go ``flag`` syntax: ``-name value``, ``-name=value``, ``--name value``)::

    containerd-shim-pyrunc-v2 -namespace NS -id ID -address ADDR -publish-binary BIN [-debug]
                              [-bundle DIR] start|delete

``start`` (cwd = the bundle; stdin: the runtime options Any, possibly empty)
    The shim's group is the bundle's ``config.json`` annotation
    ``io.containerd.runc.v2.group``, else ``io.kubernetes.cri.sandbox-id``, else the
    container id.  Its socket is ``/run/containerd/s/<sha256 hex of ADDR/NS/GROUP>``
    (``v2layout.socket_address``, containerd's ``shim.SocketAddress``).  If a shim already
    answers there (another container of the group), that address is reused; otherwise the
    socket is bound (mode 0600) and a shim process is forked for it: own session, subreaper,
    stdio on the bundle's ``log`` FIFO (containerd reads it) or /dev/null, ShimCgroup from
    the options joined.  Either way ``<bundle>/address`` is written and the address printed
    on stdout (``unix:///run/containerd/s/...``).
``delete`` (cwd = the bundle, or ``-bundle``)
    The shim is gone: ``runc delete --force`` (root and binary from the ``options.json``
    Create left in the bundle), unmount ``rootfs``, remove the dead shim's socket (unless a
    shim still answers there), print a ``containerd.task.v2.DeleteResponse`` (protobuf bytes)
    with the recorded exit, else exit 137 as containerd's runc shim reports.
``-info`` (containerd 2.0's command-like flag; stdin: the runtime options Any, possibly empty)
    A ``containerd.types.RuntimeInfo`` (protobuf bytes) on stdout, as containerd 2.0's runc shim
    writes it: name ``io.containerd.runc.v2``, our version, the options read, and as ``features``
    what the options' runc (``BinaryName``, else ``runc`` on PATH) prints for ``runc features``
    (left out when that runc has no ``features`` command).  containerd 2.0's CRI reads a
    handler's features from it (recursive read-only mounts); so does ours for external shims.

Events go to containerd over ttrpc ``containerd.services.events.ttrpc.v1.Events/Forward`` at
``$TTRPC_ADDRESS``, as containerd 1.6's shims do (``-publish-binary`` is accepted and unused).
The shim process exits after a Shutdown once none of its containers is left.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sys
from dataclasses import dataclass, field
from typing import Any

from pycontainerd import errdefs
from pycontainerd.shim import v2layout
from pycontainerd.shim.main import PID_FILE, become_shim, cleanup, run_child
from pycontainerd.shim.server import bind_listener
from pycontainerd.shim.service import ShimConfig, write_atomic

# protobuf, the task.v2 translator and the ttrpc server are imported where they are used:
# `delete` (run by containerd after every shim exit) and `start` stay cheap

ADDRESS_FILE = v2layout.ADDRESS_FILE
LOG_FIFO = v2layout.LOG_FIFO
EXIT_FLUSH = 2.0  # seconds an exiting shim waits for its last events to reach containerd

_BOOL_FLAGS = {"debug", "v", "version", "info"}
RUNTIME_NAME = "io.containerd.runc.v2"  # the -info name: what this shim serves, as containerd's runc shim
FEATURES_TIMEOUT = 10.0


@dataclass
class Flags:
    namespace: str = ""
    id: str = ""
    address: str = ""
    publish_binary: str = ""
    bundle: str = ""
    socket: str = ""
    debug: bool = False
    version: bool = False
    info: bool = False
    args: list[str] = field(default_factory=list)


def parse_flags(argv: list[str]) -> Flags:
    """Go ``flag`` parsing of containerd's shim command line; flags stop at the first
    non-flag argument (the command)."""
    out = Flags()
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg == "--" or not arg.startswith("-") or arg == "-":
            out.args = argv[i + 1 :] if arg == "--" else argv[i:]
            break
        name, eq, value = arg.lstrip("-").partition("=")
        key = name.replace("-", "_")
        if name in _BOOL_FLAGS:
            on = value.lower() not in ("false", "0") if eq else True
            if name == "debug":
                out.debug = on
            elif name == "info":
                out.info = on
            else:
                out.version = on
        elif key in ("namespace", "id", "address", "publish_binary", "bundle", "socket"):
            if not eq:
                i += 1
                if i >= len(argv):
                    raise errdefs.InvalidArgument(f"flag needs an argument: -{name}")
                value = argv[i]
            setattr(out, key, value)
        else:
            raise errdefs.InvalidArgument(f"flag provided but not defined: -{name}")
        i += 1
    return out


def _stdin_options() -> Any | None:
    """The runtime options (an Any) containerd writes on ``start``'s and ``-info``'s stdin; None for none."""
    if os.isatty(0):
        return None
    try:
        data = sys.stdin.buffer.read()
    except OSError:
        return None
    if not data:
        return None
    from google.protobuf import any_pb2

    value = any_pb2.Any()
    try:
        value.ParseFromString(data)
    except Exception as exc:
        raise errdefs.InvalidArgument(f"runtime options on stdin are not a protobuf Any: {exc}") from exc
    return value


def _read_options() -> dict[str, object]:
    value = _stdin_options()
    if value is None:
        return {}
    from pycontainerd.shim import taskv2

    return taskv2.decode_options(value)


def info() -> bytes:
    """``-info``: this shim's ``containerd.types.RuntimeInfo`` (see the module docstring)."""
    import shutil
    import subprocess

    from pycontainerd import __version__
    from pycontainerd.api.types import introspection_pb2
    from pycontainerd.shim import taskv2
    from pycontainerd.typeurl import OCI_FEATURES

    out = introspection_pb2.RuntimeInfo(name=RUNTIME_NAME,
                                        version=introspection_pb2.RuntimeVersion(version=__version__))
    binary = "runc"
    value = _stdin_options()
    if value is not None:
        opts = taskv2.decode_options(value)  # refuses what Create would refuse
        out.options.CopyFrom(value)
        binary = str(opts.get("binary_name") or "runc")
    path = shutil.which(binary)
    if path is None:
        raise errdefs.NotFound(f"failed to look up the path of {binary!r}: not found on PATH")
    try:
        done = subprocess.run([path, "features"], capture_output=True, timeout=FEATURES_TIMEOUT, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        sys.stderr.write(f"{path} features: {exc}\n")
        return out.SerializeToString()
    try:
        doc = json.loads(done.stdout) if done.returncode == 0 else None
    except ValueError:
        doc = None
    if isinstance(doc, dict):  # runc before 1.1 has no features command: no features, as containerd's shim
        out.features.type_url = OCI_FEATURES
        out.features.value = json.dumps(doc, separators=(",", ":")).encode()
    return out.SerializeToString()


def _read_spec(bundle: str) -> dict[str, object]:
    try:
        with open(os.path.join(bundle, "config.json"), "rb") as f:
            spec = json.load(f)
    except (OSError, ValueError) as exc:
        raise errdefs.FailedPrecondition(f"read the bundle's OCI spec {bundle}/config.json: {exc}") from exc
    return spec if isinstance(spec, dict) else {}


def _log_fd(bundle: str) -> int:
    """The shim's stdout/stderr: the bundle's ``log`` FIFO when containerd has it open for
    reading (it copies it to its own log), else /dev/null."""
    try:
        fd = os.open(os.path.join(bundle, LOG_FIFO), os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return os.open("/dev/null", os.O_WRONLY | os.O_CLOEXEC)
    os.set_blocking(fd, True)
    return fd


def serve(flags: Flags, listener: socket.socket, socket_path: str, ttrpc_address: str | None = None) -> None:
    """The shim process: serve task.v2 on ``listener`` until a Shutdown leaves it empty;
    events go to ``ttrpc_address`` (default ``$TTRPC_ADDRESS``)."""
    from pycontainerd.shim import taskv2
    from pycontainerd.shim.loop import Loop
    from pycontainerd.shim.reaper import Reaper
    from pycontainerd.shim.ttrpc_loop import Forwarder, TtrpcServer

    loop = Loop()
    reaper = Reaper(loop)
    if ttrpc_address is None:
        ttrpc_address = os.environ.get("TTRPC_ADDRESS", "")
    forwarder = Forwarder(loop, ttrpc_address, flags.namespace) if ttrpc_address else None
    tasks = taskv2.TaskV2(
        loop, reaper, namespace=flags.namespace, socket_path=socket_path, forwarder=forwarder, debug=flags.debug
    )

    def after_call() -> None:
        if tasks.exiting:
            loop.stop()

    server = TtrpcServer(loop, listener, tasks.methods(), after_call=after_call)
    try:
        loop.run_forever()
        server.flush()
        if forwarder is not None:
            forwarder.flush(EXIT_FLUSH)
    finally:
        server.close()
        if forwarder is not None:
            forwarder.close()
        try:
            os.unlink(socket_path)
        except OSError:
            pass


def start(flags: Flags) -> str:
    return start_shim(flags, _read_options())[0]


def _bind_group(
    flags: Flags, socket_root: str = v2layout.SOCKET_ROOT, group: str = ""
) -> tuple[str, str, str, socket.socket | None]:
    """The container's group socket: (bundle, address, path, the bound listener), or no
    listener when the group's shim answers there already (``<bundle>/address`` then names it).
    ``group``: the container's shim group if the caller knows it, else read from the spec."""
    bundle = flags.bundle or os.getcwd()
    if not flags.namespace or not flags.id:
        raise errdefs.InvalidArgument("start needs -namespace and -id")
    group = group or v2layout.group_of(_read_spec(bundle), flags.id)
    address = v2layout.socket_address(flags.address, flags.namespace, group, socket_root)
    path = address.removeprefix("unix://")
    try:
        listener = bind_listener(path)
    except errdefs.AlreadyExists:  # the group's shim answers there: reuse it
        write_atomic(os.path.join(bundle, ADDRESS_FILE), address.encode())
        return bundle, address, path, None
    return bundle, address, path, listener


def _record_shim(bundle: str, address: str, pid: int, options: dict[str, object]) -> None:
    """A new shim process ``pid``: into the options' ShimCgroup, ``shim.pid`` and ``address``
    written in the bundle."""
    shim_cgroup = str(options.get("shim_cgroup") or "")
    if shim_cgroup:
        from pycontainerd.shim.taskv2 import join_cgroup

        join_cgroup(shim_cgroup, pid)
    write_atomic(os.path.join(bundle, PID_FILE), str(pid).encode())
    write_atomic(os.path.join(bundle, ADDRESS_FILE), address.encode())


def _unbind(listener: socket.socket, path: str) -> None:
    listener.close()
    try:
        os.unlink(path)
    except OSError:
        pass


def start_shim(
    flags: Flags,
    options: dict[str, object],
    *,
    ttrpc_address: str | None = None,
) -> tuple[str, int, bool]:
    """``start``: the shim's address, its pid (0 for the group's running shim: ask it with
    Connect) and whether it was forked now (the binary's ``start``: this process then exits)."""
    bundle, address, path, listener = _bind_group(flags)
    if listener is None:
        return address, 0, False  # its pid: ask it (Connect); the socket's owner is whoever bound it
    try:
        pid = os.fork()
        if pid == 0:

            def body() -> None:
                become_shim(_log_fd(bundle))
                serve(flags, listener, path, ttrpc_address)

            run_child(body)
        listener.close()
        try:
            _record_shim(bundle, address, pid, options)
        except BaseException:
            os.kill(pid, signal.SIGKILL)
            raise
    except BaseException:
        _unbind(listener, path)
        raise
    return address, pid, True


class ClaimedShim:
    """A shim this process is to become (``claim_shim``): ``run`` serves until the last
    container is gone, ``abandon`` gives the socket up instead (the answer never reached
    the daemon)."""

    __slots__ = ("_bundle", "_flags", "_listener", "_path", "_ttrpc_address")

    def __init__(
        self, flags: Flags, bundle: str, listener: socket.socket, path: str, ttrpc_address: str | None
    ) -> None:
        self._flags = flags
        self._bundle = bundle
        self._listener = listener
        self._path = path
        self._ttrpc_address = ttrpc_address

    def run(self) -> None:
        become_shim(_log_fd(self._bundle))
        serve(self._flags, self._listener, self._path, self._ttrpc_address)

    def abandon(self) -> None:
        _unbind(self._listener, self._path)


def claim_shim(
    flags: Flags,
    options: dict[str, object],
    *,
    ttrpc_address: str | None = None,
    socket_root: str = v2layout.SOCKET_ROOT,
    group: str = "",
) -> tuple[str, int, ClaimedShim | None]:
    """``start`` without a fork, in a process that becomes the shim itself (a child of the
    daemon's fork server, ``shim.main`` launcher): the address, this process's pid and the
    shim to run, or (address, 0, None) when the group's shim answers there already
    (``group``: the container's shim group when the daemon sent it, else read from the spec)."""
    bundle, address, path, listener = _bind_group(flags, socket_root, group)
    if listener is None:
        return address, 0, None
    pid = os.getpid()
    try:
        _record_shim(bundle, address, pid, options)
    except BaseException:
        _unbind(listener, path)
        raise
    return address, pid, ClaimedShim(flags, bundle, listener, path, ttrpc_address)


def _remove_dead_socket(bundle: str) -> None:
    """The socket of a shim that was killed stays behind: remove it unless a shim (another
    container of the group) still answers there."""
    try:
        with open(os.path.join(bundle, ADDRESS_FILE)) as f:
            path = f.read().strip().removeprefix("unix://")
    except OSError:
        return
    if not path.startswith(v2layout.SOCKET_ROOT + "/"):
        return
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(path)
    except ConnectionRefusedError:
        try:
            os.unlink(path)
        except OSError:
            pass
    except OSError:
        pass
    finally:
        probe.close()


def delete(flags: Flags) -> bytes:
    from pycontainerd.api.runtime.v2.task import shim_pb2

    bundle = flags.bundle or os.getcwd()
    opts: dict[str, object] = {}
    try:
        with open(os.path.join(bundle, v2layout.OPTIONS_FILE)) as f:
            opts = json.load(f)
    except (OSError, ValueError):
        pass
    config = ShimConfig(
        namespace=flags.namespace,
        container_id=flags.id,
        bundle=bundle,
        socket_path="",
        runtime_binary=str(opts.get("binary_name") or "runc"),
        runtime_root=os.path.join(str(opts.get("root") or v2layout.DEFAULT_RUNC_ROOT), flags.namespace),
        systemd_cgroup=bool(opts.get("systemd_cgroup")),
    )
    info = cleanup(config)
    _remove_dead_socket(bundle)
    if not info.get("exited_at_ns"):  # nothing recorded: killed with the shim, as containerd reports it
        import time

        pid = 0
        try:
            with open(os.path.join(bundle, "init.pid")) as f:
                pid = int(f.read().strip() or 0)
        except (OSError, ValueError):
            pass
        info = {"pid": pid, "exit_status": 128 + signal.SIGKILL, "exited_at_ns": time.time_ns()}
    resp = shim_pb2.DeleteResponse(pid=int(info["pid"]), exit_status=int(info["exit_status"]))
    resp.exited_at.FromNanoseconds(int(info["exited_at_ns"]))
    return resp.SerializeToString()


def main(argv: list[str]) -> int:
    try:
        flags = parse_flags(argv)
        if flags.version:
            from pycontainerd import __version__

            sys.stdout.write(f"containerd-shim-pyrunc-v2:\n  Version: {__version__}\n")
            return 0
        if flags.info:
            sys.stdout.buffer.write(info())
            sys.stdout.flush()
            return 0
        cmd = flags.args[0] if flags.args else ""
        if cmd == "start":
            sys.stdout.write(start(flags))
            sys.stdout.flush()
            return 0
        if cmd == "delete":
            sys.stdout.buffer.write(delete(flags))
            sys.stdout.flush()
            return 0
        raise errdefs.InvalidArgument(f"unknown shim command {cmd!r}: want start or delete")
    except errdefs.ContainerdError as exc:
        sys.stderr.write(f"{exc}\n")
        return 1
