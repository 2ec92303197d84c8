"""CNI results and errors: one typed model for every cniVersion (sans-IO).

A plugin answers ADD with a result on stdout in the cniVersion of its config.  The shapes:

- 0.1.0 / 0.2.0: ``ip4`` / ``ip6`` objects (``ip``, ``gateway``, ``routes``) and ``dns``;
  no interfaces.
- 0.3.0 / 0.3.1 / 0.4.0: ``interfaces`` (``name``, ``mac``, ``sandbox``), ``ips``
  (``version`` "4"/"6", ``address`` in CIDR form, ``gateway``, ``interface`` = index into
  ``interfaces``), ``routes`` (``dst``, ``gw``), ``dns``.
- 1.0.0 / 1.1.0: as 0.4.0 without the ``version`` of each IP (and a few optional fields).

:func:`parse_result` reads any of them into :class:`Result`; :meth:`Result.to_json` writes
one back in the version asked for (the ``prevResult`` handed to the next plugin of a list is
in the list's version).  A failed plugin prints ``{"code": N, "msg": ..., "details": ...}``
(:func:`parse_error`); codes 1-99 are the spec's, 100+ the plugin's own.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .. import errdefs
from .config import version_at_least, version_tuple

IPInterface = ipaddress.IPv4Interface | ipaddress.IPv6Interface
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

# the spec's well-known error codes
ERROR_CODES: Mapping[int, str] = {
    1: "incompatible CNI version",
    2: "unsupported field in network configuration",
    3: "container unknown or does not exist",
    4: "invalid necessary environment variables",
    5: "I/O failure",
    6: "failed to decode content",
    7: "invalid network config",
    11: "try again later",
}


@dataclass(frozen=True)
class Interface:
    name: str
    mac: str = ""
    sandbox: str = ""  # the netns path for an interface inside the pod; "" on the host
    mtu: int = 0


@dataclass(frozen=True)
class IPConfig:
    address: IPInterface  # address and prefix, e.g. 10.88.0.5/24
    gateway: IPAddress | None = None
    interface: int | None = None  # index into Result.interfaces

    @property
    def ip(self) -> IPAddress:
        return self.address.ip

    @property
    def version(self) -> int:
        return self.address.version


@dataclass(frozen=True)
class Route:
    dst: IPNetwork
    gw: IPAddress | None = None
    extra: Mapping[str, Any] = field(default_factory=dict, compare=False)  # mtu, advmss, priority, table, scope


@dataclass(frozen=True)
class DNS:
    nameservers: tuple[str, ...] = ()
    domain: str = ""
    search: tuple[str, ...] = ()
    options: tuple[str, ...] = ()

    def is_empty(self) -> bool:
        return not (self.nameservers or self.domain or self.search or self.options)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.nameservers:
            out["nameservers"] = list(self.nameservers)
        if self.domain:
            out["domain"] = self.domain
        if self.search:
            out["search"] = list(self.search)
        if self.options:
            out["options"] = list(self.options)
        return out


@dataclass(frozen=True)
class Result:
    """What a plugin (the last one of a list: the network) reports."""

    cni_version: str
    interfaces: tuple[Interface, ...] = ()
    ips: tuple[IPConfig, ...] = ()
    routes: tuple[Route, ...] = ()
    dns: DNS = field(default_factory=DNS)

    def interface_of(self, ip: IPConfig) -> Interface | None:
        if ip.interface is None or not 0 <= ip.interface < len(self.interfaces):
            return None
        return self.interfaces[ip.interface]

    def to_json(self, version: str | None = None) -> dict[str, Any]:
        """The result as the spec's JSON in ``version`` (default: its own)."""
        version = version or self.cni_version
        version_tuple(version)
        if not version_at_least(version, "0.3.0"):
            return self._to_legacy(version)
        out: dict[str, Any] = {"cniVersion": version}
        if self.interfaces:
            out["interfaces"] = [_iface_json(i) for i in self.interfaces]
        if self.ips:
            with_family = not version_at_least(version, "1.0.0")
            out["ips"] = [_ip_json(ip, with_family) for ip in self.ips]
        if self.routes:
            out["routes"] = [_route_json(r) for r in self.routes]
        out["dns"] = self.dns.to_json()
        return out

    def _to_legacy(self, version: str) -> dict[str, Any]:
        out: dict[str, Any] = {"cniVersion": version}
        for fam, key in ((4, "ip4"), (6, "ip6")):
            ips = [ip for ip in self.ips if ip.version == fam]
            if not ips:
                continue
            entry: dict[str, Any] = {"ip": str(ips[0].address)}
            if ips[0].gateway is not None:
                entry["gateway"] = str(ips[0].gateway)
            routes = [_route_json(r) for r in self.routes if r.dst.version == fam]
            if routes:
                entry["routes"] = routes
            out[key] = entry
        out["dns"] = self.dns.to_json()
        return out


def _iface_json(i: Interface) -> dict[str, Any]:
    out: dict[str, Any] = {"name": i.name}
    if i.mac:
        out["mac"] = i.mac
    if i.mtu:
        out["mtu"] = i.mtu
    if i.sandbox:
        out["sandbox"] = i.sandbox
    return out


def _ip_json(ip: IPConfig, with_family: bool) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if with_family:
        out["version"] = str(ip.version)
    out["address"] = str(ip.address)
    if ip.gateway is not None:
        out["gateway"] = str(ip.gateway)
    if ip.interface is not None:
        out["interface"] = ip.interface
    return out


def _route_json(r: Route) -> dict[str, Any]:
    out: dict[str, Any] = {"dst": str(r.dst)}
    if r.gw is not None:
        out["gw"] = str(r.gw)
    out.update(r.extra)
    return out


class _Bad(ValueError):
    pass


def _str(obj: Mapping[str, Any], key: str, default: str = "") -> str:
    v = obj.get(key, default)
    if v is None:
        return default
    if not isinstance(v, str):
        raise _Bad(f"{key} must be a string, got {v!r}")
    return v


def _strs(obj: Mapping[str, Any], key: str) -> tuple[str, ...]:
    v = obj.get(key)
    if v is None:
        return ()
    if not isinstance(v, list) or not all(isinstance(s, str) for s in v):
        raise _Bad(f"{key} must be a list of strings, got {v!r}")
    return tuple(v)


def _address(s: Any) -> IPInterface:
    if not isinstance(s, str) or "/" not in s:
        raise _Bad(f"invalid address {s!r} (want CIDR form)")
    try:
        return ipaddress.ip_interface(s)
    except ValueError as exc:
        raise _Bad(f"invalid address {s!r}") from exc


def _gateway(obj: Mapping[str, Any], key: str) -> IPAddress | None:
    v = obj.get(key)
    if v in (None, ""):
        return None
    try:
        return ipaddress.ip_address(v)
    except ValueError as exc:
        raise _Bad(f"invalid {key} {v!r}") from exc


def _route(obj: Any) -> Route:
    if not isinstance(obj, dict):
        raise _Bad(f"route must be an object, got {obj!r}")
    raw_dst = obj.get("dst")
    if not isinstance(raw_dst, str):
        raise _Bad(f"invalid route dst {raw_dst!r}")
    try:
        dst = ipaddress.ip_network(raw_dst, strict=False)
    except (ValueError, TypeError) as exc:
        raise _Bad(f"invalid route dst {obj.get('dst')!r}") from exc
    extra = {k: v for k, v in obj.items() if k not in ("dst", "gw")}
    return Route(dst=dst, gw=_gateway(obj, "gw"), extra=extra)


def _dns(obj: Any) -> DNS:
    if obj is None:
        return DNS()
    if not isinstance(obj, dict):
        raise _Bad(f"dns must be an object, got {obj!r}")
    return DNS(
        nameservers=_strs(obj, "nameservers"),
        domain=_str(obj, "domain"),
        search=_strs(obj, "search"),
        options=_strs(obj, "options"),
    )


def _list(obj: Mapping[str, Any], key: str) -> list[Any]:
    v = obj.get(key)
    if v is None:
        return []
    if not isinstance(v, list):
        raise _Bad(f"{key} must be a list, got {v!r}")
    return v


def _parse_current(obj: Mapping[str, Any], version: str) -> Result:
    interfaces = []
    for i in _list(obj, "interfaces"):
        if not isinstance(i, dict):
            raise _Bad(f"interface must be an object, got {i!r}")
        mtu = i.get("mtu", 0)
        interfaces.append(
            Interface(
                name=_str(i, "name"),
                mac=_str(i, "mac"),
                sandbox=_str(i, "sandbox"),
                mtu=mtu if isinstance(mtu, int) else 0,
            )
        )
    ips = []
    for ip in _list(obj, "ips"):
        if not isinstance(ip, dict):
            raise _Bad(f"ip must be an object, got {ip!r}")
        addr = _address(ip.get("address"))
        fam = ip.get("version")
        if fam not in (None, "") and str(fam) != str(addr.version):
            raise _Bad(f"ip {addr} has version {fam!r}")
        idx = ip.get("interface")
        if idx is not None and (not isinstance(idx, int) or isinstance(idx, bool)):
            raise _Bad(f"ip interface must be an index, got {idx!r}")
        if idx is not None and idx >= len(interfaces):
            raise _Bad(f"ip {addr} names interface {idx} of {len(interfaces)}")
        if idx is not None and idx < 0:
            idx = None  # -1: no interface (converted 0.2.0 results)
        ips.append(IPConfig(address=addr, gateway=_gateway(ip, "gateway"), interface=idx))
    return Result(
        cni_version=version,
        interfaces=tuple(interfaces),
        ips=tuple(ips),
        routes=tuple(_route(r) for r in _list(obj, "routes")),
        dns=_dns(obj.get("dns")),
    )


def _parse_legacy(obj: Mapping[str, Any], version: str) -> Result:
    ips: list[IPConfig] = []
    routes: list[Route] = []
    for key in ("ip4", "ip6"):
        entry = obj.get(key)
        if entry is None:
            continue
        if not isinstance(entry, dict):
            raise _Bad(f"{key} must be an object, got {entry!r}")
        ips.append(IPConfig(address=_address(entry.get("ip")), gateway=_gateway(entry, "gateway")))
        routes.extend(_route(r) for r in _list(entry, "routes"))
    return Result(cni_version=version, ips=tuple(ips), routes=tuple(routes), dns=_dns(obj.get("dns")))


def parse_result(data: bytes | str | Mapping[str, Any], config_version: str, *, what: str = "plugin") -> Result:
    """Read a result of any cniVersion; a result without ``cniVersion`` is in the config's."""
    try:
        obj: Any = json.loads(data) if isinstance(data, bytes | str) else data
    except (ValueError, UnicodeDecodeError) as exc:
        raise errdefs.Unknown(f"{what}: invalid JSON result: {exc}") from exc
    if not isinstance(obj, dict):
        raise errdefs.Unknown(f"{what}: result is not a JSON object: {str(obj)[:200]}")
    version = obj.get("cniVersion") or config_version
    try:
        if not isinstance(version, str):
            raise _Bad(f"invalid cniVersion {version!r}")
        version_tuple(version)
        if version_at_least(version, "0.3.0"):
            return _parse_current(obj, version)
        return _parse_legacy(obj, version)
    except (_Bad, errdefs.InvalidArgument) as exc:
        raise errdefs.Unknown(f"{what}: invalid result (cniVersion {version}): {exc}") from exc


@dataclass(frozen=True)
class PluginErrorInfo:
    """A plugin's error: ``{"cniVersion", "code", "msg", "details"}``."""

    code: int
    msg: str
    details: str = ""

    def describe(self) -> str:
        known = ERROR_CODES.get(self.code)
        code = f"code {self.code}" + (f" ({known})" if known else "")
        text = self.msg + (f"; {self.details}" if self.details else "")
        return f"{text} [{code}]"


def parse_error(data: bytes) -> PluginErrorInfo | None:
    """The error a failed plugin printed on stdout, or None if it printed none."""
    try:
        obj = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        return None
    if not isinstance(obj, dict) or "code" not in obj or "msg" not in obj:
        return None
    code = obj.get("code")
    msg = obj.get("msg")
    details = obj.get("details")
    return PluginErrorInfo(
        code=code if isinstance(code, int) and not isinstance(code, bool) else 0,
        msg=msg if isinstance(msg, str) else str(msg),
        details=details if isinstance(details, str) else "",
    )


def all_ips(results: Sequence[tuple[str, Result]]) -> list[tuple[str, IPConfig]]:
    """Every sandbox IP of ``results`` (``(ifname, result)`` pairs) with its interface name."""
    out = []
    for ifname, res in results:
        for ip in res.ips:
            iface = res.interface_of(ip)
            if iface is None:
                out.append((ifname, ip))
            elif iface.sandbox:
                out.append((iface.name, ip))
    return out
