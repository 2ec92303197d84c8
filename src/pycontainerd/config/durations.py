"""Go ``time.Duration`` strings (``"100ms"``, ``"1m30s"``) to float seconds and back."""

from __future__ import annotations

import re

_NS = {
    "ns": 1,
    "us": 1_000,
    "µs": 1_000,
    "μs": 1_000,
    "ms": 1_000_000,
    "s": 10**9,
    "m": 60 * 10**9,
    "h": 3600 * 10**9,
}
_DURATION_PART = re.compile(r"(\d+\.?\d*|\.\d+)(ns|us|µs|μs|ms|s|m|h)")


def _duration_ns(text: str) -> int:
    s = text.strip()
    sign = 1
    if s and s[0] in "+-":
        sign = -1 if s[0] == "-" else 1
        s = s[1:]
    if s == "0":
        return 0
    if not s:
        raise ValueError(f"invalid duration {text!r}")
    # exact: the sum is num / 10**scale (integers only; fractions and decimal stay unloaded)
    num, scale = 0, 0
    pos = 0
    while pos < len(s):
        m = _DURATION_PART.match(s, pos)
        if m is None:
            raise ValueError(f'invalid duration {text!r} (expected e.g. "100ms", "1s", "1m30s")')
        whole, _, frac = m.group(1).partition(".")
        if len(frac) > scale:
            num *= 10 ** (len(frac) - scale)
            scale = len(frac)
        part = int(whole or "0") * 10 ** len(frac) + int(frac or "0")
        num += part * _NS[m.group(2)] * 10 ** (scale - len(frac))
        pos = m.end()
    q, r = divmod(num, 10**scale)
    if 2 * r > 10**scale or (2 * r == 10**scale and q % 2):  # round half to even, as round() does
        q += 1
    return int(sign * q)


def parse_duration(text: str) -> float:
    """Parse a Go duration (``"100ms"``, ``"1.5s"``, ``"1h2m3s"``, ``"0"``) into seconds."""
    return _duration_ns(text) / 1e9


def _frac(n: int, unit: int) -> str:
    whole, rest = divmod(n, unit)
    if not rest:
        return str(whole)
    digits = str(rest).rjust(len(str(unit)) - 1, "0").rstrip("0")
    return f"{whole}.{digits}"


def format_duration(seconds: float) -> str:
    """Format seconds the way Go prints a ``time.Duration`` (``0.1`` -> ``"100ms"``)."""
    ns = round(seconds * 1e9)
    sign = "-" if ns < 0 else ""
    ns = abs(ns)
    if ns == 0:
        return "0s"
    if ns < 1_000:
        text = f"{ns}ns"
    elif ns < 1_000_000:
        text = _frac(ns, 1_000) + "µs"
    elif ns < 10**9:
        text = _frac(ns, 1_000_000) + "ms"
    else:
        hours, rest = divmod(ns, 3600 * 10**9)
        minutes, rest = divmod(rest, 60 * 10**9)
        secs = _frac(rest, 10**9) + "s"
        text = f"{hours}h{minutes}m{secs}" if hours else f"{minutes}m{secs}" if minutes else secs
    return sign + text


