"""The registry, token server and fault proxy fixtures, checked with plain HTTP."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from tests.fixtures import images as I
from tests.fixtures.pytest_plugin import PushedImage
from tests.fixtures.registry import FaultProxy, Registry
from tests.fixtures.tokenserver import TokenServer, running_tokenserver


def test_pushed_busybox_is_served(pushed_busybox: PushedImage) -> None:
    reg = pushed_busybox.registry
    ctype, body, digest = I.fetch_manifest(reg.url, "library/busybox", "latest")
    assert ctype == I.MT_OCI_MANIFEST
    assert digest == pushed_busybox.digest == I.sha256_digest(body)
    layer = pushed_busybox.image.layers[0]
    r = httpx.get(f"{reg.url}/v2/library/busybox/blobs/{layer.digest}")
    assert r.status_code == 200
    assert I.sha256_digest(r.content) == layer.digest
    assert pushed_busybox.ref == f"127.0.0.1:{reg.port}/library/busybox:latest"


def test_push_index_and_chunked(registry: Registry, multiplatform_image: I.BuiltImage) -> None:
    digest = I.push_to_registry(multiplatform_image, registry.url, "test/multi", "v1", chunk_size=100_000)
    ctype, _, got = I.fetch_manifest(registry.url, "test/multi", "v1")
    assert ctype == I.MT_OCI_INDEX
    assert got == digest
    for plat_desc in multiplatform_image.manifests.values():
        ctype, _, got = I.fetch_manifest(registry.url, "test/multi", plat_desc.digest)
        assert got == plat_desc.digest


def test_basic_auth_registry(basic_registry: Registry, busybox_image: I.BuiltImage) -> None:
    with pytest.raises(RuntimeError, match="401"):
        I.push_to_registry(busybox_image, basic_registry.url, "private/bb", "latest")
    user, pw = basic_registry.user()
    I.push_to_registry(busybox_image, basic_registry.url, "private/bb", "latest", auth=I.RegistryAuth(user, pw))
    assert httpx.get(f"{basic_registry.url}/v2/").status_code == 401
    I.fetch_manifest(basic_registry.url, "private/bb", "latest", auth=I.RegistryAuth(user, pw))


def test_token_auth_registry(token_registry: Registry, tokenserver: TokenServer,
                             busybox_image: I.BuiltImage) -> None:
    r = httpx.get(f"{token_registry.url}/v2/")
    assert r.status_code == 401
    assert r.headers["www-authenticate"].startswith(f'Bearer realm="{tokenserver.realm}"')
    with pytest.raises(RuntimeError, match="401"):  # anonymous tokens grant nothing by default
        I.push_to_registry(busybox_image, token_registry.url, "private/bb", "latest")
    auth = I.RegistryAuth("testuser", "testpass")
    I.push_to_registry(busybox_image, token_registry.url, "private/bb", "latest", auth=auth)
    I.fetch_manifest(token_registry.url, "private/bb", "latest", auth=auth)
    scopes = {s for req in tokenserver.requests for s in req.scopes}
    assert "repository:private/bb:pull,push" in scopes
    bad = httpx.get(tokenserver.realm, params={"service": tokenserver.service}, auth=("testuser", "wrong"))
    assert bad.status_code == 401
    post = httpx.post(tokenserver.realm, data={"grant_type": "password", "username": "testuser",
                                               "password": "testpass", "service": tokenserver.service,
                                               "scope": "repository:private/bb:pull", "client_id": "t"})
    assert post.status_code == 200
    assert post.json()["refresh_token"]
    tok = post.json()["access_token"]
    r = httpx.get(f"{token_registry.url}/v2/private/bb/manifests/latest",
                  headers={"Authorization": f"Bearer {tok}", "Accept": I.MT_OCI_MANIFEST})
    assert r.status_code == 200
    expired = tokenserver.make_token("testuser", tokenserver.grant("testuser", ["repository:private/bb:pull"]),
                                     ttl=-3600)
    r = httpx.get(f"{token_registry.url}/v2/private/bb/manifests/latest",
                  headers={"Authorization": f"Bearer {expired}", "Accept": I.MT_OCI_MANIFEST})
    assert r.status_code == 401


def test_anonymous_pull_tokens(registry_factory: Callable[..., Registry], tmp_path: Path,
                               busybox_image: I.BuiltImage) -> None:
    with running_tokenserver(tmp_path / "ts", anonymous_pull=True) as ts:
        reg = registry_factory(auth="token", tokenserver=ts)
        I.push_to_registry(busybox_image, reg.url, "public/bb", "latest", auth=I.RegistryAuth("testuser", "testpass"))
        I.fetch_manifest(reg.url, "public/bb", "latest")  # anonymous pull works
        with pytest.raises(RuntimeError, match="401"):  # anonymous push does not
            I.push_to_registry(busybox_image, reg.url, "public/other", "latest")


def test_fault_proxy(fault_proxy: FaultProxy, pushed_busybox: PushedImage) -> None:
    base = fault_proxy.url
    layer = pushed_busybox.image.layers[0]
    blob_url = f"{base}/v2/library/busybox/blobs/{layer.digest}"

    # passthrough
    assert I.sha256_digest(httpx.get(blob_url).content) == layer.digest
    # corrupt once: same length, wrong digest; then healthy again
    fault_proxy.corrupt_blob(layer.digest, times=1)
    bad = httpx.get(blob_url)
    assert len(bad.content) == layer.size
    assert I.sha256_digest(bad.content) != layer.digest
    assert I.sha256_digest(httpx.get(blob_url).content) == layer.digest
    # truncate: the client sees a short body
    fault_proxy.truncate_blob(layer.digest, keep=1000, times=1)
    with pytest.raises(httpx.HTTPError):
        httpx.get(blob_url)
    # status injection
    fault_proxy.fail("/manifests/latest$", 404, times=1)
    assert httpx.get(f"{base}/v2/library/busybox/manifests/latest").status_code == 404
    fault_proxy.require_auth('Bearer realm="http://127.0.0.1:1/token",service="x"', times=1)
    r = httpx.get(f"{base}/v2/")
    assert r.status_code == 401
    assert "Bearer" in r.headers["www-authenticate"]
    # replaced manifest with an unknown media type / oversized body
    body = b'{"schemaVersion": 2, "mediaType": "application/x-unknown"}'
    fault_proxy.serve_manifest("library/busybox", "weird", body, "application/x-unknown")
    r = httpx.get(f"{base}/v2/library/busybox/manifests/weird")
    assert r.content == body
    assert r.headers["content-type"] == "application/x-unknown"
    assert r.headers["docker-content-digest"] == "sha256:" + hashlib.sha256(body).hexdigest()
    huge = b"{" + b" " * (8 << 20) + b"}"
    fault_proxy.serve_manifest("library/busybox", "huge", huge, I.MT_OCI_MANIFEST)
    assert len(httpx.get(f"{base}/v2/library/busybox/manifests/huge").content) == len(huge)
    # header override
    fault_proxy.override_headers("/manifests/latest$", {"Content-Type": "application/x-odd"}, times=1)
    assert httpx.get(f"{base}/v2/library/busybox/manifests/latest",
                     headers={"Accept": I.MT_OCI_MANIFEST}).headers["content-type"] == "application/x-odd"
    # pushes through the proxy work (uploads get Location on the proxy)
    I.push_to_registry(pushed_busybox.image, base, "proxied/bb", "latest")
    assert fault_proxy.requests_matching("/blobs/uploads/", "POST")
