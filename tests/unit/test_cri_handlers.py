"""Runtime handlers: the records' runtime options, annotation passthrough, the config's refusals."""

from __future__ import annotations

import pytest

from pycontainerd.api.runtime.v2.runc.options import oci_pb2
from pycontainerd.config import ConfigError, RuntimeConfig, parse_config
from pycontainerd.config.model import RuntimeOptions
from pycontainerd.cri import handlers

CRI = '"io.containerd.grpc.v1.cri"'


def test_runc_options_on_the_record() -> None:
    assert handlers.runtime_options(RuntimeConfig()) is None  # no options table: none, as containerd
    tv = handlers.runtime_options(RuntimeConfig(options=RuntimeOptions(binary_name="/usr/bin/crun",
                                                                       systemd_cgroup=True)))
    assert tv is not None and tv.type_url == "containerd.runc.v1.Options"
    opts = oci_pb2.Options.FromString(tv.value)
    assert (opts.binary_name, opts.systemd_cgroup, opts.root) == ("/usr/bin/crun", True, "")


def test_other_runtimes_get_runtimeoptions() -> None:
    kata = RuntimeConfig(runtime_type="io.containerd.kata.v2",
                         options=RuntimeOptions(extra={"ConfigPath": "/etc/kata.toml"}))
    tv = handlers.runtime_options(kata)
    assert tv is not None and tv.type_url == "runtimeoptions.v1.Options"
    assert tv.value == b"\x12\x0e/etc/kata.toml"  # field 2 (config_path), length 14
    assert handlers.runtime_options(RuntimeConfig(runtime_type="io.containerd.pyrunc.v2")) is None


def test_passthrough_matches_like_go_path_match() -> None:
    ann = {"io.kubernetes.cri.x": "1", "example.com/a": "2", "example.com/a/b": "3", "other": "4", "k8s.v1": "5"}
    assert handlers.passthrough(ann, []) == {}
    assert handlers.passthrough(ann, ["*"]) == {"io.kubernetes.cri.x": "1", "other": "4", "k8s.v1": "5"}
    assert handlers.passthrough(ann, ["example.com/*"]) == {"example.com/a": "2"}  # * stops at /
    assert handlers.passthrough(ann, ["k8s.v?", "oth[a-e]r"]) == {"k8s.v1": "5", "other": "4"}
    assert handlers.passthrough(ann, ["oth[^e]r"]) == {}
    assert handlers.passthrough(ann, ["[", "other\\"]) == {}  # malformed: matches nothing


def _config(runtime: str) -> str:
    return f"""version = 2
[plugins.{CRI}.containerd.runtimes.x]
  runtime_type = "io.containerd.x.v2"
{runtime}
"""


@pytest.mark.parametrize(("extra", "key"), [
    ('  base_runtime_spec = "/etc/spec.json"', "base_runtime_spec"),
    ('  cni_conf_dir = "/etc/cni/x"', "cni_conf_dir"),
    ("  cni_max_conf_num = 2", "cni_max_conf_num"),
    ('  snapshotter = "native"', "snapshotter"),
    (f'  [plugins.{CRI}.containerd.runtimes.x.options]\n    Foo = "bar"', "options.Foo"),
])
def test_runtime_keys_we_cannot_honour_are_refused(extra: str, key: str) -> None:
    with pytest.raises(ConfigError) as exc:
        parse_config(_config(extra), "t.toml")
    assert f"containerd.runtimes.x.{key}" in str(exc.value)


def test_runtime_keys_we_honour() -> None:
    cfg = parse_config(_config(f"""  runtime_path = "/usr/bin/containerd-shim-runc-v2"
  pod_annotations = ["a.io/*"]
  container_annotations = ["b.io/*"]
  snapshotter = "overlayfs"
  [plugins.{CRI}.containerd.runtimes.x.options]
    ConfigPath = "/etc/x.toml"
"""), "t.toml")
    rt = cfg.cri.containerd.runtimes["x"]
    assert rt.runtime_path == "/usr/bin/containerd-shim-runc-v2"
    assert (rt.pod_annotations, rt.container_annotations) == (("a.io/*",), ("b.io/*",))
    assert rt.options.extra == {"ConfigPath": "/etc/x.toml"}
