"""What every CLI command shares: tables, sizes, progress display, and error → exit code, once."""

from __future__ import annotations

import asyncio
import os
import shutil
import sys
import time
from collections.abc import Callable, Coroutine, Sequence
from typing import Any, TextIO

from .. import errdefs


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


def run_command(prog: str, fn: Callable[[], Coroutine[Any, Any, int | None]]) -> None:
    """Run an async command; map errors to a readable message and a non-zero exit code."""
    try:
        rc = asyncio.run(fn())
    except KeyboardInterrupt:
        raise SystemExit(130) from None
    except errdefs.ContainerdError as exc:
        kind = exc.code.lower().replace("_", " ")
        print(f"{prog}: {exc} ({kind})", file=sys.stderr)
        raise SystemExit(1) from None
    raise SystemExit(rc or 0)


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
