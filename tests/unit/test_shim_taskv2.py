"""The pure parts of the task.v2 shim: socket address, grouping, runc options, events, flags, ``-info``."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from google.protobuf import any_pb2, timestamp_pb2

from pycontainerd import errdefs
from pycontainerd.api.events import task_pb2 as events
from pycontainerd.api.runtime.v2.runc.options import oci_pb2
from pycontainerd.api.types import introspection_pb2
from pycontainerd.shim import taskv2, v2layout, v2main
from pycontainerd.timestamps import format_ns as rfc3339


def _opts(**kw: Any) -> any_pb2.Any:
    return any_pb2.Any(type_url="containerd.runc.v1.Options", value=oci_pb2.Options(**kw).SerializeToString())


# containerd 1.6 shim.SocketAddress: sha256 of filepath.Join(address, namespace, id) under
# /run/containerd/s; tests/integration/test_ttrpc_real_shim.py checks it against the address
# Debian's Go containerd-shim-runc-v2 prints, on every run
def test_socket_address_is_containerds() -> None:
    want = hashlib.sha256(b"/run/containerd/containerd.sock/default/c1").hexdigest()
    assert v2layout.socket_address("/run/containerd/containerd.sock", "default", "c1") == f"unix:///run/containerd/s/{want}"


@pytest.mark.parametrize(
    ("address", "joined"),
    [
        ("/run/containerd/containerd.sock/", "/run/containerd/containerd.sock/ns/id"),  # Go's Join cleans
        ("//run//containerd.sock", "/run/containerd.sock/ns/id"),
        ("/a/./b/../containerd.sock", "/a/containerd.sock/ns/id"),
        ("", "ns/id"),  # empty parts are dropped
    ],
)
def test_socket_address_joins_like_go(address: str, joined: str) -> None:
    want = hashlib.sha256(joined.encode()).hexdigest()
    assert v2layout.socket_address(address, "ns", "id") == f"unix:///run/containerd/s/{want}"


def test_socket_path_fits_sun_path() -> None:
    path = v2layout.socket_address("/x" * 200, "n" * 76, "i" * 76).removeprefix("unix://")
    assert len(f"{path}.99.c99") < 108  # console sockets live next to it


def test_group_annotations_in_containerds_order() -> None:
    both = {"io.containerd.runc.v2.group": "g", "io.kubernetes.cri.sandbox-id": "pod"}
    assert v2layout.group_of({"annotations": both}, "c") == "g"
    assert v2layout.group_of({"annotations": {"io.kubernetes.cri.sandbox-id": "pod"}}, "c") == "pod"
    assert v2layout.group_of({"annotations": {"other": "x"}}, "c") == "c"
    assert v2layout.group_of({}, "c") == "c"


def test_every_runc_option_decodes() -> None:
    opts = taskv2.decode_options(
        _opts(no_pivot_root=True, no_new_keyring=True, shim_cgroup="/shim", io_uid=1000, io_gid=1001,
              binary_name="crun", root="/run/r", systemd_cgroup=True)
    )  # fmt: skip
    assert opts == {
        "no_pivot_root": True,
        "no_new_keyring": True,
        "shim_cgroup": "/shim",
        "io_uid": 1000,
        "io_gid": 1001,
        "binary_name": "crun",
        "root": "/run/r",
        "systemd_cgroup": True,
    }


def test_options_absent_or_default() -> None:
    assert taskv2.decode_options(None) == {}
    assert taskv2.decode_options(any_pb2.Any()) == {}
    opts = taskv2.decode_options(_opts())
    assert "io_uid" not in opts and not opts["no_pivot_root"] and opts["binary_name"] == ""
    # a type URL with a host prefix is the same type
    prefixed = _opts(root="/r")
    prefixed.type_url = "types.containerd.io/containerd.runc.v1.Options"
    assert taskv2.decode_options(prefixed)["root"] == "/r"


@pytest.mark.parametrize(
    ("field", "go_name"),
    [("criu_path", "CriuPath"), ("criu_image_path", "CriuImagePath"), ("criu_work_path", "CriuWorkPath")],
)
def test_checkpoint_options_are_refused_by_name(field: str, go_name: str) -> None:
    with pytest.raises(errdefs.InvalidArgument, match=go_name):
        taskv2.decode_options(_opts(**{field: "/x"}))


def test_foreign_or_broken_options_are_refused() -> None:
    with pytest.raises(errdefs.InvalidArgument, match=r"runtimeoptions\.v1\.Options"):
        taskv2.decode_options(any_pb2.Any(type_url="runtimeoptions.v1.Options", value=b""))
    with pytest.raises(errdefs.InvalidArgument, match="malformed"):
        taskv2.decode_options(any_pb2.Any(type_url="containerd.runc.v1.Options", value=b"\xff\xff"))


def test_exit_event_envelope() -> None:
    at = 1_700_000_000_123_456_789
    req = taskv2.envelope(
        "ns1",
        "/tasks/exit",
        {"container_id": "c", "id": "e", "pid": 7, "exit_status": 3, "exited_at": rfc3339(at)},
    )
    assert req is not None
    env = req.envelope
    assert (env.namespace, env.topic, env.event.type_url) == ("ns1", "/tasks/exit", "containerd.events.TaskExit")
    ev = events.TaskExit.FromString(env.event.value)
    assert (ev.container_id, ev.id, ev.pid, ev.exit_status) == ("c", "e", 7, 3)
    assert ev.exited_at == timestamp_pb2.Timestamp(seconds=at // 10**9, nanos=at % 10**9)
    assert env.timestamp.seconds > 0
    assert taskv2.envelope("ns1", "/tasks/unknown", {}) is None


def test_create_event_envelope_keeps_rootfs_and_io() -> None:
    payload = {
        "container_id": "c",
        "bundle": "/b",
        "rootfs": [{"type": "overlay", "source": "overlay", "options": ["lowerdir=/l"]}],
        "io": {"stdin": "", "stdout": "/o", "stderr": "", "terminal": False},
        "pid": 9,
    }
    req = taskv2.envelope("ns", "/tasks/create", payload)
    assert req is not None
    ev = events.TaskCreate.FromString(req.envelope.event.value)
    assert (ev.bundle, ev.pid, ev.io.stdout, ev.rootfs[0].options[0]) == ("/b", 9, "/o", "lowerdir=/l")


def test_metrics_any_type_urls() -> None:
    assert taskv2.metrics_any("v2", {"pids": {"current": 3}}).type_url == "io.containerd.cgroups.v2.Metrics"
    assert taskv2.metrics_any("v1", {"pids": {"current": 3}}).type_url == "io.containerd.cgroups.v1.Metrics"


def test_flags_as_containerd_passes_them() -> None:
    f = v2main.parse_flags(
        ["-namespace", "k8s.io", "-address", "/run/c.sock", "-publish-binary", "/usr/bin/containerd", "-id", "x",
         "-debug", "start"]
    )  # fmt: skip
    assert (f.namespace, f.address, f.publish_binary, f.id, f.debug, f.args) == (
        "k8s.io", "/run/c.sock", "/usr/bin/containerd", "x", True, ["start"],
    )  # fmt: skip
    f = v2main.parse_flags(["--namespace=n", "-id=i", "-bundle", "/b", "-debug=false", "delete"])
    assert (f.namespace, f.id, f.bundle, f.debug, f.args) == ("n", "i", "/b", False, ["delete"])
    assert v2main.parse_flags(["-v"]).version


@pytest.mark.parametrize("argv", [["-nope", "start"], ["-namespace"]])
def test_bad_flags(argv: list[str]) -> None:
    with pytest.raises(errdefs.InvalidArgument):
        v2main.parse_flags(argv)


def _shim_info(options: any_pb2.Any | None) -> subprocess.CompletedProcess[bytes]:
    code = "import sys; from pycontainerd.shim import v2main; sys.exit(v2main.main(sys.argv[1:]))"
    return subprocess.run([sys.executable, "-c", code, "-info"], input=options.SerializeToString() if options else b"",
                          capture_output=True, timeout=60, check=False)


def test_info_is_containerd_2s_runtime_info(tmp_path: Path) -> None:
    """``-info`` (containerd 2.0's shim flag): the options from stdin echoed, the options' runc's
    ``features`` as the features Any (JSON), none when that runc has no features command; options
    Create would refuse are refused."""
    assert v2main.parse_flags(["-info"]).info
    runc = tmp_path / "runc"
    runc.write_text("#!/bin/sh\n[ \"$1\" = features ] && echo '{\"mountOptions\": [\"ro\", \"rro\"]}'\n")
    runc.chmod(0o755)
    old = tmp_path / "runc-1.0"
    old.write_text("#!/bin/sh\necho 'No help topic for features' >&2; exit 1\n")
    old.chmod(0o755)
    done = _shim_info(_opts(binary_name=str(runc)))
    assert done.returncode == 0, done.stderr
    info = introspection_pb2.RuntimeInfo.FromString(done.stdout)
    assert info.name == "io.containerd.runc.v2" and info.version.version
    assert oci_pb2.Options.FromString(info.options.value).binary_name == str(runc)
    assert info.features.type_url == "types.containerd.io/opencontainers/runtime-spec/1/features/Features"
    assert json.loads(info.features.value) == {"mountOptions": ["ro", "rro"]}
    done = _shim_info(_opts(binary_name=str(old)))
    assert done.returncode == 0, done.stderr
    assert not introspection_pb2.RuntimeInfo.FromString(done.stdout).HasField("features")
    done = _shim_info(_opts(binary_name=str(tmp_path / "nope")))
    assert done.returncode == 1 and b"failed to look up the path of" in done.stderr
    done = _shim_info(any_pb2.Any(type_url="runtimeoptions.v1.Options", value=b""))
    assert done.returncode == 1 and b"are not supported" in done.stderr
