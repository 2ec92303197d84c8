"""pyctr's entry point: global flags like ctr's, then one module per command group."""

from __future__ import annotations

import argparse
import importlib
import os
from typing import Any

from ...client import DEFAULT_ADDRESS, Client
from ..common import run_command

# command-group modules, each with register(subparsers)
GROUPS = ["version", "plugins", "namespaces", "events"]
OPTIONAL_GROUPS = ["content", "images", "leases", "snapshots", "containers", "tasks", "run", "pprof", "metrics", "info"]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="pyctr", description="A friendlier ctr: talk to pycontainerd or containerd.")
    p.add_argument("-a", "--address", default=os.environ.get("CONTAINERD_ADDRESS", DEFAULT_ADDRESS),
                   help="address of the daemon's socket (env CONTAINERD_ADDRESS)")
    p.add_argument("-n", "--namespace", default=os.environ.get("CONTAINERD_NAMESPACE", "default"),
                   help="namespace to use (env CONTAINERD_NAMESPACE)")
    p.add_argument("--timeout", type=float, default=0.0, help="total timeout for the command (seconds)")
    p.add_argument("--connect-timeout", type=float, default=10.0, help="timeout to reach the daemon")
    p.add_argument("--debug", action="store_true", help="print debug output")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in GROUPS + OPTIONAL_GROUPS:
        try:
            mod = importlib.import_module(f"{__package__}.{name}")
        except ModuleNotFoundError as exc:
            if name in OPTIONAL_GROUPS and exc.name == f"{__package__}.{name}":
                continue
            raise
        mod.register(sub)
    return p


def main(argv: list[str] | None = None) -> None:
    parser = build_parser()
    args = parser.parse_args(argv)
    func = getattr(args, "func", None)
    if func is None:
        parser.parse_args([*(argv or []), "--help"])
        return

    async def go() -> int | None:
        if getattr(args, "no_client", False):  # debug socket / metrics only: works while gRPC is stuck
            return int(await func(args, None) or 0)
        client = Client(args.address, args.namespace, timeout=args.connect_timeout)
        try:
            await client.wait_ready()
            result: Any = await func(args, client)
            return int(result) if result is not None else 0
        finally:
            await client.close()

    run_command("pyctr", go)


if __name__ == "__main__":
    main()
