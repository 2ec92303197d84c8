"""Pushing blobs and manifests to a registry (OCI distribution spec, push side).

Blob: ``HEAD /v2/<repo>/blobs/<digest>`` (exists → done); otherwise try a cross-repository
mount (``POST …/blobs/uploads/?mount=<digest>&from=<repo>``, 201 = done) for each
repository the blob is known to come from on this registry, else start an upload
(``POST …/blobs/uploads/`` → 202 + ``Location``) and send it either monolithically
(``PUT <location>?digest=<digest>`` with the body) or, for big blobs or when asked, in
chunks (``PATCH <location>`` with ``Content-Range: <start>-<end>``, each answered with the
next ``Location``, then an empty ``PUT …?digest=``).  Manifests and indexes go last, with
``PUT /v2/<repo>/manifests/<digest or tag>`` and their media type as ``Content-Type``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence

import httpx

from .. import errdefs
from ..images import mediatypes as mt
from ..images.models import Descriptor
from .auth import scope_for
from .hosts import PUSH, Endpoint
from .http import RegistryHTTP, join_location, status_error

OpenReader = Callable[[int], AsyncIterator[bytes]]
"""``open(offset)`` → the blob's bytes from ``offset``."""

CHUNK_SIZE = 8 << 20
MONOLITHIC_MAX = 64 << 20


class Pusher:
    def __init__(self, http: RegistryHTTP, endpoints: Sequence[Endpoint], repository: str, tag: str = "",
                 *, chunked: bool = False, chunk_size: int = CHUNK_SIZE) -> None:
        self.http = http
        eps = [e for e in endpoints if e.can(PUSH)]
        if not eps:
            raise errdefs.NotFound(f"no push endpoints configured for {repository}")
        self.endpoint = eps[0]
        self.repository = repository
        self.tag = tag
        self.chunked = chunked
        self.chunk_size = chunk_size
        self.scopes = (scope_for(repository, "pull,push"),)

    def _url(self, path: str) -> str:
        return f"{self.endpoint.base_url}/{self.repository}{path}"

    async def exists(self, desc: Descriptor) -> bool:
        kind = "manifests" if (mt.is_manifest(desc.media_type) or mt.is_index(desc.media_type)) else "blobs"
        headers = {"Accept": desc.media_type} if kind == "manifests" else {}
        resp = await self.http.request(self.endpoint, "HEAD", f"/{self.repository}/{kind}/{desc.digest}",
                                       scopes=self.scopes, headers=headers)
        if resp.status_code == 200:
            return True
        if resp.status_code == 404:
            return False
        raise status_error(resp, f"HEAD {self._url(f'/{kind}/{desc.digest}')}")

    async def push_blob(self, desc: Descriptor, open_reader: OpenReader, *, mount_from: Sequence[str] = (),
                        progress: Callable[[int], None] | None = None) -> str:
        """Upload a blob unless present; returns ``exists``, ``mounted`` or ``pushed``."""
        if await self.exists(desc):
            return "exists"
        location = ""
        for src in mount_from:
            if src == self.repository:
                continue
            scopes = (*self.scopes, scope_for(src, "pull"))
            resp = await self.http.request(self.endpoint, "POST", f"/{self.repository}/blobs/uploads/",
                                           params={"mount": desc.digest, "from": src}, scopes=scopes)
            if resp.status_code == 201:
                return "mounted"
            if resp.status_code == 202 and resp.headers.get("location"):
                location = join_location(str(resp.request.url), resp.headers["location"])
                break
        if not location:
            resp = await self.http.request(self.endpoint, "POST", f"/{self.repository}/blobs/uploads/",
                                           scopes=self.scopes)
            if resp.status_code not in (201, 202) or not resp.headers.get("location"):
                raise status_error(resp, f"POST {self._url('/blobs/uploads/')}")
            location = join_location(str(resp.request.url), resp.headers["location"])
        if self.chunked or desc.size > MONOLITHIC_MAX:
            await self._chunked(desc, location, open_reader, progress)
        else:
            await self._monolithic(desc, location, open_reader, progress)
        return "pushed"

    async def _monolithic(self, desc: Descriptor, location: str, open_reader: OpenReader,
                          progress: Callable[[int], None] | None) -> None:
        buf = bytearray()
        async for chunk in open_reader(0):
            buf.extend(chunk)
            if progress:
                progress(len(buf))
        if len(buf) != desc.size:
            raise errdefs.FailedPrecondition(f"blob {desc.digest}: read {len(buf)} bytes, expected {desc.size}")
        url = _with_digest(location, desc.digest)
        resp = await self.http.request(self.endpoint, "PUT", "", url=url, scopes=self.scopes, content=bytes(buf),
                                       headers={"Content-Type": "application/octet-stream"})
        if resp.status_code not in (201, 204):
            raise status_error(resp, f"PUT blob {desc.digest} to {self.repository}")

    async def _chunked(self, desc: Descriptor, location: str, open_reader: OpenReader,
                       progress: Callable[[int], None] | None) -> None:
        sent = 0
        buf = bytearray()

        async def send(data: bytes) -> None:
            nonlocal sent, location
            end = sent + len(data) - 1
            resp = await self.http.request(
                self.endpoint, "PATCH", "", url=location, scopes=self.scopes, content=data, retry=False,
                headers={"Content-Type": "application/octet-stream", "Content-Range": f"{sent}-{end}"})
            if resp.status_code != 202:
                raise status_error(resp, f"PATCH blob {desc.digest} chunk {sent}-{end}")
            if resp.headers.get("location"):
                location = join_location(str(resp.request.url), resp.headers["location"])
            sent += len(data)
            if progress:
                progress(sent)

        async for chunk in open_reader(0):
            buf.extend(chunk)
            while len(buf) >= self.chunk_size:
                part = bytes(buf[: self.chunk_size])
                del buf[: self.chunk_size]
                await send(part)
        if buf:
            await send(bytes(buf))
        if sent != desc.size:
            raise errdefs.FailedPrecondition(f"blob {desc.digest}: sent {sent} bytes, expected {desc.size}")
        resp = await self.http.request(self.endpoint, "PUT", "", url=_with_digest(location, desc.digest),
                                       scopes=self.scopes, content=b"")
        if resp.status_code not in (201, 204):
            raise status_error(resp, f"PUT (complete upload) blob {desc.digest} to {self.repository}")

    async def push_manifest(self, desc: Descriptor, data: bytes, tag: str = "") -> None:
        """PUT a manifest or index under ``tag`` (or its digest when no tag)."""
        obj = tag or desc.digest
        resp = await self.http.request(self.endpoint, "PUT", f"/{self.repository}/manifests/{obj}",
                                       scopes=self.scopes, content=data,
                                       headers={"Content-Type": desc.media_type})
        if resp.status_code not in (200, 201, 204):
            raise status_error(resp, f"PUT manifest {obj} to {self.repository}")
        got = resp.headers.get("docker-content-digest")
        if got and got != desc.digest:
            raise errdefs.FailedPrecondition(
                f"manifest {obj}: the registry stored digest {got}, expected {desc.digest}")


def _with_digest(location: str, digest: str) -> str:
    url = httpx.URL(location)
    return str(url.copy_add_param("digest", digest))
