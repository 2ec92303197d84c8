"""Daemon config: both config.toml layouts onto one model, warnings, errors, round trips."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from pycontainerd import config as c
from pycontainerd.config import Config, ConfigError, parse_config

CRI = '"io.containerd.grpc.v1.cri"'

# Verbatim from the seed article (containerd 1.3 era, /etc/containerd/config.toml).
SEED_SNIPPET = """\
[plugins]
  [plugins.cri.containerd]
    snapshotter = "overlayfs"
    [plugins.cri.containerd.default_runtime]
      runtime_type = "io.containerd.runtime.v1.linux"
      runtime_engine = "/usr/local/bin/runc"
      runtime_root = ""
"""

# The seed article's CNI settings ("[plugins.cri.cni]、bin_dir = ...、conf_dir = ...").
SEED_CNI = """\
[plugins.cri.cni]
  bin_dir = "/opt/cni/bin"
  conf_dir = "/etc/cni/net.d"
"""

# What `containerd config default` printed in the unversioned era (1.2/1.3).
V1_DEFAULT = """\
root = "/var/lib/containerd"
state = "/run/containerd"
oom_score = 0

[grpc]
  address = "/run/containerd/containerd.sock"
  uid = 0
  gid = 0
  max_recv_message_size = 16777216
  max_send_message_size = 16777216

[debug]
  address = ""
  uid = 0
  gid = 0
  level = ""

[metrics]
  address = ""
  grpc_histogram = false

[cgroup]
  path = ""

[plugins]
  [plugins.cgroups]
    no_prometheus = false
  [plugins.cri]
    stream_server_address = "127.0.0.1"
    stream_server_port = "0"
    enable_selinux = false
    sandbox_image = "k8s.gcr.io/pause:3.1"
    stats_collect_period = 10
    systemd_cgroup = false
    enable_tls_streaming = false
    max_container_log_line_size = 16384
    [plugins.cri.containerd]
      snapshotter = "overlayfs"
      no_pivot = false
      [plugins.cri.containerd.default_runtime]
        runtime_type = "io.containerd.runtime.v1.linux"
        runtime_engine = ""
        runtime_root = ""
      [plugins.cri.containerd.untrusted_workload_runtime]
        runtime_type = ""
        runtime_engine = ""
        runtime_root = ""
    [plugins.cri.cni]
      bin_dir = "/opt/cni/bin"
      conf_dir = "/etc/cni/net.d"
      conf_template = ""
    [plugins.cri.registry]
      [plugins.cri.registry.mirrors]
        [plugins.cri.registry.mirrors."docker.io"]
          endpoint = ["https://registry-1.docker.io"]
  [plugins.diff-service]
    default = ["walking"]
  [plugins.linux]
    shim = "containerd-shim"
    runtime = "runc"
    runtime_root = ""
    no_shim = false
    shim_debug = false
  [plugins.opt]
    path = "/opt/containerd"
  [plugins.restart]
    interval = "10s"
  [plugins.scheduler]
    pause_threshold = 0.02
    deletion_threshold = 0
    mutation_threshold = 100
    schedule_delay = "0s"
    startup_delay = "100ms"
  [plugins.bolt]
    content_sharing_policy = "shared"
  [plugins.overlayfs]
    root_path = "/data/overlay"
"""

V2_FULL = f"""\
version = 2
root = "/srv/ctd/root"
state = "/srv/ctd/state"
oom_score = -999
disabled_plugins = ["io.containerd.snapshotter.v1.zfs"]
required_plugins = [{CRI}]

[grpc]
  address = "/srv/ctd/ctd.sock"
  uid = 1000
  gid = 1001
  max_recv_message_size = 1048576
  max_send_message_size = 2097152

[ttrpc]
  address = "/srv/ctd/ctd.sock.ttrpc"

[debug]
  level = "debug"
  address = "/srv/ctd/debug.sock"

[metrics]
  address = "127.0.0.1:1338"

[plugins.{CRI}]
  sandbox_image = "registry.k8s.io/pause:3.9"
  max_container_log_line_size = -1
  restrict_oom_score_adj = true
  enable_selinux = true
  stream_server_address = "0.0.0.0"
  stream_server_port = 10010
  [plugins.{CRI}.containerd]
    snapshotter = "native"
    default_runtime_name = "crun"
    [plugins.{CRI}.containerd.runtimes.crun]
      runtime_type = "io.containerd.runc.v2"
      privileged_without_host_devices = true
      [plugins.{CRI}.containerd.runtimes.crun.options]
        BinaryName = "/usr/bin/crun"
        Root = "/run/crun"
        SystemdCgroup = true
        NoPivotRoot = true
    [plugins.{CRI}.containerd.runtimes.kata]
      runtime_type = "io.containerd.kata.v2"
      [plugins.{CRI}.containerd.runtimes.kata.options]
        ConfigPath = "/etc/kata/configuration.toml"
  [plugins.{CRI}.cni]
    bin_dir = "/opt/cni/bin"
    conf_dir = "/etc/cni/conf.d"
    max_conf_num = 2
    conf_template = "/etc/cni/template"
  [plugins.{CRI}.registry]
    [plugins.{CRI}.registry.mirrors."docker.io"]
      endpoint = ["https://mirror.example.com", "https://registry-1.docker.io"]
    [plugins.{CRI}.registry.configs."registry.example.com".auth]
      username = "alice"
      password = "s3cret"
      auth = ""
      identitytoken = ""
    [plugins.{CRI}.registry.configs."registry.example.com".tls]
      ca_file = "/etc/ca.pem"
      cert_file = "/etc/cert.pem"
      key_file = "/etc/key.pem"
      insecure_skip_verify = true

[plugins."io.containerd.gc.v1.scheduler"]
  pause_threshold = 0.05
  deletion_threshold = 5
  mutation_threshold = 50
  schedule_delay = "1m30s"
  startup_delay = "1.5s"

[plugins."io.containerd.snapshotter.v1.overlayfs"]
  root_path = "/data/overlay"
  upperdir_label = true

[plugins."io.containerd.runtime.v1.linux"]
  shim = "containerd-shim"
  runtime = "runc"
  runtime_root = "/run/runc-v1"
  no_shim = false
  shim_debug = true

[plugins."io.containerd.internal.v1.opt"]
  path = "/opt/ctd"

[plugins."io.containerd.monitor.v1.cgroups"]
  no_prometheus = true

[plugins."io.containerd.metadata.v1.bolt"]
  content_sharing_policy = "isolated"
"""


def load(text: str, source: str = "cfg.toml") -> Config:
    return parse_config(text, source)


# --- defaults and round trips ---------------------------------------------------------------


def test_defaults() -> None:
    cfg = Config()
    assert cfg.root == "/var/lib/pycontainerd"
    assert cfg.state == "/run/pycontainerd"
    assert cfg.grpc.address == "/run/pycontainerd/pycontainerd.sock"
    assert cfg.grpc.max_recv_message_size == 16 << 20
    assert cfg.cri.containerd.snapshotter == "overlayfs"
    assert cfg.cri.containerd.default_runtime_name == "runc"
    assert cfg.cri.default_runtime.runtime_type == "io.containerd.runc.v2"
    assert cfg.cri.cni.bin_dir == "/usr/lib/cni"
    assert cfg.cri.cni.conf_dir == "/etc/cni/net.d"
    assert cfg.cri.cni.bin_search_path == ("/usr/lib/cni", "/opt/cni/bin")
    assert cfg.cri.sandbox_image == "registry.k8s.io/pause:3.6"
    assert cfg.cri.restrict_oom_score_adj is False
    assert cfg.gc == c.GCSchedulerConfig(0.02, 0, 100, 0.0, 0.1)
    assert cfg.timeouts["io.containerd.timeout.shim.shutdown"] == 3.0


def test_default_toml_round_trips() -> None:
    text = c.default_config_toml()
    doc = tomllib.loads(text)
    assert doc["version"] == 2
    assert doc["plugins"]["io.containerd.gc.v1.scheduler"]["startup_delay"] == "100ms"
    runc = doc["plugins"]["io.containerd.grpc.v1.cri"]["containerd"]["runtimes"]["runc"]
    assert runc["runtime_type"] == "io.containerd.runc.v2"
    cfg = load(text)
    assert cfg == Config()
    assert cfg.warnings == ()


def test_empty_file_is_defaults() -> None:
    assert load("") == Config()
    assert load("version = 2\n") == Config()


def test_dump_round_trips_a_custom_config() -> None:
    cfg = load(V2_FULL)
    again = load(c.dump_config_toml(cfg))
    assert again == cfg
    assert again.warnings == ()
    assert again.plugin_section("io.containerd.metadata.v1.bolt") == {"content_sharing_policy": "isolated"}


def test_dump_of_v1_config_is_v2_and_equal() -> None:
    cfg = load(V1_DEFAULT)
    text = c.dump_config_toml(cfg)
    assert tomllib.loads(text)["version"] == 2
    assert load(text) == cfg


# --- version 1 (unversioned) layout ----------------------------------------------------------


def test_seed_snippet_verbatim() -> None:
    cfg = load(SEED_SNIPPET, "/etc/pycontainerd/config.toml")
    assert cfg.source_version == 1
    assert cfg.cri.containerd.snapshotter == "overlayfs"
    assert cfg.cri.containerd.default_runtime_name == "runc"
    runc = cfg.cri.default_runtime
    assert runc.runtime_type == "io.containerd.runc.v2"
    assert runc.options.binary_name == "/usr/local/bin/runc"
    assert runc.options.root == ""
    assert set(cfg.cri.containerd.runtimes) == {"runc"}
    text = "\n".join(cfg.warnings)
    assert "plugins.cri.containerd.default_runtime is deprecated" in text
    assert "io.containerd.runtime.v1.linux is not supported" in text
    assert all(w.startswith("/etc/pycontainerd/config.toml: ") for w in cfg.warnings)


def test_seed_cni_section() -> None:
    cfg = load(SEED_CNI)
    assert cfg.cri.cni.bin_dir == "/opt/cni/bin"
    assert cfg.cri.cni.conf_dir == "/etc/cni/net.d"
    assert cfg.cri.cni.bin_search_path == ("/opt/cni/bin", "/usr/lib/cni")
    assert cfg.warnings == ()


def test_v1_containerd_default() -> None:
    cfg = load(V1_DEFAULT)
    assert cfg.root == "/var/lib/containerd"
    assert cfg.grpc.address == "/run/containerd/containerd.sock"
    assert cfg.cri.sandbox_image == "k8s.gcr.io/pause:3.1"
    assert cfg.cri.registry.mirrors["docker.io"].endpoint == ("https://registry-1.docker.io",)
    assert cfg.cri.default_runtime.runtime_type == "io.containerd.runc.v2"
    assert cfg.cri.default_runtime.options.binary_name == ""  # [plugins.linux] runtime = "runc"
    assert "untrusted" not in cfg.cri.containerd.runtimes  # the empty legacy table says nothing
    assert cfg.linux.shim == "containerd-shim"
    assert cfg.opt.path == "/opt/containerd"
    assert cfg.gc == c.GCSchedulerConfig()
    assert cfg.overlayfs.root_path == "/data/overlay"
    assert cfg.plugin_section("io.containerd.metadata.v1.bolt") == {"content_sharing_policy": "shared"}
    assert cfg.plugin_section("io.containerd.service.v1.diff-service") == {"default": ["walking"]}
    assert cfg.plugin_section("io.containerd.internal.v1.restart") == {"interval": "10s"}
    assert not any("unknown" in w for w in cfg.warnings)


@pytest.mark.parametrize(
    ("engine", "binary"),
    [
        ("", ""),
        ("runc", "runc"),
        ("/usr/bin/crun", "/usr/bin/crun"),
        ("/usr/local/bin/runc", "/usr/local/bin/runc"),
    ],
)
def test_v1_runtime_engine_becomes_binary_name(engine: str, binary: str) -> None:
    cfg = load(
        "[plugins.cri.containerd.default_runtime]\n"
        f'runtime_type = "io.containerd.runtime.v1.linux"\nruntime_engine = "{engine}"\n'
        'runtime_root = "/run/alt"\n'
    )
    opts = cfg.cri.default_runtime.options
    assert opts.binary_name == binary
    assert opts.root == "/run/alt"


def test_v1_linux_plugin_runtime_used_when_engine_empty() -> None:
    cfg = load(
        '[plugins.linux]\nruntime = "/usr/bin/crun"\nruntime_root = "/run/crun"\n'
        '[plugins.cri.containerd.default_runtime]\nruntime_type = "io.containerd.runtime.v1.linux"\n'
    )
    assert cfg.cri.default_runtime.options.binary_name == "/usr/bin/crun"
    assert cfg.cri.default_runtime.options.root == "/run/crun"
    assert cfg.linux.runtime == "/usr/bin/crun"


def test_v1_untrusted_and_legacy_flags() -> None:
    cfg = load(
        "[plugins.cri]\nsystemd_cgroup = true\n"
        "[plugins.cri.containerd]\nno_pivot = true\n"
        '[plugins.cri.containerd.default_runtime]\nruntime_type = "io.containerd.runtime.v1.linux"\n'
        '[plugins.cri.containerd.untrusted_workload_runtime]\nruntime_type = "io.containerd.runsc.v1"\n'
    )
    runtimes = cfg.cri.containerd.runtimes
    assert runtimes["untrusted"].runtime_type == "io.containerd.runsc.v1"
    assert runtimes["runc"].options.systemd_cgroup is True
    assert runtimes["runc"].options.no_pivot_root is True
    assert any("untrusted_workload_runtime is deprecated" in w for w in cfg.warnings)


def test_v1_disabled_plugins_use_short_names() -> None:
    cfg = load('disabled_plugins = ["cri", "zfs", "mystery"]\n')
    assert cfg.disabled_plugins == (
        "io.containerd.grpc.v1.cri",
        "io.containerd.snapshotter.v1.zfs",
        "mystery",
    )
    assert any("disabled_plugins: unknown plugin 'mystery'" in w for w in cfg.warnings)


def test_v1_unknown_short_plugin_is_kept_and_findable() -> None:
    cfg = load('[plugins.stargz]\nroot_path = "/x"\n')
    assert any("unknown plugin section plugins.stargz" in w for w in cfg.warnings)
    assert cfg.plugin_section("io.containerd.snapshotter.v1.stargz") == {"root_path": "/x"}


def test_v1_known_plugins_parameter_silences_warning() -> None:
    cfg = parse_config(
        '[plugins.stargz]\nroot_path = "/x"\n', known_plugins=["io.containerd.snapshotter.v1.stargz"]
    )
    assert cfg.warnings == ()
    assert cfg.plugins == {"io.containerd.snapshotter.v1.stargz": {"root_path": "/x"}}


def test_v1_full_id_gets_a_hint() -> None:
    cfg = load(f'[plugins.{CRI}]\nsandbox_image = "x"\n')
    assert any("version 1 config names plugins by short id" in w for w in cfg.warnings)
    assert cfg.cri.sandbox_image == "registry.k8s.io/pause:3.6"


# --- version 2 layout ------------------------------------------------------------------------


def test_v2_full() -> None:
    cfg = load(V2_FULL)
    assert cfg.warnings == ()
    assert (cfg.root, cfg.state, cfg.oom_score) == ("/srv/ctd/root", "/srv/ctd/state", -999)
    assert cfg.disabled_plugins == ("io.containerd.snapshotter.v1.zfs",)
    assert cfg.required_plugins == ("io.containerd.grpc.v1.cri",)
    assert cfg.grpc == c.GRPCConfig(
        address="/srv/ctd/ctd.sock",
        uid=1000,
        gid=1001,
        max_recv_message_size=1 << 20,
        max_send_message_size=2 << 20,
    )
    assert cfg.ttrpc.address == "/srv/ctd/ctd.sock.ttrpc"
    assert (cfg.debug.level, cfg.debug.address) == ("debug", "/srv/ctd/debug.sock")
    assert cfg.metrics.address == "127.0.0.1:1338"
    cri = cfg.cri
    assert cri.sandbox_image == "registry.k8s.io/pause:3.9"
    assert cri.max_container_log_line_size == -1
    assert cri.restrict_oom_score_adj
    assert cri.enable_selinux
    assert (cri.stream_server_address, cri.stream_server_port) == ("0.0.0.0", "10010")
    assert cri.containerd.snapshotter == "native"
    assert set(cri.containerd.runtimes) == {"runc", "crun", "kata"}  # runc default kept
    crun = cri.default_runtime
    assert crun.privileged_without_host_devices
    assert crun.options == c.RuntimeOptions(
        binary_name="/usr/bin/crun", root="/run/crun", systemd_cgroup=True, no_pivot_root=True
    )
    kata = cri.containerd.runtimes["kata"]
    assert kata.options.extra == {"ConfigPath": "/etc/kata/configuration.toml"}
    assert cri.cni == c.CNIConfig("/opt/cni/bin", "/etc/cni/conf.d", 2, "/etc/cni/template")
    assert cri.registry.mirrors["docker.io"].endpoint == (
        "https://mirror.example.com",
        "https://registry-1.docker.io",
    )
    host = cri.registry.configs["registry.example.com"]
    assert host.auth == c.AuthConfig(username="alice", password="s3cret")
    assert host.tls == c.TLSConfig(True, "/etc/ca.pem", "/etc/cert.pem", "/etc/key.pem")
    assert cfg.gc == c.GCSchedulerConfig(0.05, 5, 50, 90.0, 1.5)
    assert cfg.overlayfs.upperdir_label
    assert cfg.overlayfs.root_path == "/data/overlay"
    assert cfg.linux.shim_debug and not cfg.linux.no_shim
    assert cfg.linux.runtime_root == "/run/runc-v1"
    assert cfg.opt.path == "/opt/ctd"
    assert cfg.cgroups_monitor.no_prometheus


def test_v2_legacy_default_runtime() -> None:
    cfg = load(
        f"version = 2\n[plugins.{CRI}.containerd.default_runtime]\n"
        'runtime_type = "io.containerd.runc.v2"\nruntime_engine = "/usr/bin/crun"\n'
    )
    assert cfg.cri.default_runtime.options.binary_name == "/usr/bin/crun"
    assert any("runtime_engine is deprecated" in w for w in cfg.warnings)


def test_registry_legacy_auths() -> None:
    cfg = load(
        f'version = 2\n[plugins.{CRI}.registry.auths."https://gcr.io"]\nusername = "u"\npassword = "p"\n'
    )
    assert cfg.cri.registry.configs["gcr.io"].auth == c.AuthConfig(username="u", password="p")
    assert any("registry.auths" in w and "deprecated" in w for w in cfg.warnings)


def test_plugin_section() -> None:
    cfg = load(V2_FULL)
    gc = cfg.plugin_section("io.containerd.gc.v1.scheduler")
    assert gc == {
        "pause_threshold": 0.05,
        "deletion_threshold": 5,
        "mutation_threshold": 50,
        "schedule_delay": "1m30s",
        "startup_delay": "1.5s",
    }
    cri = cfg.plugin_section("io.containerd.grpc.v1.cri")
    assert cri["containerd"]["runtimes"]["crun"]["options"]["BinaryName"] == "/usr/bin/crun"
    assert cri["containerd"]["runtimes"]["kata"]["options"] == {"ConfigPath": "/etc/kata/configuration.toml"}
    assert cfg.plugin_section("io.containerd.snapshotter.v1.native") == {}
    section = cfg.plugin_section("io.containerd.metadata.v1.bolt")
    section["content_sharing_policy"] = "mutated"
    assert cfg.plugin_section("io.containerd.metadata.v1.bolt") == {"content_sharing_policy": "isolated"}
    assert Config().plugin_section("io.containerd.snapshotter.v1.overlayfs")["root_path"] == ""


def test_gc_legacy_milliseconds() -> None:
    cfg = load(
        'version = 2\n[plugins."io.containerd.gc.v1.scheduler"]\n'
        "schedule_delay_ms = 250\nstartup_delay_ms = 0\n"
    )
    assert (cfg.gc.schedule_delay, cfg.gc.startup_delay) == (0.25, 0.0)
    assert len(cfg.warnings) == 2


def test_timeouts_merge_with_defaults() -> None:
    cfg = load('version = 2\n[timeouts]\n"io.containerd.timeout.shim.load" = "10s"\n')
    assert cfg.timeouts["io.containerd.timeout.shim.load"] == 10.0
    assert cfg.timeouts["io.containerd.timeout.shim.cleanup"] == 5.0


# --- warnings ----------------------------------------------------------------------------------


def test_unknown_keys_are_warnings_with_full_dotted_keys() -> None:
    cfg = load(
        "version = 2\nbogus = 1\n[grpc]\nadress = 'x'\n"
        f"[plugins.{CRI}]\nsandbox_imag = 'x'\n"
        f"[plugins.{CRI}.containerd.runtimes.runc.options]\nSystemdCgroups = true\n"
        '[plugins."io.containerd.gc.v1.scheduler"]\nfoo = 1\n'
        '[plugins."io.example.v1.thing"]\na = 1\n'
        "[plugins.cri]\nx = 1\n"
    )
    w = cfg.warnings
    assert "cfg.toml: unknown key bogus (ignored)" in w
    assert "cfg.toml: unknown key grpc.adress (ignored)" in w
    assert f"cfg.toml: unknown key plugins.{CRI}.sandbox_imag (ignored)" in w
    assert (
        f"cfg.toml: unknown key plugins.{CRI}.containerd.runtimes.runc.options.SystemdCgroups (ignored)" in w
    )
    assert 'cfg.toml: unknown key plugins."io.containerd.gc.v1.scheduler".foo (ignored)' in w
    assert any('unknown plugin section plugins."io.example.v1.thing"' in x for x in w)
    assert any(
        "unknown plugin section plugins.cri (version 2 names plugins by full id: "
        f"did you mean plugins.{CRI}?)" in x
        for x in w
    )
    assert cfg.plugin_section("io.example.v1.thing") == {"a": 1}
    assert len(w) == 7


def test_imports_warned() -> None:
    cfg = load('version = 2\nimports = ["/etc/pycontainerd/conf.d/*.toml"]\n')
    assert any("imports" in w and "not supported" in w for w in cfg.warnings)


# --- errors --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "key", "problem"),
    [
        ("version = 3", "version", "unsupported config version 3"),
        ('version = "2"', "version", "unsupported config version '2'"),
        ('oom_score = "high"', "oom_score", "expected an integer, got string"),
        ("oom_score = 5000", "oom_score", "must be <= 1000"),
        ("root = 5", "root", "expected a string, got integer"),
        ('root = "relative/dir"', "root", "must be an absolute path"),
        ('root = "/a"\nstate = "/a/"', "state", "root and state must be different"),
        ("[grpc]\nmax_recv_message_size = -1", "grpc.max_recv_message_size", "must be >= 1"),
        ("[grpc]\nuid = -5", "grpc.uid", "must be >= 0"),
        ('[grpc]\naddress = ""', "grpc.address", "must not be empty"),
        ("[grpc]\nuid = true", "grpc.uid", "expected an integer, got boolean"),
        ('[debug]\nlevel = "loud"', "debug.level", "invalid value 'loud'"),
        ("grpc = 1", "grpc", "expected a table, got integer"),
        ('disabled_plugins = "cri"', "disabled_plugins", "expected an array"),
        ("plugins = 1", "plugins", "expected a table"),
        ("[plugins]\ncri = 1", "plugins.cri", "expected a table, got integer"),
        ('version = 2\ndisabled_plugins = ["cri"]', "disabled_plugins.0", "invalid plugin id 'cri'"),
        (
            'version = 2\n[plugins."io.containerd.gc.v1.scheduler"]\nschedule_delay = "10x"',
            'plugins."io.containerd.gc.v1.scheduler".schedule_delay',
            "invalid duration '10x'",
        ),
        (
            'version = 2\n[plugins."io.containerd.gc.v1.scheduler"]\nstartup_delay = 100',
            'plugins."io.containerd.gc.v1.scheduler".startup_delay',
            "expected a duration string",
        ),
        (
            'version = 2\n[plugins."io.containerd.gc.v1.scheduler"]\nstartup_delay = "-1s"',
            'plugins."io.containerd.gc.v1.scheduler".startup_delay',
            "must be >= 0, got -1s",
        ),
        (
            "[plugins.scheduler]\npause_threshold = 0.6",
            "plugins.scheduler.pause_threshold",
            "must be <= 0.5",
        ),
        (
            "[plugins.scheduler]\ndeletion_threshold = -1",
            "plugins.scheduler.deletion_threshold",
            "must be >= 0",
        ),
        (
            "[plugins.cri]\nmax_container_log_line_size = -2",
            "plugins.cri.max_container_log_line_size",
            ">= -1",
        ),
        ("[plugins.cri.cni]\nmax_conf_num = -1", "plugins.cri.cni.max_conf_num", "must be >= 0"),
        ("[plugins.cri.cni]\nbin_dir = ['/a']", "plugins.cri.cni.bin_dir", "expected a string, got array"),
        (
            '[plugins.cri]\nstream_idle_timeout = "4 hours"',
            "plugins.cri.stream_idle_timeout",
            "invalid duration",
        ),
        (
            '[plugins.cri.containerd.runtimes.runc.options]\nSystemdCgroup = "yes"',
            "plugins.cri.containerd.runtimes.runc.options.SystemdCgroup",
            "expected a boolean",
        ),
        (
            '[plugins.cri.containerd]\ndefault_runtime_name = "kata"',
            "plugins.cri.containerd.default_runtime_name",
            "no runtime 'kata' configured",
        ),
        (
            '[plugins.cri.containerd.default_runtime]\nruntime_type = "io.containerd.runc.v2"\n'
            '[plugins.cri.containerd.runtimes.runc]\nruntime_type = "io.containerd.runc.v2"\n',
            "plugins.cri.containerd.default_runtime",
            "conflicting definitions",
        ),
        (
            '[plugins.cri.containerd.runtimes.runc]\nruntime_engine = "/a"\n'
            '[plugins.cri.containerd.runtimes.runc.options]\nBinaryName = "/b"\n',
            "plugins.cri.containerd.runtimes.runc.runtime_engine",
            "conflicts with",
        ),
        (
            '[plugins.cri.registry]\nconfig_path = "/etc/containerd/certs.d"\n'
            '[plugins.cri.registry.mirrors."docker.io"]\nendpoint = ["https://x"]\n',
            "plugins.cri.registry.mirrors",
            "cannot be set when config_path is set",
        ),
        (
            '[plugins.cri.registry.mirrors."docker.io"]\nendpoint = [1]',
            'plugins.cri.registry.mirrors."docker.io".endpoint.0',
            "expected a string",
        ),
    ],
)
def test_invalid_values(text: str, key: str, problem: str) -> None:
    with pytest.raises(ConfigError) as exc:
        load(text, "/etc/x.toml")
    msg = str(exc.value)
    assert msg.startswith(f"/etc/x.toml: {key}: "), msg
    assert problem in msg, msg
    assert exc.value.key == key
    assert isinstance(exc.value, ValueError)


def test_malformed_toml_names_line() -> None:
    with pytest.raises(ConfigError) as exc:
        load('version = 2\n[grpc]\naddress = "/x\n', "/etc/x.toml")
    assert str(exc.value).startswith("/etc/x.toml: invalid TOML: ")
    assert "line 3" in str(exc.value)
    assert exc.value.line == 3


# --- durations -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds", "canonical"),
    [
        ("0", 0.0, "0s"),
        ("0s", 0.0, "0s"),
        ("0ms", 0.0, "0s"),
        ("100ms", 0.1, "100ms"),
        ("1s", 1.0, "1s"),
        ("1.5s", 1.5, "1.5s"),
        ("1m30s", 90.0, "1m30s"),
        ("4h", 14400.0, "4h0m0s"),
        ("4h0m0s", 14400.0, "4h0m0s"),
        ("1h2m3.5s", 3723.5, "1h2m3.5s"),
        ("250us", 0.00025, "250µs"),
        ("250µs", 0.00025, "250µs"),
        ("10ns", 1e-8, "10ns"),
        (".5s", 0.5, "500ms"),
        ("-2s", -2.0, "-2s"),
    ],
)
def test_durations(text: str, seconds: float, canonical: str) -> None:
    assert c.parse_duration(text) == pytest.approx(seconds)
    assert c.format_duration(c.parse_duration(text)) == canonical


@pytest.mark.parametrize("text", ["", "10x", "s", "1", "1.2.3s", "1s ms", "--1s", "1d"])
def test_bad_durations(text: str) -> None:
    with pytest.raises(ValueError, match="invalid duration"):
        c.parse_duration(text)


# --- files and overrides -----------------------------------------------------------------------------


def test_load_config_file(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text(SEED_SNIPPET)
    cfg, warnings = c.load_config(path)
    assert cfg.source == str(path)
    assert warnings == list(cfg.warnings)
    assert cfg.cri.default_runtime.options.binary_name == "/usr/local/bin/runc"

    missing = tmp_path / "nope.toml"
    with pytest.raises(ConfigError, match="config file not found"):
        c.load_config(missing)
    cfg, warnings = c.load_config(missing, missing_ok=True)
    assert cfg == Config()
    assert warnings == []

    path.write_bytes(b'root = "\xff"\n')
    with pytest.raises(ConfigError, match="not valid UTF-8"):
        c.load_config(path)


def test_with_overrides() -> None:
    cfg = c.with_overrides(Config(), root="/tmp/r", state="/tmp/s", address="/tmp/s/sock", log_level="debug")
    assert (cfg.root, cfg.state, cfg.grpc.address, cfg.debug.level) == (
        "/tmp/r",
        "/tmp/s",
        "/tmp/s/sock",
        "debug",
    )
    assert c.with_overrides(cfg) == cfg
    with pytest.raises(ConfigError, match="--log-level"):
        c.with_overrides(cfg, log_level="chatty")
    with pytest.raises(ConfigError, match="root and state must be different"):
        c.with_overrides(cfg, state="/tmp/r")
