"""pycrictl's entry point: crictl's global flags, then one module per command group.

    pycrictl -r unix:///run/containerd/containerd.sock pods
    CONTAINER_RUNTIME_ENDPOINT=unix:///run/containerd/containerd.sock pycrictl ps -a
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from typing import Any

from ...client.cri import DEFAULT_ENDPOINT, CriClient
from ..common import run_command

# command-group modules, each with register(subparsers); each command's func(args, client)
GROUPS = ["version", "images", "pods", "containers", "logs", "exec", "stats"]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="pycrictl",
        description="A friendlier crictl: talk to a CRI runtime (runtime.v1), e.g. containerd's CRI plugin.")
    p.add_argument("-r", "--runtime-endpoint",
                   default=os.environ.get("CONTAINER_RUNTIME_ENDPOINT", DEFAULT_ENDPOINT),
                   help="the runtime's endpoint, unix:///path (env CONTAINER_RUNTIME_ENDPOINT; "
                        f"default {DEFAULT_ENDPOINT})")
    p.add_argument("-i", "--image-endpoint", default=os.environ.get("IMAGE_SERVICE_ENDPOINT", ""),
                   help="the image service's endpoint (env IMAGE_SERVICE_ENDPOINT; default: the runtime endpoint)")
    p.add_argument("-t", "--timeout", type=float, default=10.0,
                   help="timeout in seconds for connecting and for each quick call (pull, stop, exec wait longer)")
    p.add_argument("-D", "--debug", action="store_true", help="print every request and response to stderr")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in GROUPS:
        mod = importlib.import_module(f"{__package__}.{name}")
        mod.register(sub)
    return p


def main(argv: list[str] | None = None) -> None:
    parser = build_parser()
    args = parser.parse_args(argv)
    func = getattr(args, "func", None)
    if func is None:
        parser.print_help()
        raise SystemExit(2)

    def debug(msg: str) -> None:
        print(f"DEBU {msg}", file=sys.stderr)

    async def go() -> int | None:
        client = CriClient(args.runtime_endpoint, args.image_endpoint or None, timeout=args.timeout,
                           debug=debug if args.debug else None)
        try:
            await client.wait_ready()
            result: Any = await func(args, client)
            return int(result) if result is not None else 0
        finally:
            await client.close()

    run_command("pycrictl", go)


if __name__ == "__main__":
    main()
