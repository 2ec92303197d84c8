"""Issue 3: pulling from a real docker-registry on 127.0.0.1 with the real ctr and with pyctr.

Both clients pull on the client side (HTTP to the registry, blobs through our Content
service, unpack through Snapshots + Diff); the daemon must end up with the same records
either way: image, blobs with GC and distribution labels, a committed snapshot chain.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.fixtures.images import BuiltImage
from tests.fixtures.pytest_plugin import PushedImage

from .daemon import Daemon

pytestmark = pytest.mark.root


def _content(daemon: Daemon, namespace: str = "default") -> dict[str, str]:
    out = {}
    for line in daemon.ctr("content", "ls", namespace=namespace).stdout.splitlines()[1:]:
        parts = line.split("\t")
        out[parts[0]] = parts[-1]
    return out


@pytest.mark.parametrize("client", ["ctr", "pyctr"])
def test_pull_then_run(daemon: Daemon, pushed_busybox: PushedImage, client: str) -> None:
    img = pushed_busybox.image
    if client == "ctr":
        daemon.ctr("images", "pull", "--plain-http", pushed_busybox.ref)
    else:
        r = daemon.pyctr("images", "pull", "--plain-http", pushed_busybox.ref)
        assert pushed_busybox.digest in r.stdout
    r = daemon.ctr("images", "ls")
    assert re.search(rf"^{re.escape(pushed_busybox.ref)}\s+\S+\s+{pushed_busybox.digest}", r.stdout, re.M)
    labels = _content(daemon)
    source = "containerd.io/distribution.source.127.0.0.1=library/busybox"
    man = labels[img.manifest.digest]
    assert f"containerd.io/gc.ref.content.config={img.config.digest}" in man
    assert f"containerd.io/gc.ref.content.l.0={img.layers[0].digest}" in man
    assert source in man
    assert f"containerd.io/uncompressed={img.diff_ids[0]}" in labels[img.layers[0].digest]
    assert f"containerd.io/gc.ref.snapshot.overlayfs={img.chain_ids[-1]}" in labels[img.config.digest]
    snaps = daemon.ctr("snapshots", "ls").stdout
    assert img.chain_ids[-1] in snaps
    # no ingest left behind, and the image runs
    assert len(daemon.ctr("content", "active").stdout.splitlines()) <= 1
    r = daemon.ctr("run", "--rm", pushed_busybox.ref, f"t-{client}", "echo", "pulled-ok")
    assert "pulled-ok" in r.stdout


def test_pyctr_short_names_and_second_pull_is_a_noop(daemon: Daemon, pushed_busybox: PushedImage) -> None:
    daemon.pyctr("images", "pull", "--plain-http", pushed_busybox.ref)
    r = daemon.pyctr("images", "pull", "--plain-http", pushed_busybox.ref)
    assert "fetched: 0" in r.stdout
    assert "existing: 3" in r.stdout
    r = daemon.pyctr("images", "check")
    assert "complete (3/3)" in r.stdout
    assert "true" in r.stdout


def test_pull_multiplatform_index(daemon: Daemon, registry: object, multiplatform_image: BuiltImage) -> None:
    from tests.fixtures.images import push_to_registry

    reg = registry
    push_to_registry(multiplatform_image, reg.url, "multi/arch", "v1")  # type: ignore[attr-defined]
    ref = f"{reg.host}/multi/arch:v1"  # type: ignore[attr-defined]
    daemon.pyctr("images", "pull", "--plain-http", ref)
    labels = _content(daemon)
    # only the host manifest was fetched; the index references just it
    assert multiplatform_image.manifest.digest in labels
    others = [d for k, d in multiplatform_image.manifests.items() if d.digest != multiplatform_image.manifest.digest]
    assert others
    assert all(o.digest not in labels for o in others)
    idx = labels[multiplatform_image.target.digest]
    assert f"containerd.io/gc.ref.content.m.0={multiplatform_image.manifest.digest}" in idx
    assert "gc.ref.content.m.1" not in idx
    # --all-platforms --skip-unpack fetches everything
    daemon.pyctr("images", "pull", "--plain-http", "--all-platforms", "--skip-unpack", ref, namespace="all")
    labels = _content(daemon, "all")
    assert all(o.digest in labels for o in others)


def test_pull_by_digest(daemon: Daemon, pushed_busybox: PushedImage) -> None:
    daemon.pyctr("images", "pull", "--plain-http", pushed_busybox.ref_by_digest)
    assert pushed_busybox.ref_by_digest in daemon.ctr("images", "ls", "-q").stdout


def test_content_commands(daemon: Daemon, pushed_busybox: PushedImage, tmp_path: Path) -> None:
    r = daemon.pyctr("content", "fetch", "--plain-http", pushed_busybox.ref)
    assert pushed_busybox.digest in r.stdout
    r = daemon.pyctr("content", "ls", "-q")
    assert pushed_busybox.digest in r.stdout.split()
    r = daemon.pyctr("content", "get", pushed_busybox.digest)
    assert r.stdout.encode() == pushed_busybox.image.layout.read_blob(pushed_busybox.digest)
    daemon.pyctr("content", "label", pushed_busybox.digest, "a=b")
    assert "a=b" in _content(daemon)[pushed_busybox.digest]
    r = daemon.pyctr("content", "ingest", "--expected-size", "5", "my-ref", input="hello")
    digest = r.stdout.strip()
    assert digest == "sha256:2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
    assert daemon.ctr("content", "get", digest).stdout == "hello"
    daemon.pyctr("content", "rm", digest)
    assert digest not in daemon.ctr("content", "ls", "-q").stdout


def test_leases_commands(daemon: Daemon) -> None:
    r = daemon.pyctr("leases", "create", "--id", "my-lease", "--expires", "1h", "team=a")
    assert r.stdout.strip() == "my-lease"
    r = daemon.ctr("leases", "ls")
    assert re.search(r"^my-lease\s", r.stdout, re.M)
    assert "containerd.io/gc.expire=" in r.stdout
    r = daemon.pyctr("leases", "ls")
    assert "team=a" in r.stdout
    daemon.ctr("leases", "create", "--id", "from-ctr")
    assert "from-ctr" in daemon.pyctr("leases", "ls", "-q").stdout
    daemon.pyctr("leases", "rm", "my-lease", "from-ctr")
    assert "my-lease" not in daemon.ctr("leases", "ls").stdout
