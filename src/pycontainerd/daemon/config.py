"""The daemon configuration: one typed model, loaded from either config.toml layout.

containerd has two layouts of ``config.toml`` and people still write both:

- ``version = 2`` names plugin sections by full plugin id::

      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = true

- the unversioned layout (version 1, containerd <= 1.2 and countless blog posts) names
  them by short id, and configures the default CRI runtime with the deprecated
  ``default_runtime`` table::

      [plugins.cri.containerd.default_runtime]
        runtime_type = "io.containerd.runtime.v1.linux"
        runtime_engine = "/usr/local/bin/runc"

Both map onto the same frozen dataclasses (``Config`` and the sections below), so the rest
of the daemon never sees the difference.  The legacy spellings are translated here, each
with a warning saying what it became:

- ``containerd.default_runtime`` becomes ``runtimes.<default_runtime_name>`` ("runc"
  unless set), ``untrusted_workload_runtime`` becomes ``runtimes.untrusted``;
- runtime type ``io.containerd.runtime.v1.linux`` (the v1 shim we do not implement)
  becomes ``io.containerd.runc.v2``; ``runtime_engine`` (a runc-compatible binary, empty
  meaning runc) becomes ``options.BinaryName``, ``runtime_root`` becomes ``options.Root``;
  for a former v1 runtime ``[plugins.linux] runtime``/``runtime_root`` are used the same way;
- CRI ``systemd_cgroup`` and ``containerd.no_pivot`` become ``SystemdCgroup`` and
  ``NoPivotRoot`` in the default runtime's options;
- ``registry.auths."https://host"`` becomes ``registry.configs."host".auth``;
- gc ``schedule_delay_ms``/``startup_delay_ms`` become ``schedule_delay``/``startup_delay``.

Validation: a value of the wrong type, out of range (negative sizes, a pause threshold
above 0.5), an unparsable duration, a ``version`` other than 1 or 2, or malformed TOML raises
``ConfigError``, whose message names the file and the dotted key (and the line for TOML
syntax errors).  Unknown keys never fail: they are collected as warnings naming the full
dotted key.  Plugin sections the model does not type are kept raw in ``Config.plugins``
(keyed by full plugin id, v1 short names translated); when the daemon loads a plugin,
``Config.plugin_config`` decodes its section into the dataclass its ``Registration`` names,
with the same rules (a bad value or an option we cannot honour is a ``ConfigError`` naming
the key, an unknown key a warning); a section whose id is not a known plugin is kept too,
with a warning.  Options containerd has but we cannot honour (``slow_chown``, ``ShimCgroup``,
``Criu*``) are refused (field metadata ``unsupported``), never silently ignored.

Output: ``default_config_toml()`` prints the complete version-2 default configuration
(``pycontainerd config default``) and ``dump_config_toml(cfg)`` the effective one
(``pycontainerd config dump``).  Loading either gives back the same model.

Durations are written like Go's ``time.Duration`` (``"100ms"``, ``"1m30s"``, ``"4h0m0s"``)
and held as float seconds.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import json
import os
import re
import tomllib
import types
import typing
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields, replace
from fractions import Fraction
from typing import Any, TypeVar
from urllib.parse import urlsplit

import tomli_w

__all__ = [
    "DEFAULT_ADDRESS",
    "DEFAULT_CONFIG_PATH",
    "DEFAULT_ROOT",
    "DEFAULT_STATE",
    "KNOWN_PLUGINS",
    "AuthConfig",
    "CNIConfig",
    "CRIConfig",
    "CRIContainerdConfig",
    "CgroupConfig",
    "CgroupsMonitorConfig",
    "Config",
    "ConfigError",
    "DebugConfig",
    "GCSchedulerConfig",
    "GRPCConfig",
    "ImageDecryptionConfig",
    "LinuxRuntimeConfig",
    "MetricsConfig",
    "MirrorConfig",
    "OptConfig",
    "OverlayfsConfig",
    "ProxyPluginConfig",
    "RegistryConfig",
    "RegistryHostConfig",
    "RuntimeConfig",
    "RuntimeOptions",
    "StreamProcessorConfig",
    "TLSConfig",
    "TTRPCConfig",
    "X509KeyPairStreaming",
    "config_from_dict",
    "default_config_toml",
    "dump_config_toml",
    "format_duration",
    "load_config",
    "parse_config",
    "parse_duration",
    "with_overrides",
]

DEFAULT_CONFIG_PATH = "/etc/pycontainerd/config.toml"
DEFAULT_ROOT = "/var/lib/pycontainerd"
DEFAULT_STATE = "/run/pycontainerd"
DEFAULT_ADDRESS = "/run/pycontainerd/pycontainerd.sock"
DEFAULT_OPT_PATH = "/opt/pycontainerd"
DEFAULT_MAX_MESSAGE_SIZE = 16 << 20
DEFAULT_SANDBOX_IMAGE = "registry.k8s.io/pause:3.6"
DEFAULT_SNAPSHOTTER = "overlayfs"
DEFAULT_RUNTIME_NAME = "runc"
UNTRUSTED_RUNTIME_NAME = "untrusted"
DEFAULT_CNI_BIN_DIR = "/usr/lib/cni"  # Debian's containernetworking-plugins
CONTAINERD_CNI_BIN_DIR = "/opt/cni/bin"  # containerd's default, searched too
DEFAULT_CNI_CONF_DIR = "/etc/cni/net.d"

RUNC_V2 = "io.containerd.runc.v2"
RUNC_V1 = "io.containerd.runc.v1"
RUNTIME_V1_LINUX = "io.containerd.runtime.v1.linux"
RUNC_TYPES = frozenset({RUNC_V2, RUNC_V1})

CRI_PLUGIN = "io.containerd.grpc.v1.cri"
GC_PLUGIN = "io.containerd.gc.v1.scheduler"
OVERLAYFS_PLUGIN = "io.containerd.snapshotter.v1.overlayfs"
LINUX_RUNTIME_PLUGIN = "io.containerd.runtime.v1.linux"
OPT_PLUGIN = "io.containerd.internal.v1.opt"
CGROUPS_MONITOR_PLUGIN = "io.containerd.monitor.v1.cgroups"

DEFAULT_TIMEOUTS: Mapping[str, float] = {
    "io.containerd.timeout.shim.cleanup": 5.0,
    "io.containerd.timeout.shim.load": 5.0,
    "io.containerd.timeout.shim.shutdown": 3.0,
    "io.containerd.timeout.task.state": 2.0,
}

# Plugin ids a config may configure without a warning.  Order matters for version-1
# short names that several plugins share ("content"): the first one wins.
KNOWN_PLUGINS: tuple[str, ...] = (
    "io.containerd.content.v1.content",
    "io.containerd.metadata.v1.bolt",
    "io.containerd.metadata.v1.sqlite",
    "io.containerd.gc.v1.scheduler",
    "io.containerd.differ.v1.walking",
    "io.containerd.event.v1.exchange",
    "io.containerd.lease.v1.manager",
    "io.containerd.snapshotter.v1.overlayfs",
    "io.containerd.snapshotter.v1.native",
    "io.containerd.snapshotter.v1.aufs",
    "io.containerd.snapshotter.v1.btrfs",
    "io.containerd.snapshotter.v1.devmapper",
    "io.containerd.snapshotter.v1.zfs",
    "io.containerd.snapshotter.v1.blockfile",
    "io.containerd.runtime.v1.linux",
    "io.containerd.runtime.v2.task",
    "io.containerd.runtime.v2.shim",
    "io.containerd.monitor.v1.cgroups",
    "io.containerd.internal.v1.opt",
    "io.containerd.internal.v1.restart",
    "io.containerd.internal.v1.tracing",
    "io.containerd.tracing.processor.v1.otlp",
    "io.containerd.nri.v1.nri",
    "io.containerd.sandbox.store.v1.local",
    "io.containerd.sandbox.controller.v1.local",
    "io.containerd.streaming.v1.manager",
    "io.containerd.transfer.v1.local",
    "io.containerd.service.v1.containers-service",
    "io.containerd.service.v1.content-service",
    "io.containerd.service.v1.diff-service",
    "io.containerd.service.v1.images-service",
    "io.containerd.service.v1.introspection-service",
    "io.containerd.service.v1.leases-service",
    "io.containerd.service.v1.namespaces-service",
    "io.containerd.service.v1.snapshots-service",
    "io.containerd.service.v1.tasks-service",
    "io.containerd.grpc.v1.containers",
    "io.containerd.grpc.v1.content",
    "io.containerd.grpc.v1.diff",
    "io.containerd.grpc.v1.events",
    "io.containerd.grpc.v1.healthcheck",
    "io.containerd.grpc.v1.images",
    "io.containerd.grpc.v1.introspection",
    "io.containerd.grpc.v1.leases",
    "io.containerd.grpc.v1.namespaces",
    "io.containerd.grpc.v1.snapshots",
    "io.containerd.grpc.v1.tasks",
    "io.containerd.grpc.v1.version",
    "io.containerd.grpc.v1.cri",
)

_LOG_LEVELS = frozenset({"", "trace", "debug", "info", "warn", "warning", "error", "fatal", "panic"})
_LOG_FORMATS = frozenset({"", "text", "json"})


class ConfigError(ValueError):
    """An invalid configuration: the message names the file, the key and the problem."""

    def __init__(self, message: str, *, source: str = "", key: str = "", line: int | None = None) -> None:
        super().__init__(message)
        self.source = source
        self.key = key
        self.line = line


# --- durations ---------------------------------------------------------------------------

_NS = {
    "ns": 1,
    "us": 1_000,
    "µs": 1_000,
    "μs": 1_000,
    "ms": 1_000_000,
    "s": 10**9,
    "m": 60 * 10**9,
    "h": 3600 * 10**9,
}
_DURATION_PART = re.compile(r"(\d+\.?\d*|\.\d+)(ns|us|µs|μs|ms|s|m|h)")


def _duration_ns(text: str) -> int:
    s = text.strip()
    sign = 1
    if s and s[0] in "+-":
        sign = -1 if s[0] == "-" else 1
        s = s[1:]
    if s == "0":
        return 0
    if not s:
        raise ValueError(f"invalid duration {text!r}")
    total = Fraction(0)
    pos = 0
    while pos < len(s):
        m = _DURATION_PART.match(s, pos)
        if m is None:
            raise ValueError(f'invalid duration {text!r} (expected e.g. "100ms", "1s", "1m30s")')
        total += Fraction(m.group(1)) * _NS[m.group(2)]
        pos = m.end()
    return sign * round(total)


def parse_duration(text: str) -> float:
    """Parse a Go duration (``"100ms"``, ``"1.5s"``, ``"1h2m3s"``, ``"0"``) into seconds."""
    return _duration_ns(text) / 1e9


def _frac(n: int, unit: int) -> str:
    whole, rest = divmod(n, unit)
    if not rest:
        return str(whole)
    digits = str(rest).rjust(len(str(unit)) - 1, "0").rstrip("0")
    return f"{whole}.{digits}"


def format_duration(seconds: float) -> str:
    """Format seconds the way Go prints a ``time.Duration`` (``0.1`` -> ``"100ms"``)."""
    ns = round(seconds * 1e9)
    sign = "-" if ns < 0 else ""
    ns = abs(ns)
    if ns == 0:
        return "0s"
    if ns < 1_000:
        text = f"{ns}ns"
    elif ns < 1_000_000:
        text = _frac(ns, 1_000) + "µs"
    elif ns < 10**9:
        text = _frac(ns, 1_000_000) + "ms"
    else:
        hours, rest = divmod(ns, 3600 * 10**9)
        minutes, rest = divmod(rest, 60 * 10**9)
        secs = _frac(rest, 10**9) + "s"
        text = f"{hours}h{minutes}m{secs}" if hours else f"{minutes}m{secs}" if minutes else secs
    return sign + text


# --- schema helpers ----------------------------------------------------------------------
#
# Field metadata drives the generic decoder/encoder:
#   key       the TOML key when it differs from the field name (runc options are CamelCase)
#   duration  a Go duration string held as float seconds (also for dict values)
#   minimum / maximum   numeric range
#   as_str    also accept an integer and keep it as a string (stream_server_port)
#   merge     a dict whose file entries are added to (not replace) the defaults
#   manual    decoded by hand (legacy translation); the key is known, so no warning
#   extra     receives the unknown keys of the table instead of warning about them
#   internal  not part of the TOML at all
#   unsupported  (predicate, why): a value the predicate accepts is refused (ConfigError naming
#             the key): an option containerd has whose effect we do not implement is never
#             silently ignored


def _f(default: Any, **meta: Any) -> Any:
    return field(default=default, metadata=meta)


# --- the model -----------------------------------------------------------------------------


@dataclass(frozen=True)
class GRPCConfig:
    address: str = DEFAULT_ADDRESS
    tcp_address: str = ""
    tcp_tls_ca: str = ""
    tcp_tls_cert: str = ""
    tcp_tls_key: str = ""
    uid: int = _f(0, minimum=0)
    gid: int = _f(0, minimum=0)
    max_recv_message_size: int = _f(DEFAULT_MAX_MESSAGE_SIZE, minimum=1)
    max_send_message_size: int = _f(DEFAULT_MAX_MESSAGE_SIZE, minimum=1)


@dataclass(frozen=True)
class TTRPCConfig:
    address: str = ""
    uid: int = _f(0, minimum=0)
    gid: int = _f(0, minimum=0)


@dataclass(frozen=True)
class DebugConfig:
    address: str = ""
    uid: int = _f(0, minimum=0)
    gid: int = _f(0, minimum=0)
    level: str = _f("", choices=_LOG_LEVELS)
    format: str = _f("", choices=_LOG_FORMATS)


@dataclass(frozen=True)
class MetricsConfig:
    address: str = ""
    grpc_histogram: bool = False


@dataclass(frozen=True)
class CgroupConfig:
    path: str = ""


@dataclass(frozen=True)
class ProxyPluginConfig:
    type: str = ""
    address: str = ""
    platform: str = ""


@dataclass(frozen=True)
class StreamProcessorConfig:
    accepts: tuple[str, ...] = ()
    returns: str = ""
    path: str = ""
    args: tuple[str, ...] = ()
    env: tuple[str, ...] = ()


_NO_CHECKPOINT = "checkpoint/restore (criu) is not implemented"


@dataclass(frozen=True)
class RuntimeOptions:
    """``runtimes.<name>.options``: runc's shim options for runc types, else kept raw."""

    binary_name: str = _f("", key="BinaryName")
    root: str = _f("", key="Root")
    systemd_cgroup: bool = _f(False, key="SystemdCgroup")
    no_pivot_root: bool = _f(False, key="NoPivotRoot")
    no_new_keyring: bool = _f(False, key="NoNewKeyring")
    shim_cgroup: str = _f("", key="ShimCgroup", unsupported=(bool, "the shim cannot be placed in a cgroup yet"))
    io_uid: int = _f(0, key="IoUid", minimum=0)
    io_gid: int = _f(0, key="IoGid", minimum=0)
    criu_path: str = _f("", key="CriuPath", unsupported=(bool, _NO_CHECKPOINT))
    criu_image_path: str = _f("", key="CriuImagePath", unsupported=(bool, _NO_CHECKPOINT))
    criu_work_path: str = _f("", key="CriuWorkPath", unsupported=(bool, _NO_CHECKPOINT))
    extra: dict[str, Any] = field(default_factory=dict, metadata={"extra": True})


@dataclass(frozen=True)
class RuntimeConfig:
    """``[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.<name>]``."""

    runtime_type: str = RUNC_V2
    runtime_path: str = ""
    pod_annotations: tuple[str, ...] = ()
    container_annotations: tuple[str, ...] = ()
    privileged_without_host_devices: bool = False
    privileged_without_host_devices_all_devices_allowed: bool = False
    base_runtime_spec: str = ""
    cni_conf_dir: str = ""
    cni_max_conf_num: int = _f(0, minimum=0)
    snapshotter: str = ""
    options: RuntimeOptions = field(default_factory=RuntimeOptions, metadata={"manual": True})


def _default_runtimes() -> dict[str, RuntimeConfig]:
    return {DEFAULT_RUNTIME_NAME: RuntimeConfig()}


@dataclass(frozen=True)
class CRIContainerdConfig:
    snapshotter: str = DEFAULT_SNAPSHOTTER
    default_runtime_name: str = DEFAULT_RUNTIME_NAME
    runtimes: dict[str, RuntimeConfig] = field(default_factory=_default_runtimes, metadata={"manual": True})
    disable_snapshot_annotations: bool = True
    discard_unpacked_layers: bool = False
    ignore_rdt_not_enabled_errors: bool = False
    ignore_blockio_not_enabled_errors: bool = False


@dataclass(frozen=True)
class CNIConfig:
    bin_dir: str = DEFAULT_CNI_BIN_DIR
    conf_dir: str = DEFAULT_CNI_CONF_DIR
    max_conf_num: int = _f(1, minimum=0)
    conf_template: str = ""
    ip_pref: str = ""

    @property
    def bin_search_path(self) -> tuple[str, ...]:
        """Where to look for CNI plugins: ``bin_dir`` first, then Debian's and containerd's dirs."""
        out: list[str] = []
        for d in (self.bin_dir, DEFAULT_CNI_BIN_DIR, CONTAINERD_CNI_BIN_DIR):
            if d and d not in out:
                out.append(d)
        return tuple(out)


@dataclass(frozen=True)
class MirrorConfig:
    endpoint: tuple[str, ...] = ()


@dataclass(frozen=True)
class AuthConfig:
    username: str = ""
    password: str = ""
    auth: str = ""
    identitytoken: str = ""


@dataclass(frozen=True)
class TLSConfig:
    insecure_skip_verify: bool = False
    ca_file: str = ""
    cert_file: str = ""
    key_file: str = ""


@dataclass(frozen=True)
class RegistryHostConfig:
    auth: AuthConfig | None = None
    tls: TLSConfig | None = None


@dataclass(frozen=True)
class RegistryConfig:
    config_path: str = ""
    mirrors: dict[str, MirrorConfig] = field(default_factory=dict)
    configs: dict[str, RegistryHostConfig] = field(default_factory=dict)
    headers: dict[str, tuple[str, ...]] = field(default_factory=dict)


@dataclass(frozen=True)
class ImageDecryptionConfig:
    key_model: str = "node"


@dataclass(frozen=True)
class X509KeyPairStreaming:
    tls_cert_file: str = ""
    tls_key_file: str = ""


@dataclass(frozen=True)
class CRIConfig:
    """``[plugins."io.containerd.grpc.v1.cri"]`` (``[plugins.cri]`` in version 1)."""

    containerd: CRIContainerdConfig = field(default_factory=CRIContainerdConfig)
    cni: CNIConfig = field(default_factory=CNIConfig)
    registry: RegistryConfig = field(default_factory=RegistryConfig)
    image_decryption: ImageDecryptionConfig = field(default_factory=ImageDecryptionConfig)
    x509_key_pair_streaming: X509KeyPairStreaming = field(default_factory=X509KeyPairStreaming)
    sandbox_image: str = DEFAULT_SANDBOX_IMAGE
    max_container_log_line_size: int = _f(16 * 1024, minimum=-1)
    restrict_oom_score_adj: bool = False
    enable_selinux: bool = False
    selinux_category_range: int = _f(1024, minimum=0)
    stream_server_address: str = "127.0.0.1"
    stream_server_port: str = _f("0", as_str=True)
    stream_idle_timeout: float = _f(4 * 3600.0, duration=True, minimum=0)
    enable_tls_streaming: bool = False
    disable_tcp_service: bool = True
    stats_collect_period: int = _f(10, minimum=0)
    max_concurrent_downloads: int = _f(3, minimum=0)
    disable_cgroup: bool = False
    disable_apparmor: bool = False
    disable_proc_mount: bool = False
    unset_seccomp_profile: str = ""
    tolerate_missing_hugetlb_controller: bool = True
    disable_hugetlb_controller: bool = True
    device_ownership_from_security_context: bool = False
    ignore_image_defined_volumes: bool = False
    netns_mounts_under_state_dir: bool = False
    enable_unprivileged_ports: bool = False
    enable_unprivileged_icmp: bool = False
    enable_cdi: bool = False
    cdi_spec_dirs: tuple[str, ...] = ("/etc/cdi", "/var/run/cdi")
    image_pull_progress_timeout: float = _f(300.0, duration=True, minimum=0)
    drain_exec_sync_io_timeout: float = _f(0.0, duration=True, minimum=0)

    @property
    def default_runtime(self) -> RuntimeConfig:
        return self.containerd.runtimes[self.containerd.default_runtime_name]


@dataclass(frozen=True)
class GCSchedulerConfig:
    """``[plugins."io.containerd.gc.v1.scheduler"]``."""

    pause_threshold: float = _f(0.02, minimum=0, maximum=0.5)
    deletion_threshold: int = _f(0, minimum=0)
    mutation_threshold: int = _f(100, minimum=0)
    schedule_delay: float = _f(0.0, duration=True, minimum=0)
    startup_delay: float = _f(0.1, duration=True, minimum=0)


@dataclass(frozen=True)
class OverlayfsConfig:
    """``[plugins."io.containerd.snapshotter.v1.overlayfs"]``."""

    root_path: str = ""
    upperdir_label: bool = False
    sync_remove: bool = False
    slow_chown: bool = _f(
        False, unsupported=(bool, "id-mapped snapshots (uid/gid remapping) are not implemented, so nothing is chowned")
    )
    mount_options: tuple[str, ...] = ()


@dataclass(frozen=True)
class LinuxRuntimeConfig:
    """``[plugins."io.containerd.runtime.v1.linux"]`` (``[plugins.linux]``): the legacy v1 runtime."""

    shim: str = "containerd-shim"
    runtime: str = "runc"
    runtime_root: str = ""
    no_shim: bool = False
    shim_debug: bool = False


@dataclass(frozen=True)
class OptConfig:
    """``[plugins."io.containerd.internal.v1.opt"]``."""

    path: str = DEFAULT_OPT_PATH


@dataclass(frozen=True)
class CgroupsMonitorConfig:
    """``[plugins."io.containerd.monitor.v1.cgroups"]``."""

    no_prometheus: bool = False


# plugin id -> Config attribute holding its typed section
_MODELLED_PLUGINS: Mapping[str, str] = {
    CRI_PLUGIN: "cri",
    GC_PLUGIN: "gc",
    OVERLAYFS_PLUGIN: "overlayfs",
    LINUX_RUNTIME_PLUGIN: "linux",
    OPT_PLUGIN: "opt",
    CGROUPS_MONITOR_PLUGIN: "cgroups_monitor",
}


@dataclass(frozen=True)
class Config:
    """The effective daemon configuration (sources, warnings and layout excluded from ``==``)."""

    root: str = DEFAULT_ROOT
    state: str = DEFAULT_STATE
    temp: str = ""
    plugin_dir: str = ""
    disabled_plugins: tuple[str, ...] = ()
    required_plugins: tuple[str, ...] = ()
    oom_score: int = _f(0, minimum=-1000, maximum=1000)
    imports: tuple[str, ...] = ()
    grpc: GRPCConfig = field(default_factory=GRPCConfig)
    ttrpc: TTRPCConfig = field(default_factory=TTRPCConfig)
    debug: DebugConfig = field(default_factory=DebugConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    cgroup: CgroupConfig = field(default_factory=CgroupConfig)
    timeouts: dict[str, float] = field(
        default_factory=lambda: dict(DEFAULT_TIMEOUTS),
        metadata={"duration": True, "minimum": 0, "merge": True},
    )
    proxy_plugins: dict[str, ProxyPluginConfig] = field(default_factory=dict)
    stream_processors: dict[str, StreamProcessorConfig] = field(default_factory=dict)
    # typed plugin sections
    cri: CRIConfig = field(default_factory=CRIConfig, metadata={"plugin": CRI_PLUGIN})
    gc: GCSchedulerConfig = field(default_factory=GCSchedulerConfig, metadata={"plugin": GC_PLUGIN})
    overlayfs: OverlayfsConfig = field(default_factory=OverlayfsConfig, metadata={"plugin": OVERLAYFS_PLUGIN})
    linux: LinuxRuntimeConfig = field(
        default_factory=LinuxRuntimeConfig, metadata={"plugin": LINUX_RUNTIME_PLUGIN}
    )
    opt: OptConfig = field(default_factory=OptConfig, metadata={"plugin": OPT_PLUGIN})
    cgroups_monitor: CgroupsMonitorConfig = field(
        default_factory=CgroupsMonitorConfig, metadata={"plugin": CGROUPS_MONITOR_PLUGIN}
    )
    # every other plugin section, raw, keyed by plugin id
    plugins: dict[str, dict[str, Any]] = field(default_factory=dict, metadata={"internal": True})
    # where it came from
    source: str | None = field(default=None, compare=False, metadata={"internal": True})
    source_version: int = field(default=2, compare=False, metadata={"internal": True})
    warnings: tuple[str, ...] = field(default=(), compare=False, metadata={"internal": True})

    def plugin_section(self, plugin_uri: str) -> dict[str, Any]:
        """The config table of plugin ``plugin_uri`` (e.g. ``"io.containerd.gc.v1.scheduler"``).

        Typed sections are returned in their effective version-2 form, defaults included;
        other sections as written (a copy); ``{}`` when the config has none.  For a
        version-1 file a section written under an unknown short id is found by the id part
        of ``plugin_uri``.
        """
        attr = _MODELLED_PLUGINS.get(plugin_uri)
        if attr is not None:
            return _encode(getattr(self, attr))
        if plugin_uri in self.plugins:
            return copy.deepcopy(self.plugins[plugin_uri])
        if self.source_version == 1:
            short = _plugin_id(plugin_uri)
            if short in self.plugins:
                return copy.deepcopy(self.plugins[short])
        return {}

    def plugin_config(self, plugin_uri: str, cls: type[T] | None) -> tuple[T | None, list[str]]:
        """Plugin ``plugin_uri``'s section decoded into ``cls``, and the warnings it gave.

        A typed section of the model is returned as loaded (validated with the whole file);
        any other section is decoded here with the same rules: a wrong type, a value out of
        range or an unsupported option raise ``ConfigError`` naming the file and the key,
        an unknown key is a warning.  For a plugin without a config class (``cls`` None) every
        key of its section is unknown.
        """
        attr = _MODELLED_PLUGINS.get(plugin_uri)
        if attr is not None:
            value = getattr(self, attr)
            if cls is not None and not isinstance(value, cls):
                raise TypeError(f"plugin {plugin_uri} declares config {cls.__name__}, the model has {type(value)}")
            return (value if cls is not None else None), []
        dec = _Decoder(self.source or "<config>")
        table = self.plugin_section(plugin_uri)
        path = ("plugins", plugin_uri)
        if cls is None:
            for key in table:
                dec.warn(f"unknown key {_dotted((*path, key))} (plugin {plugin_uri} takes no configuration; ignored)")
            return None, dec.warnings
        return dec.dataclass(cls, table, path), dec.warnings


def _plugin_id(uri: str) -> str:
    parts = uri.split(".", 4)
    return parts[4] if len(parts) == 5 else uri


# --- decoding ------------------------------------------------------------------------------

T = TypeVar("T")

_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")


def _dotted(path: Iterable[str]) -> str:
    return ".".join(p if _BARE_KEY.fullmatch(p) else json.dumps(p, ensure_ascii=False) for p in path)


def _toml_type(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "float"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "table"
    return type(value).__name__


@functools.cache
def _hints(cls: Any) -> dict[str, Any]:
    return typing.get_type_hints(cls)


class _Decoder:
    def __init__(self, source: str) -> None:
        self.source = source
        self.warnings: list[str] = []

    def warn(self, message: str) -> None:
        self.warnings.append(f"{self.source}: {message}")

    def error(self, path: tuple[str, ...], problem: str) -> ConfigError:
        key = _dotted(path)
        return ConfigError(f"{self.source}: {key}: {problem}", source=self.source, key=key)

    def table(self, raw: Any, path: tuple[str, ...]) -> dict[str, Any]:
        if not isinstance(raw, dict):
            raise self.error(path, f"expected a table, got {_toml_type(raw)}")
        return raw

    def dataclass(self, cls: type[T], raw: Any, path: tuple[str, ...]) -> T:
        table = self.table(raw, path)
        hints = _hints(typing.cast(Any, cls))
        kwargs: dict[str, Any] = {}
        known: set[str] = set()
        extra_field: str | None = None
        for f in fields(cls):  # type: ignore[arg-type]
            meta = f.metadata
            if meta.get("internal") or meta.get("plugin"):
                continue
            if meta.get("extra"):
                extra_field = f.name
                continue
            key = meta.get("key", f.name)
            known.add(key)
            if key not in table or meta.get("manual"):
                continue
            value = self.check_supported(self.value(hints[f.name], table[key], (*path, key), meta), (*path, key), meta)
            if meta.get("merge"):
                default_factory = typing.cast(Any, f.default_factory)
                value = {**default_factory(), **value}
            kwargs[f.name] = value
        extras: dict[str, Any] = {}
        for key, value in table.items():
            if key in known:
                continue
            if extra_field is not None:
                extras[key] = copy.deepcopy(value)
            else:
                self.warn(f"unknown key {_dotted((*path, key))} (ignored)")
        if extra_field is not None:
            kwargs[extra_field] = extras
        return cls(**kwargs)

    def value(self, tp: Any, raw: Any, path: tuple[str, ...], meta: Mapping[str, Any]) -> Any:
        origin = typing.get_origin(tp)
        if tp is Any:
            return copy.deepcopy(raw)
        if origin in (typing.Union, types.UnionType):
            (inner,) = [a for a in typing.get_args(tp) if a is not type(None)]
            return self.value(inner, raw, path, meta)
        if origin is tuple:
            if not isinstance(raw, list):
                raise self.error(path, f"expected an array, got {_toml_type(raw)}")
            item_type = typing.get_args(tp)[0]
            return tuple(self.value(item_type, v, (*path, str(i)), {}) for i, v in enumerate(raw))
        if origin is dict:
            value_type = typing.get_args(tp)[1]
            table = self.table(raw, path)
            return {k: self.value(value_type, v, (*path, k), meta) for k, v in table.items()}
        if dataclasses.is_dataclass(tp):
            return self.dataclass(typing.cast(type, tp), raw, path)
        if tp is str:
            if meta.get("as_str") and isinstance(raw, int) and not isinstance(raw, bool):
                return str(raw)
            if not isinstance(raw, str):
                raise self.error(path, f"expected a string, got {_toml_type(raw)} {raw!r}")
            choices = meta.get("choices")
            if choices is not None and raw.lower() not in choices:
                allowed = ", ".join(sorted(c for c in choices if c))
                raise self.error(path, f"invalid value {raw!r} (expected one of {allowed})")
            return raw
        if tp is bool:
            if not isinstance(raw, bool):
                raise self.error(path, f"expected a boolean, got {_toml_type(raw)} {raw!r}")
            return raw
        if tp is int:
            if not isinstance(raw, int) or isinstance(raw, bool):
                raise self.error(path, f"expected an integer, got {_toml_type(raw)} {raw!r}")
            return self.check_range(raw, path, meta)
        if tp is float:
            if meta.get("duration"):
                if not isinstance(raw, str):
                    raise self.error(
                        path, f'expected a duration string like "100ms", got {_toml_type(raw)} {raw!r}'
                    )
                try:
                    seconds = parse_duration(raw)
                except ValueError as exc:
                    raise self.error(path, str(exc)) from None
                return self.check_range(seconds, path, meta, shown=raw)
            if not isinstance(raw, int | float) or isinstance(raw, bool):
                raise self.error(path, f"expected a number, got {_toml_type(raw)} {raw!r}")
            return self.check_range(float(raw), path, meta)
        raise TypeError(f"unsupported config field type {tp!r}")  # a bug in the model

    def check_supported(self, value: T, path: tuple[str, ...], meta: Mapping[str, Any]) -> T:
        """``unsupported`` metadata: (value predicate, why) - an accepted option that we cannot honour."""
        rule = meta.get("unsupported")
        if rule is not None and rule[0](value):
            raise self.error(path, f"{value!r} is not supported: {rule[1]}")
        return value

    def check_range(self, value: T, path: tuple[str, ...], meta: Mapping[str, Any], shown: Any = None) -> T:
        lo, hi = meta.get("minimum"), meta.get("maximum")
        show = value if shown is None else shown
        if lo is not None and value < lo:
            raise self.error(path, f"must be >= {lo}, got {show}")
        if hi is not None and value > hi:
            raise self.error(path, f"must be <= {hi}, got {show}")
        return value

    def string(self, raw: Any, path: tuple[str, ...]) -> str:
        return typing.cast(str, self.value(str, raw, path, {}))


def _short_names(known: Iterable[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for uri in known:
        out.setdefault(_plugin_id(uri), uri)
    return out


_Section = tuple[tuple[str, ...], dict[str, Any]]
"""A plugin table and its key path in the file."""

_PLUGIN_URI = re.compile(r"io\.containerd\.[^.]+\.v\d+\..+")


class _Loader:
    """Maps one parsed TOML document (either layout) onto ``Config``."""

    def __init__(self, data: Mapping[str, Any], source: str, known_plugins: Iterable[str]) -> None:
        self.data = data
        self.dec = _Decoder(source)
        self.known = (*KNOWN_PLUGINS, *known_plugins)
        self.short = _short_names(self.known)

    def load(self) -> Config:
        dec = self.dec
        top = dict(self.data)
        raw_version = top.pop("version", 1)
        if not isinstance(raw_version, int) or isinstance(raw_version, bool) or raw_version not in (1, 2):
            raise dec.error(("version",), f"unsupported config version {raw_version!r} (expected 1 or 2)")
        self.version = raw_version
        raw_plugins = dec.table(top.pop("plugins", {}), ("plugins",))
        base = dec.dataclass(Config, top, ())
        if base.imports:
            dec.warn(
                "imports: importing other config files is not supported; "
                f"{', '.join(base.imports)} not loaded"
            )
        sections, raw = self.split_plugins(raw_plugins)
        linux = self.section(LinuxRuntimeConfig, sections, LINUX_RUNTIME_PLUGIN)
        cfg = replace(
            base,
            disabled_plugins=self.plugin_list(base.disabled_plugins, "disabled_plugins"),
            required_plugins=self.plugin_list(base.required_plugins, "required_plugins"),
            cri=self.cri(sections.get(CRI_PLUGIN), linux),
            gc=self.gc(sections.get(GC_PLUGIN)),
            overlayfs=self.section(OverlayfsConfig, sections, OVERLAYFS_PLUGIN),
            linux=linux,
            opt=self.section(OptConfig, sections, OPT_PLUGIN),
            cgroups_monitor=self.section(CgroupsMonitorConfig, sections, CGROUPS_MONITOR_PLUGIN),
            plugins=raw,
            source=dec.source,
            source_version=self.version,
        )
        self.validate(cfg)
        return replace(cfg, warnings=tuple(dec.warnings))

    def split_plugins(
        self, raw_plugins: dict[str, Any]
    ) -> tuple[dict[str, _Section], dict[str, dict[str, Any]]]:
        """Sort plugin tables into typed sections (by id) and raw ones; warn about unknown ids."""
        typed: dict[str, _Section] = {}
        raw: dict[str, dict[str, Any]] = {}
        for key, table in raw_plugins.items():
            path = ("plugins", key)
            table = self.dec.table(table, path)
            if self.version == 1:
                uri = self.short.get(key)
                if uri is None:
                    hint = (
                        (
                            " (a version 1 config names plugins by short id, e.g. plugins.cri; "
                            "add version = 2 to use full ids)"
                        )
                        if _PLUGIN_URI.fullmatch(key)
                        else ""
                    )
                    self.dec.warn(f"unknown plugin section {_dotted(path)}{hint} (kept as is)")
                    raw[key] = copy.deepcopy(table)
                    continue
            else:
                uri = key
                if uri not in self.known:
                    full = self.short.get(key)
                    hint = (
                        f" (version 2 names plugins by full id: did you mean {_dotted(('plugins', full))}?)"
                        if full
                        else ""
                    )
                    self.dec.warn(f"unknown plugin section {_dotted(path)}{hint} (kept as is)")
                    raw[key] = copy.deepcopy(table)
                    continue
            if uri in _MODELLED_PLUGINS:
                typed[uri] = (path, table)
            else:
                raw[uri] = copy.deepcopy(table)
        return typed, raw

    def section(self, cls: type[T], sections: Mapping[str, _Section], uri: str) -> T:
        if uri not in sections:
            return cls()
        path, table = sections[uri]
        return self.dec.dataclass(cls, table, path)

    def plugin_list(self, names: tuple[str, ...], key: str) -> tuple[str, ...]:
        out: list[str] = []
        for i, name in enumerate(names):
            if self.version == 1:
                if name in self.short:
                    out.append(self.short[name])
                    continue
                if not _PLUGIN_URI.fullmatch(name):
                    self.dec.warn(f"{key}: unknown plugin {name!r} (kept as is)")
                out.append(name)
                continue
            if not _PLUGIN_URI.fullmatch(name):
                raise self.dec.error(
                    (key, str(i)), f"invalid plugin id {name!r} (expected io.containerd.<type>.v<n>.<id>)"
                )
            out.append(name)
        return tuple(out)

    # -- gc: legacy *_ms integers -----------------------------------------------------------

    def gc(self, section: _Section | None) -> GCSchedulerConfig:
        if section is None:
            return GCSchedulerConfig()
        path, table = section
        table = dict(table)
        legacy: dict[str, Any] = {}
        for old, new in (("schedule_delay_ms", "schedule_delay"), ("startup_delay_ms", "startup_delay")):
            if old in table:
                ms = self.dec.value(int, table.pop(old), (*path, old), {"minimum": 0})
                if new not in table:
                    legacy[new] = ms / 1000
                self.dec.warn(f'{_dotted((*path, old))} is deprecated, use {new} = "{ms}ms"')
        return replace(self.dec.dataclass(GCSchedulerConfig, table, path), **legacy)

    # -- CRI and its legacy spellings -------------------------------------------------------

    def cri(self, section: _Section | None, linux: LinuxRuntimeConfig) -> CRIConfig:
        if section is None:
            return CRIConfig()
        dec = self.dec
        path, table = section
        table = dict(table)
        systemd_cgroup = bool(
            dec.value(bool, table.pop("systemd_cgroup", False), (*path, "systemd_cgroup"), {})
        )
        ctd_path = (*path, "containerd")
        ctd = dict(dec.table(table.get("containerd", {}), ctd_path))
        legacy_default = ctd.pop("default_runtime", None)
        legacy_untrusted = ctd.pop("untrusted_workload_runtime", None)
        no_pivot = bool(dec.value(bool, ctd.pop("no_pivot", False), (*ctd_path, "no_pivot"), {}))
        table["containerd"] = ctd
        reg_path = (*path, "registry")
        registry = dict(dec.table(table.get("registry", {}), reg_path))
        legacy_auths = registry.pop("auths", None)
        table["registry"] = registry

        cri = dec.dataclass(CRIConfig, table, path)
        containerd = cri.containerd

        runtimes_path = (*ctd_path, "runtimes")
        runtimes_raw = dec.table(ctd.get("runtimes", {}), runtimes_path)
        runtimes = _default_runtimes()
        from_v1: set[str] = set()
        for name, rt in runtimes_raw.items():
            runtimes[name], was_v1 = self.runtime(rt, (*runtimes_path, name), linux)
            if was_v1:
                from_v1.add(name)
        for legacy_key, raw_rt, name in (
            ("default_runtime", legacy_default, containerd.default_runtime_name),
            ("untrusted_workload_runtime", legacy_untrusted, UNTRUSTED_RUNTIME_NAME),
        ):
            if raw_rt is None:
                continue
            lpath = (*ctd_path, legacy_key)
            if not _runtime_is_set(dec.table(raw_rt, lpath)):
                continue
            if name in runtimes_raw:
                raise dec.error(
                    lpath,
                    f"conflicting definitions: both {legacy_key} and "
                    f"{_dotted((*runtimes_path, name))} are set",
                )
            runtimes[name], was_v1 = self.runtime(raw_rt, lpath, linux)
            if was_v1:
                from_v1.add(name)
            dec.warn(f"{_dotted(lpath)} is deprecated; used as {_dotted((*runtimes_path, name))}")

        default_name = containerd.default_runtime_name
        if default_name not in runtimes:
            raise dec.error(
                (*ctd_path, "default_runtime_name"),
                f"no runtime {default_name!r} configured in {_dotted(runtimes_path)}",
            )
        for flag, value, attr, opt_key in (
            ("systemd_cgroup", systemd_cgroup, "systemd_cgroup", "SystemdCgroup"),
            ("containerd.no_pivot", no_pivot, "no_pivot_root", "NoPivotRoot"),
        ):
            if not value:
                continue
            rt = runtimes[default_name]
            flags: dict[str, Any] = {attr: True}
            runtimes[default_name] = replace(rt, options=replace(rt.options, **flags))
            if default_name not in from_v1:
                dec.warn(
                    f"{_dotted((*path, *flag.split('.')))} is deprecated; set "
                    f"{_dotted((*runtimes_path, default_name, 'options', opt_key))} = true instead"
                )

        reg = cri.registry
        if legacy_auths is not None:
            configs = dict(reg.configs)
            auths_path = (*reg_path, "auths")
            for url, raw_auth in dec.table(legacy_auths, auths_path).items():
                auth = dec.dataclass(AuthConfig, raw_auth, (*auths_path, url))
                host = urlsplit(url).netloc or url
                existing = configs.get(host, RegistryHostConfig())
                if existing.auth is None:
                    configs[host] = replace(existing, auth=auth)
                dec.warn(
                    f"{_dotted((*auths_path, url))} is deprecated; use "
                    f"{_dotted((*reg_path, 'configs', host, 'auth'))}"
                )
            reg = replace(reg, configs=configs)
        if reg.config_path:
            if reg.mirrors:
                raise dec.error((*reg_path, "mirrors"), "cannot be set when config_path is set")
            if any(c.tls is not None for c in reg.configs.values()):
                raise dec.error((*reg_path, "configs"), "tls cannot be set when config_path is set")
        return replace(cri, containerd=replace(containerd, runtimes=runtimes), registry=reg)

    def runtime(
        self, raw: Any, path: tuple[str, ...], linux: LinuxRuntimeConfig
    ) -> tuple[RuntimeConfig, bool]:
        """Decode one runtime table; returns it and whether it was a v1 linux runtime."""
        dec = self.dec
        table = dict(dec.table(raw, path))
        engine = dec.string(table.pop("runtime_engine", ""), (*path, "runtime_engine"))
        root = dec.string(table.pop("runtime_root", ""), (*path, "runtime_root"))
        rt = dec.dataclass(RuntimeConfig, table, path)
        was_v1 = rt.runtime_type == RUNTIME_V1_LINUX
        rtype = RUNC_V2 if was_v1 else rt.runtime_type
        if was_v1:
            dec.warn(
                f"{_dotted((*path, 'runtime_type'))}: {RUNTIME_V1_LINUX} is not supported; using {RUNC_V2}"
            )
        opts_path = (*path, "options")
        opts_table = dec.table(table.get("options", {}), opts_path)
        if rtype in RUNC_TYPES:
            options = dec.dataclass(RuntimeOptions, opts_table, opts_path)
            for key in options.extra:
                dec.warn(f"unknown key {_dotted((*opts_path, key))} (ignored)")
            options = replace(options, extra={})
        else:
            options = RuntimeOptions(extra=copy.deepcopy(opts_table))
        if not engine and was_v1 and linux.runtime not in ("", "runc"):
            engine = linux.runtime
        if not root and was_v1:
            root = linux.runtime_root
        for legacy_key, value, attr, opt_key in (
            ("runtime_engine", engine, "binary_name", "BinaryName"),
            ("runtime_root", root, "root", "Root"),
        ):
            if not value:
                continue
            current = getattr(options, attr)
            if current and current != value:
                raise dec.error(
                    (*path, legacy_key), f"conflicts with {_dotted((*opts_path, opt_key))} = {current!r}"
                )
            change: dict[str, Any] = {attr: value}
            options = replace(options, **change)
            if legacy_key in raw:
                dec.warn(
                    f"{_dotted((*path, legacy_key))} is deprecated; used as {_dotted((*opts_path, opt_key))}"
                )
        return replace(rt, runtime_type=rtype, options=options), was_v1

    def validate(self, cfg: Config) -> None:
        dec = self.dec
        for key in ("root", "state"):
            value = getattr(cfg, key)
            if not value:
                raise dec.error((key,), "must not be empty")
            if not os.path.isabs(value):
                raise dec.error((key,), f"must be an absolute path, got {value!r}")
        if os.path.normpath(cfg.root) == os.path.normpath(cfg.state):
            raise dec.error(("state",), f"root and state must be different paths, both are {cfg.root!r}")
        if not cfg.grpc.address:
            raise dec.error(("grpc", "address"), "must not be empty")


def _runtime_is_set(table: Mapping[str, Any]) -> bool:
    """Whether a legacy runtime table says anything (containerd's defaults print it empty)."""
    return any(v not in ("", None, [], {}, False, 0) for v in table.values())


# --- encoding ------------------------------------------------------------------------------


def _encode_value(value: Any, meta: Mapping[str, Any]) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return _encode(value)
    if isinstance(value, dict):
        return {k: _encode_value(v, meta) for k, v in value.items() if v is not None}
    if isinstance(value, tuple | list):
        return [_encode_value(v, {}) for v in value]
    if isinstance(value, float) and meta.get("duration"):
        return format_duration(value)
    return copy.deepcopy(value)


def _encode(obj: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for f in fields(obj):
        meta = f.metadata
        if meta.get("internal") or meta.get("plugin"):
            continue
        value = getattr(obj, f.name)
        if meta.get("extra"):
            out.update(copy.deepcopy(value))
            continue
        if value is None:
            continue
        if isinstance(obj, RuntimeConfig) and f.name == "options" and obj.runtime_type not in RUNC_TYPES:
            out["options"] = copy.deepcopy(value.extra)
            continue
        out[meta.get("key", f.name)] = _encode_value(value, meta)
    return out


def _to_document(cfg: Config) -> dict[str, Any]:
    doc: dict[str, Any] = {"version": 2}
    doc.update(_encode(cfg))
    plugins: dict[str, Any] = {}
    for uri, attr in _MODELLED_PLUGINS.items():
        plugins[uri] = _encode(getattr(cfg, attr))
    for key, table in cfg.plugins.items():
        plugins[key] = copy.deepcopy(table)
    doc["plugins"] = dict(sorted(plugins.items()))
    return doc


# --- public entry points -----------------------------------------------------------------


def config_from_dict(
    data: Mapping[str, Any], source: str = "<config>", *, known_plugins: Iterable[str] = ()
) -> Config:
    """Build the model from a parsed TOML document (either layout)."""
    return _Loader(data, source, known_plugins).load()


def parse_config(text: str, source: str = "<config>", *, known_plugins: Iterable[str] = ()) -> Config:
    """Parse config.toml text; ``source`` names it in messages."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        m = re.search(r"line (\d+)", str(exc))
        raise ConfigError(
            f"{source}: invalid TOML: {exc}", source=source, line=int(m.group(1)) if m else None
        ) from exc
    return config_from_dict(data, source, known_plugins=known_plugins)


def load_config(
    path: str | os.PathLike[str], *, missing_ok: bool = False, known_plugins: Iterable[str] = ()
) -> tuple[Config, list[str]]:
    """Load a config file; returns the model and its warnings (also in ``Config.warnings``).

    A missing file is an error unless ``missing_ok`` (then the defaults are returned).
    """
    source = os.fspath(path)
    try:
        with open(source, "rb") as fh:
            raw = fh.read()
    except FileNotFoundError as exc:
        if missing_ok:
            return Config(source=None), []
        raise ConfigError(f"{source}: config file not found", source=source) from exc
    except OSError as exc:
        raise ConfigError(f"{source}: cannot read config file: {exc.strerror or exc}", source=source) from exc
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{source}: not valid UTF-8: {exc}", source=source) from exc
    cfg = parse_config(text, source, known_plugins=known_plugins)
    return cfg, list(cfg.warnings)


def with_overrides(
    cfg: Config,
    *,
    root: str | None = None,
    state: str | None = None,
    address: str | None = None,
    log_level: str | None = None,
) -> Config:
    """Apply command-line overrides (``--root``, ``--state``, ``--address``, ``--log-level``)."""
    changes: dict[str, Any] = {}
    if root is not None:
        changes["root"] = os.path.abspath(root)
    if state is not None:
        changes["state"] = os.path.abspath(state)
    if address is not None:
        changes["grpc"] = replace(cfg.grpc, address=address)
    if log_level is not None:
        if log_level.lower() not in _LOG_LEVELS:
            allowed = ", ".join(sorted(lv for lv in _LOG_LEVELS if lv))
            raise ConfigError(
                f"--log-level: invalid value {log_level!r} (expected one of {allowed})", key="debug.level"
            )
        changes["debug"] = replace(cfg.debug, level=log_level)
    out = replace(cfg, **changes)
    if os.path.normpath(out.root) == os.path.normpath(out.state):
        raise ConfigError(f"root and state must be different paths, both are {out.root!r}", key="state")
    return out


_HEADER = "# pycontainerd configuration (containerd config.toml, version 2 layout)\n"


def dump_config_toml(cfg: Config) -> str:
    """The effective configuration as a version-2 config.toml (``pycontainerd config dump``)."""
    return _HEADER + tomli_w.dumps(_to_document(cfg))


def default_config_toml() -> str:
    """The complete default configuration (``pycontainerd config default``)."""
    return dump_config_toml(Config())
