"""WWW-Authenticate parsing."""

from __future__ import annotations

from pycontainerd.remotes.auth import Challenge, parse_challenges, scope_for


def test_bearer() -> None:
    h = ('Bearer realm="https://auth.docker.io/token",service="registry.docker.io",'
         'scope="repository:library/busybox:pull"')
    assert parse_challenges([h]) == [Challenge("bearer", {
        "realm": "https://auth.docker.io/token", "service": "registry.docker.io",
        "scope": "repository:library/busybox:pull"})]


def test_basic_and_multiple() -> None:
    chs = parse_challenges(['Basic realm="basic-realm"', 'Bearer realm="https://a/t", error="invalid_token"'])
    assert [c.scheme for c in chs] == ["basic", "bearer"]
    assert chs[1].params == {"realm": "https://a/t", "error": "invalid_token"}
    # two challenges in one header value
    chs = parse_challenges(['Basic realm="x", Bearer realm="https://y/t",service="s"'])
    assert chs == [Challenge("basic", {"realm": "x"}), Challenge("bearer", {"realm": "https://y/t", "service": "s"})]


def test_quoting_case_and_unquoted() -> None:
    chs = parse_challenges(['BEARER Realm="a \\"quoted\\" realm" , scope=repository:x:pull'])
    assert chs == [Challenge("bearer", {"realm": 'a "quoted" realm', "scope": "repository:x:pull"})]
    assert parse_challenges([""]) == []


def test_scope() -> None:
    assert scope_for("library/busybox") == "repository:library/busybox:pull"
    assert scope_for("a/b", "pull,push") == "repository:a/b:pull,push"


def test_credentials_from_config() -> None:
    import base64

    from pycontainerd.remotes.auth import credentials_from_config

    creds = credentials_from_config({
        "a.example": {"username": "u", "password": "p"},
        "b.example": {"auth": base64.b64encode(b"x:y:z").decode()},
        "docker.io": {"identitytoken": "tok"},
    })
    assert creds("a.example") == ("u", "p")
    assert creds("b.example") == ("x", "y:z")
    assert creds("registry-1.docker.io") == ("", "tok")
    assert creds("c.example") is None
