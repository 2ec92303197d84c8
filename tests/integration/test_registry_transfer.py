"""Issue 3: push, export/import (OCI layout and Docker archives) and mirrors, across ctr and pyctr."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import tarfile
from pathlib import Path

import pytest

from tests.fixtures.images import BuiltImage
from tests.fixtures.pytest_plugin import PushedImage
from tests.fixtures.registry import FaultProxy, Registry

from .daemon import Daemon

pytestmark = pytest.mark.root


def _members(path: Path) -> dict[str, bytes]:
    with tarfile.open(path) as tf:
        return {m.name: (tf.extractfile(m).read() if m.isreg() else b"") for m in tf}  # type: ignore[union-attr]


def test_export_matches_ctr_and_imports_both_ways(daemon: Daemon, pushed_busybox: PushedImage,
                                                  tmp_path: Path) -> None:
    ref = pushed_busybox.ref
    daemon.pyctr("images", "pull", "--plain-http", ref)
    daemon.pyctr("images", "export", str(tmp_path / "py.tar"), ref)
    daemon.ctr("images", "export", str(tmp_path / "ctr.tar"), ref)
    ours, theirs = _members(tmp_path / "py.tar"), _members(tmp_path / "ctr.tar")
    assert sorted(ours) == sorted(theirs)
    assert ours["index.json"] == theirs["index.json"]
    assert ours["manifest.json"] == theirs["manifest.json"]
    assert json.loads(ours["oci-layout"]) == {"imageLayoutVersion": "1.0.0"}
    # ours into ctr, ctr's into ours
    daemon.ctr("images", "import", str(tmp_path / "py.tar"), namespace="a")
    r = daemon.pyctr("images", "import", str(tmp_path / "ctr.tar"), namespace="b")
    assert f"unpacking {ref}" in r.stdout
    for ns in ("a", "b"):
        assert ref in daemon.ctr("images", "ls", "-q", namespace=ns).stdout
        r = daemon.ctr("run", "--rm", ref, f"imp-{ns}", "echo", "imported", namespace=ns)
        assert "imported" in r.stdout


def _docker_save(image: BuiltImage, dest: Path, tag: str) -> Path:
    """A `docker save` style archive: <id>.json config, <id>/layer.tar uncompressed, manifest.json."""
    cfg = image.layout.read_blob(image.config.digest)
    files: dict[str, bytes] = {f"{image.config.digest[7:]}.json": cfg}
    layers = []
    for i, layer in enumerate(image.layers):
        raw = gzip.decompress(image.layout.read_blob(layer.digest))
        lid = hashlib.sha256(f"{i}".encode()).hexdigest()
        files[f"{lid}/layer.tar"] = raw
        files[f"{lid}/VERSION"] = b"1.0"
        layers.append(f"{lid}/layer.tar")
    files["manifest.json"] = json.dumps([{"Config": f"{image.config.digest[7:]}.json", "RepoTags": [tag],
                                          "Layers": layers}]).encode()
    with tarfile.open(dest, "w") as tf:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return dest


@pytest.mark.parametrize("client", ["ctr", "pyctr"])
def test_import_docker_archive(daemon: Daemon, busybox_image: BuiltImage, tmp_path: Path, client: str) -> None:
    path = _docker_save(busybox_image, tmp_path / "docker.tar", "dockerbox:v1")
    run = daemon.ctr if client == "ctr" else daemon.pyctr
    run("images", "import", str(path))
    name = "docker.io/library/dockerbox:v1"
    assert name in daemon.ctr("images", "ls", "-q").stdout
    r = daemon.ctr("run", "--rm", name, "dock", "echo", "docker-ok")
    assert "docker-ok" in r.stdout


@pytest.mark.parametrize("client", ["ctr", "pyctr"])
def test_push_then_pull_back(daemon: Daemon, registry: Registry, pushed_busybox: PushedImage, client: str) -> None:
    daemon.pyctr("images", "pull", "--plain-http", pushed_busybox.ref)
    dest = registry.ref(f"pushed/{client}", "v1")
    run = daemon.ctr if client == "ctr" else daemon.pyctr
    run("images", "tag", pushed_busybox.ref, dest)
    run("images", "push", "--plain-http", dest)
    run("images", "rm", dest)
    daemon.pyctr("images", "pull", "--plain-http", dest, namespace="back")
    r = daemon.ctr("images", "ls", namespace="back").stdout
    assert pushed_busybox.digest in r


def test_chunked_push_and_cross_repo_mount(daemon: Daemon, registry: Registry, pushed_busybox: PushedImage,
                                          fault_proxy: FaultProxy) -> None:
    daemon.pyctr("images", "pull", "--plain-http", fault_proxy.ref(pushed_busybox.repo, pushed_busybox.tag))
    src = fault_proxy.ref(pushed_busybox.repo, pushed_busybox.tag)
    dest = fault_proxy.ref("mounted/busybox", "x")
    daemon.pyctr("images", "tag", src, dest)
    daemon.pyctr("images", "push", "--plain-http", dest)
    posts = fault_proxy.requests_matching(r"^/v2/mounted/busybox/blobs/uploads/", "POST")
    mounts = [r for r in posts if "mount=" in r.path]
    assert mounts
    assert all("from=library%2Fbusybox" in r.path for r in mounts)
    assert all(r.status == 201 for r in mounts)  # mounted, nothing uploaded
    assert not fault_proxy.requests_matching(r"^/v2/mounted/busybox/blobs/uploads/.+", "PUT")
    # without a distribution source nothing can be mounted: blobs are uploaded, here in chunks
    for blob in (pushed_busybox.image.config, *pushed_busybox.image.layers):
        daemon.pyctr("content", "label", blob.digest, "containerd.io/distribution.source.127.0.0.1=")
    dest2 = fault_proxy.ref("chunked/busybox", "x")
    daemon.pyctr("images", "tag", src, dest2)
    daemon.pyctr("images", "push", "--plain-http", "--chunked", dest2, src)
    assert fault_proxy.requests_matching(r"^/v2/chunked/busybox/blobs/uploads/.+", "PATCH")
    daemon.pyctr("images", "pull", "--plain-http", dest2, namespace="chk")


@pytest.mark.parametrize("client", ["ctr", "pyctr"])
def test_hosts_dir_mirror(daemon: Daemon, pushed_busybox: PushedImage, fault_proxy: FaultProxy, tmp_path: Path,
                          client: str) -> None:
    """docker.io/library/busybox resolves through a mirror named in hosts.toml; the upstream is never asked."""
    d = tmp_path / "certs.d" / "docker.io"
    d.mkdir(parents=True)
    (d / "hosts.toml").write_text(f'server = "https://127.0.0.1:1"\n\n[host."http://{fault_proxy.host}"]\n'
                                  f'  capabilities = ["pull", "resolve"]\n')
    run = daemon.ctr if client == "ctr" else daemon.pyctr
    ref = "docker.io/library/busybox:latest"
    run("images", "pull", "--hosts-dir", str(tmp_path / "certs.d"), ref)
    assert fault_proxy.requests_matching("/v2/library/busybox/manifests/latest")
    assert pushed_busybox.digest in daemon.ctr("images", "ls").stdout
