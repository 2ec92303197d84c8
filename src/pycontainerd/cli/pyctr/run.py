"""pyctr run: create a container from an image and run its task, like ``ctr run``.

    pyctr run --rm docker.io/library/busybox:latest hello sh -c 'echo hi; exit 3'   # prints hi, exits 3
    echo x | pyctr run --rm IMAGE id cat                                           # prints x (stdin EOF is passed on)
    pyctr run -d IMAGE web httpd -f -v    # then: pyctr logs [-f] [--tail N] web
    pyctr run -d --log-uri file:///var/log/web.log IMAGE web httpd -f   # the log where you want it

``run -d`` keeps the output: unless ``--log-uri`` or ``--null-io`` says otherwise, pycontainerd
keeps stdout and stderr in a log file of its own (``<root>/io.containerd.runtime.v2.task/logs/
<namespace>/<id>.log``, root only; it outlives pyctr, the task and a daemon restart, and goes
with the container, whoever removes it); its path is in the container's ``io.pycontainerd.log-uri``
label, so ``pyctr logs ID [-f] [--tail N]`` finds it.  With real containerd the shim appends the
output to ``<socket dir>/logs/<namespace>/<id>.log`` and ``pyctr containers rm`` removes it.
Also ``pyctr stats [ID...]`` (CPU %, memory, pids,
refreshed on a terminal until ^C; ``--no-stream`` for one sample).

``run --cni`` networks the container like ``ctr run --cni``: the plugins of the first config
in ``--cni-conf-dir`` (from ``--cni-bin-dir``) run here once the task is created, in its own
network namespace; ``-p [HOST_IP:]HOST_PORT:CONTAINER_PORT[/tcp|udp]`` publishes ports
through the portmap plugin.  ``run --rm``, ``tasks delete`` and ``containers rm`` release the
address and the port rules again (results cached in ``<socket dir>/cni``)::

    pyctr run -d --cni -p 127.0.0.1:8080:80 IMAGE web httpd -f -p 80
    pyctr run --rm --cni IMAGE probe ip addr
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import TYPE_CHECKING, Any

from ... import errdefs
from ...client import DEFAULT_BIN_DIRS, DEFAULT_CONF_DIR, DEFAULT_RUNTIME, KEEP_LOG_LABEL, LOG_URI_LABEL
from ..common import go_duration, human_size, parse_labels, size_bytes, table

if TYPE_CHECKING:
    from ...client import Client
    from ...client.network import ContainerNetwork
    from ...oci.spec import RunOptions

# The modules behind `run` (grpc, asyncio, the protobufs, the CNI library) are imported by the
# functions that use them: `pyctr run` in the foreground goes through client/fastrun.py and
# never loads them.


def add_container_flags(p: argparse.ArgumentParser, *, cpu_shares: int = 1024) -> None:
    """The flags that shape a new container (shared by ``run`` and ``containers create``).

    ``ctr run`` always sets cpu shares (default 1024), ``ctr containers create`` does not.
    """
    p.add_argument("--snapshotter", default=os.environ.get("CONTAINERD_SNAPSHOTTER", ""),
                   help="snapshotter name (default: the namespace's default, else overlayfs)")
    p.add_argument("--snapshotter-label", action="append", default=[], metavar="KEY=VALUE",
                   help="labels added to the container's rootfs snapshot")
    p.add_argument("--cwd", default="", help="working directory of the process")
    p.add_argument("--env", action="append", default=[], metavar="KEY=VALUE", help="environment variable")
    p.add_argument("--env-file", default="", help="file with KEY=VALUE lines")
    p.add_argument("--label", action="append", default=[], metavar="KEY=VALUE", help="container label")
    p.add_argument("--mount", action="append", default=[],
                   help="additional mount, e.g. type=bind,src=/tmp,dst=/host,options=rbind:ro")
    p.add_argument("--net-host", action="store_true", help="use the host's network namespace")
    p.add_argument("--privileged", action="store_true", help="all capabilities and devices, no masked paths")
    p.add_argument("--read-only", action="store_true", help="mount the root filesystem read-only")
    p.add_argument("--runtime", default=DEFAULT_RUNTIME, help="runtime name")
    p.add_argument("-t", "--tty", action="store_true", help="allocate a TTY")
    p.add_argument("--user", "-u", default="", help="user[:group] or uid[:gid] to run as")
    p.add_argument("--cpus", type=float, default=0.0, help="CFS quota in CPUs (e.g. 1.5)")
    p.add_argument("--cpu-shares", type=int, default=cpu_shares, help="CPU shares")
    p.add_argument("--memory-limit", type=size_bytes, default=0, help="memory limit: bytes, or 64m, 1g ...")
    p.add_argument("--seccomp", action="store_true", help="apply the default seccomp profile")
    p.add_argument("--cap-add", action="append", default=[], help="add a capability (CAP_...)")
    p.add_argument("--cap-drop", action="append", default=[], help="drop a capability (CAP_...)")
    p.add_argument("--hostname", default="", help="container hostname")


def register(sub: Any) -> None:
    p = sub.add_parser("run", help="run a container", description=__doc__,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rm", action="store_true", help="remove the container after running")
    p.add_argument("-d", "--detach", action="store_true", help="start the task and return")
    p.add_argument("--null-io", action="store_true", help="send all IO to /dev/null")
    p.add_argument("--log-uri", default="", help="file:///path or binary:///path for stdout/stderr")
    p.add_argument("--cni", action="store_true", help="network the container through CNI plugins")
    p.add_argument("--cni-conf-dir", default=DEFAULT_CONF_DIR,
                   help=f"CNI configs; the first one is used (default {DEFAULT_CONF_DIR})")
    p.add_argument("--cni-bin-dir", action="append", default=[], metavar="DIR",
                   help=f"where the CNI plugins are (repeatable or DIR:DIR; default {':'.join(DEFAULT_BIN_DIRS)})")
    p.add_argument("-p", "--publish", action="append", default=[],
                   metavar="[HOST_IP:]HOST_PORT:CONTAINER_PORT[/PROTO]", help="publish a port (with --cni)")
    add_container_flags(p)
    p.add_argument("image", metavar="IMAGE")
    p.add_argument("id", metavar="ID")
    p.add_argument("args", nargs=argparse.REMAINDER, metavar="CMD",
                   help="command and arguments (default: the image's entrypoint and cmd)")
    p.set_defaults(func=run, quick=run_quick)

    lg = sub.add_parser("logs", help="print the output of a container started with run -d (or --log-uri file://)")
    lg.add_argument("-f", "--follow", action="store_true", help="follow the log until the task exits")
    lg.add_argument("--tail", type=int, default=-1, help="only the last N lines")
    lg.add_argument("id", metavar="ID")
    lg.set_defaults(func=run_logs)

    st = sub.add_parser("stats", help="CPU, memory and pids of running tasks, refreshed until ^C")
    st.add_argument("--interval", type=go_duration, default=1.0, help="time between samples (default 1s)")
    st.add_argument("--no-stream", dest="stream", action="store_false", default=None,
                    help="print one sample and exit (the default when stdout is not a terminal)")
    st.add_argument("--stream", dest="stream", action="store_true",
                    help="refresh until ^C (the default on a terminal)")
    st.add_argument("ids", nargs="*", metavar="ID")
    st.set_defaults(func=run_stats)


def env_from_file(path: str) -> list[str]:
    out = []
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            line = line.strip()
            if line and not line.startswith("#"):
                out.append(line)
    return out


def run_options(args: argparse.Namespace) -> RunOptions:
    from ...oci.spec import RunOptions

    env = env_from_file(args.env_file) if args.env_file else []
    return RunOptions(
        args=list(getattr(args, "args", []) or []), env=[*env, *args.env], mounts=list(args.mount),
        labels=parse_labels(args.label), read_only=args.read_only, cwd=args.cwd, user=args.user, tty=args.tty,
        privileged=args.privileged, net_host=args.net_host, seccomp=args.seccomp, cpus=args.cpus,
        cpu_shares=args.cpu_shares, memory_limit=args.memory_limit, hostname=args.hostname,
        cap_add=list(args.cap_add), cap_drop=list(args.cap_drop),
    )


async def create_container(args: argparse.Namespace, client: Client, extra_labels: dict[str, str] | None = None
                           ) -> Any:
    from ...client.run import new_container

    labels = parse_labels(args.label)
    labels.update(extra_labels or {})
    return await new_container(client, args.image, args.id, run_options(args), snapshotter=args.snapshotter,
                               runtime=args.runtime, container_labels=labels,
                               snapshot_labels=parse_labels(args.snapshotter_label))


def default_log_path(args: argparse.Namespace, container_id: str) -> str:
    """``<socket dir>/logs/<namespace>/<id>.log``: where ``run -d`` keeps a container's output
    when the daemon does not (real containerd)."""
    return os.path.join(os.path.dirname(args.fifo_dir), "logs", args.namespace, f"{container_id}.log")


async def kept_output(args: argparse.Namespace, client: Client) -> tuple[dict[str, str], str]:
    """(container labels, log URI for the task) of a detached task: ``--log-uri`` as given,
    nothing with ``--null-io``; else pycontainerd keeps the output itself (label
    KEEP_LOG_LABEL; the daemon writes the log URI label on Tasks.Create), and with another
    daemon the shim appends it to ``default_log_path``."""
    if args.log_uri or args.null_io:
        return ({LOG_URI_LABEL: args.log_uri} if args.log_uri else {}), args.log_uri
    if (await client.version()).revision == "pycontainerd":
        return {KEEP_LOG_LABEL: "daemon"}, ""
    uri = "file://" + default_log_path(args, args.id)
    return {LOG_URI_LABEL: uri}, uri


def run_quick(args: argparse.Namespace) -> int | None:
    """A foreground ``run`` without grpc (client/fastrun.py); None = the full client's turn
    (``-d``, ``-t``, ``--cni``, ``--log-uri``, ``--timeout``, or what fastrun hands back)."""
    if args.detach or args.tty or args.cni or args.publish or args.log_uri or args.timeout > 0:
        return None
    from ...client.quick import unix_path

    if unix_path(args.address) is None:
        return None
    from ...client import fastrun

    return fastrun.run(args.address, args.namespace, args.image, args.id, lambda: run_options(args),
                       snapshotter=args.snapshotter,
                       runtime=args.runtime, container_labels=parse_labels(args.label),
                       snapshot_labels=parse_labels(args.snapshotter_label), fifo_dir=args.fifo_dir,
                       io=("", "") if args.null_io else None, rm=args.rm, connect_timeout=args.connect_timeout)


async def run(args: argparse.Namespace, client: Client) -> int:
    from ...client.network import CNI_LABEL
    from ...client.run import TaskIO, run_task

    if args.rm and args.detach:
        raise errdefs.InvalidArgument("flags --detach and --rm cannot be specified together")
    if args.detach:
        extra, log_uri = await kept_output(args, client)
    else:
        log_uri = args.log_uri
        extra = {LOG_URI_LABEL: log_uri} if log_uri else {}
    network = await cni_network(args)
    if network is not None:
        extra[CNI_LABEL] = network.label()
    container = await create_container(args, client, extra)
    tio = TaskIO(tty=args.tty, detach=args.detach, null_io=args.null_io, log_uri=log_uri,
                 fifo_dir=args.fifo_dir)
    return await run_task(client, container, tio, rm=args.rm, network=network)


async def cni_network(args: argparse.Namespace) -> ContainerNetwork | None:
    """``--cni`` [``-p``...]: where the plugins and configs are; checked before anything is made."""
    from ...client.network import ContainerNetwork, publish_all

    if not args.cni:
        if args.publish:
            raise errdefs.InvalidArgument("--publish needs --cni (ports are published by the CNI portmap plugin)")
        return None
    if args.net_host:
        raise errdefs.InvalidArgument("flags --cni and --net-host cannot be specified together")
    bin_dirs = tuple(d for v in args.cni_bin_dir for d in v.split(":") if d) or DEFAULT_BIN_DIRS
    network = ContainerNetwork(conf_dir=args.cni_conf_dir, bin_dirs=bin_dirs,
                               cache_dir=os.path.join(os.path.dirname(args.fifo_dir), "cni"),
                               ports=publish_all(args.publish))
    await network.check_ready()
    return network


# -- logs ------------------------------------------------------------------------------------
def _log_path(uri: str) -> str:
    from urllib.parse import urlparse

    u = urlparse(uri)
    if u.scheme in ("", "file"):
        return u.path or uri
    raise errdefs.FailedPrecondition(f"the container logs to {uri}; only file:// logs can be read back")


async def _task_running(client: Client, container_id: str) -> bool:
    try:
        proc = await client.tasks.get(container_id)
    except errdefs.NotFound:
        return False
    return proc.status in ("running", "created", "paused", "pausing")


async def run_logs(args: argparse.Namespace, client: Client) -> int:
    import asyncio

    container = await client.containers.get(args.id)
    uri = container.labels.get(LOG_URI_LABEL, "")
    if not uri:
        raise errdefs.FailedPrecondition(
            f"container {args.id} has no log: it ran attached to a terminal or with --null-io, so its output "
            "was not kept (start containers with `pyctr run -d` to keep it)")
    path = _log_path(uri)
    out = sys.stdout.buffer
    try:
        f = await asyncio.to_thread(open, path, "rb")
    except FileNotFoundError:
        if not args.follow:
            return 0
        f = None
    try:
        if f is not None:
            data = await asyncio.to_thread(f.read)
            if args.tail >= 0:
                lines = data.splitlines(keepends=True)
                data = b"".join(lines[-args.tail:]) if args.tail else b""
            out.write(data)
            out.flush()
        if not args.follow:
            return 0
        while True:
            running = await _task_running(client, args.id)
            if f is None and await asyncio.to_thread(os.path.exists, path):
                f = await asyncio.to_thread(open, path, "rb")
            if f is not None:
                chunk = await asyncio.to_thread(f.read)
                if chunk:
                    out.write(chunk)
                    out.flush()
                    continue
            if not running:
                return 0
            await asyncio.sleep(0.2)
    finally:
        if f is not None:
            f.close()


# -- stats -----------------------------------------------------------------------------------
def _sample(data: Any) -> tuple[int, int, int, int]:
    """(cpu ns, memory usage, memory limit, pids) from a cgroups v1 or v2 Metrics message."""
    if data is None:
        return 0, 0, 0, 0
    if hasattr(data, "cgroup_stats") or hasattr(data, "memory_oom_control"):  # v1
        cpu = data.cpu.usage.total
        mem = data.memory.usage.usage
        inactive = data.memory.total_inactive_file
        usage = mem - inactive if inactive < mem else mem
        return cpu, usage, data.memory.usage.limit, data.pids.current
    cpu = data.cpu.usage_usec * 1000
    mem = data.memory.usage
    inactive = data.memory.inactive_file
    usage = mem - inactive if inactive < mem else mem
    return cpu, usage, data.memory.usage_limit, data.pids.current


async def run_stats(args: argparse.Namespace, client: Client) -> int:
    import asyncio
    import time

    stream = args.stream if args.stream is not None else sys.stdout.isatty()
    filters = [f"id=={i}" for i in args.ids] if args.ids else []
    first = {m.id: (_sample(m.data), time.monotonic()) for m in await client.tasks.metrics(filters)}
    if args.ids:
        missing = [i for i in args.ids if i not in first]
        if missing:
            raise errdefs.NotFound(f"no running task for {', '.join(missing)} (pyctr ps lists the running ones)")
    while True:
        await asyncio.sleep(max(args.interval, 0.05))
        second = await client.tasks.metrics(filters)
        now = time.monotonic()
        rows = []
        for m in sorted(second, key=lambda m: m.id):
            (cpu1, *_), t1 = first.get(m.id, ((0, 0, 0, 0), now))
            cpu2, usage, limit, pids = _sample(m.data)
            elapsed_ns = max((now - t1) * 1e9, 1.0)
            cpu_pct = max(0.0, (cpu2 - cpu1) / elapsed_ns * 100.0)
            unlimited = limit == 0 or limit >= (1 << 62)
            host_mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
            shown_limit = host_mem if unlimited else limit
            mem_pct = 100.0 * usage / shown_limit if shown_limit else 0.0
            rows.append([m.id, f"{cpu_pct:.2f}%", f"{human_size(usage)} / {human_size(shown_limit)}",
                         f"{mem_pct:.2f}%", str(pids)])
        if stream:
            sys.stdout.write("\x1b[H\x1b[2J")
        table(["ID", "CPU %", "MEM USAGE / LIMIT", "MEM %", "PIDS"], rows)
        sys.stdout.flush()
        if not stream:
            return 0
        first = {m.id: (_sample(m.data), now) for m in second}


__all__ = ["add_container_flags", "create_container", "register", "run_options", "run_quick"]
