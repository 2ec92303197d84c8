"""containerd's identifier rule (ids, namespaces) and its messages."""

from __future__ import annotations

import pytest

from pycontainerd import errdefs, identifiers


@pytest.mark.parametrize(
    "ident",
    [
        "a",
        "foo",
        "Foo",
        "0",
        "foo.bar",
        "foo-bar",
        "foo_bar",
        "a.b-c_d",
        "k8s.io",
        "default",
        "x" * 76,
        "sha256-abc",
        "1.2.3",
    ],
)
def test_valid(ident: str) -> None:
    identifiers.validate(ident)
    assert identifiers.is_valid(ident)


@pytest.mark.parametrize(
    "ident",
    [
        "-foo",
        "foo-",
        ".foo",
        "foo.",
        "foo..bar",
        "foo--bar",
        "foo_-bar",
        "foo bar",
        "foo/bar",
        "foo:bar",
        "föo",
        "foo\n",
        "\nfoo",
        "a@b",
        "_",
    ],
)
def test_invalid_pattern(ident: str) -> None:
    with pytest.raises(errdefs.InvalidArgument, match="must match") as exc:
        identifiers.validate(ident)
    assert str(exc.value).endswith(f"must match {identifiers.PATTERN}")
    assert not identifiers.is_valid(ident)


def test_message_matches_containerd() -> None:
    with pytest.raises(errdefs.InvalidArgument) as exc:
        identifiers.validate("a..b")
    assert str(exc.value) == 'identifier "a..b" must match ^[A-Za-z0-9]+(?:[._-](?:[A-Za-z0-9]+))*$'


def test_quotes_like_go() -> None:
    with pytest.raises(errdefs.InvalidArgument) as exc:
        identifiers.validate('a"b\n')
    assert str(exc.value).startswith('identifier "a\\"b\\n" must match')


def test_empty() -> None:
    with pytest.raises(errdefs.InvalidArgument) as exc:
        identifiers.validate("")
    assert str(exc.value) == "identifier must not be empty"
    assert not identifiers.is_valid("")


def test_too_long() -> None:
    with pytest.raises(errdefs.InvalidArgument) as exc:
        identifiers.validate("x" * 77)
    assert str(exc.value) == f'identifier "{"x" * 77}" greater than maximum length (76 characters)'


def test_length_counts_bytes() -> None:
    with pytest.raises(errdefs.InvalidArgument, match="greater than maximum length"):
        identifiers.validate("é" * 40)


def test_namespace() -> None:
    identifiers.validate_namespace("k8s.io")
    with pytest.raises(
        errdefs.InvalidArgument, match=r"^namespace validation: identifier \"a/b\" must match"
    ):
        identifiers.validate_namespace("a/b")
