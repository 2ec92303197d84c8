"""Issue 3: registry failures give clear errors and leave no partial content behind.

Fault injection runs through `FaultProxy` in front of the real docker-registry: corrupt and
truncated blobs, 404, 401, 5xx, oversized/malformed manifests, unknown media types.
"""

from __future__ import annotations

import hashlib
import json

import pytest

from tests.fixtures.pytest_plugin import PushedImage
from tests.fixtures.registry import FaultProxy, registry_blob_requests

from .daemon import Daemon

pytestmark = pytest.mark.root


def _nothing_left(daemon: Daemon, *digests: str) -> None:
    content = daemon.ctr("content", "ls", "-q").stdout.split()
    for d in digests:
        assert d not in content
    assert daemon.ctr("images", "ls", "-q").stdout.strip() == ""


def _ref(proxy: FaultProxy, pushed: PushedImage) -> str:
    return proxy.ref(pushed.repo, pushed.tag)


def test_corrupt_layer_is_refused_and_not_committed(daemon: Daemon, pushed_busybox: PushedImage,
                                                     fault_proxy: FaultProxy) -> None:
    layer = pushed_busybox.image.layers[0].digest
    fault_proxy.corrupt_blob(layer)
    r = daemon.pyctr("images", "pull", "--plain-http", _ref(fault_proxy, pushed_busybox), check=False)
    assert r.returncode != 0
    assert layer in r.stderr
    assert "mismatch" in r.stderr
    _nothing_left(daemon, layer)
    assert layer not in daemon.ctr("content", "active").stdout


def test_truncated_download_resumes_with_range(daemon: Daemon, pushed_busybox: PushedImage,
                                               fault_proxy: FaultProxy) -> None:
    layer = pushed_busybox.image.layers[0]
    fault_proxy.truncate_blob(layer.digest, keep=layer.size // 3, times=1)
    daemon.pyctr("images", "pull", "--plain-http", _ref(fault_proxy, pushed_busybox))
    gets = fault_proxy.requests_matching(f"/blobs/{layer.digest}$", "GET")
    assert len(gets) == 2
    assert gets[1].headers.get("Range", "").startswith("bytes=")
    assert int(gets[1].headers["Range"][6:].rstrip("-")) > 0
    r = daemon.ctr("run", "--rm", _ref(fault_proxy, pushed_busybox), "resumed", "true", check=False)
    assert r.returncode == 0, r.stderr


def test_transient_5xx_is_retried(daemon: Daemon, pushed_busybox: PushedImage, fault_proxy: FaultProxy) -> None:
    layer = pushed_busybox.image.layers[0].digest
    fault_proxy.fail(f"/blobs/{layer}$", 503, method="GET", times=2)
    daemon.pyctr("images", "pull", "--plain-http", "--skip-unpack", _ref(fault_proxy, pushed_busybox))
    assert registry_blob_requests(fault_proxy, layer) == 3


def test_missing_tag_and_missing_blob(daemon: Daemon, pushed_busybox: PushedImage, fault_proxy: FaultProxy) -> None:
    r = daemon.pyctr("images", "pull", "--plain-http", fault_proxy.ref("library/busybox", "nope"), check=False)
    assert r.returncode != 0
    assert "not found" in r.stderr
    layer = pushed_busybox.image.layers[0].digest
    fault_proxy.fail(f"/blobs/{layer}$", 404, method="GET")
    r = daemon.pyctr("images", "pull", "--plain-http", _ref(fault_proxy, pushed_busybox), check=False)
    assert r.returncode != 0
    assert f"{layer} not found" in r.stderr
    _nothing_left(daemon, layer)


@pytest.mark.parametrize(("body", "ctype", "message"), [
    (b"{not json", "application/vnd.oci.image.manifest.v1+json", "not valid JSON"),
    (b'{"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json", "layers": []}',
     "application/vnd.oci.image.manifest.v1+json", "missing config"),
    (b"{" + b" " * (5 << 20) + b"}", "application/vnd.oci.image.manifest.v1+json", "too large"),
    (b'{"schemaVersion": 2}', "application/x-unknown-thing", "unknown manifest media type"),
    (b'{"schemaVersion": 1, "name": "x", "tag": "y", "fsLayers": []}',
     "application/vnd.docker.distribution.manifest.v1+prettyjws", "schema 1"),
])
def test_bad_manifests_are_refused(daemon: Daemon, pushed_busybox: PushedImage, fault_proxy: FaultProxy,
                                   body: bytes, ctype: str, message: str) -> None:
    fault_proxy.serve_manifest("library/busybox", "bad", body, ctype)
    # the client fetches the manifest again by digest: answer that too
    fault_proxy.serve_manifest("library/busybox", "sha256:" + hashlib.sha256(body).hexdigest(), body, ctype)
    r = daemon.pyctr("images", "pull", "--plain-http", fault_proxy.ref("library/busybox", "bad"), check=False)
    assert r.returncode != 0
    assert message in r.stderr
    _nothing_left(daemon)


def test_manifest_digest_mismatch(daemon: Daemon, pushed_busybox: PushedImage, fault_proxy: FaultProxy) -> None:
    good = pushed_busybox.image.layout.read_blob(pushed_busybox.digest)
    tampered = json.dumps({**json.loads(good), "annotations": {"evil": "1"}}).encode()
    fault_proxy.serve_manifest("library/busybox", pushed_busybox.digest, tampered,
                               "application/vnd.oci.image.manifest.v1+json",
                               headers={"Docker-Content-Digest": pushed_busybox.digest})
    r = daemon.pyctr("images", "pull", "--plain-http",
                     f"{fault_proxy.host}/library/busybox@{pushed_busybox.digest}", check=False)
    assert r.returncode != 0
    assert "mismatch" in r.stderr
    _nothing_left(daemon, pushed_busybox.digest)


def test_unauthorized_without_supported_scheme(daemon: Daemon, pushed_busybox: PushedImage,
                                               fault_proxy: FaultProxy) -> None:
    fault_proxy.require_auth('Negotiate abc')
    r = daemon.pyctr("images", "pull", "--plain-http", _ref(fault_proxy, pushed_busybox), check=False)
    assert r.returncode != 0
    assert "unauthorized" in r.stderr


def test_interrupted_pull_resumes_from_the_ingest(daemon: Daemon, pushed_busybox: PushedImage,
                                                  fault_proxy: FaultProxy) -> None:
    """A pull that gives up keeps its partial ingest; the next pull continues from its offset."""
    layer = pushed_busybox.image.layers[0]
    fault_proxy.truncate_blob(layer.digest, keep=50_000)
    r = daemon.pyctr("images", "pull", "--plain-http", _ref(fault_proxy, pushed_busybox), check=False)
    assert r.returncode != 0
    assert "giving up" in r.stderr
    active = daemon.ctr("content", "active").stdout
    assert f"layer-{layer.digest}" in active
    assert daemon.ctr("images", "ls", "-q").stdout.strip() == ""
    first = len(fault_proxy.requests_matching(f"/blobs/{layer.digest}$", "GET"))
    fault_proxy.clear()
    daemon.pyctr("images", "pull", "--plain-http", _ref(fault_proxy, pushed_busybox))
    gets = fault_proxy.requests_matching(f"/blobs/{layer.digest}$", "GET")
    assert first > 1
    assert len(gets) == 1
    offset = int(gets[0].headers["Range"][len("bytes="):].rstrip("-"))
    assert offset >= 200_000
    assert f"layer-{layer.digest}" not in daemon.ctr("content", "active").stdout
    r = daemon.ctr("run", "--rm", _ref(fault_proxy, pushed_busybox), "resumed2", "true", check=False)
    assert r.returncode == 0, r.stderr
