"""Docker and nerdctl habits: ``pyctr ps`` and ``pyctr stop [-t SECONDS]``.

    pyctr ps [-a] [-q] [-o json|yaml]   # containers with their task's status (running ones; -a: all)
    pyctr stop [-t 10] ID...            # the image's stop signal (else SIGTERM), SIGKILL after the grace period
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
from typing import TYPE_CHECKING, Any

from ... import errdefs
from ..common import add_output_flag, emit, error_line, error_message

if TYPE_CHECKING:
    from ...client import Client


def register(sub: Any) -> None:
    p = sub.add_parser("ps", help="list containers and their tasks (running ones; -a for all)", description=__doc__,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-a", "--all", action="store_true", help="show every container, not only running ones")
    p.add_argument("-q", "--quiet", action="store_true", help="print only the ids")
    add_output_flag(p)
    p.set_defaults(func=run_ps)

    s = sub.add_parser("stop", help="stop containers: stop signal, then SIGKILL after -t seconds",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    s.add_argument("-t", "--time", type=float, default=10.0, metavar="SECONDS",
                   help="seconds to wait for the stop signal before SIGKILL (default 10)")
    s.add_argument("-s", "--signal", default="", help="signal to send first (default: the image's stop signal)")
    s.add_argument("ids", nargs="+", metavar="ID")
    s.set_defaults(func=run_stop)


async def run_ps(args: argparse.Namespace, client: Client) -> int:
    containers = await client.containers.list()
    tasks = {t.id: t for t in await client.tasks.list()}
    records = []
    for c in sorted(containers, key=lambda c: c.id):
        t = tasks.get(c.id)
        status = t.status if t is not None else "no task"
        if not args.all and status not in ("running", "paused", "pausing"):
            continue
        records.append({"id": c.id, "image": c.image, "status": status, "pid": t.pid if t else 0,
                        "created": c.created_at.isoformat() if c.created_at else None})
    if args.quiet:
        for r in records:
            print(r["id"])
        return 0
    emit(args.output, ["CONTAINER", "IMAGE", "STATUS", "PID"],
         [[r["id"], r["image"], str(r["status"]).upper(), r["pid"] or "-"] for r in records], records)
    return 0


async def stop_container(client: Client, cid: str, grace: float, first_signal: int) -> int | None:
    """Signal the task, wait ``grace`` seconds, then SIGKILL every process; the exit code (None: no task)."""
    try:
        proc = await client.tasks.get(cid)
    except errdefs.NotFound:
        await client.containers.get(cid)  # "container X not found" when there is no such container either
        return None
    if proc.status == "stopped":
        return proc.exit_status
    waiter = asyncio.ensure_future(client.tasks.wait(cid))
    try:
        if proc.status == "paused":
            with contextlib.suppress(errdefs.ContainerdError):
                await client.tasks.resume(cid)
        await client.tasks.kill(cid, first_signal)
        try:
            return (await asyncio.wait_for(asyncio.shield(waiter), max(grace, 0.0))).code
        except TimeoutError:
            pass
        with contextlib.suppress(errdefs.NotFound):
            await client.tasks.kill(cid, int(signal.SIGKILL), all=True)
        return (await waiter).code
    finally:
        waiter.cancel()


async def run_stop(args: argparse.Namespace, client: Client) -> int:
    from .tasks import _stop_signal, parse_signal

    rc = 0
    for cid in args.ids:
        try:
            sig = parse_signal(args.signal) if args.signal else await _stop_signal(client, cid)
            await stop_container(client, cid, args.time, sig)
            print(cid)
            sys.stdout.flush()
        except errdefs.ContainerdError as exc:
            print(error_line("pyctr", f"failed to stop {cid}: {error_message(exc)}"), file=sys.stderr)
            rc = 1
    return rc
