"""The Snapshotter role: layered filesystems addressed by key.

Glossary (as containerd's ``snapshots.Snapshotter``):

- **key**: names an *active* or *view* snapshot, chosen by the caller (``extract-<nanos>
  <chainID>`` while unpacking, the container id for a container's rootfs).
- **name**: names a *committed* snapshot (the layer's chain ID for images).  Keys and names
  share one namespace: a committed snapshot is stat-ed, removed and used as a parent by its
  name.
- **parent**: the committed snapshot an active or view snapshot is based on ("" = empty).

Kinds: ``ACTIVE`` (writable, from ``prepare``), ``VIEW`` (read-only, from ``view``; can
never be committed), ``COMMITTED`` (immutable, from ``commit``; the only kind that can be a
parent).

Worked example, unpacking a two-layer image::

    mounts = await sn.prepare("extract-1 sha256:L1", "")           # empty, writable
    ... apply layer 1 onto mounts ...
    await sn.commit("sha256:L1", "extract-1 sha256:L1")              # key is gone, name exists
    mounts = await sn.prepare("extract-2 sha256:L1L2", "sha256:L1")  # sees layer 1
    ... apply layer 2 ...
    await sn.commit("sha256:L1L2", "extract-2 sha256:L1L2")
    rootfs = await sn.prepare("my-container", "sha256:L1L2")      # container's rootfs
    ...
    await sn.remove("my-container")                                  # then the layers, top first

Errors: an existing key → AlreadyExists; an unknown key or parent → NotFound; a parent
that is not committed → InvalidArgument; committing a view or a committed snapshot →
FailedPrecondition; removing a snapshot that still has children → FailedPrecondition.

Implementations: ``snapshots.overlay`` (kernel overlayfs), ``snapshots.native`` (plain
copies), ``metadata.snapshots`` (per-namespace keys over one of those) and the client's gRPC
proxy; ``tests/suites/snapshotter_suite.py`` checks every one of them.
"""

from __future__ import annotations

import builtins
import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from ..mount import Mount


class Kind(enum.IntEnum):
    """Numbering matches the ``containerd.services.snapshots.v1.Kind`` enum."""

    UNKNOWN = 0
    VIEW = 1
    ACTIVE = 2
    COMMITTED = 3

    @classmethod
    def parse(cls, s: str) -> Kind:
        try:
            return cls[s.upper()]
        except KeyError:
            return cls.UNKNOWN

    def __str__(self) -> str:
        return self.name.capitalize()


@dataclass
class Info:
    name: str  # the key, or the name of a committed snapshot
    kind: Kind
    parent: str = ""
    labels: dict[str, str] = field(default_factory=dict)
    created_at: int = 0  # ns since epoch
    updated_at: int = 0


@dataclass
class Usage:
    size: int = 0  # bytes
    inodes: int = 0

    def add(self, other: Usage) -> None:
        self.size += other.size
        self.inodes += other.inodes


class Snapshotter(Protocol):
    async def stat(self, key: str) -> Info: ...

    async def update(self, info: Info, fieldpaths: Sequence[str] = ()) -> Info:
        """Update labels (``labels`` / ``labels.<key>``; no paths = replace all labels)."""
        ...

    async def usage(self, key: str) -> Usage:
        """Disk use of the snapshot itself (not its parents)."""
        ...

    async def mounts(self, key: str) -> builtins.list[Mount]:
        """Mounts of an active or view snapshot."""
        ...

    async def prepare(
        self, key: str, parent: str = "", labels: Mapping[str, str] | None = None
    ) -> builtins.list[Mount]: ...

    async def view(
        self, key: str, parent: str = "", labels: Mapping[str, str] | None = None
    ) -> builtins.list[Mount]: ...

    async def commit(self, name: str, key: str, labels: Mapping[str, str] | None = None) -> None: ...

    async def remove(self, key: str) -> None: ...

    async def walk(self, filters: Sequence[str] = ()) -> builtins.list[Info]:
        """Every snapshot matching any of the filter expressions (none = all)."""
        ...

    async def cleanup(self) -> None:
        """Remove leftovers no longer referenced (directories of removed snapshots)."""
        ...

    async def close(self) -> None: ...


def info_field(info: Info, path: tuple[str, ...]) -> str | None:
    """Filter adaptor over Info fields, as containerd's snapshot adaptor."""
    if not path:
        return None
    head = path[0]
    if head == "kind":
        return info.kind.name.lower()  # "active", "view", "committed", as containerd's adaptor
    if head == "name":
        return info.name
    if head == "parent":
        return info.parent
    if head == "labels":
        if len(path) < 2:
            return None
        return info.labels.get(".".join(path[1:]))
    return None
