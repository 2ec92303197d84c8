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
``Criu*``, ``plugin_dir``, ``proxy_plugins``, ``stream_processors``, the v1
runtime's ``no_shim``/``shim``, ``[cgroup] path``, ``[ttrpc]`` uid/gid) are refused (field
metadata ``unsupported``), never silently ignored; so is a ``[timeouts]`` key other than
containerd 1.6's four (a later version's key only at containerd's default, where ours is the same).

Output: ``default_config_toml()`` prints the complete version-2 default configuration
(``pycontainerd config default``) and ``dump_config_toml(cfg)`` the effective one
(``pycontainerd config dump``).  Loading either gives back the same model.

Durations are written like Go's ``time.Duration`` (``"100ms"``, ``"1m30s"``, ``"4h0m0s"``)
and held as float seconds.
"""

from __future__ import annotations

from .decode import config_from_dict, default_config_toml, dump_config_toml, load_config, parse_config, with_overrides
from .durations import format_duration, parse_duration
from .model import (
    DEFAULT_ADDRESS,
    DEFAULT_CONFIG_PATH,
    DEFAULT_ROOT,
    DEFAULT_STATE,
    KNOWN_PLUGINS,
    AuthConfig,
    CgroupConfig,
    CgroupsMonitorConfig,
    CNIConfig,
    Config,
    ConfigError,
    CRIConfig,
    CRIContainerdConfig,
    DebugConfig,
    GCSchedulerConfig,
    GRPCConfig,
    ImageDecryptionConfig,
    LinuxRuntimeConfig,
    MetricsConfig,
    MirrorConfig,
    OptConfig,
    OverlayfsConfig,
    ProxyPluginConfig,
    RegistryConfig,
    RegistryHostConfig,
    RuntimeConfig,
    RuntimeOptions,
    StreamProcessorConfig,
    TLSConfig,
    TTRPCConfig,
    X509KeyPairStreaming,
)

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
