"""Validation patterns refuse a trailing newline (issue 13, finding 8).

Python's ``re.match`` with a pattern ending in ``$`` accepts ``"value\\n"``: ``$`` also matches
just before a final newline.  Go's ``$`` (what containerd's patterns use) does not.  Every
validation pattern is now used with ``fullmatch``; each case below passed validation before.
"""

from __future__ import annotations

import pytest

from pycontainerd import errdefs, identifiers
from pycontainerd.content import helpers
from pycontainerd.images import platforms, reference
from pycontainerd.runtime import task_manager

DIGEST = "sha256:" + "a" * 64


def test_digest_with_trailing_newline_is_refused() -> None:
    assert helpers.validate_digest(DIGEST) == DIGEST
    with pytest.raises(errdefs.InvalidArgument, match="invalid checksum digest format"):
        helpers.validate_digest(DIGEST + "\n")
    assert not helpers.is_valid_digest(DIGEST + "\n")


@pytest.mark.parametrize(
    "ref",
    [
        "docker.io/library/busybox:latest\n",
        "docker.io/library/busybox\n",
        f"docker.io/library/busybox@{DIGEST}\n",
    ],
)
def test_reference_with_trailing_newline_is_refused(ref: str) -> None:
    reference.parse(ref.rstrip("\n"))
    with pytest.raises(errdefs.InvalidArgument, match="invalid reference"):
        reference.parse(ref)
    with pytest.raises(errdefs.InvalidArgument, match="invalid reference"):
        reference.parse_normalized(ref.removeprefix("docker.io/library/"))


def test_tag_and_digest_with_trailing_newline_are_refused() -> None:
    assert reference.parse("docker.io/library/busybox:v1").tag == "v1"
    assert reference.parse(f"docker.io/library/busybox@{DIGEST}").digest == DIGEST
    for bad in ("docker.io/library/busybox:v1\n", f"docker.io/library/busybox@{DIGEST}\n"):
        with pytest.raises(errdefs.InvalidArgument):
            reference.parse(bad)


def test_tag_characters_are_ascii_like_go() -> None:
    # Go's \w is [0-9A-Za-z_]; Python's \w also takes é, ٣ ...
    assert reference.parse("docker.io/library/busybox:v1_2.3-x").tag == "v1_2.3-x"
    for tag in ("é", "v٣"):
        with pytest.raises(errdefs.InvalidArgument):
            reference.parse(f"docker.io/library/busybox:{tag}")


@pytest.mark.parametrize("spec", ["linux\n", "linux/amd64\n", "amd64\n"])
def test_platform_component_with_trailing_newline_is_refused(spec: str) -> None:
    with pytest.raises(errdefs.InvalidArgument, match="is not a valid component"):
        platforms.parse(spec)


def test_runtime_name_with_trailing_newline_is_invalid_not_a_missing_shim() -> None:
    with pytest.raises(errdefs.NotFound, match="containerd-shim-foo-v1"):
        task_manager.check_runtime("io.containerd.foo.v1")
    # containerd (Go's $) does not take this for a runtime name at all
    with pytest.raises(errdefs.InvalidArgument, match="invalid runtime name"):
        task_manager.check_runtime("io.containerd.foo.v1\n")


def test_identifiers_and_namespaces_refuse_trailing_newline() -> None:
    with pytest.raises(errdefs.InvalidArgument):
        identifiers.validate("abc\n")
    with pytest.raises(errdefs.InvalidArgument):
        identifiers.validate_namespace("default\n")
    assert not identifiers.is_valid("abc\n")
