"""What every CLI command shares: tables, sizes, progress display, and error → exit code, once."""

from __future__ import annotations

import contextlib
import os
import sys
import time
from typing import TYPE_CHECKING

from .. import errdefs

if TYPE_CHECKING:
    from collections.abc import Callable, Coroutine, Sequence
    from typing import Any, TextIO


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]], out: TextIO | None = None) -> None:
    """A left-aligned table like ctr's tabwriter output (columns padded with spaces)."""
    out = out or sys.stdout
    cells = [[str(h) for h in headers]] + [[("-" if c is None or c == "" else str(c)) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    for r in cells:
        line = "    ".join(c.ljust(widths[i]) for i, c in enumerate(r[:-1]))
        out.write((line + "    " if len(r) > 1 else "") + r[-1] + "\n")


def human_size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return f"{n:.1f} TiB"


def labels_str(labels: dict[str, str]) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted(labels.items())) or "-"


def parse_labels(items: Sequence[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in items:
        k, _, v = item.partition("=")
        if not k:
            raise errdefs.InvalidArgument(f"invalid label {item!r}: expected key=value")
        out[k] = v
    return out


# -- exit codes: one per kind of failure, documented in README ---------------------------------
EXIT_OK = 0
EXIT_FAILED = 1        # the daemon (or a registry) refused or failed the request, like ctr
EXIT_USAGE = 2         # bad flags or arguments (argparse's own code)
EXIT_UNREACHABLE = 3   # nothing answers at the daemon's address
EXIT_LOCAL_FILE = 4    # a local file or directory named on the command line cannot be used
EXIT_TIMEOUT = 5       # --timeout ran out
EXIT_INTERNAL = 70     # a bug in pyctr/pycrictl (EX_SOFTWARE): the traceback with --debug
EXIT_INTERRUPTED = 130
EXIT_PIPE = 141        # stdout was closed (e.g. `| head -1`): quietly, as a SIGPIPE'd process


_DURATION_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def go_duration(text: str) -> float:
    """Seconds from a Go duration (``1s``, ``500ms``, ``1m30s``, ``1.5h``) or a bare number of seconds."""
    import re

    value = text.strip()
    try:
        return max(float(value), 0.0)
    except ValueError:
        pass
    parts = re.findall(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)", value)
    if not parts or "".join(n + u for n, u in parts) != value:
        import argparse

        raise argparse.ArgumentTypeError(f"invalid duration {text!r}: use e.g. 10s, 500ms, 1m30s")
    return sum(float(n) * _DURATION_UNITS[u] for n, u in parts)


def size_bytes(text: str) -> int:
    """Bytes from ``1048576``, ``64m``, ``1g``, ``512k``, ``1.5GiB`` (powers of 1024, as docker)."""
    import argparse
    import re

    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kmgtp]?)(i?b)?\s*", text.lower())
    if not m:
        raise argparse.ArgumentTypeError(f"invalid size {text!r}: use e.g. 1048576, 512k, 64m, 1g")
    return int(float(m.group(1)) * 1024 ** " kmgtp".index(m.group(2) or " "))


def did_you_mean(word: str, choices: Sequence[str]) -> str:
    import difflib

    close = difflib.get_close_matches(word, list(choices), n=1)
    return f"; did you mean {close[0]!r}?" if close else ""


def color_enabled(stream: TextIO) -> bool:
    """Colour only on a terminal, and never when NO_COLOR is set (https://no-color.org)."""
    return "NO_COLOR" not in os.environ and os.environ.get("TERM") != "dumb" and stream.isatty()


def error_line(prog: str, message: str) -> str:
    if color_enabled(sys.stderr):
        return f"\x1b[1;31m{prog}:\x1b[0m {message}"
    return f"{prog}: {message}"


def _describe_oserror(exc: OSError) -> str:
    what = exc.strerror or str(exc)
    name = exc.filename if exc.filename is not None else ""
    hint = {2: "check the path", 13: "check its permissions (or run as root)", 20: "check the path",
            21: "give a file, not a directory", 17: "remove it or pick another name",
            28: "free some space"}.get(exc.errno or 0, "")
    text = f"{name}: {what}" if name else what
    return f"{text} ({hint})" if hint else text


def _quiet_stdout() -> None:
    """After a closed pipe: point stdout at /dev/null so the interpreter's final flush is silent."""
    with contextlib.suppress(OSError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)


def error_message(exc: BaseException) -> str:
    """One line for a ContainerdError: the message, plus its kind when the message does not say it."""
    text = str(exc) or type(exc).__name__
    if isinstance(exc, errdefs.ContainerdError):
        kind = exc.code.lower().replace("_", " ")
        quiet = ("UNKNOWN", "UNAVAILABLE")
        if kind not in text.lower() and exc.code not in quiet:
            text = f"{text} ({kind})"
    if "must match ^[A-Za-z0-9]+(?:[._-](?:[A-Za-z0-9]+))*$" in text or "greater than maximum length (76" in text:
        text += (" (an id or namespace is 1 to 76 letters and digits, in runs joined by single '.', '_' or '-',"
                 " e.g. web-1 or my_app.v2)")
    return text.splitlines()[0] if text else text


def run_command(prog: str, fn: Callable[[], Coroutine[Any, Any, int | None]], *, debug: bool = False,
                timeout: float = 0.0) -> None:
    """Run an async command and exit; every failure becomes one line on stderr and its own exit code.

    ``timeout`` (> 0) bounds the whole command, streaming ones (``events``, ``logs -f``) included.
    """
    import asyncio  # here, not at the top: `pyctr version` and `--help` never start a loop

    async def bounded() -> int | None:
        if timeout > 0:
            async with asyncio.timeout(timeout):
                return await fn()
        return await fn()

    run_guarded(prog, lambda: asyncio.run(bounded()), debug=debug, timeout=timeout)


def run_guarded(prog: str, thunk: Callable[[], int | None], *, debug: bool = False, timeout: float = 0.0,
                fallthrough: bool = False) -> None:
    """Call ``thunk`` and exit with its code; failures are mapped as ``run_command`` says.

    With ``fallthrough``, a thunk returning None means "not answered": return instead of exiting.
    """
    code: int = EXIT_OK
    try:
        result = thunk()
        if result is None and fallthrough:
            return
        code = result or 0
        sys.stdout.flush()
    except KeyboardInterrupt:
        code = EXIT_INTERRUPTED
    except BrokenPipeError:
        _quiet_stdout()
        code = EXIT_PIPE
    except TimeoutError:
        print(error_line(prog, f"timed out after {timeout:g}s (--timeout)"), file=sys.stderr)
        code = EXIT_TIMEOUT
    except errdefs.ContainerdError as exc:
        from ..client.quick import DaemonUnreachable

        print(error_line(prog, error_message(exc)), file=sys.stderr)
        code = EXIT_UNREACHABLE if isinstance(exc, DaemonUnreachable) else EXIT_FAILED
    except OSError as exc:
        print(error_line(prog, _describe_oserror(exc)), file=sys.stderr)
        code = EXIT_LOCAL_FILE
    except Exception as exc:
        if debug:
            import traceback

            traceback.print_exc()
        print(error_line(prog, f"internal error: {type(exc).__name__}: {error_message(exc)} "
                               "(re-run with --debug for the traceback, and please report it)"), file=sys.stderr)
        code = EXIT_INTERNAL
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        _quiet_stdout()
        code = EXIT_PIPE
    raise SystemExit(code)


class Progress:
    """Per-item progress lines (bytes, rate, ETA); redraws in place on a TTY, plain lines otherwise."""

    def __init__(self, out: TextIO | None = None) -> None:
        self.out = out or sys.stderr
        self.tty = self.out.isatty() and os.environ.get("TERM") != "dumb"
        self.items: dict[str, list[Any]] = {}  # key -> [done, total, status, started]
        self._lines = 0
        self._last = 0.0

    def update(self, key: str, done: int, total: int, status: str = "downloading") -> None:
        item = self.items.setdefault(key, [0, total, status, time.monotonic()])
        changed = item[2] != status
        item[0], item[1], item[2] = done, total or item[1], status
        if self.tty:
            now = time.monotonic()
            if changed or now - self._last > 0.1:
                self._last = now
                self.redraw()
        elif changed and status in ("done", "exists", "failed"):
            self.out.write(self._line(key, item) + "\n")
            self.out.flush()

    def _line(self, key: str, item: list[Any]) -> str:
        done, total, status, started = item
        import shutil

        width = shutil.get_terminal_size((100, 20)).columns
        elapsed = max(time.monotonic() - started, 1e-6)
        rate = done / elapsed
        pct = f"{100 * done / total:5.1f}%" if total else "   ?  "
        eta = ""
        if total and rate > 0 and status == "downloading":
            eta = f" ETA {max(0.0, (total - done) / rate):4.0f}s"
        bar_w = 20
        filled = int(bar_w * done / total) if total else 0
        bar = "[" + "=" * filled + " " * (bar_w - filled) + "]"
        text = (
            f"{key[:40]:<40} {status:<11} {bar} {pct} {human_size(done)}/{human_size(total)} {human_size(rate)}/s{eta}"
        )
        return text[: width - 1]

    def redraw(self) -> None:
        if self._lines:
            self.out.write(f"\x1b[{self._lines}F")
        for key, item in self.items.items():
            self.out.write("\x1b[2K" + self._line(key, item) + "\n")
        self._lines = len(self.items)
        self.out.flush()

    def finish(self) -> None:
        if self.tty:
            self.redraw()


def add_output_flag(p: Any) -> None:
    p.add_argument("-o", "--output", choices=["table", "json", "yaml"], default="table",
                   help="output format (default table)")


def emit(fmt: str, headers: Sequence[str], rows: Sequence[Sequence[Any]], records: Sequence[dict[str, Any]],
         out: TextIO | None = None) -> None:
    """Print ``rows`` as a table, or ``records`` as JSON / YAML (a list of objects)."""
    out = out or sys.stdout
    if fmt == "json":
        import json

        out.write(json.dumps(list(records), indent=2, default=str) + "\n")
    elif fmt == "yaml":
        import yaml

        out.write(yaml.safe_dump(json_safe(list(records)), sort_keys=False))
    else:
        table(headers, rows, out)


def json_safe(value: Any) -> Any:
    import json

    return json.loads(json.dumps(value, default=str))


# -- shell completion --------------------------------------------------------------------------
def _tree(parser: Any) -> tuple[list[str], dict[str, Any]]:
    """(flags, {subcommand: parser}) of an argparse parser."""
    import argparse

    flags: list[str] = []
    subs: dict[str, Any] = {}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            subs.update(action.choices)
        else:
            flags.extend(o for o in action.option_strings if o.startswith("-"))
    return flags, subs


def completion_script(prog: str, parser: Any, shell: str) -> str:
    """A bash (or zsh, through bashcompinit) completion script for ``prog``: commands, subcommands, flags."""
    fn = "_" + prog.replace("-", "_")
    top_flags, top = _tree(parser)
    level1, level2 = [], []
    for name, sp in sorted(top.items()):
        flags, subs = _tree(sp)
        level1.append(f'        {name}) words1="{" ".join(sorted(subs))}"; flags1="{" ".join(flags)}" ;;')
        for sname, ssp in sorted(subs.items()):
            sflags, _ = _tree(ssp)
            level2.append(f'        {name}/{sname}) flags2="{" ".join(sflags)}" ;;')
    cases1, cases2 = "\n".join(level1), "\n".join(level2)
    script = f'''# {prog} completion for {shell}: eval "$({prog} completion {shell})"
{fn}() {{
    local cur="${{COMP_WORDS[COMP_CWORD]}}" cmd="" subcmd="" words1="" flags1="" flags2="" i w
    for ((i = 1; i < COMP_CWORD; i++)); do
        w="${{COMP_WORDS[i]}}"
        case "$w" in
            -a|--address|-n|--namespace|--timeout|--connect-timeout|--fifo-dir|-r|--runtime-endpoint|-i|--image-endpoint)
                ((i++)); continue ;;
            -*) continue ;;
        esac
        if [[ -z "$cmd" ]]; then cmd="$w"; elif [[ -z "$subcmd" ]]; then subcmd="$w"; break; fi
    done
    if [[ -z "$cmd" ]]; then
        if [[ "$cur" == -* ]]; then
            COMPREPLY=($(compgen -W "{" ".join(top_flags)}" -- "$cur"))
        else
            COMPREPLY=($(compgen -W "{" ".join(sorted(top))}" -- "$cur"))
        fi
        return 0
    fi
    case "$cmd" in
{cases1}
    esac
    if [[ -n "$subcmd" && -n "$words1" ]]; then
        case "$cmd/$subcmd" in
{cases2}
        esac
        if [[ "$cur" == -* ]]; then COMPREPLY=($(compgen -W "$flags2" -- "$cur"))
        else COMPREPLY=($(compgen -f -- "$cur")); fi
        return 0
    fi
    if [[ "$cur" == -* ]]; then
        COMPREPLY=($(compgen -W "$flags1" -- "$cur"))
    elif [[ -n "$words1" ]]; then
        COMPREPLY=($(compgen -W "$words1" -- "$cur"))
    else
        COMPREPLY=($(compgen -f -- "$cur"))
    fi
    return 0
}}
complete -F {fn} {prog}
'''
    if shell == "zsh":
        script = "autoload -U +X compinit && compinit\nautoload -U +X bashcompinit && bashcompinit\n" + script
    return script
