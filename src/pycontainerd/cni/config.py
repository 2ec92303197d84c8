"""Network configuration lists: parsing and choosing them, with no I/O (sans-IO).

A CNI network is described by a *configuration list* (``.conflist``): a ``name``, a
``cniVersion`` and ``plugins``, each an object with a ``type`` (the executable to run) and
whatever else the plugin reads.  A single-plugin file (``.conf``/``.json``) is the plugin
object itself carrying ``name`` and ``cniVersion``; it is read as a list of one.

Which files make the pod network follows containerd's go-cni: the files of ``conf_dir``
ending in ``.conf``, ``.conflist`` or ``.json``, in lexical order, the first
``max_conf_num`` of them (0: all).  A file that does not parse is an error, not skipped.
The first network gets interface ``eth0``, the next ``eth1``...; containerd puts a loopback
network (``lo``) in front of them (:data:`LOOPBACK`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .. import errdefs

CONF_EXTENSIONS = (".conf", ".conflist", ".json")

# cniVersions we can read results of (and send configs in)
SUPPORTED_VERSIONS = ("0.1.0", "0.2.0", "0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0")

# capability arguments the runtime knows how to fill (CONVENTIONS.md)
KNOWN_CAPABILITIES = ("portMappings", "bandwidth", "dns", "ipRanges")

_NAME = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9_.\-]*")


def version_tuple(version: str) -> tuple[int, int, int]:
    """``"0.3.1"`` -> ``(0, 3, 1)``; an invalid version is an InvalidArgument."""
    parts = version.split(".")
    if len(parts) != 3 or not all(p.isdigit() for p in parts):
        raise errdefs.InvalidArgument(f"invalid cniVersion {version!r}")
    return int(parts[0]), int(parts[1]), int(parts[2])


def version_at_least(version: str, minimum: str) -> bool:
    return version_tuple(version) >= version_tuple(minimum)


@dataclass(frozen=True)
class PluginConfig:
    """One plugin of a list: its ``type`` and its JSON object as written."""

    type: str
    raw: Mapping[str, Any] = field(compare=False)

    @property
    def capabilities(self) -> frozenset[str]:
        """The capability arguments this plugin asks for (``"capabilities": {"portMappings": true}``)."""
        caps = self.raw.get("capabilities")
        if not isinstance(caps, dict):
            return frozenset()
        return frozenset(k for k, v in caps.items() if v is True)


@dataclass(frozen=True)
class NetworkConfigList:
    """A network: its name, cniVersion, plugins in order, and where it was read from."""

    name: str
    cni_version: str
    plugins: tuple[PluginConfig, ...]
    disable_check: bool = False
    source: str = ""
    raw: bytes = field(default=b"", compare=False, repr=False)

    @property
    def supports_check(self) -> bool:
        """CHECK exists from cniVersion 0.4.0 on (and a list may turn it off)."""
        return not self.disable_check and version_at_least(self.cni_version, "0.4.0")


@dataclass(frozen=True)
class Network:
    """A network attached to a pod under interface ``ifname``."""

    config: NetworkConfigList
    ifname: str

    @property
    def name(self) -> str:
        return self.config.name


def _decode(data: bytes, source: str) -> dict[str, Any]:
    try:
        obj = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise errdefs.InvalidArgument(f"CNI config {source}: invalid JSON: {exc}") from exc
    if not isinstance(obj, dict):
        raise errdefs.InvalidArgument(f"CNI config {source}: not a JSON object")
    return obj


def _check_version(version: Any, source: str) -> str:
    if version in ("", None):
        return "0.1.0"  # the spec's default for a config without cniVersion
    if not isinstance(version, str) or version not in SUPPORTED_VERSIONS:
        raise errdefs.InvalidArgument(
            f"CNI config {source}: unsupported cniVersion {version!r} (supported: {', '.join(SUPPORTED_VERSIONS)})"
        )
    return version


def _check_name(name: Any, source: str) -> str:
    if not isinstance(name, str) or not name:
        raise errdefs.InvalidArgument(f"CNI config {source}: missing network name")
    if not _NAME.fullmatch(name):
        raise errdefs.InvalidArgument(f"CNI config {source}: invalid network name {name!r}")
    return name


def _plugin(obj: Any, source: str, where: str) -> PluginConfig:
    if not isinstance(obj, dict):
        raise errdefs.InvalidArgument(f"CNI config {source}: {where} is not a JSON object")
    ptype = obj.get("type")
    if not isinstance(ptype, str) or not ptype:
        raise errdefs.InvalidArgument(f"CNI config {source}: {where} has no 'type'")
    if "/" in ptype or ptype in (".", ".."):
        raise errdefs.InvalidArgument(f"CNI config {source}: {where} has an invalid type {ptype!r}")
    return PluginConfig(type=ptype, raw=obj)


def _flag(value: Any, source: str, key: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    if value is None:
        return False
    raise errdefs.InvalidArgument(f"CNI config {source}: {key} must be a boolean, got {value!r}")


def parse_conflist(data: bytes, source: str = "<conflist>") -> NetworkConfigList:
    """Parse a ``.conflist`` document."""
    obj = _decode(data, source)
    name = _check_name(obj.get("name"), source)
    version = _check_version(obj.get("cniVersion"), source)
    plugins = obj.get("plugins")
    if not isinstance(plugins, list) or not plugins:
        raise errdefs.InvalidArgument(f"CNI config {source}: no plugins in list")
    return NetworkConfigList(
        name=name,
        cni_version=version,
        plugins=tuple(_plugin(p, source, f"plugin {i}") for i, p in enumerate(plugins)),
        disable_check=_flag(obj.get("disableCheck"), source, "disableCheck"),
        source=source,
        raw=bytes(data),
    )


def parse_conf(data: bytes, source: str = "<conf>") -> NetworkConfigList:
    """Parse a single-plugin ``.conf``/``.json`` document as a list of one plugin."""
    obj = _decode(data, source)
    if "plugins" in obj and "type" not in obj:
        raise errdefs.InvalidArgument(f"CNI config {source}: a configuration list in a single-plugin file")
    name = _check_name(obj.get("name"), source)
    version = _check_version(obj.get("cniVersion"), source)
    plugin = _plugin(obj, source, "network")
    return NetworkConfigList(name=name, cni_version=version, plugins=(plugin,), source=source, raw=bytes(data))


def parse_file(name: str, data: bytes) -> NetworkConfigList:
    """Parse a config file by its extension."""
    return parse_conflist(data, name) if name.endswith(".conflist") else parse_conf(data, name)


def conf_files(names: Iterable[str]) -> list[str]:
    """The config file names among ``names``, in the order they are considered (lexical)."""
    return sorted(n for n in names if n.endswith(CONF_EXTENSIONS) and not n.startswith("."))


def limit_conf_files(names: Iterable[str], max_conf_num: int) -> list[str]:
    """The files that make the pod network: the first ``max_conf_num`` (0 or less: all)."""
    files = conf_files(names)
    return files if max_conf_num <= 0 else files[:max_conf_num]


def interface_name(index: int, prefix: str = "eth") -> str:
    return f"{prefix}{index}"


def networks_from(configs: Iterable[NetworkConfigList], *, loopback: bool = True) -> tuple[Network, ...]:
    """Attach ``configs`` as ``eth0``, ``eth1``... behind containerd's loopback network."""
    out = [Network(LOOPBACK, "lo")] if loopback else []
    out.extend(Network(c, interface_name(i)) for i, c in enumerate(configs))
    names = [n.name for n in out]
    dups = sorted({n for n in names if names.count(n) > 1})
    if dups:
        raise errdefs.InvalidArgument(f"CNI networks with the same name: {', '.join(dups)}")
    return tuple(out)


# containerd's go-cni WithLoNetwork
LOOPBACK = parse_conflist(
    b'{"cniVersion": "0.3.1", "name": "cni-loopback", "plugins": [{"type": "loopback"}]}', "<loopback>"
)
