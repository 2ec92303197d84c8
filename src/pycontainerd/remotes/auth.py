"""Registry authentication: WWW-Authenticate challenges, Basic auth and the Bearer token flow.

A registry answers an unauthenticated request with ``401`` and one or more challenges::

    WWW-Authenticate: Bearer realm="https://auth.example/token",service="registry.example",
                      scope="repository:library/busybox:pull"
    WWW-Authenticate: Basic realm="registry"

``parse_challenges`` (pure) reads them.  ``Authorizer`` remembers each host's challenge
and then:

- **Basic**: sends ``Authorization: Basic base64(user:password)``;
- **Bearer**: gets a token from ``realm`` for ``service`` and the scopes the request needs
  (``repository:<repo>:pull`` or ``pull,push``) — a ``GET`` with Basic credentials (or
  anonymously), or, when the secret is an identity/refresh token (empty user name), an
  OAuth2 ``POST`` form ``grant_type=refresh_token``.  Tokens are cached per host and scope
  set until they expire.

Credentials come from a callback ``host -> (username, secret) | None`` so the CLI can
take ``--user``, a config file or a helper.  A second 401 after fresh credentials were
sent means they are wrong: ``PermissionDenied`` names the host and the scope.
"""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import httpx

from .. import errdefs

Credentials = Callable[[str], "tuple[str, str] | None"]
"""host → (username, secret); an empty username with a secret means an identity (refresh) token."""

DEFAULT_TOKEN_TTL = 60.0
CLIENT_ID = "containerd-client"


@dataclass(frozen=True)
class Challenge:
    scheme: str  # lowercase: "bearer", "basic", ...
    params: dict[str, str] = field(default_factory=dict)


def _skip_ws(s: str, i: int) -> int:
    while i < len(s) and s[i] in " \t":
        i += 1
    return i


_TOKEN_CHARS = frozenset("!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ/:")


def _token(s: str, i: int) -> tuple[str, int]:
    j = i
    while j < len(s) and s[j] in _TOKEN_CHARS:
        j += 1
    return s[i:j], j


def _quoted(s: str, i: int) -> tuple[str, int]:
    # s[i] == '"'
    out = []
    i += 1
    while i < len(s):
        c = s[i]
        if c == "\\" and i + 1 < len(s):
            out.append(s[i + 1])
            i += 2
            continue
        if c == '"':
            return "".join(out), i + 1
        out.append(c)
        i += 1
    return "".join(out), i  # unterminated: take what there is


def parse_challenges(headers: Iterable[str]) -> list[Challenge]:
    """Parse WWW-Authenticate header values into challenges (RFC 7235, leniently)."""
    out: list[Challenge] = []
    for value in headers:
        i = 0
        current: Challenge | None = None
        while i < len(value):
            i = _skip_ws(value, i)
            if i >= len(value):
                break
            if value[i] == ",":
                i += 1
                continue
            word, j = _token(value, i)
            if not word:
                i += 1  # garbage: skip a character
                continue
            k = _skip_ws(value, j)
            if k < len(value) and value[k] == "=" and current is not None:
                # a parameter of the current challenge
                k = _skip_ws(value, k + 1)
                if k < len(value) and value[k] == '"':
                    v, k = _quoted(value, k)
                else:
                    v, k = _token(value, k)
                current.params[word.lower()] = v
                i = k
                continue
            # a new challenge's scheme
            current = Challenge(word.lower(), {})
            out.append(current)
            i = j
    return out


@dataclass
class _Token:
    value: str
    expires: float


@dataclass
class _HostAuth:
    challenge: Challenge
    tokens: dict[tuple[str, ...], _Token] = field(default_factory=dict)


def scope_for(repository: str, actions: str = "pull") -> str:
    return f"repository:{repository}:{actions}"


class Authorizer:
    """Per-client auth state, shared by every request to every host (safe for concurrent tasks)."""

    def __init__(self, credentials: Credentials | None = None, client: httpx.AsyncClient | None = None,
                 header: dict[str, str] | None = None) -> None:
        self.credentials = credentials
        self._client = client
        self._header = dict(header or {})
        self._hosts: dict[str, _HostAuth] = {}
        self._locks: dict[tuple[str, tuple[str, ...]], asyncio.Lock] = {}

    def bind(self, client: httpx.AsyncClient) -> None:
        self._client = client

    def _creds(self, host: str) -> tuple[str, str] | None:
        if self.credentials is None:
            return None
        return self.credentials(host)

    def has_challenge(self, host: str) -> bool:
        return host in self._hosts

    async def authorization(self, host: str, scopes: Iterable[str]) -> str | None:
        """The Authorization header value for a request to ``host`` needing ``scopes``, if any."""
        ha = self._hosts.get(host)
        if ha is None:
            return None
        if ha.challenge.scheme == "basic":
            creds = self._creds(host)
            if not creds or not creds[0]:
                return None
            raw = f"{creds[0]}:{creds[1]}".encode()
            return "Basic " + base64.b64encode(raw).decode()
        if ha.challenge.scheme == "bearer":
            want = set(scopes)
            if ha.challenge.params.get("scope"):
                want.update(ha.challenge.params["scope"].split(" "))
            key = tuple(sorted(want))
            lock = self._locks.setdefault((host, key), asyncio.Lock())
            async with lock:
                tok = ha.tokens.get(key)
                if tok is None or tok.expires <= time.monotonic():
                    tok = await self._fetch_token(host, ha.challenge, list(key))
                    ha.tokens[key] = tok
            return "Bearer " + tok.value
        return None

    def on_unauthorized(self, host: str, response: httpx.Response, sent_auth: bool) -> bool:
        """Record a 401's challenge; True when retrying with (new) credentials may help."""
        chs = parse_challenges(response.headers.get_list("www-authenticate"))
        usable = [c for c in chs if c.scheme in ("bearer", "basic")]
        if not usable:
            raise errdefs.PermissionDenied(
                f"{host}: unauthorized ({response.status_code}) and no supported authentication scheme offered"
                f" (WWW-Authenticate: {response.headers.get('www-authenticate', '')!r})")
        ch = next((c for c in usable if c.scheme == "bearer"), usable[0])
        old = self._hosts.get(host)
        if old is not None and sent_auth:
            # we already authorized for this host; only an invalid_token error or new scope warrants a retry
            same_scope = old.challenge.params.get("scope") == ch.params.get("scope")
            if old.challenge.scheme == ch.scheme and same_scope and ch.params.get("error") != "invalid_token":
                return False
            old.tokens.clear()
        self._hosts[host] = _HostAuth(ch)
        if ch.scheme == "basic":
            creds = self._creds(host)
            return bool(creds and creds[0])
        return True

    def denied(self, host: str, scopes: Iterable[str]) -> errdefs.ContainerdError:
        creds = self._creds(host)
        ha = self._hosts.get(host)
        scheme = ha.challenge.scheme.capitalize() if ha else "?"
        if creds:
            return errdefs.PermissionDenied(
                f"{host}: authorization failed ({scheme}) for {' '.join(sorted(scopes)) or 'request'}: "
                f"the registry rejected the credentials for user {creds[0]!r}")
        return errdefs.PermissionDenied(
            f"{host}: authentication required ({scheme}) for {' '.join(sorted(scopes)) or 'request'}: "
            f"no credentials given (use --user USER[:PASSWORD])")

    async def _fetch_token(self, host: str, ch: Challenge, scopes: list[str]) -> _Token:
        if self._client is None:
            raise errdefs.FailedPrecondition("authorizer has no HTTP client")
        realm = ch.params.get("realm", "")
        if not realm.startswith(("http://", "https://")):
            raise errdefs.InvalidArgument(f"{host}: invalid Bearer challenge: realm {realm!r} is not a URL")
        service = ch.params.get("service", "")
        creds = self._creds(host)
        try:
            if creds and not creds[0] and creds[1]:
                data = {"grant_type": "refresh_token", "refresh_token": creds[1], "client_id": CLIENT_ID}
                if service:
                    data["service"] = service
                if scopes:
                    data["scope"] = " ".join(scopes)
                resp = await self._client.post(realm, data=data, headers=self._header)
            else:
                params: list[tuple[str, str | int | float | bool | None]] = []
                if service:
                    params.append(("service", service))
                params.extend(("scope", s) for s in scopes)
                auth = httpx.BasicAuth(creds[0], creds[1]) if creds and creds[0] else None
                resp = await self._client.get(realm, params=params, auth=auth, headers=self._header)
        except httpx.HTTPError as exc:
            raise errdefs.Unavailable(f"{host}: fetching a token from {realm}: {exc}") from exc
        if resp.status_code in (401, 403):
            who = f"user {creds[0]!r}" if creds and creds[0] else ("identity token" if creds else "anonymous")
            raise errdefs.PermissionDenied(
                f"{host}: token server {realm} refused {who} for {' '.join(scopes) or 'access'}"
                f" ({resp.status_code}): check the credentials")
        if resp.status_code >= 400:
            raise errdefs.Unavailable(f"{host}: token server {realm} answered {resp.status_code}")
        try:
            body = resp.json()
        except ValueError:
            raise errdefs.InvalidArgument(f"{host}: token server {realm} sent invalid JSON") from None
        value = body.get("token") or body.get("access_token") if isinstance(body, dict) else None
        if not isinstance(value, str) or not value:
            raise errdefs.InvalidArgument(f"{host}: token server {realm} sent no token")
        ttl = body.get("expires_in")
        ttl_f = float(ttl) if isinstance(ttl, int | float) and ttl > 0 else DEFAULT_TOKEN_TTL
        # renew a little early so a token does not expire in flight
        return _Token(value, time.monotonic() + max(ttl_f - 5, ttl_f / 2))


def credentials_from_config(configs: dict[str, dict[str, str]]) -> Credentials:
    """Credentials from CRI-style ``registry.configs.<host>.auth`` tables.

    Each entry may give ``username``/``password``, ``auth`` (base64 ``user:password``), or
    ``identitytoken`` (a refresh token, sent as an OAuth2 refresh grant).
    """

    def lookup(host: str) -> tuple[str, str] | None:
        cfg = configs.get(host)
        if cfg is None and host == "registry-1.docker.io":
            cfg = configs.get("docker.io")
        if not cfg:
            return None
        if cfg.get("identitytoken"):
            return ("", cfg["identitytoken"])
        if cfg.get("auth"):
            try:
                user, _, password = base64.b64decode(cfg["auth"]).decode().partition(":")
            except (ValueError, UnicodeDecodeError):
                raise errdefs.InvalidArgument(f"registry config for {host}: auth is not base64 user:password"
                                              ) from None
            return (user, password)
        if cfg.get("username"):
            return (cfg["username"], cfg.get("password", ""))
        return None

    return lookup
