"""Running one CNI plugin: what it is given (pure) and the process itself (async).

The protocol (CNI SPEC.md, "Execution protocol"): the runtime execs the plugin binary found
by its ``type`` in ``CNI_PATH``, with

- environment ``CNI_COMMAND`` (ADD, CHECK, DEL, VERSION), ``CNI_CONTAINERID``,
  ``CNI_NETNS`` (path of the network namespace), ``CNI_IFNAME``, ``CNI_ARGS``
  (``K=V;K=V``) and ``CNI_PATH`` (the plugin directories, ``:``-joined), on top of the
  runtime's own environment;
- on stdin the plugin's JSON object from the list, with the list's ``name`` and
  ``cniVersion`` put in, the previous plugin's result as ``prevResult`` (CHECK and DEL:
  the cached result of the whole list), and ``runtimeConfig`` holding the capability
  arguments the plugin declares in ``capabilities`` and the runtime has values for.

Exit status 0 is success (ADD prints a result); anything else is a failure, with the
error JSON on stdout.  :func:`build_env`, :func:`plugin_stdin` and the capability types
are pure; :func:`exec_plugin` runs the process (spawned in a worker thread: never blocking
the event loop; see ``_Plugin``) with a timeout and bounded output.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .. import errdefs
from .config import NetworkConfigList, PluginConfig
from .result import PluginErrorInfo, Result, parse_error

ADD = "ADD"
CHECK = "CHECK"
DEL = "DEL"
VERSION = "VERSION"

MAX_OUTPUT = 4 << 20  # a plugin's stdout/stderr beyond this is an error
STDERR_TAIL = 2048  # how much of stderr an error message quotes


# --- capability arguments (CONVENTIONS.md) ---------------------------------------------------


@dataclass(frozen=True)
class PortMapping:
    """A host port forwarded to the pod (``portMappings``)."""

    host_port: int
    container_port: int
    protocol: str = "tcp"
    host_ip: str = ""

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "hostPort": self.host_port,
            "containerPort": self.container_port,
            "protocol": self.protocol.lower(),
        }
        if self.host_ip:
            out["hostIP"] = self.host_ip
        return out


@dataclass(frozen=True)
class Bandwidth:
    """Traffic shaping (``bandwidth``): rates in bits per second, bursts in bits; 0 = unset."""

    ingress_rate: int = 0
    ingress_burst: int = 0
    egress_rate: int = 0
    egress_burst: int = 0

    def to_json(self) -> dict[str, Any]:
        return {
            "ingressRate": self.ingress_rate,
            "ingressBurst": self.ingress_burst,
            "egressRate": self.egress_rate,
            "egressBurst": self.egress_burst,
        }


@dataclass(frozen=True)
class DNSConfig:
    """The pod's resolver settings (``dns``)."""

    servers: tuple[str, ...] = ()
    searches: tuple[str, ...] = ()
    options: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {"servers": list(self.servers), "searches": list(self.searches), "options": list(self.options)}


@dataclass(frozen=True)
class IPRange:
    """One range to allocate from (``ipRanges``)."""

    subnet: str
    range_start: str = ""
    range_end: str = ""
    gateway: str = ""

    def to_json(self) -> dict[str, Any]:
        out = {"subnet": self.subnet}
        for key, value in (("rangeStart", self.range_start), ("rangeEnd", self.range_end), ("gateway", self.gateway)):
            if value:
                out[key] = value
        return out


@dataclass(frozen=True)
class CapabilityArgs:
    """The runtime's values for capability arguments; a plugin receives the ones it declares."""

    port_mappings: tuple[PortMapping, ...] = ()
    bandwidth: Bandwidth | None = None
    dns: DNSConfig | None = None
    ip_ranges: tuple[tuple[IPRange, ...], ...] = ()
    extra: Mapping[str, Any] = field(default_factory=dict)  # any other capability, as JSON

    def to_json(self) -> dict[str, Any]:
        """Every capability that has a value, keyed by its name in CONVENTIONS.md."""
        out: dict[str, Any] = dict(self.extra)
        # containerd passes only mappings with a host port
        mappings = [p.to_json() for p in self.port_mappings if p.host_port > 0]
        if mappings:
            out["portMappings"] = mappings
        if self.bandwidth is not None:
            out["bandwidth"] = self.bandwidth.to_json()
        if self.dns is not None:
            out["dns"] = self.dns.to_json()
        if self.ip_ranges:
            out["ipRanges"] = [[r.to_json() for r in rs] for rs in self.ip_ranges]
        return out


def runtime_config(plugin: PluginConfig, capability_args: Mapping[str, Any]) -> dict[str, Any]:
    """The ``runtimeConfig`` for ``plugin``: the capability args it declares (JSON form)."""
    return {cap: capability_args[cap] for cap in sorted(plugin.capabilities) if cap in capability_args}


# --- CNI_ARGS ----------------------------------------------------------------------------------


def k8s_args(
    *, namespace: str, name: str, sandbox_id: str, uid: str, extra: Sequence[tuple[str, str]] = ()
) -> tuple[tuple[str, str], ...]:
    """Kubernetes' CNI_ARGS pairs, as containerd's CRI passes them."""
    return (
        ("IgnoreUnknown", "1"),
        ("K8S_POD_NAMESPACE", namespace),
        ("K8S_POD_NAME", name),
        ("K8S_POD_INFRA_CONTAINER_ID", sandbox_id),
        ("K8S_POD_UID", uid),
        *extra,
    )


def format_args(pairs: Sequence[tuple[str, str]]) -> str:
    """``K=V;K=V``; a key or value that would break the format is an InvalidArgument."""
    parts = []
    for k, v in pairs:
        if not k or any(c in k for c in "=;") or ";" in v:
            raise errdefs.InvalidArgument(f"CNI_ARGS: cannot pass {k}={v!r} (no ';' in values, no '=' or ';' in keys)")
        parts.append(f"{k}={v}")
    return ";".join(parts)


# --- environment and stdin -------------------------------------------------------------------


@dataclass(frozen=True)
class Invocation:
    """Everything about one plugin call except the plugin itself."""

    command: str
    container_id: str
    netns: str
    ifname: str
    args: tuple[tuple[str, str], ...] = ()
    path: tuple[str, ...] = ()


def build_env(inv: Invocation, base: Mapping[str, str]) -> dict[str, str]:
    """The plugin's environment: ``base`` with the CNI variables set over it."""
    env = {k: v for k, v in base.items() if not k.startswith("CNI_")}
    env.update(
        CNI_COMMAND=inv.command,
        CNI_CONTAINERID=inv.container_id,
        CNI_NETNS=inv.netns,
        CNI_IFNAME=inv.ifname,
        CNI_ARGS=format_args(inv.args),
        CNI_PATH=":".join(inv.path),
    )
    return env


def plugin_stdin(
    netconf: NetworkConfigList,
    plugin: PluginConfig,
    *,
    prev_result: Result | None = None,
    capability_args: Mapping[str, Any] | None = None,
) -> bytes:
    """The JSON a plugin reads: its object with name, cniVersion, prevResult, runtimeConfig."""
    conf: dict[str, Any] = dict(plugin.raw)
    conf["name"] = netconf.name
    conf["cniVersion"] = netconf.cni_version
    conf.pop("prevResult", None)
    if prev_result is not None:
        conf["prevResult"] = prev_result.to_json(netconf.cni_version)
    rc = runtime_config(plugin, capability_args or {})
    if rc:
        conf["runtimeConfig"] = rc
    else:
        conf.pop("runtimeConfig", None)
    return json.dumps(conf, separators=(",", ":")).encode()


# --- running it --------------------------------------------------------------------------------


class PluginError(errdefs.Unknown):
    """A plugin failed: carries its name, the command, its error JSON and its stderr."""

    def __init__(
        self,
        message: str,
        *,
        plugin: str = "",
        command: str = "",
        error: PluginErrorInfo | None = None,
        stderr: str = "",
    ) -> None:
        super().__init__(message)
        self.plugin = plugin
        self.command = command
        self.error = error
        self.stderr = stderr


class PluginNotFound(errdefs.FailedPrecondition):
    """No executable for a plugin ``type`` in the plugin directories."""


def find_plugin(ptype: str, dirs: Sequence[str]) -> str:
    """The executable for plugin ``ptype`` in ``dirs`` (blocking: a few stats)."""
    for d in dirs:
        if not d:
            continue
        path = os.path.join(d, ptype)
        if os.path.isfile(path) and os.access(path, os.X_OK):
            return path
    raise PluginNotFound(f'CNI plugin "{ptype}" not found in {":".join(dirs) or "(no plugin directories)"}')


def _tail(data: bytes) -> str:
    text = data.decode(errors="replace").strip()
    return text if len(text) <= STDERR_TAIL else "..." + text[-STDERR_TAIL:]


class _Plugin:
    """One plugin process: spawned off the event loop, its pipes and its exit watched on the loop.

    Why not ``asyncio.create_subprocess_exec``: under uvloop that is libuv's ``uv_spawn``, a
    ``fork()`` of the whole daemon on the event loop's thread that then waits for the child's
    ``exec``: 3-25 ms with the loop blocked (page tables of a ~40 MB daemon, a loaded host),
    twice per pod (loopback, bridge) on RunPodSandbox's path, during the record write and the
    runc create it overlaps.  ``subprocess.Popen`` in a worker thread uses ``vfork`` (with
    ``close_fds`` and ``start_new_session``: the same child as before); the pipes are ours,
    non-blocking, read and written from the loop; the exit is a pidfd readable on the loop (no
    child watcher: nobody else reaps our children)."""

    def __init__(self, popen: subprocess.Popen[bytes], stdin: int, stdout: int, stderr: int) -> None:
        self.popen = popen
        self.pid = popen.pid
        self.fds = [stdin, stdout, stderr]  # ours; -1 once closed
        self.pidfd = -1
        self.pidfd = os.pidfd_open(popen.pid)
        self._exited: asyncio.Future[int] | None = None

    @classmethod
    async def spawn(cls, path: str, env: Mapping[str, str]) -> _Plugin:
        def start() -> _Plugin:
            in_r, in_w = os.pipe2(os.O_CLOEXEC)
            out_r, out_w = os.pipe2(os.O_CLOEXEC)
            err_r, err_w = os.pipe2(os.O_CLOEXEC)
            ours = (in_w, out_r, err_r)
            try:
                popen = subprocess.Popen(  # the configured plugin binary, no shell
                    [path], stdin=in_r, stdout=out_w, stderr=err_w,
                    env=dict(env), cwd="/", start_new_session=True, close_fds=True)
            except BaseException:
                for fd in ours:
                    os.close(fd)
                raise
            finally:
                for fd in (in_r, out_w, err_w):
                    os.close(fd)
            for fd in ours:
                os.set_blocking(fd, False)
            try:
                return cls(popen, *ours)
            except BaseException:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(popen.pid, signal.SIGKILL)
                popen.wait()
                for fd in ours:
                    os.close(fd)
                raise

        spawning = asyncio.ensure_future(asyncio.to_thread(start))
        try:
            return await asyncio.shield(spawning)
        except asyncio.CancelledError:  # the process is started anyway: killed, reaped, closed
            with contextlib.suppress(Exception):
                proc = await spawning
                await proc.kill()
                proc.close()
            raise

    def exited(self) -> asyncio.Future[int]:
        """The exit status (as ``Popen.returncode``: -N for signal N), once it is reaped."""
        if self._exited is None:
            loop = asyncio.get_running_loop()
            fut: asyncio.Future[int] = loop.create_future()
            self._exited = fut

            def readable() -> None:
                loop.remove_reader(self.pidfd)
                rc = self.popen.wait()  # it has exited: this does not block
                if not fut.done():
                    fut.set_result(rc)

            loop.add_reader(self.pidfd, readable)
        return self._exited

    def _drop(self, i: int) -> None:
        fd, self.fds[i] = self.fds[i], -1
        if fd >= 0:
            loop = asyncio.get_running_loop()
            if i == 0:
                loop.remove_writer(fd)
            else:
                loop.remove_reader(fd)
            os.close(fd)

    def _feed(self, data: bytes) -> asyncio.Future[None]:
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()
        view = memoryview(data)

        def writable() -> None:
            nonlocal view
            try:
                while view:
                    view = view[os.write(self.fds[0], view):]
            except BlockingIOError:
                return
            except OSError:  # BrokenPipe: it did not read all of its stdin
                pass
            self._drop(0)
            if not done.done():
                done.set_result(None)

        loop.add_writer(self.fds[0], writable)
        return done

    def _collect(self, i: int, limit: int) -> asyncio.Future[tuple[bytes, bool]]:
        loop = asyncio.get_running_loop()
        done: asyncio.Future[tuple[bytes, bool]] = loop.create_future()
        buf = bytearray()
        over = False

        def readable() -> None:
            nonlocal over
            try:
                chunk = os.read(self.fds[i], 65536)
            except BlockingIOError:
                return
            except OSError:
                chunk = b""
            if chunk:
                if len(buf) + len(chunk) > limit:
                    over = True
                    buf.extend(chunk[: max(0, limit - len(buf))])
                else:
                    buf.extend(chunk)
                return
            self._drop(i)
            if not done.done():
                done.set_result((bytes(buf), over))

        loop.add_reader(self.fds[i], readable)
        return done

    async def run(self, stdin: bytes) -> tuple[tuple[bytes, bool], tuple[bytes, bool], int]:
        _, out, err = await asyncio.gather(self._feed(stdin), self._collect(1, MAX_OUTPUT),
                                           self._collect(2, MAX_OUTPUT))
        rc = await self.exited()
        return out, err, rc

    async def kill(self) -> None:
        if self.popen.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.pid, signal.SIGKILL)
            await self.exited()

    def close(self) -> None:
        for i in range(3):
            self._drop(i)
        if self.pidfd >= 0:
            if self._exited is None or not self._exited.done():
                asyncio.get_running_loop().remove_reader(self.pidfd)
            os.close(self.pidfd)
            self.pidfd = -1


async def exec_plugin(
    path: str,
    *,
    env: Mapping[str, str],
    stdin: bytes,
    deadline: float,
    what: str,
) -> bytes:
    """Run plugin ``path`` and return its stdout; raise :class:`PluginError` on failure.

    ``what`` names the call in errors (e.g. ``'plugin "bridge" ADD on network "pods"'``).
    ``deadline`` is in seconds; the process is killed (and reaped) when it passes and on
    cancellation."""
    ptype = os.path.basename(path)
    command = env.get("CNI_COMMAND", "")
    try:
        proc = await _Plugin.spawn(path, env)
    except OSError as exc:
        raise PluginError(f"{what}: cannot run {path}: {exc.strerror or exc}", plugin=ptype, command=command) from exc
    try:
        (stdout, out_over), (stderr, _), rc = await asyncio.wait_for(proc.run(stdin), deadline)
    except BaseException as exc:
        await asyncio.shield(proc.kill())  # its own session: helpers it started too
        if isinstance(exc, TimeoutError):
            raise PluginError(
                f"{what}: timed out after {deadline:g}s (killed)", plugin=ptype, command=command
            ) from None
        raise
    finally:
        proc.close()
    if rc != 0:
        info = parse_error(stdout)
        err_text = _tail(stderr)
        if info is not None:
            detail = info.describe()
        elif stdout.strip():
            detail = _tail(stdout)
        else:
            detail = f"exit status {rc}" if rc > 0 else f"killed by signal {-rc}"
        msg = f"{what} failed: {detail}"
        if err_text:
            msg += f" (stderr: {err_text})"
        raise PluginError(msg, plugin=ptype, command=command, error=info, stderr=err_text)
    if out_over:
        raise PluginError(f"{what}: output larger than {MAX_OUTPUT} bytes", plugin=ptype, command=command)
    return stdout
