"""The runtime v2 shim manager: external shim binaries, started and found again as containerd does.

Theory of operation
-------------------
``resolve(runtime_name)`` decides who serves a task: ``None`` for the runtimes the daemon's
own fast-path launcher serves (``io.containerd.runc.v2`` and its aliases, unless the config
names a binary for it), otherwise the absolute path of a shim binary found by containerd
1.6's rules (``binary.py``).

``launch`` runs ``<binary> ... start`` in the bundle (``binary.start_args``), with the runtime
options ``Any`` on its stdin and ``TTRPC_ADDRESS`` in its environment.  The shim forks its
long-lived server, prints that server's ttrpc address and exits; the address is written to
``<bundle>/address`` (and the binary to ``<bundle>/shim-binary-path``), then we connect over
ttrpc and ``Connect`` for the shim's pid.  Before ``start`` the bundle gets a ``log`` FIFO with
a reader (``LogDrain``): the Go shim opens it for writing and would block without one.

After a daemon restart ``connect(bundle)`` reads ``<bundle>/address`` and reconnects; a shim
that is gone is cleaned up with ``cleanup``: ``<binary> ... -bundle BUNDLE delete`` (the shim
binary's own cleanup: ``runc delete --force``, unmount the rootfs), which prints a
``DeleteResponse``; a stale socket left by a killed shim is removed.

Events: shims forward theirs to ``<grpc address>.ttrpc`` (``containerd.services.events.ttrpc.v1.Events/Forward``,
served by ``start()``; the daemon's ``publish`` command forwards there too).  An event about a
task of a shim we are connected to goes to that ``TaskShim`` (the task manager tracks exits
from it and republishes it); any other event goes to the exchange as it came, except
``/tasks/create|start|delete``, which the task manager publishes itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import stat
import subprocess
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Protocol

from google.protobuf import empty_pb2

from ... import errdefs, typeurl
from ...api.events import task_pb2 as _task_events  # noqa: F401 - registers the event types for typeurl
from ...api.runtime.v2.task import shim_pb2
from ...api.services.ttrpc.events.v1 import events_pb2
from ...events import Envelope, Exchange
from ...threads import run_process
from ...ttrpc import CallContext, Client, Method, Server
from ..bundle import shim_group
from ..task_types import Timeouts
from . import binary as binarymod
from .shim import ExitInfo, LogDrain, TaskShim, runc_options

log = logging.getLogger("pycontainerd.runtime.v2")

EVENTS_SERVICE = "containerd.services.events.ttrpc.v1.Events"
ADDRESS_FILE = "address"
BINARY_FILE = "shim-binary-path"
LOG_FIFO = "log"
START_TIMEOUT = 30.0
OWN_RUNTIMES = binarymod.OWN_RUNTIMES
# published by the task manager itself; copies from shims are not forwarded a second time
_MANAGER_TOPICS = frozenset({"/tasks/create", "/tasks/start", "/tasks/delete"})


def _write_file(path: Path, data: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    try:
        os.write(fd, data.encode())
    finally:
        os.close(fd)
    os.replace(tmp, path)


def _open_and_group(drain: LogDrain, bundle: Path, container_id: str) -> str:
    """In a worker thread: the bundle's ``log`` FIFO opened, and the shim group its
    ``config.json`` names (its grouping annotation, else the container's own id)."""
    drain.open_fifo()
    try:
        with open(bundle / "config.json", "rb") as f:
            spec = json.load(f)
    except (OSError, ValueError):
        return container_id
    return shim_group(spec, container_id)


def _open_and_address(drain: LogDrain, bundle: Path, address: str) -> None:
    """In a worker thread: the bundle's ``log`` FIFO opened and, joining a group's shim at
    ``address``, the bundle's ``address`` file written."""
    drain.open_fifo()
    if address:
        _write_file(bundle / ADDRESS_FILE, address)


def _read_file(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        return None


def _remove_stale_socket(address: str) -> None:
    """A killed shim leaves its socket file behind: remove it when nobody listens there."""
    path = address.removeprefix("unix://")
    if not path or path.startswith("\0"):
        return
    try:
        if not stat.S_ISSOCK(os.lstat(path).st_mode):
            return
    except FileNotFoundError:
        return
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(path)
    except ConnectionRefusedError:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
    except OSError:
        pass
    finally:
        probe.close()


async def _run(
    args: list[str], *, cwd: Path, env: dict[str, str], stdin: bytes, limit: float, what: str
) -> tuple[int, bytes, bytes]:
    """Run a shim command to its end; (exit code, stdout, stderr).

    ``threads.run_process``, not the event loop's subprocess support: it closes every
    inherited descriptor in the child (``close_fds``), and the shim server that ``start``
    forks must not inherit any of ours.  (A descriptor without CLOEXEC, such as uvloop's stdio
    socketpairs, would stay open in the long-lived shim: ``start``'s stdout would never reach
    EOF and the daemon's sockets would leak into every shim.)"""
    try:
        done = await run_process(args, cwd=str(cwd), env=env, input=stdin, limit=limit)
    except subprocess.TimeoutExpired as exc:
        raise errdefs.DeadlineExceeded(f"{what}: timed out after {limit}s") from exc
    except OSError as exc:
        raise errdefs.from_oserror(exc, what) from exc
    return done.returncode, done.stdout, done.stderr


class ShimManager:
    """Launches, reconnects and cleans up external runtime v2 shims; routes their events."""

    def __init__(
        self,
        *,
        exchange: Exchange,
        grpc_address: str,
        publish_binary: str,
        runtime_paths: Mapping[str, str] | None = None,
        own_runtimes: frozenset[str] = OWN_RUNTIMES,
        search_path: str | None = None,
        self_dir: str = "",
        debug: bool = False,
        ttrpc_address: str = "",
        ttrpc_owner: tuple[int, int] = (0, 0),
        timeouts: Timeouts | None = None,
    ) -> None:
        self.timeouts = timeouts or Timeouts()  # [timeouts]: shim load, cleanup, shutdown
        self.exchange = exchange
        self.grpc_address = grpc_address
        # ``[ttrpc] address`` when configured, else beside the gRPC socket (containerd's rule)
        self.ttrpc_address = ttrpc_address or binarymod.ttrpc_address(grpc_address)
        self.ttrpc_owner = ttrpc_owner
        self.publish_binary = publish_binary
        self.runtime_paths = dict(runtime_paths or {})
        self.own_runtimes = own_runtimes
        self.search_path = search_path
        self.self_dir = self_dir
        self.debug = debug
        self._shims: dict[tuple[str, str], TaskShim] = {}
        self._server: Server | None = None
        self._bound_path = ""  # the socket start(sock=...) was given, unlinked at close

    # -- which binary ------------------------------------------------------------------------
    def resolve(self, runtime_name: str) -> str | None:
        """The shim binary serving ``runtime_name``; None when the daemon's own launcher does."""
        configured = self.runtime_paths.get(runtime_name)
        if configured:
            return binarymod.resolve_runtime_path(configured)
        if runtime_name in self.own_runtimes:
            return None
        return binarymod.resolve_runtime_path(runtime_name, search_path=self.search_path, self_dir=self.self_dir)

    def launcher(self, binary: str) -> BinaryLauncher:
        """A ``ShimLauncher`` (the task manager's own-launcher protocol) starting ``binary``."""
        return BinaryLauncher(self, binary)

    # -- events ----------------------------------------------------------------------------------
    async def start(self, sock: socket.socket | None = None) -> None:
        """Serve ``Events/Forward`` on ``<grpc address>.ttrpc`` for the shims: bound here, or
        ``sock``, that address already bound and listening (``task_plugin.DeferredShims``),
        which is then ours to close and unlink."""
        if self._server is not None:
            if sock is not None:
                sock.close()
            return
        server = Server()
        server.register(EVENTS_SERVICE, {"Forward": Method(events_pb2.ForwardRequest, self._forward)})
        if sock is not None:
            try:
                await server.start(sock=sock)
            except BaseException:
                sock.close()
                raise
            self._bound_path = binarymod.socket_path(self.ttrpc_address)
        else:
            await server.start(self.ttrpc_address)
            uid, gid = self.ttrpc_owner
            # only the daemon's user talks to it, unless ``[ttrpc] uid/gid`` name another owner
            os.chmod(self.ttrpc_address, 0o660 if (uid or gid) else 0o600)
            if uid or gid:
                os.chown(self.ttrpc_address, uid or -1, gid or -1)
        self._server = server
        log.info("serving shim events (ttrpc) on %s", self.ttrpc_address)

    async def _forward(self, request: events_pb2.ForwardRequest, ctx: CallContext) -> empty_pb2.Empty:
        del ctx
        if not request.HasField("envelope") or not request.envelope.HasField("event"):
            raise errdefs.InvalidArgument("forward request: envelope and its event must be set")
        e = request.envelope
        ts = e.timestamp.seconds * 1_000_000_000 + e.timestamp.nanos
        payload = typeurl.to_dict(e.event) or {}
        self.route(Envelope(ts, e.namespace, e.topic, payload, raw=(e.event.type_url, e.event.value)))
        return empty_pb2.Empty()

    def route(self, env: Envelope) -> None:
        """An event from a shim: to the task's ``TaskShim`` when we serve it, else to the exchange."""
        cid = env.payload.get("container_id")
        shim = self._shims.get((env.namespace, cid)) if isinstance(cid, str) else None
        if shim is not None:
            shim.push_event(env.topic, dict(env.payload))
            return
        if env.topic in _MANAGER_TOPICS:
            return
        self.exchange.forward(env)

    def _register(self, shim: TaskShim) -> None:
        key = (shim.namespace, shim.id)
        self._shims[key] = shim
        shim.shares_shim = lambda: any(s.address == shim.address and s is not shim for s in self._shims.values())

        def unregister() -> None:
            if self._shims.get(key) is shim:
                del self._shims[key]

        shim.on_close.append(unregister)

    # -- launch / connect / cleanup -----------------------------------------------------------------
    async def launch(
        self,
        *,
        namespace: str,
        container_id: str,
        bundle: Path,
        binary: str,
        options: tuple[str, bytes] | None = None,
        runc: dict[str, Any] | None = None,
        debug: bool = False,
    ) -> TaskShim:
        """Start the shim for a bundle (config.json written) and connect to it."""
        bundle = Path(bundle)
        opts = runc_options(options, runc)
        drain = LogDrain(bundle / LOG_FIFO, f"{namespace}/{container_id}")
        await drain.open()
        address = ""
        try:
            await asyncio.to_thread(_write_file, bundle / BINARY_FILE, binary)
            args = binarymod.start_args(
                binary,
                namespace=namespace,
                address=self.grpc_address,
                publish_binary=self.publish_binary,
                container_id=container_id,
                debug=debug or self.debug,
            )
            rc, out, err = await _run(
                args,
                cwd=bundle,
                env=binarymod.shim_env(self.grpc_address, events_address=self.ttrpc_address),
                stdin=opts.SerializeToString() if opts is not None else b"",
                limit=START_TIMEOUT,
                what=f"failed to start shim {binary}",
            )
            if rc != 0:
                detail = (err or out).decode(errors="replace").strip()
                raise errdefs.Unknown(f"failed to start shim {binary}: start exited {rc}: {detail}")
            lines = out.decode(errors="replace").strip().splitlines()
            address = lines[-1].strip() if lines else ""
            if not address:
                raise errdefs.Unknown(f"failed to start shim {binary}: start printed no address")
            if await asyncio.to_thread(_read_file, bundle / ADDRESS_FILE) != address:
                await asyncio.to_thread(_write_file, bundle / ADDRESS_FILE, address)
            shim = await self._task_shim(await Client.connect(address), namespace, container_id, bundle,
                                         address, 0, opts, drain)
        except BaseException:
            drain.close()
            if address:
                await self._stop_orphan(address, namespace, container_id)
            raise
        self._register(shim)
        log.info("started shim %s for %s/%s (pid %d, %s)", binary, namespace, container_id, shim.pid, address)
        return shim

    async def launch_forked(
        self,
        *,
        namespace: str,
        container_id: str,
        bundle: Path,
        fork: ForkServer,
        runc: dict[str, Any] | None = None,
        debug: bool = False,
        group: str | None = None,
    ) -> TaskShim:
        """Start our own shim through the daemon's fork server (``ForkServer.start_v2``: what
        ``containerd-shim-pyrunc-v2 start`` does, minus the exec) and connect to it.

        A container whose group (the bundle's grouping annotation: a CRI pod's sandbox id)
        has a shim we are connected to joins it directly: the bundle's ``address`` file is
        written and a new connection made, as ``start`` would do after finding the group's
        socket taken, without the fork server's round trip and a ``Connect`` call (the
        shim's pid is known).  A group shim whose connection is gone (it exited or is
        exiting) is not joined: the fork server decides, as before.  ``group``: the group the
        bundle's spec names, when the caller has the spec (its ``config.json`` is not read again)."""
        bundle = Path(bundle)
        opts = runc_options(None, runc)
        drain = LogDrain(bundle / LOG_FIFO, f"{namespace}/{container_id}")
        joined: tuple[Client, str, int] | None = None
        known = group is not None
        if group is None:
            group = await asyncio.to_thread(_open_and_group, drain, bundle, container_id)
        else:
            # the caller read the group from the spec: the group's shim is connected to while
            # one worker-thread hop opens the log FIFO and writes the bundle's address file
            try:
                joined = await self._join_known_group(drain, namespace, bundle, group)
            except BaseException:
                drain.close()
                raise
        drain.start_reading()
        address = ""
        try:
            if not known:
                joined = await self._join_group(namespace, bundle, group)
            if joined is not None:
                client, shim_address, pid = joined
            else:
                address, pid = await fork.start_v2(
                    {
                        "namespace": namespace,
                        "id": container_id,
                        "bundle": str(bundle),
                        "group": group,  # the fork server's child then need not read the spec
                        "address": self.grpc_address,
                        "ttrpc_address": self.ttrpc_address,
                        "options": {k: v for k, v in (runc or {}).items() if isinstance(v, (str, int, bool))},
                        "debug": debug or self.debug,
                    }
                )
                client, shim_address = await Client.connect(address), address
            shim = await self._task_shim(client, namespace, container_id, bundle, shim_address, pid, opts, drain)
        except BaseException:
            drain.close()
            if address:
                await self._stop_orphan(address, namespace, container_id)
            raise
        shim.group = group
        self._register(shim)
        return shim

    async def _task_shim(self, client: Client, namespace: str, container_id: str, bundle: Path, address: str,
                         pid: int, opts: Any, drain: LogDrain) -> TaskShim:
        """The ``TaskShim`` of a task we started or joined, over ``client`` (closed if this fails);
        a shim whose pid is not known yet (0) is asked with ``Connect``."""
        shim = TaskShim(
            client,
            namespace=namespace,
            container_id=container_id,
            bundle=bundle,
            address=address,
            pid=pid,
            options=opts,
            log_drain=drain,
            shutdown_timeout=self.timeouts.shim_shutdown,
        )
        if not pid:
            try:
                await shim.connect()
            except BaseException:
                await client.close()
                raise
        return shim

    def _group_shim(self, namespace: str, group: str) -> TaskShim | None:
        """The running shim of ``group`` we are connected to (its pid known), if any."""
        running = next((s for s in self._shims.values()
                        if group and s.group == group and s.namespace == namespace and not s.closed), None)
        return running if running is not None and running.pid else None

    async def _join_known_group(self, drain: LogDrain, namespace: str, bundle: Path,
                                group: str) -> tuple[Client, str, int] | None:
        """``drain``'s FIFO opened and, when ``group`` has a running shim, a new connection to it
        made meanwhile (the bundle's ``address`` file written in the same worker-thread hop):
        what ``_join_group`` answers, without a hop of its own."""
        running = self._group_shim(namespace, group)
        if running is None:
            await asyncio.to_thread(drain.open_fifo)
            return None
        return await _connect_during(running, _open_and_address, drain, bundle, running.address)

    async def _join_group(self, namespace: str, bundle: Path, group: str) -> tuple[Client, str, int] | None:
        """A new connection to the running shim of ``group`` we are connected to, its address and
        pid, the bundle's ``address`` file written; None if there is none."""
        running = self._group_shim(namespace, group)
        if running is None:
            return None
        # the bundle's address file is written while the connection is made (a file we would
        # remove with the bundle if the shim were gone)
        return await _connect_during(running, _write_file, bundle / ADDRESS_FILE, running.address)

    async def _stop_orphan(self, address: str, namespace: str, container_id: str) -> None:
        """A shim that started but that we could not use: ask it to exit."""
        with contextlib.suppress(Exception):
            async with await Client.connect(address, timeout=2) as client:
                await client.call(
                    "containerd.task.v2.Task",
                    "Shutdown",
                    shim_pb2.ShutdownRequest(id=container_id, now=True),
                    empty_pb2.Empty,
                    timeout=5,
                    metadata={"containerd-namespace-ttrpc": namespace},
                )
        await asyncio.to_thread(_remove_stale_socket, address)

    async def connect(self, bundle: Path) -> TaskShim:
        """Reconnect to the shim of ``bundle`` after a daemon restart; NotFound when it is gone.

        The bundle is ``.../<namespace>/<id>`` (containerd's layout); the namespace and id come
        from its path, the address from its ``address`` file."""
        bundle = Path(bundle)
        address = await asyncio.to_thread(_read_file, bundle / ADDRESS_FILE)
        if not address:
            raise errdefs.NotFound(f"no shim address in bundle {bundle}")
        namespace, container_id = bundle.parent.name, bundle.name
        try:
            client = await Client.connect(address, timeout=self.timeouts.shim_load)
        except (errdefs.Unavailable, errdefs.NotFound) as exc:
            raise errdefs.NotFound(f"shim of {namespace}/{container_id} at {address} is gone: {exc}") from exc
        drain: LogDrain | None = None
        if (bundle / LOG_FIFO).exists():
            drain = LogDrain(bundle / LOG_FIFO, f"{namespace}/{container_id}")
            try:
                await drain.open()
            except OSError as exc:
                log.warning("shim log of %s/%s: %s", namespace, container_id, exc)
                drain = None
        shim = TaskShim(
            client, namespace=namespace, container_id=container_id, bundle=bundle, address=address, pid=0,
            log_drain=drain, shutdown_timeout=self.timeouts.shim_shutdown,
        )  # fmt: skip
        try:
            # io.containerd.timeout.shim.load: a shim that does not answer Connect in time is
            # treated as gone (cleaned up), as containerd's loadShim does
            try:
                async with asyncio.timeout(self.timeouts.shim_load):
                    await shim.connect()
            except TimeoutError as exc:
                raise errdefs.DeadlineExceeded(
                    f"shim of {namespace}/{container_id} at {address} did not answer Connect within "
                    f"{self.timeouts.shim_load:g}s (io.containerd.timeout.shim.load)") from exc
        except BaseException as exc:
            await shim.close()
            if isinstance(exc, errdefs.Unavailable):
                raise errdefs.NotFound(f"shim of {namespace}/{container_id} at {address} is gone: {exc}") from exc
            raise
        self._register(shim)
        return shim

    async def cleanup(self, *, namespace: str, container_id: str, bundle: Path) -> ExitInfo:
        """After the shim died: its binary's ``delete`` (runc delete --force, unmount), then the
        recorded exit; the dead shim's socket is removed."""
        bundle = Path(bundle)
        binary = await asyncio.to_thread(_read_file, bundle / BINARY_FILE)
        if not binary:
            raise errdefs.NotFound(f"no shim binary recorded in bundle {bundle}")
        address = await asyncio.to_thread(_read_file, bundle / ADDRESS_FILE)
        args = binarymod.delete_args(
            binary,
            namespace=namespace,
            address=self.grpc_address,
            publish_binary=self.publish_binary,
            container_id=container_id,
            bundle=str(bundle),
            debug=self.debug,
        )
        try:
            rc, out, err = await _run(
                args,
                cwd=bundle,
                env=binarymod.shim_env(self.grpc_address, events_address=self.ttrpc_address),
                stdin=b"",
                limit=self.timeouts.shim_cleanup,  # io.containerd.timeout.shim.cleanup
                what=f"shim {binary} delete of {namespace}/{container_id}",
            )
            if rc != 0:
                raise errdefs.Unknown(
                    f"shim {binary} delete of {namespace}/{container_id} failed: {err.decode(errors='replace').strip()}"
                )
            if err.strip():
                log.info("shim %s delete of %s/%s: %s", binary, namespace, container_id,
                         err.decode(errors="replace").strip()[-2000:])  # fmt: skip
            resp = shim_pb2.DeleteResponse.FromString(out)
        finally:
            if address:
                await asyncio.to_thread(_remove_stale_socket, address)
        return ExitInfo(
            int(resp.pid), int(resp.exit_status), resp.exited_at.seconds * 1_000_000_000 + resp.exited_at.nanos
        )

    async def close(self) -> None:
        """Stop serving events and disconnect; the shims and their tasks keep running."""
        for shim in list(self._shims.values()):
            with contextlib.suppress(Exception):
                await shim.close()
        server, self._server = self._server, None
        if server is not None:
            await server.close(grace=1)
        path, self._bound_path = self._bound_path, ""
        if path and not path.startswith("\0"):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)


def runc_root_base(runtime_root: str, namespace: str) -> str:
    """``<root>/<namespace>`` -> ``<root>``: runc shims add the namespace to Options.root themselves."""
    norm = os.path.normpath(runtime_root) if runtime_root else ""
    if norm and os.path.basename(norm) == namespace:
        return os.path.dirname(norm)
    return runtime_root


class BinaryLauncher:
    """The task manager's ``ShimLauncher`` over one shim binary (``ShimManager.launcher``).

    The runc settings the manager passes (binary, root as ``<root>/<namespace>``, cgroup driver)
    become the ``containerd.runc.v1.Options`` of ``start`` and Create.  ``ForkLauncher`` is the
    same for our own shim, started by the fork server instead of ``<binary> start``."""

    def __init__(self, manager: ShimManager, binary: str) -> None:
        self.manager = manager
        self.binary = binary

    async def launch(
        self,
        *,
        namespace: str,
        container_id: str,
        bundle: Path,
        state_dir: Path,
        runtime_binary: str = "runc",
        runtime_root: str | None = None,
        systemd_cgroup: bool = False,
        debug: bool = False,
        group: str | None = None,
    ) -> TaskShim:
        del state_dir, group  # the shim picks its own socket (runtime v2: /run/containerd/s/<hash>) and group
        root = runc_root_base(runtime_root or "", namespace)
        runc = {"binary_name": runtime_binary, "root": root, "systemd_cgroup": systemd_cgroup}
        return await self.manager.launch(
            namespace=namespace, container_id=container_id, bundle=bundle, binary=self.binary, runc=runc, debug=debug
        )

    async def connect(self, bundle: Path) -> TaskShim:
        return await self.manager.connect(bundle)

    async def cleanup(
        self,
        *,
        namespace: str,
        container_id: str,
        bundle: Path,
        runtime_binary: str = "runc",
        runtime_root: str | None = None,
    ) -> ExitInfo:
        del runtime_binary, runtime_root  # the shim binary reads them from its own options.json
        if not await asyncio.to_thread((Path(bundle) / BINARY_FILE).exists):
            await asyncio.to_thread(_write_file, Path(bundle) / BINARY_FILE, self.binary)
        return await self.manager.cleanup(namespace=namespace, container_id=container_id, bundle=bundle)

    async def close(self) -> None:
        pass


class ForkServer(Protocol):
    """The daemon's pre-forked launcher (``runtime.shim_client.ShimLauncher``): starts our
    runtime v2 shim for a bundle in a millisecond instead of an interpreter's start-up."""

    async def start_v2(self, params: dict[str, Any]) -> tuple[str, int]: ...

    async def close(self) -> None: ...


class ForkLauncher(BinaryLauncher):
    """The task manager's ``ShimLauncher`` for its own runc runtime: our shim
    (``containerd-shim-pyrunc-v2``, task.v2 over ttrpc at containerd's socket path) forked by
    the fork server; reconnect and cleanup as for any runtime v2 binary (``binary`` is the
    one whose ``delete`` cleans up after a dead shim)."""

    def __init__(self, manager: ShimManager, binary: str, fork: ForkServer) -> None:
        super().__init__(manager, binary)
        self.fork = fork

    async def launch(
        self,
        *,
        namespace: str,
        container_id: str,
        bundle: Path,
        state_dir: Path,
        runtime_binary: str = "runc",
        runtime_root: str | None = None,
        systemd_cgroup: bool = False,
        debug: bool = False,
        group: str | None = None,
    ) -> TaskShim:
        del state_dir  # the shim's socket is containerd's: /run/containerd/s/<hash>
        root = runc_root_base(runtime_root or "", namespace)
        runc = {"binary_name": runtime_binary, "root": root, "systemd_cgroup": systemd_cgroup}
        return await self.manager.launch_forked(
            namespace=namespace, container_id=container_id, bundle=bundle, fork=self.fork, runc=runc, debug=debug,
            group=group,
        )

    async def close(self) -> None:
        await self.fork.close()


async def _connect_during(running: TaskShim, work: Callable[..., None], *args: Any) -> tuple[Client, str, int] | None:
    """A new connection to ``running`` (a group's shim), made while ``work(*args)`` runs on a
    worker thread; its address and pid with it, or None if the shim went away meanwhile (the
    fork server then decides).  A failure of ``work`` closes the connection and is raised."""
    connecting = asyncio.ensure_future(Client.connect(running.address))
    try:
        await asyncio.to_thread(work, *args)
    except BaseException:
        await asyncio.wait([connecting])
        if not connecting.cancelled() and connecting.exception() is None:
            await connecting.result().close()
        raise
    try:
        client = await connecting
    except errdefs.ContainerdError:
        return None
    return client, running.address, running.pid
