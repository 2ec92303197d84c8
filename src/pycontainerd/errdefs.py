"""The one error vocabulary of pycontainerd.

Every layer raises these kinds (never grpc errors, never bare OSError across a seam); the
daemon maps them to gRPC status codes once (``services.common.wrap_servicer``), and the client maps status
codes back to the same kinds, so callers write ``except NotFound`` against a local store
and a remote one alike.  The tree::

    ContainerdError                 base; .code is the gRPC status name
    ├── NotFound                    NOT_FOUND
    ├── AlreadyExists               ALREADY_EXISTS
    ├── InvalidArgument             INVALID_ARGUMENT
    ├── FailedPrecondition          FAILED_PRECONDITION
    ├── Conflict                    FAILED_PRECONDITION (containerd maps conflict there too)
    ├── Unavailable                 UNAVAILABLE (e.g. a content ref that is locked: retry)
    ├── Unimplemented               UNIMPLEMENTED
    ├── OutOfRange                  OUT_OF_RANGE (content read/write at a wrong offset)
    ├── Canceled                    CANCELLED
    ├── DeadlineExceeded            DEADLINE_EXCEEDED
    ├── ResourceExhausted           RESOURCE_EXHAUSTED
    ├── PermissionDenied            PERMISSION_DENIED
    └── Unknown                     UNKNOWN (a bug or an unmapped OS failure)

``map_errors`` translates foreign exceptions at a seam (``with map_errors({sqlite3.IntegrityError:
AlreadyExists})``) and keeps the original as ``__cause__``.
"""

from __future__ import annotations

import contextlib
import errno as _errno
from collections.abc import Iterator, Mapping


class ContainerdError(Exception):
    """Base of every error kind; ``code`` names the gRPC status it maps to."""

    code = "UNKNOWN"

    def __init__(self, message: str = "") -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message or self.code.lower().replace("_", " ")


class NotFound(ContainerdError):
    code = "NOT_FOUND"


class AlreadyExists(ContainerdError):
    code = "ALREADY_EXISTS"


class InvalidArgument(ContainerdError):
    code = "INVALID_ARGUMENT"


class FailedPrecondition(ContainerdError):
    code = "FAILED_PRECONDITION"


class Conflict(FailedPrecondition):
    pass


class Unavailable(ContainerdError):
    code = "UNAVAILABLE"


class Unimplemented(ContainerdError):
    code = "UNIMPLEMENTED"


class OutOfRange(ContainerdError):
    """A read or write at an offset the object does not have (containerd's content service)."""

    code = "OUT_OF_RANGE"


class Canceled(ContainerdError):
    code = "CANCELLED"


class DeadlineExceeded(ContainerdError):
    code = "DEADLINE_EXCEEDED"


class ResourceExhausted(ContainerdError):
    code = "RESOURCE_EXHAUSTED"


class PermissionDenied(ContainerdError):
    code = "PERMISSION_DENIED"


class Unknown(ContainerdError):
    code = "UNKNOWN"


KINDS: dict[str, type[ContainerdError]] = {
    cls.code: cls
    for cls in (
        NotFound,
        AlreadyExists,
        InvalidArgument,
        FailedPrecondition,
        Unavailable,
        Unimplemented,
        OutOfRange,
        Canceled,
        DeadlineExceeded,
        ResourceExhausted,
        PermissionDenied,
        Unknown,
    )
}


def from_code(code: str, message: str) -> ContainerdError:
    """Build the error kind for a gRPC status name (e.g. ``"NOT_FOUND"``)."""
    return KINDS.get(code, Unknown)(message)


_ERRNO_KINDS: dict[int, type[ContainerdError]] = {
    _errno.ENOENT: NotFound,
    _errno.EEXIST: AlreadyExists,
    _errno.ENOTEMPTY: FailedPrecondition,
    _errno.EBUSY: FailedPrecondition,
    _errno.EINVAL: InvalidArgument,
    _errno.EACCES: PermissionDenied,
    _errno.EPERM: PermissionDenied,
    _errno.ENOSPC: ResourceExhausted,
}


def from_oserror(exc: OSError, what: str) -> ContainerdError:
    """Turn an OSError into an error kind whose message names the operation and path."""
    kind = _ERRNO_KINDS.get(exc.errno or 0, Unknown)
    path = f" {exc.filename}" if exc.filename else ""
    err = kind(f"{what}:{path} {exc.strerror or exc}")
    err.__cause__ = exc
    return err


@contextlib.contextmanager
def map_errors(mapping: Mapping[type[BaseException], type[ContainerdError]], what: str = "") -> Iterator[None]:
    """Translate foreign exceptions raised inside the block into error kinds.

    The most specific matching entry wins; the message keeps the original text, prefixed
    by ``what`` when given.
    """
    try:
        yield
    except ContainerdError:
        raise
    except BaseException as exc:
        best: type[ContainerdError] | None = None
        best_depth = 1 << 30
        for foreign, kind in mapping.items():
            if isinstance(exc, foreign):
                depth = type(exc).__mro__.index(foreign)
                if depth < best_depth:
                    best, best_depth = kind, depth
        if best is None:
            raise
        prefix = f"{what}: " if what else ""
        raise best(f"{prefix}{exc}") from exc


