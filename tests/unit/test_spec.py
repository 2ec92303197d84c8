"""The spec pyctr run builds, compared field by field with what the real ctr 1.6.20 produced.

tests/unit/data/ctr_run_specs.json holds ``ctr containers info`` output of containers made by
``ctr run -d [flags] IMAGE ID sleep 1000`` against real containerd 1.6.20, with the image
config, /etc/passwd and /etc/group of the image used and the host facts (capabilities,
/dev) of the machine it ran on.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from pycontainerd import errdefs
from pycontainerd.oci import seccomp
from pycontainerd.oci.spec import (
    HostInfo,
    RootfsFiles,
    RunOptions,
    build_run_spec,
    cri_default_spec,
    default_spec,
    image_labels,
    mount_depth,
    parse_mount_flag,
    process_spec,
    replace_or_append_env,
    with_additional_gids,
    with_image_config,
    with_user,
)

DATA = json.loads((Path(__file__).parent / "data" / "ctr_run_specs.json").read_text())
FILES = RootfsFiles(DATA["passwd"], DATA["group"])
HOST = HostInfo(DATA["host"]["capabilities"], DATA["host"]["devices"], DATA["host"]["hostname"])


def _image(user: str = "") -> dict[str, Any]:
    cfg = json.loads(json.dumps(DATA["image_config"]))
    if user:
        cfg["config"]["User"] = user
    return cfg


def _diff(got: Any, want: Any, path: str = "") -> list[str]:
    if isinstance(got, dict) and isinstance(want, dict):
        out = []
        for k in [*want, *(k for k in got if k not in want)]:
            out += _diff(got.get(k, "<missing>"), want.get(k, "<missing>"), f"{path}.{k}")
        return out
    if isinstance(got, list) and isinstance(want, list) and len(got) == len(want):
        return [d for i, (g, w) in enumerate(zip(got, want, strict=True)) for d in _diff(g, w, f"{path}[{i}]")]
    return [] if got == want else [f"{path}: got {json.dumps(got)[:200]} want {json.dumps(want)[:200]}"]


@pytest.mark.parametrize("case", sorted(DATA["cases"]))
def test_spec_matches_real_ctr(case: str) -> None:
    c = DATA["cases"][case]
    spec = build_run_spec("default", c["container_id"], _image(c["image_user"]), RunOptions(**c["options"]),
                          FILES, HOST)
    assert _diff(spec, c["spec"]) == []
    # same keys in the same order as Go's encoder, so the JSON text is identical too
    assert json.dumps(spec) == json.dumps(c["spec"])


def test_container_labels_match_real_ctr() -> None:
    c = DATA["cases"]["default"]
    assert image_labels(_image()) == c["labels"]
    labels = {**image_labels(_image()), **DATA["cases"]["everything"]["options"]["labels"]}
    assert labels == DATA["cases"]["everything"]["labels"]


@pytest.mark.parametrize(
    ("image_user", "files", "want"),
    [
        # all observed with real ctr 1.6.20 against images with these USER values
        ("", RootfsFiles(), {"uid": 0, "gid": 0, "additionalGids": [0]}),
        ("1000", FILES, {"uid": 1000, "gid": 1000, "additionalGids": [1000, 2000]}),
        ("2000", FILES, {"uid": 2000, "gid": 0, "additionalGids": [0]}),
        ("app:extra", FILES, {"uid": 1000, "gid": 2000, "additionalGids": [2000]}),
        ("1000", RootfsFiles(), {"uid": 1000, "gid": 0, "additionalGids": [0]}),
        ("1000:55", FILES, {"uid": 1000, "gid": 55, "additionalGids": [55, 2000]}),
        ("app", FILES, {"uid": 1000, "gid": 1000, "additionalGids": [1000, 2000]}),
    ],
)
def test_image_user_resolution(image_user: str, files: RootfsFiles, want: dict[str, Any]) -> None:
    spec = build_run_spec("default", "x", _image(image_user), RunOptions(), files)
    assert spec["process"]["user"] == want


def test_unknown_user_name_is_not_found() -> None:
    with pytest.raises(errdefs.NotFound, match="nobody2"):
        build_run_spec("default", "x", _image("nobody2"), RunOptions(), FILES)
    with pytest.raises(errdefs.InvalidArgument):
        build_run_spec("default", "x", _image("a:b:c"), RunOptions(), FILES)


def test_user_flag_overrides_image_user() -> None:
    spec = build_run_spec("default", "x", _image("app"), RunOptions(user="nobody"), FILES)
    assert spec["process"]["user"] == {"uid": 65534, "gid": 65534, "additionalGids": [65534]}
    spec = build_run_spec("default", "x", _image(), RunOptions(user="1234:5678"), FILES)
    assert spec["process"]["user"] == {"uid": 1234, "gid": 5678, "additionalGids": [5678]}


def test_env_replace_append_unset() -> None:
    assert replace_or_append_env(["PATH=/bin", "A=1"], ["PATH=/x", "B=2", "A"]) == ["PATH=/x", "B=2"]
    spec = build_run_spec("default", "x", _image(), RunOptions(env=["PATH=/x", "FOO=1"]), FILES)
    assert spec["process"]["env"] == ["PATH=/x", "FOO=1"]  # as real ctr: flags override the image env


def test_image_config_entrypoint_workdir_and_default_env() -> None:
    spec = build_run_spec("ns", "c1", {"config": {"Entrypoint": ["/bin/echo"], "Cmd": ["hi"], "WorkingDir": "/w"}},
                          RunOptions(), RootfsFiles())
    assert spec["process"]["args"] == ["/bin/echo", "hi"]
    assert spec["process"]["cwd"] == "/w"
    assert spec["process"]["env"] == ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]
    assert spec["linux"]["cgroupsPath"] == "/ns/c1"


def test_mount_flag_parsing() -> None:
    assert parse_mount_flag("type=bind,src=/a,dst=/b,options=rbind:ro") == {
        "type": "bind", "source": "/a", "destination": "/b", "options": ["rbind", "ro"]}
    with pytest.raises(errdefs.InvalidArgument):
        parse_mount_flag("type=bind,bogus")
    with pytest.raises(errdefs.InvalidArgument):
        parse_mount_flag("type=bind,src=/a,dst=/b,color=red")


def test_exec_process_spec() -> None:
    spec = build_run_spec("default", "x", _image(), RunOptions(args=["sleep", "9"]), FILES)
    proc = process_spec(spec, ["sh", "-c", "id"], tty=True, cwd="/tmp")
    assert proc["args"] == ["sh", "-c", "id"]
    assert proc["terminal"] is True
    assert proc["cwd"] == "/tmp"
    assert proc["capabilities"] == spec["process"]["capabilities"]
    assert spec["process"]["args"] == ["sleep", "9"]  # the container's own spec is untouched


def test_seccomp_profile_depends_on_capabilities() -> None:
    base = seccomp.default_profile(["CAP_KILL"], machine="x86_64", kernel_release="6.1.0")
    names = {n for r in base["syscalls"] if r["action"] == "SCMP_ACT_ALLOW" and "args" not in r for n in r["names"]}
    assert "mount" not in names
    assert "keyctl" not in names
    assert "read" in names
    assert base["syscalls"][-1] == {"names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": 38}
    admin = seccomp.default_profile(["CAP_SYS_ADMIN"], machine="x86_64", kernel_release="6.1.0")
    names = {n for r in admin["syscalls"] for n in r["names"]}
    assert {"mount", "unshare", "setns", "clone3"} <= names
    old = seccomp.default_profile([], machine="x86_64", kernel_release="4.4.0")
    assert all(r["names"] != ["ptrace"] for r in old["syscalls"])


def test_with_user_helpers_keep_primary_gid_first() -> None:
    spec = build_run_spec("default", "x", _image(), RunOptions(), FILES)
    with_user(spec, "app", FILES)
    with_additional_gids(spec, "app", FILES)
    assert spec["process"]["user"]["additionalGids"] == [1000, 2000]
    with_image_config(spec, _image(), RootfsFiles())
    assert spec["process"]["user"]["additionalGids"][0] == spec["process"]["user"]["gid"]


def test_cri_default_spec_drops_run_and_rlimits_and_ctr_keeps_them() -> None:
    # containerd's CRI: WithoutRunMount and WithoutDefaultSecuritySettings; ctr (pyctr run) keeps both
    cri, ctr = cri_default_spec("k8s.io", "c1"), default_spec("default", "c1")
    assert "/run" not in [m["destination"] for m in cri["mounts"]]
    assert "rlimits" not in cri["process"]
    assert "/run" in [m["destination"] for m in ctr["mounts"]]
    assert ctr["process"]["rlimits"] == [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}]
    assert [m for m in cri["mounts"]] == [m for m in ctr["mounts"] if m["destination"] != "/run"]
    assert sorted(["/dev/shm", "/data/x/y", "/etc/hosts", "/"], key=mount_depth) == [
        "/", "/dev/shm", "/etc/hosts", "/data/x/y"]
