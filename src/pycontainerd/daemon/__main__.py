"""``pycontainerd``: the daemon's command line (serve, ``config default``, ``config dump``)."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sys
from collections.abc import Callable, Sequence
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

from .. import __version__, errdefs
from .. import config as configmod

if TYPE_CHECKING:
    import argparse

LEVELS = {"trace": logging.DEBUG, "debug": logging.DEBUG, "info": logging.INFO, "warn": logging.WARNING,
          "warning": logging.WARNING, "error": logging.ERROR, "fatal": logging.CRITICAL, "panic": logging.CRITICAL}


class _Formatter(logging.Formatter):
    """logfmt-style lines like containerd's: time="..." level=info msg="..." """

    def format(self, record: logging.LogRecord) -> str:
        ts = self.formatTime(record, "%Y-%m-%dT%H:%M:%S")
        msg = record.getMessage().replace('"', '\\"')
        line = f'time="{ts}.{int(record.msecs):03d}" level={record.levelname.lower()} msg="{msg}" module={record.name}'
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


class _JSONFormatter(logging.Formatter):
    """``[debug] format = "json"``: one JSON object a line, with logrus' keys (time, level, msg)."""

    def format(self, record: logging.LogRecord) -> str:
        ts = self.formatTime(record, "%Y-%m-%dT%H:%M:%S") + f".{int(record.msecs):03d}"
        out = {"time": ts, "level": record.levelname.lower(), "msg": record.getMessage(), "module": record.name}
        if record.exc_info:
            out["error"] = self.formatException(record.exc_info)
        return json.dumps(out)


# the options a daemon is started with: what ``_serve_args`` reads without argparse
_SERVE_OPTIONS = {"-c": "config", "--config": "config", "-a": "address", "--address": "address",
                  "--root": "root", "--state": "state", "-l": "log_level", "--log-level": "log_level"}


def _serve_args(argv: Sequence[str]) -> SimpleNamespace | None:
    """The command line of a daemon being started (only ``_SERVE_OPTIONS``, each ``--opt value``
    or ``--opt=value``), parsed as ``_parser()`` parses it; None for anything else (help, a
    subcommand, an abbreviation, a value that looks like an option), which ``_parser()`` then
    parses or refuses.  argparse, and gettext with it, stay out of the serving daemon (W6, idle PSS)."""
    out = SimpleNamespace(config=None, address=None, root=None, state=None, log_level=None, version=False,
                          command=None)
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg.startswith("--") and "=" in arg:
            name, value = arg.split("=", 1)
            i += 1
        else:
            name = arg
            if i + 1 >= len(argv):
                return None
            value = argv[i + 1]
            i += 2
        dest = _SERVE_OPTIONS.get(name)
        if dest is None or value.startswith("-"):
            return None
        setattr(out, dest, value)
    return out


def _parser() -> argparse.ArgumentParser:
    import argparse

    p = argparse.ArgumentParser(prog="pycontainerd", description="A containerd-compatible container engine.")
    p.add_argument("-c", "--config", default=None, help=f"config file (default {configmod.DEFAULT_CONFIG_PATH})")
    p.add_argument("-a", "--address", default=None, help="gRPC socket path")
    p.add_argument("--root", default=None, help="persistent state directory")
    p.add_argument("--state", default=None, help="runtime state directory")
    p.add_argument("-l", "--log-level", default=None, help="trace, debug, info, warn, error")
    p.add_argument("-v", "--version", action="store_true", help="print the version and exit")
    sub = p.add_subparsers(dest="command")
    cfg = sub.add_parser("config", help="print configuration")
    cfgsub = cfg.add_subparsers(dest="config_command", required=True)
    cfgsub.add_parser("default", help="print the default configuration")
    cfgsub.add_parser("dump", help="print the effective configuration")
    pub = sub.add_parser("publish", help="binary to publish events to the daemon (run by shims)")
    pub.add_argument("--namespace", "-namespace", default="", help="namespace to publish to")
    pub.add_argument("--topic", "-topic", default="", help="topic of the event")
    return p


def _publish(address: str, namespace: str, topic: str, data: bytes) -> None:
    """``pycontainerd --address A publish --topic T --namespace NS`` < Any: what a runtime v2
    shim runs as its ``-publish-binary``; forwarded to the daemon's ttrpc Events service."""
    import time

    from google.protobuf import any_pb2, empty_pb2
    from google.protobuf.message import DecodeError

    from ..api.services.ttrpc.events.v1 import events_pb2
    from ..runtime.v2.binary import ttrpc_address
    from ..ttrpc import Client

    if not topic:
        raise errdefs.InvalidArgument("topic required to publish event")
    try:
        event = any_pb2.Any.FromString(data)
    except DecodeError as exc:
        raise errdefs.InvalidArgument(f"event on stdin is not a protobuf Any: {exc}") from exc
    now = time.time_ns()
    envelope = events_pb2.Envelope(namespace=namespace, topic=topic, event=event)
    envelope.timestamp.seconds, envelope.timestamp.nanos = divmod(now, 1_000_000_000)

    async def send() -> None:
        # a shim runs us with its own environment, whose TTRPC_ADDRESS names where the daemon
        # serves events (``[ttrpc] address``); without it, the socket beside the gRPC one
        events = os.environ.get("TTRPC_ADDRESS") or ttrpc_address(address)
        async with await Client.connect(events) as client:
            await client.call(
                "containerd.services.events.ttrpc.v1.Events",
                "Forward",
                events_pb2.ForwardRequest(envelope=envelope),
                empty_pb2.Empty,
                timeout=30,
            )

    asyncio.run(send())


def main(argv: list[str] | None = None) -> None:
    args: Any = _serve_args(sys.argv[1:] if argv is None else argv)
    if args is None:
        args = _parser().parse_args(argv)
    if args.version:
        print(f"pycontainerd {__version__}")
        return
    if args.command == "config" and args.config_command == "default":
        sys.stdout.write(configmod.default_config_toml())
        return
    path = args.config or configmod.DEFAULT_CONFIG_PATH
    try:
        cfg, warnings = configmod.load_config(path, missing_ok=args.config is None)
        cfg = configmod.with_overrides(cfg, root=args.root, state=args.state, address=args.address,
                                       log_level=args.log_level)
    except configmod.ConfigError as exc:
        print(f"pycontainerd: invalid configuration: {exc}", file=sys.stderr)
        raise SystemExit(1) from None
    if args.command == "config":
        sys.stdout.write(configmod.dump_config_toml(cfg))
        return
    if args.command == "publish":
        try:
            _publish(cfg.grpc.address, args.namespace, args.topic, sys.stdin.buffer.read())
        except errdefs.ContainerdError as exc:
            print(f"pycontainerd publish: {exc}", file=sys.stderr)
            raise SystemExit(1) from None
        return
    level = LEVELS.get((cfg.debug.level or "info").lower(), logging.INFO)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_JSONFormatter() if cfg.debug.format == "json" else _Formatter())
    logging.basicConfig(level=level, handlers=[handler])
    logging.getLogger("grpc").setLevel(logging.WARNING)
    log = logging.getLogger("pycontainerd")
    for w in warnings:
        log.warning("config: %s", w)
    if os.geteuid() != 0:
        log.warning("pycontainerd is not running as root: snapshots and containers will not work")
    try:
        with asyncio.Runner(loop_factory=_loop_factory()) as runner:
            runner.run(_serve(cfg))
    except configmod.ConfigError as exc:  # a plugin's section, decoded when the plugin loads
        print(f"pycontainerd: invalid configuration: {exc}", file=sys.stderr)
        raise SystemExit(1) from None
    except errdefs.ContainerdError as exc:
        print(f"pycontainerd: {exc}", file=sys.stderr)
        raise SystemExit(1) from None
    except KeyboardInterrupt:
        pass


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's event loop when it is installed (``PYCONTAINERD_UVLOOP=0`` turns it off).

    Metadata reads run on worker threads and come back with ``call_soon_threadsafe``, and
    every call is socket reads and writes on the loop: uvloop makes both cheaper.
    """
    if os.environ.get("PYCONTAINERD_UVLOOP", "1") == "0":
        return None
    try:
        import uvloop
    except ImportError:
        return None
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


async def _serve(cfg: configmod.Config) -> None:
    from .server import Daemon

    daemon = Daemon(cfg)
    try:
        await daemon.start()
    except BaseException:
        await daemon.stop()
        raise
    await daemon.serve_forever()


if __name__ == "__main__":
    main()
