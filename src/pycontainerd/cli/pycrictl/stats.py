"""pycrictl stats / statsp: containers' CPU, memory and writable-layer usage; pods' CPU and memory."""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any

from ... import errdefs
from ...client.cri import CriClient, api_pb2, message_to_dict
from ..common import human_size, table
from ._format import parse_label_filters, pattern_matcher, print_json, trunc


def register(sub: Any) -> None:
    p = sub.add_parser("stats", help="list containers' resource usage")
    p.add_argument("containers", nargs="*", metavar="CONTAINER_ID")
    p.add_argument("--id", default="", help="only the container with this id (or id prefix)")
    p.add_argument("-p", "--pod", default="", help="only containers of this pod")
    p.add_argument("--label", action="append", default=[], help="only containers with label key=value")
    p.add_argument("-a", "--all", action="store_true", help="also containers that are not running")
    p.add_argument("--name", default="", help="only containers whose name matches this regular expression")
    p.add_argument("--no-trunc", action="store_true", help="do not truncate ids")
    p.add_argument("-o", "--output", choices=["table", "json"], default="table")
    p.add_argument("-s", "--seconds", type=float, default=1.0,
                   help="when the runtime gives no CPU rate: measure it over this many seconds (default 1)")
    p.add_argument("-w", "--watch", action="store_true", help="print again every --seconds until interrupted")
    p.set_defaults(func=stats)

    p = sub.add_parser("statsp", help="list pods' resource usage")
    p.add_argument("pods", nargs="*", metavar="POD_ID")
    p.add_argument("--id", default="", help="only the pod of this id (or id prefix)")
    p.add_argument("--label", action="append", default=[], help="only pods with label key=value")
    p.add_argument("--no-trunc", action="store_true", help="do not truncate ids")
    p.add_argument("-o", "--output", choices=["table", "json"], default="table")
    p.set_defaults(func=statsp)


def cpu_percent(s: api_pb2.ContainerStats, before: api_pb2.ContainerStats | None = None) -> str:
    """The runtime's CPU rate (usage_nano_cores), else the rate between two samples, else '-'."""
    if s.cpu.HasField("usage_nano_cores"):
        return f"{s.cpu.usage_nano_cores.value / 1e7:.2f}"
    if before is not None and s.cpu.HasField("usage_core_nano_seconds") and s.cpu.timestamp > before.cpu.timestamp:
        used = s.cpu.usage_core_nano_seconds.value - before.cpu.usage_core_nano_seconds.value
        return f"{max(used, 0) / (s.cpu.timestamp - before.cpu.timestamp) * 100:.2f}"
    return "-"


async def _sample(args: argparse.Namespace, client: CriClient) -> list[api_pb2.ContainerStats]:
    name_ok = pattern_matcher(args.name, "name")
    if args.containers:
        items = [await client.container_stats(cid) for cid in args.containers]
    else:
        flt = api_pb2.ContainerStatsFilter(id=args.id, pod_sandbox_id=args.pod,
                                           label_selector=parse_label_filters(args.label))
        items = await client.list_container_stats(flt)
        if not args.all:
            running = {c.id for c in await client.list_containers(api_pb2.ContainerFilter(
                state=api_pb2.ContainerStateValue(state=api_pb2.CONTAINER_RUNNING)))}
            items = [s for s in items if s.attributes.id in running]
    return [s for s in items if name_ok(s.attributes.metadata.name)]


async def stats(args: argparse.Namespace, client: CriClient) -> int:
    if args.seconds <= 0:
        raise errdefs.InvalidArgument("--seconds must be more than 0")
    items = await _sample(args, client)
    if args.output == "json" and not args.watch:
        print_json({"stats": [message_to_dict(s) for s in items]})
        return 0
    while True:
        before: dict[str, api_pb2.ContainerStats] = {}
        if any(not s.cpu.HasField("usage_nano_cores") and s.cpu.HasField("usage_core_nano_seconds")
               for s in items):  # no rate from the runtime (pycontainerd): sample again, like crictl
            before = {s.attributes.id: s for s in items}
            await asyncio.sleep(args.seconds)
            items = await _sample(args, client)
        if args.output == "json":
            print_json({"stats": [message_to_dict(s) for s in items]})
        else:
            _table(args, items, before)
        if not args.watch:
            return 0
        sys.stdout.flush()
        if not before:
            await asyncio.sleep(args.seconds)
        items = await _sample(args, client)


def _table(args: argparse.Namespace, items: list[api_pb2.ContainerStats],
           before: dict[str, api_pb2.ContainerStats]) -> None:
    rows = []
    for s in items:
        mem = human_size(s.memory.working_set_bytes.value) if s.memory.HasField("working_set_bytes") else "-"
        disk = human_size(s.writable_layer.used_bytes.value) if s.writable_layer.HasField("used_bytes") else "-"
        inodes = str(s.writable_layer.inodes_used.value) if s.writable_layer.HasField("inodes_used") else "-"
        rows.append([trunc(s.attributes.id, args.no_trunc), s.attributes.metadata.name,
                     cpu_percent(s, before.get(s.attributes.id)), mem, disk, inodes])
    table(["CONTAINER", "NAME", "CPU %", "MEM", "DISK", "INODES"], rows)


async def statsp(args: argparse.Namespace, client: CriClient) -> int:
    if args.pods:
        items = [await client.pod_stats(pid) for pid in args.pods]
    else:
        items = await client.list_pod_stats(api_pb2.PodSandboxStatsFilter(
            id=args.id, label_selector=parse_label_filters(args.label)))
    if args.output == "json":
        print_json({"stats": [message_to_dict(s) for s in items]})
        return 0
    rows = []
    for s in items:
        lin = s.linux
        cpu = f"{lin.cpu.usage_nano_cores.value / 1e7:.2f}" if lin.cpu.HasField("usage_nano_cores") else "-"
        mem = human_size(lin.memory.working_set_bytes.value) if lin.memory.HasField("working_set_bytes") else "-"
        iface = lin.network.default_interface
        rx = human_size(iface.rx_bytes.value) if iface.HasField("rx_bytes") else "-"
        tx = human_size(iface.tx_bytes.value) if iface.HasField("tx_bytes") else "-"
        procs = str(lin.process.process_count.value) if lin.process.HasField("process_count") else "-"
        rows.append([s.attributes.metadata.name, trunc(s.attributes.id, args.no_trunc), cpu, mem, rx, tx, procs,
                     str(len(lin.containers))])
    table(["POD", "POD ID", "CPU %", "MEM", "RX", "TX", "PROCS", "CONTAINERS"], rows)
    return 0
