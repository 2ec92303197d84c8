"""pyctr events [filters...]: stream events as ``timestamp namespace topic {json}`` lines."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from ...client import Client


def register(sub: Any) -> None:
    p = sub.add_parser("events", aliases=["event"], help="display daemon events")
    p.add_argument("filters", nargs="*", help='filters, e.g. topic=="/tasks/exit"')
    p.set_defaults(func=run)


async def run(args: argparse.Namespace, client: Client) -> int:
    async for ev in client.events.subscribe(args.filters):
        ts = ev.timestamp.strftime("%Y-%m-%d %H:%M:%S.%f") + "000 +0000 UTC"
        print(f"{ts} {ev.namespace} {ev.topic} {ev.json()}")
        sys.stdout.flush()
    return 0
