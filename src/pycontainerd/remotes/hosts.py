"""Which endpoints serve a registry host: containerd's hosts.toml layout and CRI mirrors (pure).

Layout (``ctr --hosts-dir``, CRI ``config_path``)::

    <config_path>/<host>/hosts.toml          e.g. docker.io/, localhost_5000_/ or localhost:5000/, _default/

    server = "https://registry-1.docker.io"  # the upstream, tried last (default: https://<host>)
    [host."https://mirror.example.com"]      # tried first, in file order
      capabilities = ["pull", "resolve"]     # default pull, resolve, push
      ca = "/etc/certs/mirror.pem"           # or a list
      client = [["/etc/certs/c.cert", "/etc/certs/c.key"]]   # or "c.pem" / ["a.pem", "b.pem"]
      skip_verify = false
      header = { x-custom = "v" }            # values: string or list of strings
      override_path = true                   # the URL path is the API root (no "/v2" appended)

A host given without scheme gets ``https://``.  Without a hosts.toml the host itself is
the only endpoint (``docker.io`` → ``registry-1.docker.io``) with every capability, and
``--plain-http`` makes its scheme ``http``.

CRI's older ``[plugins."io.containerd.grpc.v1.cri".registry.mirrors."docker.io"] endpoint
= [...]`` is the same idea: ``from_mirrors`` turns the endpoint list (and
``registry.configs.<host>.tls``) into endpoints, the upstream appended last.
"""

from __future__ import annotations

import os
import posixpath
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from .. import errdefs

PULL = "pull"
RESOLVE = "resolve"
PUSH = "push"
ALL_CAPABILITIES = frozenset({PULL, RESOLVE, PUSH})


@dataclass(frozen=True)
class Endpoint:
    """One registry endpoint: where to send requests, what it may be used for, how to connect."""

    scheme: str
    host: str
    path: str = "/v2"
    capabilities: frozenset[str] = ALL_CAPABILITIES
    ca: tuple[str, ...] = ()
    client: tuple[tuple[str, str], ...] = ()
    skip_verify: bool | None = None
    header: tuple[tuple[str, tuple[str, ...]], ...] = ()
    mirror: bool = False

    @property
    def base_url(self) -> str:
        return f"{self.scheme}://{self.host}{self.path}"

    def can(self, capability: str) -> bool:
        return capability in self.capabilities

    def headers(self) -> dict[str, str]:
        return {k: ", ".join(v) for k, v in self.header}

    @property
    def is_local(self) -> bool:
        h = self.host.rsplit(":", 1)[0] if not self.host.startswith("[") else self.host.split("]")[0][1:]
        return h in ("localhost", "127.0.0.1", "::1")


def host_directory(host: str) -> str:
    """containerd writes ``host:port`` as ``host_port_`` in directory names."""
    i = host.rfind(":")
    if i > 0:
        return f"{host[:i]}_{host[i + 1:]}_"
    return host


def host_paths(root: str, host: str) -> list[str]:
    """Candidate directories for ``host``, best first (the port-mangled name, the host, ``_default``)."""
    out = []
    mangled = host_directory(host)
    if mangled != host:
        out.append(os.path.join(root, mangled))
    out.append(os.path.join(root, host))
    out.append(os.path.join(root, "_default"))
    return out


def find_host_dir(root: str, host: str) -> str | None:
    for p in host_paths(root, host):
        if os.path.isdir(p):
            return p
    return None


def _abs(p: str, base: str) -> str:
    return p if os.path.isabs(p) else os.path.join(base, p)


def _str_list(v: Any, what: str) -> list[str]:
    if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
        raise errdefs.InvalidArgument(f"hosts.toml: invalid type for {what}: expected a string or a list of strings")
    return list(v)


def _parse_host(server: str, base_dir: str, cfg: Mapping[str, Any]) -> Endpoint:
    scheme = host = path = ""
    override = bool(cfg.get("override_path", False))
    if server:
        if not server.startswith("http"):
            server = "https://" + server
        u = urlsplit(server)
        if not u.netloc:
            raise errdefs.InvalidArgument(f"hosts.toml: unable to parse server {server!r}")
        scheme, host = u.scheme, u.netloc
        if u.path:
            path = posixpath.normpath(u.path)
            if not path.endswith("/v2") and not override:
                path += "/v2"
        elif not override:
            path = "/v2"
    caps_raw = cfg.get("capabilities")
    if caps_raw:
        caps = set()
        for c in _str_list(caps_raw, "capabilities"):
            c = c.lower()
            if c not in ALL_CAPABILITIES:
                raise errdefs.InvalidArgument(f"hosts.toml: unknown capability {c!r}")
            caps.add(c)
        capabilities = frozenset(caps)
    else:
        capabilities = ALL_CAPABILITIES
    ca: list[str] = []
    ca_raw = cfg.get("ca")
    if isinstance(ca_raw, str):
        ca = [_abs(ca_raw, base_dir)]
    elif ca_raw is not None:
        ca = [_abs(p, base_dir) for p in _str_list(ca_raw, "ca")]
    pairs: list[tuple[str, str]] = []
    cl = cfg.get("client")
    if isinstance(cl, str):
        pairs = [(_abs(cl, base_dir), "")]
    elif isinstance(cl, list):
        for item in cl:
            if isinstance(item, str):
                pairs.append((_abs(item, base_dir), ""))
            elif isinstance(item, list) and len(item) == 2 and all(isinstance(x, str) for x in item):
                pairs.append((_abs(item[0], base_dir), _abs(item[1], base_dir)))
            else:
                raise errdefs.InvalidArgument(f"hosts.toml: invalid pair {item!r} for \"client\"")
    elif cl is not None:
        raise errdefs.InvalidArgument(f"hosts.toml: invalid type {type(cl).__name__} for \"client\"")
    headers: list[tuple[str, tuple[str, ...]]] = []
    hdr = cfg.get("header") or {}
    if not isinstance(hdr, dict):
        raise errdefs.InvalidArgument("hosts.toml: header must be a table")
    for k, v in hdr.items():
        if isinstance(v, str):
            headers.append((k, (v,)))
        else:
            headers.append((k, tuple(_str_list(v, f"header {k!r}"))))
    skip = cfg.get("skip_verify")
    return Endpoint(scheme=scheme, host=host, path=path, capabilities=capabilities, ca=tuple(ca),
                    client=tuple(pairs), skip_verify=bool(skip) if skip is not None else None,
                    header=tuple(headers))


def parse_hosts_toml(text: str, base_dir: str = "/") -> list[Endpoint]:
    """The endpoints a hosts.toml describes: its ``[host]`` tables in order, then ``server``.

    The last entry has an empty ``host`` when the file names no ``server``; ``configure``
    fills it in with the registry host itself.
    """
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise errdefs.InvalidArgument(f"hosts.toml: failed to parse TOML: {exc}") from None
    out: list[Endpoint] = []
    tables = doc.get("host") or {}
    if not isinstance(tables, dict):
        raise errdefs.InvalidArgument("hosts.toml: invalid `host` tree")
    for name, cfg in tables.items():  # tomllib keeps file order
        if not isinstance(cfg, dict):
            raise errdefs.InvalidArgument(f"hosts.toml: host {name!r} must be a table")
        out.append(_parse_host(name, base_dir, cfg))
    out = [_mark_mirror(e) for e in out]
    server = doc.get("server", "")
    if not isinstance(server, str):
        raise errdefs.InvalidArgument("hosts.toml: server must be a string")
    out.append(_parse_host(server, base_dir, doc))
    return out


def _mark_mirror(e: Endpoint) -> Endpoint:
    return Endpoint(e.scheme, e.host, e.path, e.capabilities, e.ca, e.client, e.skip_verify, e.header, True)


def _fill_default(e: Endpoint, host: str, default_scheme: str) -> Endpoint:
    if host == "docker.io":
        scheme, h = "https", "registry-1.docker.io"
    else:
        scheme, h = default_scheme or "https", host
    return Endpoint(scheme, h, "/v2", ALL_CAPABILITIES, e.ca, e.client, e.skip_verify, e.header, False)


def configure(host: str, *, hosts_dir: str | None = None, plain_http: bool = False,
              skip_verify: bool | None = None) -> list[Endpoint]:
    """The ordered endpoints for registry ``host`` (e.g. ``docker.io``, ``localhost:5000``)."""
    default_scheme = "http" if plain_http else "https"
    endpoints: list[Endpoint] | None = None
    if hosts_dir:
        d = find_host_dir(hosts_dir, host)
        if d is not None:
            f = os.path.join(d, "hosts.toml")
            try:
                with open(f, encoding="utf-8") as fh:
                    text = fh.read()
            except FileNotFoundError:
                text = ""
            except OSError as exc:
                raise errdefs.from_oserror(exc, "read hosts.toml") from exc
            if text.strip():
                endpoints = parse_hosts_toml(text, d)
            else:
                endpoints = [Endpoint("", "", "/v2", ca=tuple(_cert_files(d, ".crt")),
                                      client=tuple(_client_pairs(d)))]
    if endpoints is None:
        endpoints = [Endpoint("", "")]
    if endpoints and endpoints[-1].host == "":
        endpoints[-1] = _fill_default(endpoints[-1], host, default_scheme)
    if skip_verify is not None:
        endpoints = [Endpoint(e.scheme, e.host, e.path, e.capabilities, e.ca, e.client,
                              skip_verify if e.skip_verify is None else e.skip_verify, e.header, e.mirror)
                     for e in endpoints]
    return endpoints


def _cert_files(d: str, suffix: str) -> list[str]:
    try:
        return sorted(os.path.join(d, f) for f in os.listdir(d) if f.endswith(suffix))
    except OSError:
        return []


def _client_pairs(d: str) -> list[tuple[str, str]]:
    out = []
    for cert in _cert_files(d, ".cert"):
        key = cert[: -len(".cert")] + ".key"
        out.append((cert, key if os.path.exists(key) else ""))
    return out


@dataclass
class MirrorConfig:
    """CRI's ``registry.mirrors.<host>.endpoint`` list and ``registry.configs.<host>.tls``."""

    endpoints: list[str] = field(default_factory=list)
    skip_verify: bool | None = None
    ca_file: str = ""
    cert_file: str = ""
    key_file: str = ""


def from_mirrors(host: str, mirrors: Mapping[str, Sequence[str]],
                 tls: Mapping[str, MirrorConfig] | None = None) -> list[Endpoint]:
    """Endpoints from CRI mirror config: the host's mirrors (or ``*``'s), then the upstream itself."""
    urls = list(mirrors.get(host) or mirrors.get("*") or [])
    out: list[Endpoint] = []
    for u in urls:
        if "://" not in u:
            u = "https://" + u
        parts = urlsplit(u)
        path = posixpath.normpath(parts.path) if parts.path else ""
        if not path.endswith("/v2"):
            path = (path.rstrip("/") if path != "/" else "") + "/v2"
        cfg = (tls or {}).get(parts.netloc)
        out.append(_tls(Endpoint(parts.scheme, parts.netloc, path, frozenset({PULL, RESOLVE}), mirror=True), cfg))
    hostname = host.rsplit(":", 1)[0] if not host.startswith("[") else host.split("]")[0][1:]
    local = hostname in ("localhost", "127.0.0.1", "::1")
    upstream = _fill_default(Endpoint("", ""), host, "http" if local else "https")
    if not any(e.host == upstream.host and e.scheme == upstream.scheme for e in out):
        out.append(_tls(upstream, (tls or {}).get(host)))
    return out


def _tls(e: Endpoint, cfg: MirrorConfig | None) -> Endpoint:
    if cfg is None:
        return e
    client = ((cfg.cert_file, cfg.key_file),) if cfg.cert_file else ()
    return Endpoint(e.scheme, e.host, e.path, e.capabilities, (cfg.ca_file,) if cfg.ca_file else (),
                    client, cfg.skip_verify, e.header, e.mirror)
