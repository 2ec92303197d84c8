"""User regular expressions (pycontainerd.regexp): Go's RE2 semantics, linear time, clear errors.

Issue 13, finding 5: ``name~=/(a+)+$/`` over 29 ``a`` and a ``!`` took 36 s in Python's ``re``
(catastrophic backtracking, GIL held: the whole daemon froze); containerd (Go, RE2) answers at
once.  The pathological cases here carry a pytest timeout: with a backtracking engine they run
for minutes (the time doubles with every ``a``), so the old code fails them.
"""

from __future__ import annotations

import pytest

from pycontainerd import errdefs, filters, regexp
from pycontainerd.cli.pycrictl._format import pattern_matcher
from pycontainerd.filters import adaptor_from_mapping

EVIL = "(a+)+$"
EVIL_NAME = "a" * 29 + "!"


@pytest.mark.timeout(20)
def test_pathological_pattern_does_not_backtrack() -> None:
    assert not regexp.compile(EVIL).search(EVIL_NAME)
    # 2**29 backtracking steps above; this one would be 2**5000
    assert not regexp.compile(EVIL).search("a" * 5000 + "!")
    assert regexp.compile(EVIL).search("a" * 5000)
    assert not regexp.compile("(x+x+)+y").search("x" * 5000)
    assert not regexp.compile("(.*a){20}").search("a" * 19 + "b" * 5000)


@pytest.mark.timeout(20)
def test_pathological_filter_does_not_backtrack() -> None:
    flt = filters.parse_all(["name~=/(a+)+$/"])
    assert not flt.match(adaptor_from_mapping({"name": EVIL_NAME}))
    assert flt.match(adaptor_from_mapping({"name": "a" * 29}))


@pytest.mark.timeout(20)
def test_pycrictl_name_filter_does_not_backtrack() -> None:
    assert not pattern_matcher(EVIL, "name")(EVIL_NAME)
    assert pattern_matcher("", "name")(EVIL_NAME)


@pytest.mark.parametrize(
    ("pattern", "text", "matches"),
    [
        ("pause", "registry.k8s.io/pause:3.6", True),  # unanchored, like Go's MatchString
        ("^pause", "registry.k8s.io/pause:3.6", False),
        # Go's $ is the end of the text; Python's $ also matches before a trailing newline
        ("a$", "a\n", False),
        ("(?m)a$", "a\nb", True),
        (r"a\z", "a", True),  # Python 3.11's re has no \z
        (r"\Aa", "ba", False),
        (r"(?P<n>b)", "abc", True),
        (r"(?<n>b)", "abc", True),
        (r"\pL+\d", "é1", True),  # Unicode classes: Python's re has no \pL
        (r"\p{Greek}", "λ", True),
        (r"[[:upper:]]", "aB", True),
        (r"\Qa.b\E", "axb", False),
        (r"\Qa.b\E", "a.b", True),
        (r"\d", "٣", False),  # Go's \d is ASCII; Python's matches Arabic-Indic digits
        (r"\w", "é", False),
        (r"(?i)ABC", "xabcx", True),
        (".", "\n", False),
        ("(?s).", "\n", True),
        ("", "", True),
        ("x{,3}", "x{,3}", True),  # {,n} is a literal in Go
    ],
)
def test_go_re2_semantics(pattern: str, text: str, matches: bool) -> None:
    assert regexp.compile(pattern).search(text) is matches


@pytest.mark.parametrize(
    ("pattern", "fragment"),
    [
        (r"(a)\1", r"backreferences (\1) are not supported"),
        (r"(?P<n>a)(?P=n)", "backreferences (?P=name) are not supported"),
        ("a(?=b)", "lookahead (?=...) is not supported"),
        ("a(?!b)", "negative lookahead (?!...) is not supported"),
        ("(?<=a)b", "lookbehind (?<=...) is not supported"),
        ("(?<!a)b", "negative lookbehind (?<!...) is not supported"),
        ("(?>a)", "atomic groups"),
        ("a++", "possessive or nested repetition ++"),
        ("(?#note)", "comments"),
        (r"\C", r"\C (match any byte) is not supported"),
        (r"[\C]", r"\C (match any byte) is not supported"),
        (r"\Z", r"invalid escape sequence: \Z"),
        ("[a-", "missing ]"),
        ("(", "missing )"),
        ("a{1001}", "invalid repetition size"),
        ("\ud800", "invalid UTF-8"),
    ],
)
def test_unsupported_syntax_is_invalid_argument(pattern: str, fragment: str) -> None:
    with pytest.raises(errdefs.InvalidArgument) as exc:
        regexp.compile(pattern)
    assert fragment in str(exc.value)
    assert "(Go RE2 syntax)" in str(exc.value)


def test_escaped_or_quoted_c_is_a_literal() -> None:
    assert regexp.compile(r"\\C").search("\\C")  # an escaped backslash, then C
    assert regexp.compile(r"\Q\C\E").search("\\C")


@pytest.mark.parametrize("opening", ["(", "(?:", "(?P<n>"])
def test_nesting_is_bounded(opening: str) -> None:
    ok = opening * regexp.MAX_NESTING + "a" + ")" * regexp.MAX_NESTING
    assert regexp.compile(ok).search("a")
    deep = opening * (regexp.MAX_NESTING + 1) + "a" + ")" * (regexp.MAX_NESTING + 1)
    with pytest.raises(errdefs.InvalidArgument, match="nests too deeply"):
        regexp.compile(deep)


def test_very_deep_nesting_is_invalid_argument_not_recursion_error() -> None:
    deep = "(" * 100_000 + ")" * 100_000
    with pytest.raises(errdefs.InvalidArgument, match="nests too deeply"):
        regexp.compile(deep)
    with pytest.raises(errdefs.InvalidArgument, match=r"filters: parse error: .*nests too deeply"):
        filters.parse_all([f"name~=/{deep}/"])
    with pytest.raises(errdefs.InvalidArgument, match=r"filters: parse error: .*nests too deeply"):
        filters.parse_all(["name~=" + deep])
    with pytest.raises(errdefs.InvalidArgument, match=r"invalid name pattern: .*nests too deeply"):
        pattern_matcher(deep, "name")


def test_parentheses_that_are_literals_do_not_nest() -> None:
    many = 3 * regexp.MAX_NESTING
    assert regexp.compile(r"\(" * many).search("(" * many)
    assert regexp.compile("[(]" * many).search("(" * many)
    assert regexp.compile("[](]" * many).search("]" * many)
    assert regexp.compile("[[:alpha:](]" * many).search("(" * many)
    assert regexp.compile(r"\Q" + "(" * many + r"\E").search("(" * many)
    assert regexp.compile("()" * many).search("")  # many groups, none nested


def test_error_message_quotes_a_long_pattern_shortened() -> None:
    with pytest.raises(errdefs.InvalidArgument) as exc:
        regexp.compile("[" + "a" * 100_000)
    assert len(str(exc.value)) < 600


def test_text_that_is_not_utf8_does_not_crash() -> None:
    assert regexp.compile("a").search("\udcff a")
    assert not regexp.compile("b").search("\udcff a")


def test_pycrictl_bad_pattern_names_the_flag() -> None:
    with pytest.raises(errdefs.InvalidArgument, match=r"invalid image pattern: .*lookahead"):
        pattern_matcher("(?=x)", "image")
