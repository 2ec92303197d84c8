"""RFC 3339 timestamps as containerd writes them (UTC, ``Z``), for events, labels and the CLIs.

Pure and light (no asyncio, no grpc): the shim imports it too.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime


def format_ns(ns: int) -> str:
    """``2024-01-01T00:00:00.000000001Z``: nanoseconds since the epoch, with all nine digits."""
    secs, nanos = divmod(ns, 1_000_000_000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(secs)) + f".{nanos:09d}Z"


def format_seconds(when: datetime | float | None = None) -> str:
    """``2024-01-01T00:00:00Z`` (whole seconds, as in ``containerd.io/gc.expire`` and gc.root labels);
    ``when`` is a datetime, epoch seconds, or now."""
    if when is None:
        when = time.time()
    if isinstance(when, datetime):
        return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(when))


def parse_ns(text: str) -> int:
    """Nanoseconds since the epoch of a UTC ``...Z`` timestamp (any number of fraction digits).

    Raises ValueError for anything else (an offset other than ``Z``, a malformed date)."""
    if not text.endswith("Z"):
        raise ValueError(f"unsupported timestamp {text!r}: want UTC (…Z)")
    main, _, frac = text[:-1].partition(".")
    if frac and not frac.isdigit():
        raise ValueError(f"malformed fraction in timestamp {text!r}")
    import calendar  # at first use (as time.strptime's own modules): not at start-up (W6, idle PSS)

    secs = calendar.timegm(time.strptime(main, "%Y-%m-%dT%H:%M:%S"))
    return secs * 1_000_000_000 + int((frac or "0").ljust(9, "0")[:9])
