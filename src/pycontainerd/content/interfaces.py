"""The content store's roles, as small Protocols.

Lifecycle of a blob: a writer is opened for an ingest ``ref`` (``Ingester.writer``); bytes
are written at increasing offsets, possibly across several connections (the ingest
survives, ``IngestManager.status`` reports its offset so a client resumes where it
stopped); ``commit`` checks the size and the digest and only then makes the blob visible
under its digest (``Provider`` reads it, ``Manager`` lists, labels and deletes it).  An
ingest that is no longer wanted is ``abort``-ed.

The local store (``content.local``) keeps bytes on disk once for all namespaces; the
metadata store (``metadata.content``) wraps it with per-namespace records and leases,
and the client's gRPC proxy implements the same Protocols against a daemon, so one
contract suite tests all three.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol


@dataclass
class Info:
    digest: str
    size: int
    created_at: int = 0  # ns since epoch
    updated_at: int = 0
    labels: dict[str, str] = field(default_factory=dict)


@dataclass
class Status:
    ref: str
    offset: int
    total: int
    expected: str = ""
    started_at: int = 0
    updated_at: int = 0


class Writer(Protocol):
    """An open ingest. Not safe for concurrent use."""

    @property
    def ref(self) -> str: ...

    async def status(self) -> Status: ...

    async def write(self, data: bytes) -> int:
        """Append at the current offset; returns the new offset."""
        ...

    async def truncate(self, size: int) -> None:
        """Drop everything after ``size`` (resume from an earlier offset)."""
        ...

    def digest(self) -> str:
        """Digest of what has been written so far."""
        ...

    async def commit(self, size: int, expected: str, labels: Mapping[str, str] | None = None) -> str:
        """Verify size (when non-zero) and digest (when given), make the blob visible; returns its digest.

        A mismatch raises FailedPrecondition and leaves nothing visible; a blob that already
        exists raises AlreadyExists (the ingest is then removed).
        """
        ...

    async def close(self) -> None:
        """Release the ref lock, keeping the ingest for a later resume."""
        ...


class Provider(Protocol):
    def read(self, digest: str, offset: int = 0, size: int = 0) -> AsyncIterator[bytes]:
        """Stream a blob's bytes from ``offset`` (``size`` 0 = to the end); NotFound if absent."""
        ...


class Ingester(Protocol):
    async def writer(self, ref: str, total: int = 0, expected: str = "") -> Writer:
        """Open (or resume) the ingest ``ref``.

        Unavailable if another writer holds ``ref``; AlreadyExists if ``expected`` is
        already committed.
        """
        ...


class IngestManager(Protocol):
    async def status(self, ref: str) -> Status: ...

    async def list_statuses(self, filters: Sequence[str] = ()) -> list[Status]: ...

    async def abort(self, ref: str) -> None: ...


class Manager(Protocol):
    async def info(self, digest: str) -> Info: ...

    async def update(self, info: Info, fieldpaths: Sequence[str] = ()) -> Info:
        """Update labels; fieldpaths like ``labels`` or ``labels.<key>`` (empty: all labels)."""
        ...

    async def list(self, filters: Sequence[str] = ()) -> list[Info]: ...

    async def delete(self, digest: str) -> None: ...


class Store(Manager, Provider, IngestManager, Ingester, Protocol):
    """Everything a content store does."""
