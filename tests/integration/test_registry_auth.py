"""Issue 3: Basic and Bearer-token registries with good and bad credentials, ctr and pyctr."""

from __future__ import annotations

import pytest

from tests.fixtures.images import BuiltImage, RegistryAuth, push_to_registry
from tests.fixtures.registry import Registry
from tests.fixtures.tokenserver import TokenServer

from .daemon import Daemon

pytestmark = pytest.mark.root


def _push(reg: Registry, image: BuiltImage, repo: str = "library/busybox") -> str:
    user, password = reg.user()
    push_to_registry(image, reg.url, repo, "latest", auth=RegistryAuth(user, password))
    return reg.ref(repo)


@pytest.mark.parametrize("client", ["ctr", "pyctr"])
def test_basic_auth(daemon: Daemon, basic_registry: Registry, busybox_image: BuiltImage, client: str) -> None:
    ref = _push(basic_registry, busybox_image)
    user, password = basic_registry.user()
    run = daemon.ctr if client == "ctr" else daemon.pyctr
    r = run("images", "pull", "--plain-http", ref, check=False)
    assert r.returncode != 0
    if client == "pyctr":
        assert "authentication required" in r.stderr
    r = run("images", "pull", "--plain-http", "--user", f"{user}:wrong", ref, check=False)
    assert r.returncode != 0
    if client == "pyctr":
        assert "rejected the credentials" in r.stderr
    assert daemon.ctr("images", "ls", "-q").stdout.strip() == ""
    run("images", "pull", "--plain-http", "--user", f"{user}:{password}", ref)
    assert ref in daemon.ctr("images", "ls", "-q").stdout


@pytest.mark.parametrize("client", ["ctr", "pyctr"])
def test_token_auth(daemon: Daemon, token_registry: Registry, tokenserver: TokenServer, busybox_image: BuiltImage,
                    client: str) -> None:
    ref = _push(token_registry, busybox_image)
    user, password = token_registry.user()
    run = daemon.ctr if client == "ctr" else daemon.pyctr
    r = run("images", "pull", "--plain-http", "--user", f"{user}:wrong", ref, check=False)
    assert r.returncode != 0
    if client == "pyctr":
        assert "refused" in r.stderr
    run("images", "pull", "--plain-http", "--user", f"{user}:{password}", ref)
    assert ref in daemon.ctr("images", "ls", "-q").stdout
    assert tokenserver.requests


def test_token_auth_push(daemon: Daemon, token_registry: Registry, busybox_image: BuiltImage) -> None:
    ref = _push(token_registry, busybox_image)
    user, password = token_registry.user()
    daemon.pyctr("images", "pull", "--plain-http", "--user", f"{user}:{password}", ref)
    dest = token_registry.ref("copies/busybox", "v2")
    daemon.pyctr("images", "tag", ref, dest)
    daemon.pyctr("images", "push", "--plain-http", "--user", f"{user}:{password}", dest)
    daemon.pyctr("images", "rm", dest, ref)
    daemon.ctr("images", "pull", "--plain-http", "--user", f"{user}:{password}", dest, namespace="other")


def test_identity_token_uses_oauth_post(daemon: Daemon, token_registry: Registry, tokenserver: TokenServer,
                                        busybox_image: BuiltImage) -> None:
    """``--user :<refresh token>`` (empty user) exchanges the token with an OAuth2 POST."""
    ref = _push(token_registry, busybox_image)
    refresh = tokenserver.issue("testuser", [], with_refresh=True)["refresh_token"]
    tokenserver.requests.clear()
    daemon.pyctr("images", "pull", "--plain-http", "--user", f":{refresh}", ref)
    posts = [r for r in tokenserver.requests if r.method == "POST"]
    assert posts
    assert posts[0].grant_type == "refresh_token"
    r = daemon.pyctr("images", "pull", "--plain-http", "--user", ":not-a-token", ref, namespace="x", check=False)
    assert r.returncode != 0
    assert "identity token" in r.stderr
