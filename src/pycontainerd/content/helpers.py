"""Content helpers shared by the stores, the services and the client: digests, filter
adaptors, the label-update rule, and ``write_blob``/``read_blob`` on top of the Protocols.

Pure apart from ``write_blob``/``read_blob``, which only go through the Protocols, so they
work against the local store, the namespaced metadata store and a gRPC proxy alike.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from typing import Any, cast

from .. import errdefs
from .. import labels as labelutil
from .interfaces import Info, Ingester, Provider, Status

READ_CHUNK = 1 << 20
"""Bytes per chunk when streaming a blob (containerd's buffer size)."""

_ALGORITHMS: dict[str, int] = {"sha256": 64, "sha384": 96, "sha512": 128}
# fullmatch, never match with ``$``: Python's ``$`` also matches before a trailing newline.
_DIGEST_RE = re.compile(r"([a-z0-9]+(?:[.+_-][a-z0-9]+)*):([a-zA-Z0-9=_-]+)")


def validate_digest(digest: str) -> str:
    """Return ``digest`` if it is a well-formed OCI digest, else raise InvalidArgument."""
    m = _DIGEST_RE.fullmatch(digest or "")
    if m is None:
        raise errdefs.InvalidArgument(f"{digest!r} failed validation: invalid checksum digest format")
    alg, enc = m.group(1), m.group(2)
    want = _ALGORITHMS.get(alg)
    if want is None:
        raise errdefs.InvalidArgument(f"{digest!r} failed validation: unsupported digest algorithm")
    if len(enc) != want or not re.fullmatch(r"[a-f0-9]+", enc):
        raise errdefs.InvalidArgument(f"{digest!r} failed validation: invalid checksum digest length")
    return digest


def is_valid_digest(digest: str) -> bool:
    try:
        validate_digest(digest)
    except errdefs.InvalidArgument:
        return False
    return True


def info_adaptor(info: Info) -> Callable[[tuple[str, ...]], str | None]:
    """Filter fields of a blob: ``digest``, ``size``, ``labels.<key>``."""

    def get(path: tuple[str, ...]) -> str | None:
        if not path:
            return None
        head = path[0]
        if head == "digest":
            return info.digest or None
        if head == "size":
            return str(info.size)
        if head == "labels":
            if len(path) == 1:
                return "" if info.labels else None
            return info.labels.get(".".join(path[1:]))
        return None

    return get


def status_adaptor(status: Status) -> Callable[[tuple[str, ...]], str | None]:
    """Filter fields of an ingest: ``ref`` (as containerd's)."""

    def get(path: tuple[str, ...]) -> str | None:
        if path and path[0] == "ref":
            return status.ref
        return None

    return get


def update_labels(
    current: Mapping[str, str], new: Mapping[str, str], fieldpaths: Sequence[str], what: str
) -> dict[str, str]:
    """A blob's labels after an update (``labels.apply_field_paths``; no paths at all replace
    every label, as in containerd's content stores).  Other paths are InvalidArgument naming
    ``what``."""
    return labelutil.apply_field_paths(current, new, fieldpaths or labelutil.FIELD, what=what, field="info.Labels")


def validate_labels(labels: Mapping[str, str]) -> None:
    try:
        labelutil.validate_all(labels)
    except errdefs.InvalidArgument as exc:
        raise errdefs.InvalidArgument(f"info.Labels: {exc}") from exc


async def read_blob(provider: Provider, digest: str, limit: int = 0) -> bytes:
    """The whole blob; with ``limit`` > 0, FailedPrecondition when it is larger."""
    out = bytearray()
    async for chunk in await _iter(provider, digest):
        out += chunk
        if limit and len(out) > limit:
            raise errdefs.FailedPrecondition(f"blob {digest} is larger than the {limit} bytes allowed")
    return bytes(out)


async def _iter(provider: Provider, digest: str) -> AsyncIterator[bytes]:
    # Implementations are async generator functions (calling one gives the iterator),
    # while the Protocol declares a coroutine returning one; accept both.
    result: Any = provider.read(digest)
    if inspect.isawaitable(result):
        result = await result
    return cast(AsyncIterator[bytes], result)


async def write_blob(
    ingester: Ingester,
    ref: str,
    data: bytes,
    expected: str = "",
    labels: Mapping[str, str] | None = None,
) -> str:
    """Write ``data`` as a blob through the ingest ``ref`` (resuming, like containerd's
    ``content.WriteBlob``); returns the digest.  An already present blob is not an error.
    """
    try:
        w = await ingester.writer(ref, len(data), expected)
    except errdefs.AlreadyExists:
        return expected
    try:
        st = await w.status()
        offset = st.offset
        if offset > len(data):
            await w.truncate(0)
            offset = 0
        for i in range(offset, len(data), READ_CHUNK):
            await w.write(data[i : i + READ_CHUNK])
        try:
            return await w.commit(len(data), expected, labels)
        except errdefs.AlreadyExists:
            return expected or w.digest()
    finally:
        await w.close()
