"""HTTP plumbing shared by the fetcher and pusher: endpoints, auth, retries, error messages.

One ``RegistryHTTP`` per resolver keeps one ``httpx.AsyncClient`` per TLS configuration
(HTTP/1.1 keep-alive pools shared by every repository and task) and one ``Authorizer``.
``request`` sends to one endpoint and handles, in this order:

- 401: record the challenge and retry once with credentials / a token for the scopes;
- connection errors, 429 and 5xx: retry with exponential backoff (``RETRIES`` attempts);
- anything else is returned to the caller, which decides what a 404 means.
"""

from __future__ import annotations

import asyncio
import json
import ssl
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any

import httpx

from .. import errdefs
from .auth import Authorizer, Credentials
from .hosts import Endpoint

RETRIES = 4
BACKOFF_START = 0.1
BACKOFF_MAX = 2.0
USER_AGENT = "pycontainerd/0.1"
TRANSIENT_STATUS = frozenset({429, 500, 502, 503, 504})
TIMEOUT = httpx.Timeout(30.0, read=60.0)


def registry_error(resp: httpx.Response) -> str:
    """The registry's error text from its JSON body (``{"errors": [{"code", "message"}]}``), if any."""
    try:
        body = resp.json()
    except (ValueError, UnicodeDecodeError, httpx.ResponseNotRead):
        return ""
    errs = body.get("errors") if isinstance(body, dict) else None
    if not isinstance(errs, list):
        return ""
    parts = []
    for e in errs:
        if isinstance(e, dict):
            code, msg = e.get("code", ""), e.get("message", "")
            parts.append(f"{code}: {msg}" if code and msg else str(code or msg))
    return "; ".join(p for p in parts if p)


def status_error(resp: httpx.Response, what: str) -> errdefs.ContainerdError:
    """Map an unexpected HTTP status to an error kind with the registry's own explanation."""
    detail = registry_error(resp)
    text = f"{what}: unexpected status {resp.status_code} {resp.reason_phrase}" + (f": {detail}" if detail else "")
    if resp.status_code == 404:
        return errdefs.NotFound(text)
    if resp.status_code in (401, 403):
        return errdefs.PermissionDenied(text)
    if resp.status_code in (400, 405, 411, 413, 415, 416):
        return errdefs.InvalidArgument(text)
    if resp.status_code == 429 or resp.status_code >= 500:
        return errdefs.Unavailable(text)
    return errdefs.Unknown(text)


class RegistryHTTP:
    def __init__(self, credentials: Credentials | None = None, *, retries: int = RETRIES,
                 headers: Mapping[str, str] | None = None) -> None:
        self.authorizer = Authorizer(credentials)
        self.retries = retries
        self.headers = {"User-Agent": USER_AGENT, **(headers or {})}
        self._clients: dict[tuple[Any, ...], httpx.AsyncClient] = {}

    def client(self, ep: Endpoint) -> httpx.AsyncClient:
        key = (ep.ca, ep.client, ep.skip_verify)
        c = self._clients.get(key)
        if c is None:
            verify: ssl.SSLContext | bool = True
            if ep.skip_verify:
                verify = False
            elif ep.ca or ep.client:
                ctx = ssl.create_default_context()
                for f in ep.ca:
                    ctx.load_verify_locations(cafile=f)
                for cert, key_file in ep.client:
                    ctx.load_cert_chain(cert, key_file or None)
                verify = ctx
            c = httpx.AsyncClient(
                verify=verify, follow_redirects=True, timeout=TIMEOUT, http2=False,
                limits=httpx.Limits(max_connections=32, max_keepalive_connections=16, keepalive_expiry=30),
                headers=self.headers,
            )
            self._clients[key] = c
            if self.authorizer._client is None:
                self.authorizer.bind(c)
        return c

    async def aclose(self) -> None:
        clients, self._clients = list(self._clients.values()), {}
        for c in clients:
            await c.aclose()

    async def request(self, ep: Endpoint, method: str, path: str, *, scopes: Sequence[str] = (),
                      headers: Mapping[str, str] | None = None, params: Any = None,
                      content: bytes | None = None, url: str | None = None, retry: bool = True,
                      ) -> httpx.Response:
        """Send a request (body fully read) with auth and retries; returns any non-401 response."""
        async with self.stream(ep, method, path, scopes=scopes, headers=headers, params=params,
                               content=content, url=url, retry=retry) as resp:
            await resp.aread()
            return resp

    @asynccontextmanager
    async def stream(self, ep: Endpoint, method: str, path: str, *, scopes: Sequence[str] = (),
                     headers: Mapping[str, str] | None = None, params: Any = None,
                     content: bytes | None = None, url: str | None = None, retry: bool = True,
                     ) -> AsyncIterator[httpx.Response]:
        """Like ``request`` but the body is left to the caller to stream."""
        client = self.client(ep)
        target = url or (ep.base_url + path)
        attempt = 0
        auth_retries = 0
        delay = BACKOFF_START
        last: BaseException | None = None
        while True:
            hdrs = {**ep.headers(), **(headers or {})}
            authz = await self.authorizer.authorization(ep.host, scopes)
            if authz:
                hdrs["Authorization"] = authz
            req = client.build_request(method, target, headers=hdrs, params=params, content=content)
            try:
                resp = await client.send(req, stream=True)
            except httpx.TransportError as exc:
                last = exc
                attempt += 1
                if not retry or attempt >= self.retries:
                    raise errdefs.Unavailable(f"{method} {target}: {type(exc).__name__}: {exc or 'connection failed'}"
                                              ) from exc
                await asyncio.sleep(delay)
                delay = min(delay * 2, BACKOFF_MAX)
                continue
            if resp.status_code == 401:
                await resp.aread()
                await resp.aclose()
                auth_retries += 1
                if auth_retries > 2 or not self.authorizer.on_unauthorized(ep.host, resp, bool(authz)):
                    raise self.authorizer.denied(ep.host, scopes)
                continue
            if resp.status_code in TRANSIENT_STATUS and retry and attempt + 1 < self.retries:
                await resp.aread()
                await resp.aclose()
                attempt += 1
                wait = delay
                ra = resp.headers.get("retry-after", "")
                if ra.isdigit():
                    wait = min(float(ra), BACKOFF_MAX * 2)
                await asyncio.sleep(wait)
                delay = min(delay * 2, BACKOFF_MAX)
                continue
            try:
                yield resp
            finally:
                await resp.aclose()
            return
        raise AssertionError(last)  # pragma: no cover


def join_location(base: str, location: str) -> str:
    """Resolve an upload Location header (often relative) against the request URL."""
    return str(httpx.URL(base).join(location))


def decode_json(data: bytes, what: str) -> Any:
    try:
        return json.loads(data)
    except ValueError as exc:
        raise errdefs.InvalidArgument(f"{what}: invalid JSON: {exc}") from None
