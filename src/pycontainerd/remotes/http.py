"""HTTP plumbing shared by the fetcher and pusher: endpoints, auth, retries, error messages.

One ``RegistryHTTP`` per resolver keeps one ``httpx.AsyncClient`` per TLS configuration
(HTTP/1.1 keep-alive pools shared by every repository and task) and one ``Authorizer``.
``request`` sends to one endpoint and handles, in this order:

- 401: record the challenge and retry once with credentials / a token for the scopes;
- connection errors, 429 and 5xx: retry with exponential backoff (``RETRIES`` attempts),
  except TLS failures (an untrusted certificate, a missing client certificate, TLS spoken
  to a plain-HTTP server), which no retry fixes: they fail at once with what to configure;
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


async def keep_bodies_encoded(resp: httpx.Response) -> None:
    """Response hook: httpx never decodes a body.  Its gzip / zstd decoders have no output
    bound (a few KiB of zstd can expand to gigabytes, decoded in one go and then kept whole
    by ``aread``), and a registry or token server is untrusted.  We ask for ``identity``;
    whatever comes encoded anyway stays as sent: blobs and manifests are read raw and
    digest-checked, a compressed JSON body fails to parse."""
    if "content-encoding" in resp.headers:
        del resp.headers["content-encoding"]


def registry_error(resp: httpx.Response, raw: bytes | None = None) -> str:
    """The registry's error text from its JSON body (``{"errors": [{"code", "message"}]}``), if any."""
    try:
        body = json.loads(raw) if raw is not None else resp.json()
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


async def read_error_body(resp: httpx.Response, limit: int = 64 << 10) -> bytes | None:
    """The body of a streamed error response for ``status_error(body=)``, if small (else None)."""
    cl = resp.headers.get("content-length", "")
    if cl.isdigit() and int(cl) > limit:
        return None
    buf = bytearray()
    try:
        async for chunk in resp.aiter_bytes():
            buf.extend(chunk)
            if len(buf) > limit:
                return None
    except (httpx.HTTPError, ssl.SSLError):
        return None
    return bytes(buf)


def status_error(resp: httpx.Response, what: str, *, body: bytes | None = None) -> errdefs.ContainerdError:
    """Map an unexpected HTTP status to an error kind with the registry's own explanation.

    ``body``: the error body of a streamed response (``read_error_body``)."""
    detail = registry_error(resp, body)
    if not detail and resp.status_code == 400 and resp.url.scheme == "http":
        try:
            text = body.decode(errors="replace") if body is not None else resp.text
        except httpx.ResponseNotRead:
            text = ""
        if "HTTP request to an HTTPS server" in text:  # Go's net/http answer to plain HTTP on a TLS port
            detail = f"{resp.url.netloc.decode()} speaks HTTPS: drop --plain-http (or use an https:// endpoint)"
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


def tls_problem(exc: BaseException, ep: Endpoint) -> str | None:
    """What to tell the user when ``exc`` (from a request to ``ep``) is a TLS failure, else None."""
    chain: list[BaseException] = []
    e: BaseException | None = exc
    while e is not None and len(chain) < 10:
        chain.append(e)
        e = e.__cause__ or e.__context__
    text = " ".join(str(x) for x in chain)
    verify = next((x for x in chain if isinstance(x, ssl.SSLCertVerificationError)), None)
    hosts_toml = f"<hosts-dir>/{ep.host}/hosts.toml"
    if verify is not None or "CERTIFICATE_VERIFY_FAILED" in text:
        reason = (verify.verify_message if verify is not None else "") or "certificate verify failed"
        return (f"tls: certificate verify failed for {ep.host}: {reason}; trust the registry's CA with "
                f"--hosts-dir (ca = \"/path/to/ca.pem\" in {hosts_toml}) or skip verification with "
                f"-k/--skip-verify")
    if any(m in text for m in ("CERTIFICATE_REQUIRED", "SSLV3_ALERT_BAD_CERTIFICATE", "TLSV1_ALERT_UNKNOWN_CA",
                               "SSLV3_ALERT_HANDSHAKE_FAILURE")):
        return (f"tls: {ep.host} refused the connection: it requires a client certificate it trusts; "
                f"add client = [[\"/path/to/cert.pem\", \"/path/to/key.pem\"]] to {hosts_toml} and pass "
                f"--hosts-dir")
    if "WRONG_VERSION_NUMBER" in text or "record layer failure" in text:
        return f"tls: {ep.host} does not speak TLS (a plain-HTTP registry?); use --plain-http"
    return None


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
                    try:
                        ctx.load_verify_locations(cafile=f)
                    except (OSError, ssl.SSLError) as exc:
                        raise errdefs.InvalidArgument(f"registry {ep.host}: cannot load CA {f}: {exc}") from exc
                for cert, key_file in ep.client:
                    try:
                        ctx.load_cert_chain(cert, key_file or None)
                    except (OSError, ssl.SSLError) as exc:
                        raise errdefs.InvalidArgument(
                            f"registry {ep.host}: cannot load client certificate {cert} (key {key_file or cert}): "
                            f"{exc}") from exc
                verify = ctx
            c = httpx.AsyncClient(
                verify=verify, follow_redirects=True, timeout=TIMEOUT, http2=False,
                limits=httpx.Limits(max_connections=32, max_keepalive_connections=16, keepalive_expiry=30),
                headers={"Accept-Encoding": "identity", **self.headers},
                event_hooks={"response": [keep_bodies_encoded]},
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
            except (httpx.TransportError, ssl.SSLError) as exc:
                # (a TLS alert arriving with the response, e.g. "certificate required" after a
                # TLS 1.3 handshake, comes through httpx unwrapped as ssl.SSLError)
                problem = tls_problem(exc, ep)
                if problem is not None:
                    raise errdefs.FailedPrecondition(f"{method} {target}: {problem}") from exc
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


