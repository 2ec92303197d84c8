"""Regular expressions written by users, with Go's semantics: RE2, linear time, no backtracking.

Every pattern that comes from a user (a ``~=`` filter in any List RPC or event subscription,
pycrictl's ``--name``/``--image``/``--namespace``) goes through ``compile`` here, never through
Python's ``re``.  Python's ``re`` backtracks: ``(a+)+$`` over 29 ``a`` and a ``!`` takes
tens of seconds while holding the GIL, which freezes the whole daemon.  containerd compiles
the same strings with Go's ``regexp`` (RE2 syntax, guaranteed linear time), so we use RE2
through the ``google-re2`` binding and get the same answers in the same time bound.

The syntax is RE2's, which is Go's: ``(?P<name>re)`` and ``(?<name>re)``, ``(?i)``/``(?s)``/
``(?m)``/``(?U)`` flags, ``\\pL``/``\\p{Greek}`` classes, ``[[:alpha:]]``, ``\\A``, ``\\z``,
``\\Q...\\E``.  There are no backreferences (``\\1``), lookarounds (``(?=``, ``(?!``, ``(?<=``,
``(?<!``), atomic groups or possessive quantifiers; asking for one is an ``InvalidArgument``
that says so.  ``$`` without ``(?m)`` matches only at the very end of the text (unlike
Python, not before a final newline).  Two differences from the C++ library are closed
here so that we accept what Go accepts: ``\\C`` (any byte) is refused, and so is nesting
deeper than ``MAX_NESTING`` groups (Go refuses expressions that nest too deeply).

``Regexp.search`` is Go's ``MatchString``: an unanchored search, true when the expression
matches anywhere in the text.
"""

from __future__ import annotations

import functools
from typing import Any

from .errdefs import InvalidArgument

__all__ = ["MAX_NESTING", "Regexp", "compile"]

MAX_NESTING = 1000
"""Deepest nesting of groups accepted (Go's regexp refuses expressions nesting over 1000 deep)."""

_SHOWN = 120
"""Characters of a pattern quoted in an error message (a pattern may be megabytes long)."""



@functools.cache
def _re2() -> tuple[Any, Any]:
    """The binding and our options, loaded on the first pattern: RE2 is ~1 MiB resident and an
    idle daemon (or a client) that is never given a ``~=`` filter does not need it."""
    import re2

    options = re2.Options()
    options.log_errors = False  # errors become InvalidArgument; RE2 need not also print them to stderr
    options.never_capture = True  # only "does it match" is asked: no submatch bookkeeping
    return re2, options

_UNSUPPORTED = (
    ("invalid perl operator: (?=", "lookahead (?=...) is not supported"),
    ("invalid perl operator: (?!", "negative lookahead (?!...) is not supported"),
    ("invalid perl operator: (?<=", "lookbehind (?<=...) is not supported"),
    ("invalid perl operator: (?<!", "negative lookbehind (?<!...) is not supported"),
    ("invalid perl operator: (?>", "atomic groups (?>...) are not supported"),
    ("invalid perl operator: (?#", "comments (?#...) are not supported"),
)


class Regexp:
    """A compiled user pattern; ``search`` tells whether it matches anywhere in a text."""

    __slots__ = ("_compiled", "pattern")

    def __init__(self, pattern: str, compiled: Any) -> None:
        self.pattern = pattern
        self._compiled = compiled

    def search(self, text: str) -> bool:
        """Go's ``MatchString``: true when the expression matches somewhere in ``text``."""
        return self._compiled.search(text.encode("utf-8", "surrogatepass")) is not None

    def __repr__(self) -> str:
        return f"Regexp({self.pattern!r})"


def compile(pattern: str) -> Regexp:
    """Compile a user's pattern with Go's (RE2) syntax; ``InvalidArgument`` names what is wrong."""
    problem = _precheck(pattern)
    if problem:
        raise _invalid(pattern, problem)
    try:
        encoded = pattern.encode("utf-8")
    except UnicodeEncodeError:
        raise _invalid(pattern, "invalid UTF-8") from None
    re2, options = _re2()
    try:
        # A fresh object rather than re2.compile: that one keeps the last 128 patterns in a
        # process-wide cache, and a pattern's program and DFA may take megabytes each.
        compiled = re2._Regexp(encoded, options)
    except re2.error as exc:
        raise _invalid(pattern, _explain(exc, pattern)) from None
    return Regexp(pattern, compiled)


def _invalid(pattern: str, problem: str) -> InvalidArgument:
    shown = pattern if len(pattern) <= _SHOWN else pattern[:_SHOWN] + "..."
    return InvalidArgument(f"invalid regular expression {shown!r}: {problem} (Go RE2 syntax)")


def _explain(exc: Exception, pattern: str) -> str:
    raw = exc.args[0] if exc.args else exc
    message = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)
    for prefix, meaning in _UNSUPPORTED:
        if message.startswith(prefix):
            return meaning
    if message == "invalid perl operator: (?P" and "(?P=" in pattern:
        return "backreferences (?P=name) are not supported"
    if message.startswith("invalid escape sequence: \\") and message[-1:].isdigit():
        return f"backreferences ({message.rpartition(' ')[2]}) are not supported"
    if message.startswith("bad repetition operator: ") and message.endswith("+"):
        return f"possessive or nested repetition {message.rpartition(' ')[2]} is not supported"
    if len(message) > 2 * _SHOWN:
        message = message[: 2 * _SHOWN] + "..."
    return message


def _precheck(pattern: str) -> str:
    """What Go refuses and RE2 would accept: ``\\C`` and nesting deeper than ``MAX_NESTING``.

    Returns the problem, or "" when there is none.  Linear in the pattern; the character
    walk only runs for patterns that could contain either (most patterns skip it).
    """
    if pattern.count("(") <= MAX_NESTING and "\\C" not in pattern:
        return ""
    depth = 0
    i, n = 0, len(pattern)
    while i < n:
        c = pattern[i]
        if c == "\\":
            e = pattern[i + 1 : i + 2]
            if e == "C":
                return "\\C (match any byte) is not supported"
            if e == "Q":  # \Q...\E: everything up to \E (or the end) is literal
                end = pattern.find("\\E", i + 2)
                i = n if end < 0 else end + 2
                continue
            i += 2
        elif c == "[":
            i = _skip_class(pattern, i)
        elif c == "(":
            depth += 1
            if depth > MAX_NESTING:
                return f"expression nests too deeply (more than {MAX_NESTING} groups)"
            i += 1
        elif c == ")":
            depth = max(depth - 1, 0)
            i += 1
        else:
            i += 1
    return ""


def _skip_class(pattern: str, i: int) -> int:
    """The index after the character class opening at ``pattern[i]`` (its parentheses are literal)."""
    n = len(pattern)
    i += 1
    if pattern.startswith("^", i):
        i += 1
    if pattern.startswith("]", i):  # a leading ] is a literal
        i += 1
    while i < n:
        c = pattern[i]
        if c == "\\":
            if pattern.startswith("C", i + 1):
                return i  # let the main walk report \C
            i += 2
        elif c == "]":
            return i + 1
        elif pattern.startswith("[:", i):  # [:alpha:]
            end = pattern.find(":]", i + 2)
            i = i + 1 if end < 0 else end + 2
        else:
            i += 1
    return n
