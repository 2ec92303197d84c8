"""Reference parsing and normalisation (Docker's reference rules)."""

from __future__ import annotations

import pytest

from pycontainerd import errdefs
from pycontainerd.images import reference


@pytest.mark.parametrize(("given", "want"), [
    ("busybox", "docker.io/library/busybox:latest"),
    ("busybox:1.36", "docker.io/library/busybox:1.36"),
    ("library/busybox", "docker.io/library/busybox:latest"),
    ("user/repo", "docker.io/user/repo:latest"),
    ("docker.io/busybox", "docker.io/library/busybox:latest"),
    ("index.docker.io/library/busybox:x", "docker.io/library/busybox:x"),
    ("localhost/foo", "localhost/foo:latest"),
    ("localhost:5000/foo/bar:v1", "localhost:5000/foo/bar:v1"),
    ("127.0.0.1:5000/busybox", "127.0.0.1:5000/busybox:latest"),
    ("ghcr.io/o/r:t", "ghcr.io/o/r:t"),
    ("busybox@sha256:" + "a" * 64, "docker.io/library/busybox@sha256:" + "a" * 64),
    ("busybox:tag@sha256:" + "a" * 64, "docker.io/library/busybox@sha256:" + "a" * 64),
])
def test_normalize(given: str, want: str) -> None:
    assert reference.normalize(given) == want


@pytest.mark.parametrize(("given", "want"), [
    ("docker.io/library/busybox:latest", "busybox:latest"),
    ("docker.io/user/repo", "user/repo:latest"),
    ("127.0.0.1:5000/a/b:c", "127.0.0.1:5000/a/b:c"),
])
def test_familiarize(given: str, want: str) -> None:
    assert reference.familiarize(given) == want


@pytest.mark.parametrize("bad", [
    "Busybox", "docker.io/Library/busybox", "busybox:", "a" * 64, "", "busybox@sha256:abc", "-x/y",
    "docker.io/library/busybox:" + "t" * 129,
])
def test_invalid(bad: str) -> None:
    with pytest.raises(errdefs.InvalidArgument):
        reference.parse_normalized(bad)


def test_uppercase_message() -> None:
    with pytest.raises(errdefs.InvalidArgument, match="must be lowercase"):
        reference.normalize("Busybox")


def test_parse_parts_and_object() -> None:
    r = reference.parse("localhost:5000/a/b:v1@sha256:" + "b" * 64)
    assert (r.domain, r.path, r.tag) == ("localhost:5000", "a/b", "v1")
    assert r.object == "v1@sha256:" + "b" * 64
    assert r.locator == "localhost:5000/a/b"


def test_parse_requires_host() -> None:
    with pytest.raises(errdefs.InvalidArgument, match="registry host"):
        reference.parse("busybox:latest")
