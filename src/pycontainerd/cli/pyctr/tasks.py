"""pyctr tasks ls/ps/start/exec/kill/pause/resume/metrics/attach/wait/rm (alias ``t``), like ``ctr tasks``."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import secrets
import signal
import sys
from typing import Any

from ... import errdefs
from ...client import Client
from ...client.cio import Attach, FifoSet, IOConfig
from ...client.run import LOG_URI_LABEL, TaskIO, exec_process, release_network, run_task
from ..common import add_output_flag, emit, human_size, table


def register(sub: Any) -> None:
    p = sub.add_parser("tasks", aliases=["task", "t"], help="manage tasks")
    s = p.add_subparsers(dest="sub", required=True)

    ls = s.add_parser("ls", aliases=["list"], help="list tasks")
    ls.add_argument("-q", "--quiet", action="store_true", help="print only the task id")
    add_output_flag(ls)
    ls.set_defaults(func=run_ls)

    ps = s.add_parser("ps", help="list the processes of a task")
    ps.add_argument("id", metavar="ID")
    ps.set_defaults(func=run_ps)

    st = s.add_parser("start", help="start a container's task (the container must exist)")
    st.add_argument("-d", "--detach", action="store_true", help="start and return")
    st.add_argument("-t", "--tty", action="store_true", help="allocate a TTY (the spec must ask for one)")
    st.add_argument("--null-io", action="store_true", help="send all IO to /dev/null")
    st.add_argument("--log-uri", default="", help="file:///path or binary:///path for stdout/stderr")
    st.add_argument("id", metavar="ID")
    st.set_defaults(func=run_start)

    ex = s.add_parser("exec", help="execute another process in a running task")
    ex.add_argument("--exec-id", default="", help="id of the new process (default: a generated one)")
    ex.add_argument("-t", "--tty", action="store_true", help="allocate a TTY")
    ex.add_argument("-d", "--detach", action="store_true", help="start the process and return")
    ex.add_argument("--cwd", default="", help="working directory")
    ex.add_argument("--user", "-u", default="", help="user[:group] to run as")
    ex.add_argument("--env", action="append", default=[], metavar="KEY=VALUE")
    ex.add_argument("id", metavar="ID")
    ex.add_argument("args", nargs=argparse.REMAINDER, metavar="CMD")
    ex.set_defaults(func=run_exec)

    k = s.add_parser("kill", help="signal a task (default: the image's stop signal, else SIGTERM)")
    k.add_argument("-s", "--signal", default="", help="signal name or number")
    k.add_argument("-a", "--all", action="store_true", help="signal every process of the task")
    k.add_argument("--exec-id", default="", help="signal this exec process instead")
    k.add_argument("ids", nargs="+", metavar="ID")
    k.set_defaults(func=run_kill)

    for name, fn, hlp in (("pause", run_pause, "pause a task"), ("resume", run_resume, "resume a paused task")):
        q = s.add_parser(name, help=hlp)
        q.add_argument("id", metavar="ID")
        q.set_defaults(func=fn)

    m = s.add_parser("metrics", aliases=["metric"], help="cgroup metrics of a task")
    m.add_argument("--format", choices=["table", "json"], default="table")
    m.add_argument("id", metavar="ID")
    m.set_defaults(func=run_metrics)

    a = s.add_parser("attach", help="attach to the stdio of a task started with FIFOs")
    a.add_argument("id", metavar="ID")
    a.set_defaults(func=run_attach)

    w = s.add_parser("wait", help="wait for a task (or exec process) to exit and print its exit code")
    w.add_argument("--exec-id", default="")
    w.add_argument("id", metavar="ID")
    w.set_defaults(func=run_wait)

    rm = s.add_parser("rm", aliases=["delete", "del", "remove"], help="delete one or more stopped tasks")
    rm.add_argument("-f", "--force", action="store_true", help="kill a running task first")
    rm.add_argument("--exec-id", default="", help="delete this exec process instead")
    rm.add_argument("ids", nargs="+", metavar="ID")
    rm.set_defaults(func=run_rm)


def parse_signal(value: str) -> int:
    v = value.strip().upper()
    if v.isdigit():
        return int(v)
    if not v.startswith("SIG"):
        v = "SIG" + v
    try:
        return int(signal.Signals[v])
    except KeyError:
        raise errdefs.InvalidArgument(f"unknown signal {value!r}") from None


async def run_ls(args: argparse.Namespace, client: Client) -> int:
    tasks = await client.tasks.list()
    if args.quiet:
        for t in tasks:
            print(t.id)
        return 0
    emit(args.output, ["TASK", "PID", "STATUS"], [[t.id, t.pid, t.status.upper()] for t in tasks],
         [{"id": t.id, "pid": t.pid, "status": t.status} for t in tasks])
    return 0


async def run_ps(args: argparse.Namespace, client: Client) -> int:
    procs = await client.tasks.list_pids(args.id)
    table(["PID", "EXEC ID"], [[p.pid, p.exec_id or "-"] for p in procs])
    return 0


async def run_start(args: argparse.Namespace, client: Client) -> int:
    container = await client.containers.get(args.id)
    tty = args.tty or bool((container.spec or {}).get("process", {}).get("terminal"))
    if args.detach:  # like run -d: keep the output for `pyctr logs`
        from .run import kept_output

        labels, log_uri = await kept_output(args, client)
    else:
        log_uri = args.log_uri
        labels = {LOG_URI_LABEL: log_uri} if log_uri else {}
    if any(container.labels.get(k) != v for k, v in labels.items()):
        await client.containers.set_labels(args.id, labels)
    tio = TaskIO(tty=tty, detach=args.detach, null_io=args.null_io, log_uri=log_uri, fifo_dir=args.fifo_dir)
    return await run_task(client, container, tio)


async def run_exec(args: argparse.Namespace, client: Client) -> int:
    if not args.args:
        raise errdefs.InvalidArgument("exec needs a command to run")
    tio = TaskIO(tty=args.tty, detach=args.detach, fifo_dir=args.fifo_dir)
    exec_id = args.exec_id or f"exec-{secrets.token_hex(4)}"
    if args.detach and not args.exec_id:
        print(exec_id)
    return await exec_process(client, args.id, exec_id, args.args, tio, cwd=args.cwd, env=args.env,
                              user=args.user)


async def _stop_signal(client: Client, container_id: str) -> int:
    try:
        c = await client.containers.get(container_id)
    except errdefs.NotFound:
        return int(signal.SIGTERM)
    return parse_signal(c.labels.get("io.containerd.image.config.stop-signal") or "SIGTERM")


async def run_kill(args: argparse.Namespace, client: Client) -> int:
    if args.all and args.exec_id:
        raise errdefs.InvalidArgument("specify an exec-id or all, not both")
    rc = 0
    for cid in args.ids:
        try:
            sig = parse_signal(args.signal) if args.signal else await _stop_signal(client, cid)
            await client.tasks.get(cid)
            await client.tasks.kill(cid, sig, all=args.all, exec_id=args.exec_id)
        except errdefs.ContainerdError as exc:
            print(f"pyctr: failed to kill task {cid}: {exc}", file=sys.stderr)
            rc = 1
    return rc


async def run_pause(args: argparse.Namespace, client: Client) -> int:
    await client.tasks.pause(args.id)
    return 0


async def run_resume(args: argparse.Namespace, client: Client) -> int:
    await client.tasks.resume(args.id)
    return 0


def _metric_rows(data: Any) -> list[list[str]]:
    if data is None:
        return []
    if hasattr(data, "memory_oom_control"):  # cgroups v1
        return [
            ["pids.current", str(data.pids.current)], ["pids.limit", str(data.pids.limit)],
            ["cpu.usage.total", str(data.cpu.usage.total)], ["cpu.usage.kernel", str(data.cpu.usage.kernel)],
            ["cpu.usage.user", str(data.cpu.usage.user)],
            ["cpu.throttling.periods", str(data.cpu.throttling.periods)],
            ["cpu.throttling.throttled_periods", str(data.cpu.throttling.throttled_periods)],
            ["memory.usage.usage", human_size(data.memory.usage.usage)],
            ["memory.usage.limit", human_size(data.memory.usage.limit)],
            ["memory.usage.max", human_size(data.memory.usage.max)],
            ["memory.usage.failcnt", str(data.memory.usage.failcnt)],
            ["memory.rss", human_size(data.memory.rss)], ["memory.cache", human_size(data.memory.cache)],
            ["memory.oom_kill", str(data.memory_oom_control.oom_kill)],
        ]
    return [
        ["pids.current", str(data.pids.current)], ["pids.limit", str(data.pids.limit)],
        ["cpu.usage_usec", str(data.cpu.usage_usec)], ["cpu.user_usec", str(data.cpu.user_usec)],
        ["cpu.system_usec", str(data.cpu.system_usec)], ["cpu.nr_throttled", str(data.cpu.nr_throttled)],
        ["memory.usage", human_size(data.memory.usage)], ["memory.usage_limit", human_size(data.memory.usage_limit)],
        ["memory.anon", human_size(data.memory.anon)], ["memory.file", human_size(data.memory.file)],
    ]


async def run_metrics(args: argparse.Namespace, client: Client) -> int:
    metrics = await client.tasks.metrics([f"id=={args.id}"])
    if not metrics:
        raise errdefs.NotFound(f"no metrics for task {args.id}: is it running?")
    m = metrics[0]
    if args.format == "json":
        from google.protobuf import json_format

        print(json_format.MessageToJson(m.data, preserving_proto_field_name=True) if m.data is not None else "{}")
        return 0
    table(["ID", "TIMESTAMP"], [[m.id, m.timestamp.isoformat() if m.timestamp else "-"]])
    print()
    table(["METRIC", "VALUE"], _metric_rows(m.data))
    return 0


async def run_attach(args: argparse.Namespace, client: Client) -> int:
    proc = await client.tasks.get(args.id)
    paths = [p for p in (proc.stdin, proc.stdout, proc.stderr) if p]
    exists = [await asyncio.to_thread(os.path.exists, p) for p in paths]
    if not paths or not all(exists):
        if proc.stdout.startswith(("file://", "binary://")):
            raise errdefs.FailedPrecondition(f"task {args.id} writes its output to a log: read it with "
                                             f"pyctr logs -f {args.id}")
        raise errdefs.FailedPrecondition(
            f"task {args.id} has no stdio to attach to: it was started with --null-io or detached without a log")
    fifos = FifoSet(os.path.dirname(paths[0]), IOConfig(proc.stdin, proc.stdout, proc.stderr, proc.terminal))

    async def close_stdin() -> None:
        await client.tasks.close_io(args.id, stdin=True)

    attach = Attach(fifos, close_stdin=close_stdin)
    try:
        waiter = asyncio.create_task(client.tasks.wait(args.id))
        await attach.open()
        attach.started()
        status = await waiter
        await attach.wait(grace=5)
        return status.code
    finally:
        attach.close()


async def run_wait(args: argparse.Namespace, client: Client) -> int:
    status = await client.tasks.wait(args.id, args.exec_id)
    print(status.code)
    return 0


async def run_rm(args: argparse.Namespace, client: Client) -> int:
    rc = 0
    for cid in args.ids:
        try:
            if args.exec_id:
                await client.tasks.delete_process(cid, args.exec_id)
                continue
            proc = await client.tasks.get(cid)
            if proc.status not in ("stopped", "created"):
                if not args.force:
                    raise errdefs.FailedPrecondition(f"task {cid} must be stopped before deletion: {proc.status} "
                                                     "(use --force)")
                with contextlib.suppress(errdefs.NotFound):
                    await client.tasks.kill(cid, int(signal.SIGKILL), all=True)
                    await client.tasks.wait(cid)
            status = await client.tasks.delete(cid)
            await release_network(client, cid)  # run --cni: CNI DEL now that the netns is gone
            if status.code:
                print(f"pyctr: task {cid} exited with {status.code}", file=sys.stderr)
        except errdefs.ContainerdError as exc:
            print(f"pyctr: failed to delete task {cid}: {exc}", file=sys.stderr)
            rc = 1
    return rc
