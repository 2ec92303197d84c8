"""pyctr's entry point: global flags like ctr's, then one module per command group.

Only the module of the command asked for is imported (``pyctr version`` must not load the
image, snapshot and registry code); a bare ``pyctr``, ``--help`` or an unknown command load
them all for the help text.  ``version`` and a dead socket are answered without grpc
(``client/quick.py``).
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from typing import TYPE_CHECKING

from ... import __version__
from ...client import DEFAULT_ADDRESS

if TYPE_CHECKING:
    from typing import Any

from ..common import EXIT_USAGE, did_you_mean, error_line, go_duration, run_command, run_guarded

# command (and aliases) -> module with register(subparsers)
COMMANDS: dict[str, str] = {
    "version": "version",
    "plugins": "plugins", "plugin": "plugins",
    "namespaces": "namespaces", "namespace": "namespaces", "ns": "namespaces",
    "events": "events", "event": "events",
    "content": "content",
    "images": "images", "image": "images", "i": "images",
    "leases": "leases", "lease": "leases",
    "snapshots": "snapshots", "snapshot": "snapshots",
    "containers": "containers", "container": "containers", "c": "containers",
    "tasks": "tasks", "task": "tasks", "t": "tasks",
    "run": "run", "logs": "run", "stats": "run",
    "ps": "docker", "stop": "docker",
    "completion": "completion",
    "pprof": "pprof", "metrics": "metrics", "info": "info",
}
MODULES = list(dict.fromkeys(COMMANDS.values()))
# global flags that take a value (to find the command word without parsing everything)
VALUE_FLAGS = {"-a", "--address", "-n", "--namespace", "--timeout", "--connect-timeout", "--fifo-dir"}


def command_word(argv: list[str]) -> str | None:
    i = 0
    while i < len(argv):
        a = argv[i]
        if a == "--":
            return argv[i + 1] if i + 1 < len(argv) else None
        if a in VALUE_FLAGS:
            i += 2
            continue
        if a.startswith("-"):
            i += 1
            continue
        return a
    return None


def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="pyctr", description="A friendlier ctr: talk to pycontainerd or containerd.")
    p.add_argument("-v", "--version", action="version", version=f"pyctr version {__version__}")
    p.add_argument("-a", "--address", default=os.environ.get("CONTAINERD_ADDRESS", DEFAULT_ADDRESS),
                   help="address of the daemon's socket (env CONTAINERD_ADDRESS)")
    p.add_argument("-n", "--namespace", default=os.environ.get("CONTAINERD_NAMESPACE", "default"),
                   help="namespace to use (env CONTAINERD_NAMESPACE)")
    p.add_argument("--timeout", type=go_duration, default=0.0,
                   help="total timeout for the command, a Go duration (e.g. 30s); 0 = none")
    p.add_argument("--connect-timeout", type=go_duration, default=10.0,
                   help="timeout to reach the daemon, a Go duration (default 10s)")
    p.add_argument("--fifo-dir", default=os.environ.get("PYCTR_FIFO_DIR", ""),
                   help="directory for the stdio FIFOs (default: 'fifo' next to the daemon's socket)")
    p.add_argument("--debug", action="store_true", help="print debug output (and tracebacks of internal errors)")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    word = command_word(argv if argv is not None else sys.argv[1:])
    wanted = [COMMANDS[word]] if word in COMMANDS else MODULES
    for name in wanted:
        importlib.import_module(f"{__package__}.{name}").register(sub)
    return p


def default_fifo_dir(address: str) -> str:
    """FIFOs live next to the daemon's socket (``/run/pycontainerd/fifo`` for the default one)."""
    from ...client.quick import unix_path

    path = unix_path(address)
    base = os.path.dirname(path) if path and os.path.isabs(path) else "/run/pycontainerd"
    return os.path.join(base, "fifo")


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    word = command_word(argv)
    if word is not None and word not in COMMANDS:
        print(error_line("pyctr", f"unknown command {word!r}{did_you_mean(word, sorted(COMMANDS))} "
                                  "(pyctr --help lists them)"), file=sys.stderr)
        raise SystemExit(EXIT_USAGE)
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    func = getattr(args, "func", None)
    quick = getattr(args, "quick", None)
    if func is None and quick is None:  # a bare `pyctr`
        parser.print_help()
        raise SystemExit(0)
    args.fifo_dir = args.fifo_dir or default_fifo_dir(args.address)
    if quick is not None:  # answered without grpc when it can; None = ask through the full client
        run_guarded("pyctr", lambda: quick(args), debug=args.debug, timeout=args.timeout, fallthrough=True)
    if func is None:
        raise SystemExit(0)

    async def go() -> int | None:
        if getattr(args, "no_client", False):  # debug socket / metrics only: works while gRPC is stuck
            return int(await func(args, None) or 0)
        from ...client import Client

        client = Client(args.address, args.namespace, timeout=args.connect_timeout)
        try:
            await client.wait_ready()
            result: Any = await func(args, client)
            return int(result) if result is not None else 0
        finally:
            await client.close()

    run_command("pyctr", go, debug=args.debug, timeout=args.timeout)


if __name__ == "__main__":
    main()
