"""Formatting shared by pycrictl's commands: ages, truncated ids, JSON, filters."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from ... import errdefs, regexp

TRUNC = 13


def ago(ns: int, now: float | None = None) -> str:
    """'2 minutes ago' for a CRI timestamp in nanoseconds since the epoch."""
    if ns <= 0:
        return "-"
    secs = (now if now is not None else time.time()) - ns / 1e9
    if secs < 1:
        return "Less than a second ago"
    for unit, size in (("year", 365 * 86400), ("month", 30 * 86400), ("week", 7 * 86400), ("day", 86400),
                       ("hour", 3600), ("minute", 60), ("second", 1)):
        if secs >= size:
            n = int(secs // size)
            if n == 1:
                return f"About a{'n' if unit == 'hour' else ''} {unit} ago" if unit in ("hour", "minute") \
                    else f"1 {unit} ago"
            return f"{n} {unit}s ago"
    return "Less than a second ago"


def trunc(ident: str, full: bool = False) -> str:
    """A short id like crictl's: the hex part of `sha256:…` ids, 13 characters."""
    if ident.startswith("sha256:"):
        ident = ident[len("sha256:"):]
    return ident if full else ident[:TRUNC]


def print_json(obj: Any) -> None:
    json.dump(obj, sys.stdout, indent=2, sort_keys=False)
    sys.stdout.write("\n")


def pattern_matcher(pattern: str, what: str) -> Callable[[str], bool]:
    """crictl's --name/--image/--namespace filters: a predicate telling whether the regular
    expression (Go's RE2 syntax, as crictl's) matches somewhere in a value; an empty pattern
    matches everything.  A bad pattern is InvalidArgument naming ``what``, before any value is
    looked at."""
    if not pattern:
        return lambda value: True
    try:
        return regexp.compile(pattern).search
    except errdefs.InvalidArgument as exc:
        raise errdefs.InvalidArgument(f"invalid {what} pattern: {exc}") from None


def parse_label_filters(items: Sequence[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in items:
        k, sep, v = item.partition("=")
        if not k or not sep:
            raise errdefs.InvalidArgument(f"invalid label filter {item!r}: expected key=value")
        out[k] = v
    return out


def pick_state(name: str | None, states: Mapping[str, int], prefix: str, what: str) -> int | None:
    """Map a user's state name ('running', 'ready', 'CONTAINER_EXITED' ...) to the enum value."""
    if not name:
        return None
    key = name.upper()
    for cand in (key, prefix + key):
        if cand in states:
            return states[cand]
    choices = ", ".join(s[len(prefix):].lower() for s in states)
    raise errdefs.InvalidArgument(f"invalid {what} state {name!r}: choose one of {choices}")


def short_state(name: str, prefix: str) -> str:
    """CONTAINER_RUNNING -> Running, SANDBOX_NOTREADY -> NotReady."""
    s = name[len(prefix):] if name.startswith(prefix) else name
    return {"NOTREADY": "NotReady"}.get(s, s.capitalize())
