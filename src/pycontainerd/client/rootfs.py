"""Reading a file of a mounted container rootfs as the container would see it."""

from __future__ import annotations

import os

__all__ = ["read_in_root"]


def read_in_root(root: str, path: str, limit: int = 4 << 20) -> str | None:
    """Read ``path`` as seen from inside ``root`` (symlinks resolved within root); None if absent."""
    parts = [p for p in path.split("/") if p]
    resolved: list[str] = []
    hops = 0
    while parts:
        part = parts.pop(0)
        if part == ".":
            continue
        if part == "..":
            if resolved:
                resolved.pop()
            continue
        candidate = os.path.join(root, *resolved, part)
        if os.path.islink(candidate):
            hops += 1
            if hops > 40:
                return None
            target = os.readlink(candidate)
            if target.startswith("/"):
                resolved = []
            parts = [p for p in target.split("/") if p] + parts
            continue
        resolved.append(part)
    full = os.path.join(root, *resolved)
    try:
        with open(full, "rb") as f:
            return f.read(limit).decode(errors="replace")
    except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
        return None
