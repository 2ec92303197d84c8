"""``oom_score``: the daemon's own ``oom_score_adj``, set at start-up as containerd does.

containerd writes a non-zero ``oom_score`` to ``/proc/<own pid>/oom_score_adj`` before it loads
its plugins, and when that fails it logs the error and starts anyway.  The same here, with a
message that names the key: lowering the score (a negative value, to protect the daemon from the
OOM killer) needs CAP_SYS_RESOURCE, which root does not always have (in some VMs and
containers), so the write can be refused.  Shims and containers started afterwards inherit
the score (the CRI caps a container's ``oomScoreAdj`` at the daemon's own)."""

from __future__ import annotations

import errno
import os

OOM_SCORE_ADJ = "/proc/self/oom_score_adj"


def read_oom_score_adj(path: str = OOM_SCORE_ADJ) -> int | None:
    try:
        with open(path, encoding="ascii") as fh:
            return int(fh.read().strip())
    except (OSError, ValueError):
        return None


def apply_oom_score(score: int, path: str = OOM_SCORE_ADJ) -> str | None:
    """Write ``score`` (config key ``oom_score``; 0 leaves the score alone, as containerd does);
    None when done, else the message saying why it could not be set."""
    if score == 0:
        return None
    try:
        fd = os.open(path, os.O_WRONLY)
        try:
            os.write(fd, str(score).encode("ascii"))
        finally:
            os.close(fd)
    except OSError as exc:
        return failure_message(score, path, exc, read_oom_score_adj(path))
    return None


def failure_message(score: int, path: str, exc: OSError, current: int | None) -> str:
    why = os.strerror(exc.errno) if exc.errno else str(exc)
    hint = ""
    if exc.errno in (errno.EACCES, errno.EPERM) and score < (current or 0):
        hint = "; lowering oom_score_adj needs CAP_SYS_RESOURCE, which this process does not have"
    kept = f" (the daemon keeps oom_score_adj {current})" if current is not None else ""
    return f"config key oom_score = {score}: cannot write {path}: {why}{hint}{kept}"
