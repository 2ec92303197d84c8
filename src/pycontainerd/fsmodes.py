"""File modes of what the daemon keeps under its root and state directories.

Nothing below the two top directories is for other local users: bundles hold container
root filesystems (a setuid binary reachable there is a local root, CVE-2021-41103), the
metadata database holds container specs with their environment, blobs and snapshots hold
image contents.  So the state directory is ``0711`` (others may pass through to the daemon
socket, which lives there by default, but may not list it), the root directory ``0700``
(``0711`` only when the socket or the state directory is inside it) and everything below
is ``0700`` directories and ``0600``/``0400`` files.  The one exception is
containerd's: the runtime's directory and its namespace directories are ``0711`` so that a
container in a user namespace reaches its bundle, which is closed itself
(``runtime.bundle``).

``mkdir(mode=...)`` and ``os.makedirs`` give only the last directory the mode (and only
when they create it), so directories go through ``private_dir``, which also closes one an
older version left open.
"""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Iterable
from pathlib import Path

TOP_DIR = 0o711  # state (and root if needed): traversable (the socket), not listable
PRIVATE_DIR = 0o700
PRIVATE_FILE = 0o600
READONLY_FILE = 0o400  # committed blobs


def private_dir(path: str | os.PathLike[str], *, chmod: bool = True) -> Path:
    """Make ``path`` (and missing parents) a directory only root can enter.

    Parents that exist keep their mode; the ones made here are ``0700``.  With ``chmod``
    an existing ``path`` is closed too (an older version made it ``0755``)."""
    p = Path(path)
    missing: list[Path] = []
    q = p
    while not q.is_dir():
        missing.append(q)
        if q.parent == q:
            break
        q = q.parent
    for d in reversed(missing):
        try:
            d.mkdir(mode=PRIVATE_DIR)
        except FileExistsError:
            if not d.is_dir():
                raise
    if chmod:
        os.chmod(p, PRIVATE_DIR)
    return p


def temp_dir(parent: str | os.PathLike[str], prefix: str) -> str:
    """A new empty directory ``<parent>/<prefix><random>`` (0700), as ``tempfile.mkdtemp(prefix=,
    dir=)`` makes it, without importing ``tempfile`` (and ``random``) into the daemon: every
    snapshot prepare and the overlay check at start-up make one (W6, idle PSS)."""
    for _ in range(100):
        path = os.path.join(os.fspath(parent), prefix + os.urandom(6).hex())
        try:
            os.mkdir(path, PRIVATE_DIR)
        except FileExistsError:
            continue
        return path
    raise FileExistsError(f"no unused temporary directory name under {parent}")


def private_file(path: str | os.PathLike[str]) -> None:
    """Create ``path`` empty as ``0600`` if missing; close it if it exists (SQLite makes its
    ``-wal``/``-shm`` files with the mode of the database file, so this is done before the
    database is first opened)."""
    fd = os.open(path, os.O_RDONLY | os.O_CREAT | os.O_CLOEXEC, PRIVATE_FILE)
    try:
        if stat.S_IMODE(os.fstat(fd).st_mode) & 0o077:
            os.fchmod(fd, PRIVATE_FILE)
    finally:
        os.close(fd)


def close_existing(paths: Iterable[str | os.PathLike[str]]) -> None:
    """Close each of ``paths`` that exists as a regular file (``-wal``/``-shm`` left by an
    older version); missing ones are fine."""
    for path in paths:
        with contextlib.suppress(FileNotFoundError):
            st = os.lstat(path)
            if stat.S_ISREG(st.st_mode) and stat.S_IMODE(st.st_mode) & 0o077:
                os.chmod(path, PRIVATE_FILE)


def top_dir(path: str | os.PathLike[str]) -> Path:
    """Make the root or state directory: ``0711``, also when it exists with another mode."""
    p = Path(path)
    p.mkdir(parents=True, exist_ok=True, mode=TOP_DIR)
    os.chmod(p, TOP_DIR)
    return p


def close_children(top: str | os.PathLike[str], *, keep: Iterable[str | os.PathLike[str]] = ()) -> list[str]:
    """Close what lies directly in ``top`` (root or state): directories ``0700``, regular
    files ``0600``.  Closing a directory closes everything below it to others, so an upgrade
    from a version that left plugin directories, bundles or blobs open is safe after this.

    Entries in ``keep`` (directories that must stay traversable: the one holding the
    daemon socket, a state directory inside the root) are made ``0711`` instead.  Sockets
    and symlinks are left alone.  Returns the names whose mode changed."""
    top_path = Path(os.path.abspath(top))
    keep_names = {p.name for p in map(Path, map(os.path.abspath, keep)) if p.parent == top_path}
    changed: list[str] = []
    try:
        entries = list(os.scandir(top_path))
    except FileNotFoundError:
        return changed
    for entry in entries:
        try:
            st = entry.stat(follow_symlinks=False)
        except FileNotFoundError:
            continue
        if stat.S_ISDIR(st.st_mode):
            want = TOP_DIR if entry.name in keep_names else PRIVATE_DIR
        elif stat.S_ISREG(st.st_mode):
            want = stat.S_IMODE(st.st_mode) & 0o700
        else:
            continue
        if stat.S_IMODE(st.st_mode) != want:
            with contextlib.suppress(FileNotFoundError):
                os.chmod(entry.path, want)
                changed.append(entry.name)
    return changed


def leads_to(top: str | os.PathLike[str], targets: Iterable[str | os.PathLike[str]]) -> bool:
    """Whether one of ``targets`` lies inside ``top``."""
    top_abs = Path(os.path.abspath(top))
    return any(top_abs in Path(os.path.abspath(t)).parents for t in targets)


def traversable_children(top: str | os.PathLike[str], targets: Iterable[str | os.PathLike[str]]) -> list[Path]:
    """The entries directly in ``top`` that lead to one of ``targets`` (a socket or a
    directory others must reach) and so must stay traversable."""
    top_abs = Path(os.path.abspath(top))
    out: list[Path] = []
    for t in targets:
        t_abs = Path(os.path.abspath(t))
        try:
            rel = t_abs.relative_to(top_abs)
        except ValueError:
            continue
        if len(rel.parts) >= 2:  # the target lies in a subdirectory of top
            out.append(top_abs / rel.parts[0])
    return out
