"""The configuration model: frozen dataclasses, one per section, with field metadata that drives
the decoder (``pycontainerd.config.decode``).  Plugins name the dataclass of their own section on
their ``Registration``.  Pure: no I/O."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

T = TypeVar("T")

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

TIMEOUT_SHIM_CLEANUP = "io.containerd.timeout.shim.cleanup"
TIMEOUT_SHIM_LOAD = "io.containerd.timeout.shim.load"
TIMEOUT_SHIM_SHUTDOWN = "io.containerd.timeout.shim.shutdown"
TIMEOUT_TASK_STATE = "io.containerd.timeout.task.state"

# containerd 1.6's timeouts (``[timeouts]``), all honoured (see ``runtime.v2``): a shim's
# ``delete`` after it died, reconnecting to a shim at start-up, the Shutdown call to a shim,
# and the State call to a shim behind the tasks service's Get/List
DEFAULT_TIMEOUTS: Mapping[str, float] = {
    TIMEOUT_SHIM_CLEANUP: 5.0,
    TIMEOUT_SHIM_LOAD: 5.0,
    TIMEOUT_SHIM_SHUTDOWN: 3.0,
    TIMEOUT_TASK_STATE: 2.0,
}

# timeouts of later containerd versions that a dumped config carries: accepted at containerd's
# value when our behaviour is that value, else refused (the loader names the key)
FOREIGN_TIMEOUTS: Mapping[str, tuple[float, str]] = {
    # bbolt's wait for the metadata file lock (0: wait for ever); our metadata is SQLite
    "io.containerd.timeout.bolt.open": (
        0.0, "the metadata store is SQLite, not bolt: there is no bolt lock to wait for"),
    "io.containerd.timeout.metrics.shimstats": (
        2.0, "the metrics endpoint reads task cgroups itself and asks no shim for stats"),
    "io.containerd.timeout.cri.defercleanup": (
        60.0, "a deferred cleanup deadline for failed CRI sandboxes is not implemented"),
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
    # gRPC on TCP too (host:port), with TLS when cert and key are given, client certificates
    # signed by tcp_tls_ca required when it is given (as containerd)
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
    """``[ttrpc]``: the socket shims publish events to (empty: ``<grpc.address>.ttrpc``, mode 0600)
    and its owner (mode 0660 when one is given), as containerd."""

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
    # the daemon moves its own process into this cgroup at start-up (created if missing), as containerd
    path: str = ""


@dataclass(frozen=True)
class ProxyPluginConfig:
    """``[proxy_plugins.<name>]``: refused (see ``Config.proxy_plugins``); kept to name its keys."""

    type: str = ""
    address: str = ""
    platform: str = ""


@dataclass(frozen=True)
class StreamProcessorConfig:
    """``[stream_processors.<name>]``: refused (see ``Config.stream_processors``)."""

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
    # a JSON OCI spec file, read once when the CRI plugin starts: the base of the handler's
    # containers' specs (not of its pods' infra specs, as containerd)
    base_runtime_spec: str = ""
    # the handler's pods are networked from this CNI conf dir (its own load), the cni section's otherwise
    cni_conf_dir: str = ""
    cni_max_conf_num: int = _f(0, minimum=0)  # 0: cni.max_conf_num
    # the handler's pods' and containers' snapshots and images (containerd 1.7); "": containerd.snapshotter
    snapshotter: str = ""
    options: RuntimeOptions = field(default_factory=RuntimeOptions, metadata={"manual": True})


def _default_runtimes() -> dict[str, RuntimeConfig]:
    return {DEFAULT_RUNTIME_NAME: RuntimeConfig()}


@dataclass(frozen=True)
class CRIContainerdConfig:
    snapshotter: str = DEFAULT_SNAPSHOTTER
    default_runtime_name: str = DEFAULT_RUNTIME_NAME
    runtimes: dict[str, RuntimeConfig] = field(default_factory=_default_runtimes, metadata={"manual": True})
    # false: each unpacked layer's snapshot gets the image's containerd.io/snapshot/cri.* labels
    # (image ref, manifest, layer, layers above), for remote snapshotters (cri/imagestore.py)
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


# containerd 1.6's only key model ("node": keys on the node, through the ocicrypt stream
# processors); "" turns decryption off.  Neither does anything for an unencrypted image, and
# an encrypted layer is refused at pull either way (no stream processors: see stream_processors).
_KEY_MODELS = frozenset({"", "node"})


@dataclass(frozen=True)
class ImageDecryptionConfig:
    key_model: str = _f("node", choices=_KEY_MODELS)


@dataclass(frozen=True)
class X509KeyPairStreaming:
    tls_cert_file: str = ""
    tls_key_file: str = ""


_NO_CDI = "CDI device injection (enable_cdi) is not implemented"
DEFAULT_CDI_SPEC_DIRS = ("/etc/cdi", "/var/run/cdi")


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
    # false serves the CRI on the TCP server too, which exists only with grpc.tcp_address: without
    # it false does nothing, in containerd as here
    disable_tcp_service: bool = True
    # containerd refreshes snapshot usage (writable layers, ImageFsInfo) every this many seconds;
    # we read it on each call, so it is never older than the period (a ticker needs >= 1 s)
    stats_collect_period: int = _f(10, minimum=1)
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
    enable_cdi: bool = _f(False, unsupported=(bool, _NO_CDI))
    cdi_spec_dirs: tuple[str, ...] = _f(
        DEFAULT_CDI_SPEC_DIRS,
        unsupported=(lambda dirs: tuple(dirs) != DEFAULT_CDI_SPEC_DIRS, _NO_CDI + ", so no CDI spec dirs are read"),
    )
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
    """``[plugins."io.containerd.runtime.v1.linux"]`` (``[plugins.linux]``): the legacy v1 runtime.

    Its tasks run on the runtime v2 task manager (the v1 shim is not implemented): ``runtime``
    and ``runtime_root`` are the runc binary and root of tasks of runtime
    ``io.containerd.runtime.v1.linux`` and of a CRI runtime of that type (see the loader),
    ``shim_debug`` turns shim debug logs on; another v1 shim binary or no shim is refused."""

    shim: str = _f("containerd-shim", unsupported=(
        lambda v: v not in ("", "containerd-shim"),
        "the v1 shim (containerd-shim) is not implemented: v1 runtime tasks run on the runtime v2 shim",
    ))
    runtime: str = "runc"
    runtime_root: str = ""
    no_shim: bool = _f(False, unsupported=(bool, "running runc without a shim is not implemented"))
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
    temp: str = ""  # made at start-up and the daemon's TMPDIR (inherited by what it starts)
    # containerd 1.6 loads Go plugins (.so) from here; a Python daemon cannot
    plugin_dir: str = _f("", unsupported=(bool, "Go plugins (.so files) cannot be loaded by this daemon"))
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
    proxy_plugins: dict[str, ProxyPluginConfig] = field(default_factory=dict, metadata={
        "unsupported": (bool, "proxy plugins (snapshotters or content stores served over gRPC) are not implemented"),
    })
    stream_processors: dict[str, StreamProcessorConfig] = field(default_factory=dict, metadata={
        "unsupported": (bool, "stream processors (external layer decoders, e.g. ocicrypt) are not implemented"),
    })
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
        from .decode import _encode

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
        from .decode import _Decoder, _dotted

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


