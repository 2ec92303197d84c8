"""The images are valid: the REAL containerd (Debian 1.6) with the real ctr pulls, unpacks and
runs them from the registry fixture. Also checks the containerd fixture cleans up after itself."""

from __future__ import annotations

import os
import time
import uuid
from pathlib import Path

import pytest

from tests.fixtures import images as I
from tests.fixtures.containerd import Containerd, running_containerd
from tests.fixtures.procs import mounts_under, pid_alive
from tests.fixtures.pytest_plugin import PushedImage
from tests.fixtures.registry import FaultProxy, Registry

pytestmark = pytest.mark.root


def _cid(prefix: str) -> str:
    return f"fx-{prefix}-{uuid.uuid4().hex[:8]}"


def test_pull_and_run_busybox(shared_containerd: Containerd, pushed_busybox: PushedImage) -> None:
    c = shared_containerd
    c.ctr("images", "pull", "--plain-http", pushed_busybox.ref)
    out = c.ctr("images", "ls", "-q").stdout.split()
    assert pushed_busybox.ref in out
    c.ctr("run", "--rm", pushed_busybox.ref, _cid("true"), "true")
    r = c.ctr("run", "--rm", pushed_busybox.ref, _cid("sh"), "sh", "-c",
              "echo hi; id -u; test -d /tmp && ls /bin/ls && wc -l /etc/passwd")
    assert r.stdout.split("\n")[:2] == ["hi", "0"]
    r = c.ctr("run", "--rm", pushed_busybox.ref, _cid("false"), "false", check=False)
    assert r.returncode == 1


def test_image_config_user_and_workdir(shared_containerd: Containerd, registry: Registry, tmp_path: Path) -> None:
    img = I.build_busybox_image(tmp_path / "nobody", user="nobody", workdir="/tmp")
    I.push_to_registry(img, registry.url, "test/nobody", "latest")
    ref = registry.ref("test/nobody")
    shared_containerd.ctr("images", "pull", "--plain-http", ref)
    r = shared_containerd.ctr("run", "--rm", ref, _cid("nobody"), "sh", "-c", "id; pwd")
    assert "uid=65534(nobody)" in r.stdout
    assert r.stdout.split()[-1] == "/tmp"


def test_import_archive(shared_containerd: Containerd, busybox_archive: Path) -> None:
    c = shared_containerd
    c.ctr("images", "import", str(busybox_archive), namespace="fx-import")
    names = c.ctr("images", "ls", "-q", namespace="fx-import").stdout.split()
    assert "docker.io/library/busybox:latest" in names, names
    r = c.ctr("run", "--rm", "docker.io/library/busybox:latest", _cid("imp"), "echo", "imported",
              namespace="fx-import")
    assert r.stdout.strip() == "imported"


def test_multilayer_tree_matches_expectation(shared_containerd: Containerd, registry: Registry,
                                            multilayer_image: I.BuiltImage, tmp_path: Path) -> None:
    c = shared_containerd
    I.push_to_registry(multilayer_image, registry.url, "test/multilayer", "latest")
    ref = registry.ref("test/multilayer")
    c.ctr("images", "pull", "--plain-http", ref)
    target = tmp_path / "mnt"
    target.mkdir()
    c.ctr("images", "mount", ref, str(target))
    try:
        assert I.check_tree(target) == []
        assert os.stat(target / "usr/bin/suid-thing").st_mode & 0o4000
        assert os.stat(target / "data/hl-dst").st_ino == os.stat(target / "data/hl-src").st_ino
    finally:
        c.ctr("images", "unmount", "--rm", str(target), check=False)
    assert not mounts_under(str(target))


def test_multiplatform_and_many_layers(shared_containerd: Containerd, registry: Registry,
                                       multiplatform_image: I.BuiltImage, many_layers_image: I.BuiltImage) -> None:
    c = shared_containerd
    I.push_to_registry(multiplatform_image, registry.url, "test/multiarch", "latest")
    ref = registry.ref("test/multiarch")
    c.ctr("content", "fetch", "--plain-http", "--all-platforms", ref, namespace="fx-mp")
    digests = c.ctr("content", "ls", "-q", namespace="fx-mp").stdout.split()
    for desc in multiplatform_image.manifests.values():
        assert desc.digest in digests
    c.ctr("images", "pull", "--plain-http", ref, namespace="fx-mp")
    r = c.ctr("run", "--rm", ref, _cid("mp"), "echo", "native", namespace="fx-mp")
    assert r.stdout.strip() == "native"

    I.push_to_registry(many_layers_image, registry.url, "test/layers50", "latest")
    ref = registry.ref("test/layers50")
    c.ctr("images", "pull", "--plain-http", ref, namespace="fx-mp")
    r = c.ctr("run", "--rm", ref, _cid("l50"), "sh", "-c", "cat /layers/last; ls /layers | wc -l",
              namespace="fx-mp")
    assert r.stdout.split() == ["49", "50"]


@pytest.mark.parametrize(("compression", "style"), [("zstd", "oci"), ("none", "oci"), ("gzip", "docker")])
def test_variants_run(shared_containerd: Containerd, registry: Registry, tmp_path: Path,
                      compression: I.Compression, style: I.MediaStyle) -> None:
    img = I.build_busybox_image(tmp_path / "img", compression=compression, style=style)
    repo = f"test/bb-{compression}-{style}"
    I.push_to_registry(img, registry.url, repo, "latest")
    ref = registry.ref(repo)
    shared_containerd.ctr("images", "pull", "--plain-http", ref, namespace="fx-var")
    r = shared_containerd.ctr("run", "--rm", ref, _cid(compression), "echo", "ok", namespace="fx-var")
    assert r.stdout.strip() == "ok"


def test_auth_registries_with_ctr(shared_containerd: Containerd, basic_registry: Registry,
                                  token_registry: Registry, busybox_image: I.BuiltImage) -> None:
    c = shared_containerd
    for reg in (basic_registry, token_registry):
        user, pw = reg.user()
        I.push_to_registry(busybox_image, reg.url, "private/bb", "latest", auth=I.RegistryAuth(user, pw))
        ref = reg.ref("private/bb")
        denied = c.ctr("images", "pull", "--plain-http", ref, namespace="fx-auth", check=False)
        assert denied.returncode != 0
        c.ctr("images", "pull", "--plain-http", "--user", f"{user}:{pw}", ref, namespace="fx-auth")
        c.ctr("images", "rm", ref, namespace="fx-auth")


@pytest.mark.parametrize("case", [m.name for m in I.malicious_layers(Path("/x"))])
def test_malicious_layers_do_not_escape_containerd(shared_containerd: Containerd, registry: Registry,
                                                   tmp_path: Path, case: str) -> None:
    """Baseline for our extractor: whatever containerd does with these (refuse or contain),
    nothing outside its root changes."""
    sentinel = tmp_path / "outside"
    I.prepare_sentinel(sentinel)
    layer = next(m for m in I.malicious_layers(sentinel) if m.name == case)
    img = I.build_malicious_image(tmp_path / "img", layer)
    repo = f"evil/{case}"
    I.push_to_registry(img, registry.url, repo, "latest")
    shared_containerd.ctr("images", "pull", "--plain-http", registry.ref(repo), namespace="fx-evil", check=False)
    assert I.sentinel_intact(sentinel) == []


def test_containerd_fixture_cleans_up(pushed_busybox: PushedImage) -> None:
    with running_containerd() as c:
        c.ctr("images", "pull", "--plain-http", pushed_busybox.ref)
        cid = _cid("sleep")
        c.ctr("run", "-d", pushed_busybox.ref, cid, "sleep", "1000")
        deadline = time.monotonic() + 20
        pid = 0
        while time.monotonic() < deadline and not pid:
            for line in c.ctr("tasks", "ls").stdout.splitlines()[1:]:
                if line.split()[0] == cid and line.split()[2] == "RUNNING":
                    pid = int(line.split()[1])
        assert pid
        shims = c.shim_pids()
        assert shims
        base, daemon_pid = c.base, c.pid
        assert mounts_under(str(base))
    assert not pid_alive(pid)
    assert not any(pid_alive(s) for s in shims)
    assert not pid_alive(daemon_pid)
    assert not mounts_under(str(base))
    assert not base.exists()
    assert not Path(f"/run/containerd/runc/default/{cid}").exists()


@pytest.mark.slow
def test_big_image_pull_and_run(shared_containerd: Containerd, registry: Registry, big_image: I.BuiltImage) -> None:
    I.push_to_registry(big_image, registry.url, "test/big", "latest")
    ref = registry.ref("test/big")
    shared_containerd.ctr("images", "pull", "--plain-http", ref, namespace="fx-big", timeout=600)
    r = shared_containerd.ctr("run", "--rm", ref, _cid("big"), "sh", "-c",
                              "du -sm /usr | cut -f1", namespace="fx-big")
    assert int(r.stdout.strip()) > 200


def test_fault_proxy_with_real_ctr(shared_containerd: Containerd, fault_proxy: FaultProxy, registry: Registry,
                                   tmp_path: Path) -> None:
    """The proxy speaks HTTP well enough for Go's client, and its faults reach it. (A fresh layer:
    containerd shares content across namespaces, so a blob it already has is never downloaded.)"""
    c = shared_containerd
    img = I.build_busybox_image(tmp_path / "img", extra_layers=[[I.f("unique", uuid.uuid4().hex)]])
    I.push_to_registry(img, registry.url, "test/proxied", "latest")
    ref = fault_proxy.ref("test/proxied")
    layer = img.layers[-1].digest
    fault_proxy.corrupt_blob(layer)
    bad = c.ctr("content", "fetch", "--plain-http", ref, namespace="fx-proxy", check=False)
    assert bad.returncode != 0
    assert "digest" in bad.stderr.lower() or "unexpected" in bad.stderr.lower(), bad.stderr
    fault_proxy.clear()
    fault_proxy.fail("/manifests/", 404)
    missing = c.ctr("images", "pull", "--plain-http", ref, namespace="fx-proxy", check=False)
    assert "not found" in missing.stderr
    fault_proxy.clear()
    # containerd 1.6 keeps the corrupt, complete ingest under its ref after the failed commit, so a
    # retry in the same namespace fails the same way (observed); ingests are per namespace.
    c.ctr("images", "pull", "--plain-http", ref, namespace="fx-proxy-ok")
    assert fault_proxy.requests_matching(f"/blobs/{layer}$", "GET")
