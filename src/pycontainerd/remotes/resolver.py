"""Resolving an image reference to its root descriptor, and handing out fetchers and pushers.

``Resolver`` is the entry point of the registry client (containerd's docker resolver)::

    async with Resolver(hosts_dir="/etc/containerd/certs.d", credentials=creds) as r:
        name, desc = await r.resolve("docker.io/library/busybox:latest")
        fetcher = r.fetcher(name)
        manifest = await fetcher.fetch_bytes(desc)

Resolving a tag sends ``HEAD /v2/<repo>/manifests/<tag>`` with the manifest types this
client accepts; when the registry's answer lacks the digest or the type, a ``GET`` reads
(at most 4 MiB of) the manifest and digests it.  A reference with a digest is resolved
against that digest and checked.  Endpoints come from ``hosts.configure`` (hosts.toml,
mirrors) and are tried in order; only those with the ``resolve`` capability resolve.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import httpx

from .. import errdefs
from ..images import digest as digests
from ..images import mediatypes as mt
from ..images import reference
from ..images.models import MAX_MANIFEST_SIZE, Descriptor, detect_media_type
from . import hosts as hostsmod
from .auth import Credentials, scope_for
from .fetcher import Fetcher
from .hosts import RESOLVE, Endpoint
from .http import RegistryHTTP, read_error_body, status_error
from .pusher import Pusher

HostsFn = Callable[[str], Sequence[Endpoint]]


class Resolver:
    def __init__(self, *, hosts: HostsFn | None = None, hosts_dir: str | None = None, plain_http: bool = False,
                 skip_verify: bool | None = None, credentials: Credentials | None = None,
                 headers: dict[str, str] | None = None, retries: int = 4) -> None:
        if hosts is None:
            def hosts(host: str) -> Sequence[Endpoint]:
                return hostsmod.configure(host, hosts_dir=hosts_dir, plain_http=plain_http,
                                          skip_verify=skip_verify)
        self.hosts = hosts
        self.http = RegistryHTTP(credentials, retries=retries, headers=headers)

    async def aclose(self) -> None:
        await self.http.aclose()

    async def __aenter__(self) -> Resolver:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def _endpoints(self, ref: reference.Reference) -> list[Endpoint]:
        return list(self.hosts(ref.domain))

    async def resolve(self, ref: str) -> tuple[str, Descriptor]:
        """Resolve ``ref`` to (its normalized name, the root descriptor)."""
        r = reference.parse(ref)
        if not r.tag and not r.digest:
            raise errdefs.InvalidArgument(f"invalid reference {ref!r}: object required (a tag or a digest)")
        eps = [e for e in self._endpoints(r) if e.can(RESOLVE)]
        if not eps:
            raise errdefs.NotFound(f"{ref}: no resolver endpoints configured for {r.domain}")
        obj = r.digest or r.tag
        path = f"/{r.path}/manifests/{obj}"
        accept = {"Accept": ", ".join(mt.MANIFEST_ACCEPT) + ", */*;q=0.8"}
        scopes = (scope_for(r.path, "pull"),)
        errors: list[errdefs.ContainerdError] = []
        for ep in eps:
            try:
                desc = await self._resolve_at(ep, path, r, accept, scopes)
            except (errdefs.NotFound, errdefs.Unavailable) as exc:
                errors.append(exc)
                continue
            return str(r), desc
        if errors and all(isinstance(e, errdefs.NotFound) for e in errors):
            raise errdefs.NotFound(f"failed to resolve reference {ref!r}: {ref}: not found")
        raise type(errors[-1])(f"failed to resolve reference {ref!r}: {errors[-1]}")

    async def _resolve_at(self, ep: Endpoint, path: str, r: reference.Reference, accept: dict[str, str],
                          scopes: Sequence[str]) -> Descriptor:
        resp = await self.http.request(ep, "HEAD", path, scopes=scopes, headers=accept)
        if resp.status_code == 404:
            raise errdefs.NotFound(f"{ep.base_url}{path}: not found")
        head_ok = resp.status_code == 200
        ctype = mt.base(resp.headers.get("content-type", "")) if head_ok else ""
        dgst = resp.headers.get("docker-content-digest", "") if head_ok else ""
        size_s = resp.headers.get("content-length", "") if head_ok else ""
        if r.digest:
            if dgst and dgst != r.digest:
                raise errdefs.FailedPrecondition(
                    f"{r}: the registry answered digest {dgst} for a request by digest {r.digest}")
            dgst = r.digest
        if head_ok and dgst and size_s.isdigit() and _usable_type(ctype):
            size = int(size_s)
            _check_type(ctype, str(r))
            if size > MAX_MANIFEST_SIZE:
                raise errdefs.InvalidArgument(
                    f"{r}: manifest is too large: {size} bytes exceeds the {MAX_MANIFEST_SIZE}-byte limit")
            digests.validate(dgst)
            return Descriptor(ctype, dgst, size)
        if not head_ok and resp.status_code not in (405, 400):
            raise status_error(resp, f"HEAD {ep.base_url}{path}")
        # HEAD was not enough: GET it (bounded) and compute what is missing
        async with self.http.stream(ep, "GET", path, scopes=scopes, headers=accept) as g:
            if g.status_code == 404:
                raise errdefs.NotFound(f"{ep.base_url}{path}: not found")
            if g.status_code != 200:
                # a small error body says why (registry JSON errors, Go's hint for HTTP on a TLS port)
                raise status_error(g, f"GET {ep.base_url}{path}", body=await read_error_body(g))
            cl = g.headers.get("content-length", "")
            if cl.isdigit() and int(cl) > MAX_MANIFEST_SIZE:
                raise errdefs.InvalidArgument(
                    f"{r}: manifest is too large: {cl} bytes exceeds the {MAX_MANIFEST_SIZE}-byte limit")
            buf = bytearray()
            try:
                async for chunk in g.aiter_raw():
                    buf.extend(chunk)
                    if len(buf) > MAX_MANIFEST_SIZE:
                        raise errdefs.InvalidArgument(
                            f"{r}: manifest is too large: more than {MAX_MANIFEST_SIZE} bytes")
            except httpx.HTTPError as exc:
                raise errdefs.Unavailable(f"GET {ep.base_url}{path}: {exc}") from exc
            ctype = mt.base(g.headers.get("content-type", ""))
        data = bytes(buf)
        if not _usable_type(ctype):
            ctype = detect_media_type(data)
        _check_type(ctype, str(r))
        actual = digests.from_bytes(data, dgst.split(":", 1)[0] if dgst else digests.CANONICAL)
        if dgst and actual != dgst:
            raise errdefs.FailedPrecondition(
                f"{r}: manifest digest mismatch: the registry named {dgst}, the content hashes to {actual}")
        return Descriptor(ctype, actual, len(data))

    def fetcher(self, ref: str) -> Fetcher:
        r = reference.parse(ref)
        return Fetcher(self.http, self._endpoints(r), r.path)

    def pusher(self, ref: str) -> Pusher:
        r = reference.parse(ref)
        return Pusher(self.http, self._endpoints(r), r.path, r.tag)


def _usable_type(ctype: str) -> bool:
    return bool(ctype) and ctype not in ("application/json", "text/plain", "application/octet-stream")


def _check_type(ctype: str, ref: str) -> None:
    if mt.is_schema1(ctype):
        raise errdefs.InvalidArgument(
            f"{ref}: Docker schema 1 manifests are not supported (deprecated since 2017): "
            f"push the image again with a current tool to get a schema 2 / OCI manifest")
    if not (mt.is_manifest(ctype) or mt.is_index(ctype)):
        raise errdefs.InvalidArgument(f"{ref}: unknown manifest media type {ctype!r}")
