"""pycrictl config: get and set pycrictl's own config file, with crictl's keys.

    pycrictl config runtime-endpoint unix:///run/containerd/containerd.sock
    pycrictl config --set timeout=5,debug=true
    pycrictl config --get runtime-endpoint
    pycrictl config --list

The file is YAML with crictl's keys (``runtime-endpoint``, ``image-endpoint``, ``timeout`` in
seconds, ``debug``, ``pull-image-on-create``, ``disable-pull-on-run``).  Which file: ``-c/--config``,
else ``$CRI_CONFIG_FILE``, else ``/etc/pycrictl.yaml``; when that default file does not exist,
crictl's ``/etc/crictl.yaml`` is read instead (never written), so a host set up for crictl works
as it is.  A flag (or its environment variable) wins over the file, the file over the default.
Keys pycrictl does not know are kept when the file is rewritten.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from ... import errdefs
from ...client.cri import DEFAULT_ENDPOINT, normalize_endpoint
from ..common import EXIT_USAGE, did_you_mean, error_line, go_duration, table

DEFAULT_PATH = "/etc/pycrictl.yaml"
CRICTL_PATH = "/etc/crictl.yaml"
DEFAULT_TIMEOUT = 10.0
ENV = "CRI_CONFIG_FILE"


class UsageError(errdefs.InvalidArgument):
    """A key or value the user typed that is not one: exit 2, like a bad flag."""


def _endpoint(value: Any) -> str:
    text = "" if value is None else str(value)
    if text:
        normalize_endpoint(text)  # refuses tcp://, relative paths ... with the reason
    return text


def _timeout(value: Any) -> int:
    if isinstance(value, bool):
        raise ValueError("a number of seconds")
    if isinstance(value, int | float):
        secs = float(value)
    else:
        try:
            secs = go_duration(str(value))
        except argparse.ArgumentTypeError:
            raise ValueError("a number of seconds, e.g. 10 (or a duration such as 10s)") from None
    if secs < 0 or secs != int(secs):
        raise ValueError("a whole number of seconds, e.g. 10")
    return int(secs)


def _bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("true", "1", "t", "yes", "on"):
        return True
    if text in ("false", "0", "f", "no", "off", ""):
        return False
    raise ValueError("true or false")


# key: (parser of a value from the file or the command line, default, help)
KEYS: dict[str, tuple[Callable[[Any], Any], Any, str]] = {
    "runtime-endpoint": (_endpoint, "", f"the CRI runtime's endpoint (pycrictl's default: {DEFAULT_ENDPOINT})"),
    "image-endpoint": (_endpoint, "", "the CRI image service's endpoint (default: the runtime endpoint)"),
    "timeout": (_timeout, 0, f"seconds to wait for the runtime (0: pycrictl's default, {DEFAULT_TIMEOUT:g}s)"),
    "debug": (_bool, False, "print every request and response"),
    "pull-image-on-create": (_bool, False, "create always pulls the image (pycrictl pulls a missing one anyway)"),
    "disable-pull-on-run": (_bool, False, "run does not pull the image"),
}


def register(sub: Any) -> None:
    keys = "\n".join(f"  {k:<22}{h}" for k, (_, _, h) in KEYS.items())
    p = sub.add_parser(
        "config", help="get and set pycrictl's options (its config file)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Get and set the options in pycrictl's config file (-c, $CRI_CONFIG_FILE, else "
                    f"{DEFAULT_PATH}; {CRICTL_PATH} is read when that does not exist).\n\nKeys:\n{keys}",
        epilog="examples:\n  pycrictl config runtime-endpoint unix:///run/containerd/containerd.sock\n"
               "  pycrictl config --set timeout=5,debug=true\n  pycrictl config --get timeout")
    p.add_argument("key", nargs="?", default="", help="the option to set (or, alone, to show)")
    p.add_argument("value", nargs="?", default=None, help="its new value")
    p.add_argument("--get", default="", metavar="KEY", help="show one option's value")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE[,KEY=VALUE]",
                   help="set options (repeatable, or comma-separated)")
    p.add_argument("--list", action="store_true", help="show every option and its value (the default)")
    p.set_defaults(local=config_command)


def chosen_file(flag: str | None, default: str = DEFAULT_PATH, crictl: str = CRICTL_PATH) -> tuple[Path, Path]:
    """(the file to read, the file to write): the flag, $CRI_CONFIG_FILE, else the default (and
    crictl's file to read while pycrictl's own does not exist)."""
    explicit = flag or os.environ.get(ENV, "")
    if explicit:
        return Path(explicit), Path(explicit)
    own = Path(default)
    if not own.exists() and Path(crictl).exists():
        return Path(crictl), own
    return own, own


def read_file(path: Path) -> dict[str, Any]:
    """The file's mapping; {} when it does not exist."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise errdefs.from_oserror(exc, f"read the config file {path}") from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise errdefs.InvalidArgument(f"{path}: invalid YAML: {str(exc).splitlines()[0]}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise errdefs.InvalidArgument(f"{path}: expected key: value lines (crictl's format), got a "
                                      f"{type(data).__name__}")
    return data


def check_key(key: str) -> None:
    if key not in KEYS:
        raise UsageError(f"no configuration option named {key!r}{did_you_mean(key, list(KEYS))} "
                         f"(options: {', '.join(KEYS)})")


def parse_value(key: str, value: Any, where: str) -> Any:
    check_key(key)
    try:
        return KEYS[key][0](value)
    except ValueError as exc:
        raise UsageError(f"{where}invalid value {value!r} for {key}: expected {exc}") from None
    except errdefs.InvalidArgument as exc:
        raise UsageError(f"{where}invalid value {value!r} for {key}: {exc.message}") from None


def settings(path: Path) -> dict[str, Any]:
    """Every known key's value from the file (defaults for the missing ones)."""
    data = read_file(path)
    out = {k: default for k, (_, default, _) in KEYS.items()}
    for k, v in data.items():
        if k in KEYS and v is not None:
            try:
                out[k] = parse_value(k, v, f"{path}: ")
            except UsageError as exc:
                raise errdefs.InvalidArgument(str(exc)) from None
    return out


def apply(args: argparse.Namespace) -> None:
    """Fill the global options the command line left unset from the config file, then the defaults.

    A file named with -c or $CRI_CONFIG_FILE must be readable; a broken default file is
    reported on stderr and otherwise ignored (like crictl)."""
    read_path, _ = chosen_file(args.config)
    try:
        s = settings(read_path)
    except errdefs.ContainerdError as exc:
        if args.config or os.environ.get(ENV):
            raise
        print(error_line("pycrictl", f"ignoring the config file: {exc}"), file=sys.stderr)
        s = {k: default for k, (_, default, _) in KEYS.items()}
    if not args.runtime_endpoint:
        args.runtime_endpoint = s["runtime-endpoint"] or DEFAULT_ENDPOINT
    if not args.image_endpoint:
        args.image_endpoint = s["image-endpoint"]
    if args.timeout is None:
        args.timeout = float(s["timeout"]) or DEFAULT_TIMEOUT
    if args.debug is None:
        args.debug = bool(s["debug"])
    args.pull_image_on_create = bool(s["pull-image-on-create"])
    args.disable_pull_on_run = bool(s["disable-pull-on-run"])


def _shown(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def write_file(path: Path, data: dict[str, Any]) -> None:
    """Write temp + rename (a reader never sees half a file); the known keys first, in crictl's order."""
    ordered = {k: data[k] for k in KEYS if k in data}
    ordered.update((k, v) for k, v in data.items() if k not in KEYS)
    text = yaml.safe_dump(ordered, sort_keys=False, default_flow_style=False)
    mode = 0o644
    with contextlib.suppress(OSError):
        mode = path.stat().st_mode & 0o777
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def config_command(args: argparse.Namespace) -> int:
    try:
        return _config(args)
    except UsageError as exc:
        print(error_line("pycrictl", f"config: {exc}"), file=sys.stderr)
        return EXIT_USAGE


def _config(args: argparse.Namespace) -> int:
    read_path, write_path = chosen_file(args.config)
    changes: list[tuple[str, str]] = []
    for item in args.set:
        for pair in item.split(","):
            key, sep, value = pair.partition("=")
            if not sep or not key:
                raise UsageError(f"--set {item!r}: expected KEY=VALUE (several separated by commas)")
            changes.append((key.strip(), value))
    if args.key and args.value is not None:
        changes.append((args.key, args.value))
    get = args.get or (args.key if args.value is None else "")
    if sum(map(bool, (get, changes, args.list))) > 1:
        raise UsageError("use one of --get, --set (or KEY VALUE) and --list at a time")
    if get:
        check_key(get)
        print(_shown(settings(read_path)[get]))
        return 0
    if changes:
        data = read_file(read_path)
        for key, value in changes:
            data[key] = parse_value(key, value, "")
        write_file(write_path, data)
        return 0
    s = settings(read_path)
    table(["KEY", "VALUE"], [[k, _shown(v) if _shown(v) else '""'] for k, v in s.items()])
    where = str(read_path) + ("" if read_path.exists() else " (does not exist: the defaults)")
    print(f"config file: {where}", file=sys.stderr)
    return 0
