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

from ... import __version__
from ...client.cri import DEFAULT_ENDPOINT, CriClient
from ..common import EXIT_USAGE, completion_script, did_you_mean, error_line, go_duration, run_command, run_guarded
from . import config

# command-group modules, each with register(subparsers); each command's func(args, client)
GROUPS = ["version", "images", "pods", "containers", "logs", "exec", "attach", "portforward", "stats", "config"]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="pycrictl",
        description="A friendlier crictl: talk to a CRI runtime (runtime.v1), e.g. containerd's CRI plugin.")
    p.add_argument("-c", "--config", default=None,
                   help=f"pycrictl's config file (env CRI_CONFIG_FILE; default {config.DEFAULT_PATH}, else "
                        f"{config.CRICTL_PATH} when that does not exist); see `pycrictl config`")
    p.add_argument("-r", "--runtime-endpoint", default=os.environ.get("CONTAINER_RUNTIME_ENDPOINT"),
                   help="the runtime's endpoint, unix:///path (env CONTAINER_RUNTIME_ENDPOINT; "
                        f"default from the config file, else {DEFAULT_ENDPOINT})")
    p.add_argument("-i", "--image-endpoint", default=os.environ.get("IMAGE_SERVICE_ENDPOINT"),
                   help="the image service's endpoint (env IMAGE_SERVICE_ENDPOINT; default: the runtime endpoint)")
    p.add_argument("-t", "--timeout", type=go_duration, default=None,
                   help="timeout for connecting and for each quick call, a Go duration (default from the config "
                        f"file, else {config.DEFAULT_TIMEOUT:g}s; pull, stop, exec wait longer)")
    p.add_argument("-v", "--version", action="version", version=f"pycrictl version {__version__}")
    p.add_argument("-D", "--debug", action="store_true", default=None,
                   help="print every request and response to stderr")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    for name in GROUPS:
        mod = importlib.import_module(f"{__package__}.{name}")
        mod.register(sub)
    c = sub.add_parser("completion", help="print a bash or zsh completion script",
                       description='Load it with: eval "$(pycrictl completion bash)" (or zsh)')
    c.add_argument("shell", choices=["bash", "zsh"])
    c.set_defaults(completion=True)
    return p


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    choices = _commands(parser)
    word = next((a for a in argv if not a.startswith("-")), None)
    if word is not None and word not in choices and not _is_flag_value(argv, word):
        print(error_line("pycrictl", f"unknown command {word!r}{did_you_mean(word, sorted(choices))} "
                                     "(pycrictl --help lists them)"), file=sys.stderr)
        raise SystemExit(EXIT_USAGE)
    args = parser.parse_args(argv)
    if getattr(args, "completion", False):
        print(completion_script("pycrictl", parser, args.shell), end="")
        raise SystemExit(0)
    local = getattr(args, "local", None)
    if local is not None:  # `config`: no runtime to talk to
        run_guarded("pycrictl", lambda: local(args), debug=bool(args.debug))
    run_guarded("pycrictl", lambda: config.apply(args), fallthrough=True)  # the config file under the flags
    func = getattr(args, "func", None)
    if func is None:  # a bare `pycrictl`
        parser.print_help()
        raise SystemExit(0)

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

    run_command("pycrictl", go, debug=args.debug)


def _commands(parser: argparse.ArgumentParser) -> set[str]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return set(action.choices)
    return set()


def _is_flag_value(argv: list[str], word: str) -> bool:
    """Whether ``word`` is the value of a global flag (``-r unix:///x``) rather than the command."""
    i = argv.index(word)
    return i > 0 and argv[i - 1] in ("-r", "--runtime-endpoint", "-i", "--image-endpoint", "-t", "--timeout",
                                     "-c", "--config")


if __name__ == "__main__":
    main()
