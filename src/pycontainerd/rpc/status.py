"""gRPC status codes and the exception a handler raises to end its call with one.

``StatusCode`` carries gRPC's numbers under grpc.StatusCode's member names, so code written
against grpc reads the same.  ``status_of`` is the one place where an exception a handler let
escape becomes a (code, message) pair: ``AbortError`` as given, an ``errdefs`` kind by its
``code`` name, anything else UNKNOWN with the exception's text.
"""

from __future__ import annotations

import enum

from .. import errdefs


class StatusCode(enum.IntEnum):
    OK = 0
    CANCELLED = 1
    UNKNOWN = 2
    INVALID_ARGUMENT = 3
    DEADLINE_EXCEEDED = 4
    NOT_FOUND = 5
    ALREADY_EXISTS = 6
    PERMISSION_DENIED = 7
    RESOURCE_EXHAUSTED = 8
    FAILED_PRECONDITION = 9
    ABORTED = 10
    OUT_OF_RANGE = 11
    UNIMPLEMENTED = 12
    INTERNAL = 13
    UNAVAILABLE = 14
    DATA_LOSS = 15
    UNAUTHENTICATED = 16

    @property
    def go_name(self) -> str:
        """The name Go's codes.Code.String() gives ("NotFound", "Canceled"): metrics labels."""
        return _GO_NAMES[self]


_GO_NAMES = {c: ("OK" if c is StatusCode.OK else "Canceled" if c is StatusCode.CANCELLED
                 else "".join(p.capitalize() for p in c.name.split("_"))) for c in StatusCode}

_BY_KIND: dict[str, StatusCode] = {c.name: c for c in StatusCode}


class AbortError(Exception):
    """Ends the call with ``code`` and ``details`` (what ``ServicerContext.abort`` raises)."""

    def __init__(self, code: StatusCode, details: str = "") -> None:
        super().__init__(f"{code.name}: {details}")
        self.code = code
        self.details = details


def code_of_kind(kind: str) -> StatusCode:
    """The status of an errdefs kind name (``errdefs.ContainerdError.code``, e.g. "NOT_FOUND")."""
    return _BY_KIND.get(kind, StatusCode.UNKNOWN)


def status_of(exc: BaseException) -> tuple[StatusCode, str, bool]:
    """(code, message, expected) for an exception that ended a handler; ``expected`` is False
    for exceptions that are neither an abort nor an errdefs kind (a bug worth a traceback)."""
    if isinstance(exc, AbortError):
        return exc.code, exc.details, True
    if isinstance(exc, errdefs.ContainerdError):
        return code_of_kind(exc.code), str(exc), True
    return StatusCode.UNKNOWN, f"{type(exc).__name__}: {exc}", False
