"""Runtime handlers: the records' runtime options, annotation passthrough, the config's refusals."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest

from pycontainerd import errdefs
from pycontainerd.api.cri.runtime.v1 import api_pb2 as pb
from pycontainerd.api.runtime.v2.runc.options import oci_pb2
from pycontainerd.cni import CNI
from pycontainerd.config import ConfigError, RuntimeConfig, parse_config
from pycontainerd.config.model import CNIConfig, CRIConfig, RuntimeOptions
from pycontainerd.cri import handlers, wiring
from pycontainerd.cri.containers import Containers
from pycontainerd.cri.images import ImageService
from pycontainerd.cri.sandbox import Sandbox, Sandboxes
from pycontainerd.oci.spec import RootfsFiles

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
    (f'  [plugins.{CRI}.containerd.runtimes.x.options]\n    Foo = "bar"', "options.Foo"),
    ("  cni_max_conf_num = -1", "cni_max_conf_num"),
])
def test_runtime_keys_we_cannot_honour_are_refused(extra: str, key: str) -> None:
    with pytest.raises(ConfigError) as exc:
        parse_config(_config(extra), "t.toml")
    assert f"containerd.runtimes.x.{key}" in str(exc.value)


def test_runtime_keys_we_honour() -> None:
    cfg = parse_config(_config(f"""  runtime_path = "/usr/bin/containerd-shim-runc-v2"
  pod_annotations = ["a.io/*"]
  container_annotations = ["b.io/*"]
  snapshotter = "native"
  base_runtime_spec = "/etc/spec.json"
  cni_conf_dir = "/etc/cni/x"
  cni_max_conf_num = 2
  [plugins.{CRI}.containerd.runtimes.x.options]
    ConfigPath = "/etc/x.toml"
"""), "t.toml")
    rt = cfg.cri.containerd.runtimes["x"]
    assert rt.runtime_path == "/usr/bin/containerd-shim-runc-v2"
    assert (rt.pod_annotations, rt.container_annotations) == (("a.io/*",), ("b.io/*",))
    assert rt.options.extra == {"ConfigPath": "/etc/x.toml"}
    # containerd 1.6's (base spec, CNI) and 1.7's (snapshotter) per-runtime keys
    assert (rt.snapshotter, rt.base_runtime_spec, rt.cni_conf_dir, rt.cni_max_conf_num) == (
        "native", "/etc/spec.json", "/etc/cni/x", 2)
    assert handlers.snapshotter_of(rt, "overlayfs") == "native"
    assert handlers.snapshotter_of(RuntimeConfig(), "overlayfs") == "overlayfs"


def test_a_base_spec_is_parsed_and_its_errors_name_the_key_and_file() -> None:
    spec = handlers.parse_base_spec(b'{"process": {"rlimits": []}, "annotations": {"a": "b"}}', handler="x",
                                    path="/etc/s.json")
    assert spec["annotations"] == {"a": "b"}
    for bad, why in ((b"{", "not valid JSON"), (b"[]", "a JSON object"), (b'{"process": []}', "'process'"),
                     (b'{"mounts": [{"type": "bind"}]}', "'mounts'"),
                     (b'{"linux": {"namespaces": {}}}', "'linux.namespaces' is not a list"),
                     (b'{"process": {"user": 0}}', "'process.user' is not an object")):
        with pytest.raises(errdefs.InvalidArgument, match=why) as exc:
            handlers.parse_base_spec(bad, handler="x", path="/etc/s.json")
        assert 'containerd.runtimes.x.base_runtime_spec' in str(exc.value) and "/etc/s.json" in str(exc.value)


def test_from_base_starts_from_a_copy_as_containerd() -> None:
    base: dict[str, Any] = {"ociVersion": "1.0.2", "process": {"env": ["PATH=/x", "A=1"], "rlimits": [
        {"type": "RLIMIT_NOFILE", "hard": 9, "soft": 9}]},
        "root": {"path": "/somewhere", "readonly": True},
        "mounts": [{"destination": "/proc", "type": "proc", "source": "proc"},
                   {"destination": "/run", "type": "tmpfs", "source": "tmpfs"}],
        "linux": {"cgroupsPath": "/default/x", "seccomp": {"defaultAction": "SCMP_ACT_ERRNO"}}}
    spec = handlers.from_base(base, "k8s.io", "c1")
    assert spec["linux"]["cgroupsPath"] == "/k8s.io/c1"  # oci.WithNamespacedCgroup
    assert [m["destination"] for m in spec["mounts"]] == ["/proc"]  # oci.WithoutRunMount
    assert spec["root"] == {"path": "rootfs", "readonly": True}
    assert spec["process"]["env"][0].startswith("PATH=/usr/local/sbin") and "A=1" in spec["process"]["env"]
    assert spec["process"]["rlimits"] == base["process"]["rlimits"]  # kept: no default security clearing
    assert spec["linux"]["seccomp"] == {"defaultAction": "SCMP_ACT_ERRNO"}
    assert (spec["process"]["user"], spec["process"]["capabilities"], spec["linux"]["namespaces"]) == (
        {"uid": 0, "gid": 0}, {}, [])
    assert base["linux"]["cgroupsPath"] == "/default/x" and len(base["mounts"]) == 2  # the base is untouched
    empty = handlers.from_base({}, "k8s.io", "c2")
    assert empty["root"]["path"] == "rootfs" and empty["mounts"] == []


def _handler_config(tmp_path: Path) -> CRIConfig:
    spec = tmp_path / "base.json"
    spec.write_text(json.dumps({
        "ociVersion": "1.0.2", "process": {"noNewPrivileges": True, "rlimits": [
            {"type": "RLIMIT_NOFILE", "hard": 4242, "soft": 4242}], "capabilities": {"bounding": ["CAP_CHOWN"]}},
        "root": {"path": "rootfs"}, "annotations": {"base.example.com/a": "1"},
        "mounts": [{"destination": "/proc", "type": "proc", "source": "proc"}],
        "linux": {"namespaces": [{"type": "mount"}, {"type": "network"}]}}))
    return parse_config(f"""version = 2
[plugins.{CRI}.containerd]
  default_runtime_name = "runc"
[plugins.{CRI}.containerd.runtimes.runc]
  runtime_type = "io.containerd.runc.v2"
[plugins.{CRI}.containerd.runtimes.based]
  runtime_type = "io.containerd.runc.v2"
  base_runtime_spec = "{spec}"
  cni_conf_dir = "{tmp_path / 'net.d'}"
  snapshotter = "native"
[plugins.{CRI}.containerd.runtimes.also]
  runtime_type = "io.containerd.runc.v2"
  base_runtime_spec = "{spec}"
  cni_conf_dir = "{tmp_path / 'also.d'}"
  cni_max_conf_num = 3
""", "t.toml").cri


def test_a_handlers_containers_start_from_its_base_spec_and_its_pods_do_not(tmp_path: Path) -> None:
    cfg = _handler_config(tmp_path)
    base_specs = wiring.read_base_specs(cfg)
    assert set(base_specs) == {"based", "also"} and base_specs["based"] is base_specs["also"]  # one read a file
    pods = Sandboxes(config=cfg, images=None, containers=None, tasks=None,  # type: ignore[arg-type]
                     state_dir=tmp_path, cni=None, base_specs=base_specs)
    containers = Containers(pods=pods, images=None, containers=None, tasks=None,  # type: ignore[arg-type]
                            state_dir=tmp_path, max_log_line=16384)
    pod_cfg = pb.PodSandboxConfig(metadata=pb.PodSandboxMetadata(name="p", namespace="n", uid="u"))
    ctr_cfg = pb.ContainerConfig(metadata=pb.ContainerMetadata(name="c"), image=pb.ImageSpec(image="i"),
                                 command=["true"])

    def ctr_spec(handler: str) -> dict[str, Any]:
        sb = Sandbox(id="s" * 64, config=pod_cfg, created_at_ns=1, netns="/run/netns/x", ip="", additional_ips=[],
                     ready=True, pid=1, runtime_handler=handler)
        return containers._spec("c" * 64, sb, ctr_cfg, {}, RootfsFiles(None, None), None)

    based, default = ctr_spec("based"), ctr_spec("")
    assert based["process"]["rlimits"] == [{"type": "RLIMIT_NOFILE", "hard": 4242, "soft": 4242}]
    assert "rlimits" not in default["process"]
    # the CRI's settings on top: its annotations beside the base's, no_new_privs only when asked,
    # the pod's namespaces, the cgroup path, the pod files' mounts after the base's
    assert based["annotations"]["base.example.com/a"] == "1"
    assert based["annotations"]["io.kubernetes.cri.container-type"] == "container"
    assert "noNewPrivileges" not in based["process"]
    assert {"type": "network", "path": "/proc/1/ns/net"} in based["linux"]["namespaces"]
    assert based["linux"]["cgroupsPath"] == f"/k8s.io/{'c' * 64}"
    assert based["process"]["capabilities"]["bounding"] == ["CAP_CHOWN"]
    assert based["mounts"][0]["destination"] == "/proc" and "/etc/hosts" in {m["destination"]
                                                                            for m in based["mounts"]}
    # the pod's infra spec never uses it (containerd passes no base for the sandbox)
    pod_spec = pods._spec("s" * 64, pod_cfg, {"config": {"Cmd": ["pause"]}}, "/run/netns/x")
    assert "rlimits" not in pod_spec["process"] and "base.example.com/a" not in pod_spec["annotations"]
    # a handler's own CNI and snapshotter, the default's otherwise
    assert pods.snapshotter("based") == "native"


def test_a_missing_or_broken_base_spec_is_an_error_naming_key_and_file(tmp_path: Path) -> None:
    cfg = _handler_config(tmp_path)
    (tmp_path / "base.json").unlink()
    with pytest.raises(errdefs.InvalidArgument, match="failed to load base OCI spec") as exc:
        wiring.read_base_specs(cfg)
    assert "containerd.runtimes.based.base_runtime_spec" in str(exc.value) or \
        "containerd.runtimes.also.base_runtime_spec" in str(exc.value)
    assert str(tmp_path / "base.json") in str(exc.value) and "No such file" in str(exc.value)
    (tmp_path / "base.json").write_text("{oops")
    with pytest.raises(errdefs.InvalidArgument, match="not valid JSON"):
        wiring.read_base_specs(cfg)


def test_handlers_with_a_cni_conf_dir_get_their_own_cni_load(tmp_path: Path) -> None:
    cfg = dataclasses.replace(_handler_config(tmp_path), cni=CNIConfig(conf_dir=str(tmp_path / "default.d"),
                                                                        max_conf_num=2))
    plugin = wiring.CriPlugin(cfg, None, containers=None, tasks=None,  # type: ignore[arg-type]
                              state_dir=tmp_path, base_specs={})
    assert plugin.pods is None  # no task manager: only the CNIs are made
    default = plugin.runtime_state.cni
    assert isinstance(default, CNI) and default.conf_dir == tmp_path / "default.d"
    pods = Sandboxes(config=cfg, images=None, containers=None, tasks=None,  # type: ignore[arg-type]
                     state_dir=tmp_path, cni=default, handler_cnis=plugin.handler_cnis)
    based, also = pods.cni_for("based"), pods.cni_for("also")
    assert based is not None and (based.conf_dir, based.max_conf_num) == (tmp_path / "net.d", 2)  # cni's max
    assert also is not None and (also.conf_dir, also.max_conf_num) == (tmp_path / "also.d", 3)
    assert pods.cni_for("") is default and pods.cni_for("runc") is default


def test_pull_image_unpacks_for_the_handlers_snapshotter() -> None:
    """ImageSpec.runtime_handler (or containerd 1.7's sandbox annotation) names the snapshotter of
    the pull; the CRI's ("") for a handler without one; an unknown handler is refused."""
    svc = ImageService(None, {"runc": "", "nativesn": "native"})  # type: ignore[arg-type]

    def which(handler: str = "", annotation: str = "") -> str:
        req = pb.PullImageRequest(image=pb.ImageSpec(image="x", runtime_handler=handler))
        if annotation:
            req.sandbox_config.annotations["io.containerd.cri.runtime-handler"] = annotation
        return svc._snapshotter_for(req)

    assert (which(), which("runc"), which("nativesn"), which(annotation="nativesn")) == ("", "", "native", "native")
    assert which("runc", annotation="nativesn") == ""  # the request's field first
    with pytest.raises(errdefs.NotFound, match="nope"):
        which("nope")
