"""Fetching manifests, indexes and blobs from a registry, verified.

Every byte that leaves here has been checked: manifests, indexes and configs are read
into memory up to ``MAX_MANIFEST_SIZE`` and verified against their descriptor's size and
digest before they are returned; layer blobs are streamed through ``copy_blob``, which
verifies the size and digest at the end and *resumes* an interrupted download with an
HTTP ``Range`` request from the offset already received (a server that ignores ``Range``
and answers 200 has the prefix skipped instead).  Transient failures (connection reset,
5xx, 429, a body shorter than announced) are retried with backoff; a 404 moves on to the
next endpoint.  Schema 1 manifests and unknown media types are refused with a message
that says so.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

import httpx

from .. import errdefs
from ..images import digest as digests
from ..images import mediatypes as mt
from ..images.models import MAX_MANIFEST_SIZE, Descriptor
from .auth import scope_for
from .hosts import PULL, Endpoint
from .http import BACKOFF_MAX, BACKOFF_START, RegistryHTTP, status_error

Sink = Callable[[bytes], Awaitable[object]]
ProgressFn = Callable[[int], None]

STREAM_CHUNK = 1 << 20
"""Bytes handed to the sink at a time (aggregated from smaller network reads)."""


class Fetcher:
    """Reads blobs of one repository from the endpoints that may ``pull``."""

    def __init__(self, http: RegistryHTTP, endpoints: Sequence[Endpoint], repository: str,
                 *, retries: int = 5) -> None:
        self.http = http
        self.endpoints = [e for e in endpoints if e.can(PULL)]
        if not self.endpoints:
            raise errdefs.NotFound(f"no pull endpoints configured for {repository}")
        self.repository = repository
        self.scopes = (scope_for(repository, "pull"),)
        self.retries = retries

    def _paths(self, desc: Descriptor) -> list[str]:
        blob = f"/{self.repository}/blobs/{desc.digest}"
        manifest = f"/{self.repository}/manifests/{desc.digest}"
        if mt.is_manifest(desc.media_type) or mt.is_index(desc.media_type) or mt.is_schema1(desc.media_type):
            return [manifest, blob]
        return [blob]

    def _accept(self, desc: Descriptor) -> dict[str, str]:
        if mt.is_manifest(desc.media_type) or mt.is_index(desc.media_type):
            types = [desc.media_type, *(t for t in mt.MANIFEST_ACCEPT if t != desc.media_type)]
            return {"Accept": ", ".join(types) + ", */*;q=0.8"}
        return {"Accept": f"{desc.media_type or 'application/octet-stream'}, */*"}

    async def fetch_bytes(self, desc: Descriptor, limit: int = MAX_MANIFEST_SIZE) -> bytes:
        """A small blob (manifest, index, config), size- and digest-verified."""
        if desc.size > limit:
            raise errdefs.InvalidArgument(
                f"{mt.kind(desc.media_type)} {desc.digest} is too large: {desc.size} bytes exceeds the "
                f"{limit}-byte limit for objects read into memory")
        chunks: list[bytes] = []

        async def sink(b: bytes) -> None:
            chunks.append(b)

        await self.copy_blob(desc, sink)
        return b"".join(chunks)

    async def copy_blob(self, desc: Descriptor, sink: Sink, offset: int = 0,
                        progress: ProgressFn | None = None) -> None:
        """Stream ``desc``'s bytes from ``offset`` into ``sink``, resuming and retrying; verified.

        When ``offset`` > 0 (resuming an earlier ingest) only the size is checked here: the
        digest of the whole blob is verified by the store on commit.
        """
        digests.validate(desc.digest)
        verifier = digests.Verifier(desc.digest, desc.size) if offset == 0 else None
        state = _CopyState(written=offset)
        attempt = 0
        delay = BACKOFF_START
        while True:
            try:
                await self._copy_once(desc, sink, state, verifier, progress)
                break
            except _Transient as exc:
                last_err = exc.error
            attempt += 1
            if attempt >= self.retries:
                raise errdefs.Unavailable(
                    f"fetching {desc.digest} from {self.repository}: giving up after {attempt} attempts: {last_err}"
                ) from last_err
            await asyncio.sleep(delay)
            delay = min(delay * 2, BACKOFF_MAX)
        if state.written != desc.size:
            raise errdefs.FailedPrecondition(
                f"blob {desc.digest}: size mismatch: got {state.written} bytes, expected {desc.size}")
        if verifier is not None:
            verifier.check(f"{mt.kind(desc.media_type)} blob")

    async def _copy_once(self, desc: Descriptor, sink: Sink, state: _CopyState,
                         verifier: digests.Verifier | None, progress: ProgressFn | None) -> None:
        """One attempt across the endpoints, from ``state.written``; raises _Transient to be retried."""
        not_found: list[str] = []
        for ep in self.endpoints:
            for path in self._paths(desc):
                headers = self._accept(desc)
                if state.written > 0:
                    headers["Range"] = f"bytes={state.written}-"
                try:
                    async with self.http.stream(ep, "GET", path, scopes=self.scopes, headers=headers) as resp:
                        if resp.status_code == 404:
                            not_found.append(f"{ep.host}{path}")
                            continue
                        if resp.status_code == 416 and state.written >= desc.size:
                            return
                        if resp.status_code not in (200, 206):
                            err = status_error(resp, f"GET {ep.base_url}{path}")
                            if isinstance(err, errdefs.Unavailable):
                                raise _Transient(err)
                            raise err
                        await self._drain(desc, resp, sink, state, verifier, progress)
                        return
                except errdefs.Unavailable as exc:
                    raise _Transient(exc) from exc
        raise errdefs.NotFound(
            f"{mt.kind(desc.media_type)} {desc.digest} not found in {self.repository} "
            f"(tried {', '.join(not_found)})")

    async def _drain(self, desc: Descriptor, resp: httpx.Response, sink: Sink, state: _CopyState,
                     verifier: digests.Verifier | None, progress: ProgressFn | None) -> None:
        # a server ignoring Range answers 200 with the whole blob: skip what we already have
        skip = state.written if resp.status_code == 200 else 0
        start = 0 if resp.status_code == 200 else state.written
        cl = resp.headers.get("content-length")
        if cl and cl.isdigit() and start + int(cl) > desc.size:
            raise errdefs.FailedPrecondition(
                f"blob {desc.digest}: the registry announces {start + int(cl)} bytes, expected {desc.size}")
        pending = bytearray()

        async def flush() -> None:
            if pending:
                data = bytes(pending)
                pending.clear()
                await sink(data)
                state.written += len(data)

        try:
            async for chunk in resp.aiter_raw():
                if skip:
                    cut = min(skip, len(chunk))
                    chunk, skip = chunk[cut:], skip - cut
                    if not chunk:
                        continue
                total = state.written + len(pending) + len(chunk)
                if total > desc.size:
                    raise errdefs.FailedPrecondition(
                        f"blob {desc.digest}: the registry sent more than the expected {desc.size} bytes")
                if verifier is not None:
                    verifier.update(chunk)
                pending.extend(chunk)
                if progress is not None:
                    progress(total)
                if len(pending) >= STREAM_CHUNK:
                    await flush()
        except (httpx.TransportError, httpx.StreamError, ssl.SSLError) as exc:
            await flush()  # keep what arrived; the next attempt resumes after it
            raise _Transient(errdefs.Unavailable(
                f"download of {desc.digest} interrupted at {state.written} bytes: {exc or type(exc).__name__}"
            )) from exc
        await flush()
        if skip:
            raise _Transient(errdefs.Unavailable(f"download of {desc.digest} restarted but ended early"))
        if state.written < desc.size:
            raise _Transient(errdefs.Unavailable(
                f"download of {desc.digest} ended early at {state.written} of {desc.size} bytes"))


@dataclass
class _CopyState:
    written: int


class _Transient(Exception):
    def __init__(self, error: errdefs.ContainerdError) -> None:
        super().__init__(str(error))
        self.error = error
