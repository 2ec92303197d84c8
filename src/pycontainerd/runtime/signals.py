"""Signal numbers and names, validated before they reach runc (pure)."""

from __future__ import annotations

import signal

from .. import errdefs

SIGRTMAX = int(signal.SIGRTMAX)


def validate(sig: int) -> int:
    """The signal number when it is one Linux knows; InvalidArgument otherwise."""
    if not 1 <= sig <= SIGRTMAX:
        raise errdefs.InvalidArgument(f"invalid signal {sig}: signals are numbered 1 to {SIGRTMAX}")
    return sig


def parse(value: str) -> int:
    """``9``, ``KILL``, ``SIGKILL``, ``SIGRTMIN+3`` → number; InvalidArgument if unknown."""
    v = value.strip().upper()
    if v.isdigit():
        return validate(int(v))
    if not v.startswith("SIG"):
        v = "SIG" + v
    for base in ("SIGRTMIN", "SIGRTMAX"):
        if v.startswith(base) and v != base:
            sign, num = v[len(base)], v[len(base) + 1 :]
            if sign in "+-" and num.isdigit():
                n = int(getattr(signal, base)) + (int(num) if sign == "+" else -int(num))
                return validate(n)
    try:
        return int(signal.Signals[v])
    except KeyError:
        raise errdefs.InvalidArgument(f"unknown signal {value!r}") from None


def name(sig: int) -> str:
    try:
        return signal.Signals(sig).name
    except ValueError:
        return str(sig)
