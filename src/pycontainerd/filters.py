"""containerd's filter expression language: scanner, parser and matcher (pure, no I/O).

List RPCs (``ctr images ls 'name~=busybox'``, ``Containers.List(filters=[...])``, event
subscriptions) take filter strings.  The syntax, as containerd defines it::

    selectors := selector ("," selector)*          all selectors must match (AND)
    selector  := fieldpath [operator value]        no operator: the field must be present
    fieldpath := field ("." field)*
    field     := [A-Za-z0-9_-]+ | "double quoted"
    operator  := "==" | "!=" | "~="                equal, not equal, regular expression
    value     := [^\\s,]+ | "quoted" | /quoted/ | |quoted|

A list of filter strings means OR: an object matches if any string matches.  The empty
string matches everything.

Examples::

    name==docker.io/library/busybox:latest
    labels."com.example.a"==b           quoted segment: one label key containing dots
    labels.com.example.a==b             the same (adaptors join the rest of a label path)
    labels.foo                          label foo is present
    name~=/^docker\\.io\\//,labels.env!=prod

Quoted strings use Go's escapes (``\\n``, ``\\t``, ``\\"``, ``\\xHH``, ``\\uHHHH``, octal);
between ``/`` or ``|`` quotes, the delimiter itself is escaped with a backslash, which
is handy for regular expressions containing ``"``.  Field segments may be quoted with
``"`` only.  Inside a quoted regexp a regexp backslash must itself be escaped
(``/\\\\d+/``), while an unquoted value keeps backslashes as written (``~=[0-9]\\+``).

Matching: a filter is applied to an *adaptor*, a callable taking a field path (a tuple of
segments) and returning the field's string value or ``None`` when it is absent.

- presence (``labels.foo``): the field is present;
- ``==``: present and equal;
- ``!=``: not equal, an absent field counting as ``""`` (as in containerd);
- ``~=``: the regular expression matches somewhere in the value (``""`` when absent), with
  Go's RE2 syntax and linear-time matching (``pycontainerd.regexp``); the expression is
  compiled at parse time, so a bad regexp is an ``InvalidArgument`` rather than a silent
  non-match (containerd logs it and matches nothing).

Errors are ``errdefs.InvalidArgument`` with containerd's message format, which marks the
offending character: ``filters: parse error: [image~= >|,|< id!=x]: expected value or
quoted``.

Compared with containerd the parser skips whitespace around every token (containerd
rejects ``a==b , c``).
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from . import regexp as regexpmod
from .errdefs import InvalidArgument

__all__ = [
    "ALWAYS",
    "Adaptor",
    "All",
    "AnyOf",
    "Filter",
    "Operator",
    "Selector",
    "adaptor_from_mapping",
    "parse",
    "parse_all",
]

Adaptor = Callable[[tuple[str, ...]], str | None]
"""Resolves a field path to the field's value, or ``None`` when the field is absent."""


class Filter(Protocol):
    def match(self, adaptor: Adaptor) -> bool: ...


class Operator(enum.Enum):
    PRESENT = "?"
    EQUAL = "=="
    NOT_EQUAL = "!="
    MATCHES = "~="


@dataclass(frozen=True)
class Selector:
    """One ``fieldpath[op value]`` term."""

    fieldpath: tuple[str, ...]
    operator: Operator = Operator.PRESENT
    value: str = ""
    regexp: regexpmod.Regexp | None = field(default=None, compare=False, repr=False)

    def match(self, adaptor: Adaptor) -> bool:
        got = adaptor(self.fieldpath)
        if self.operator is Operator.PRESENT:
            return got is not None
        if self.operator is Operator.EQUAL:
            return got is not None and got == self.value
        if self.operator is Operator.NOT_EQUAL:
            return (got or "") != self.value
        assert self.regexp is not None
        return self.regexp.search(got or "")


@dataclass(frozen=True)
class All:
    """Matches when every filter matches (the ``,`` of one filter string)."""

    filters: tuple[Filter, ...]

    def match(self, adaptor: Adaptor) -> bool:
        return all(f.match(adaptor) for f in self.filters)


@dataclass(frozen=True)
class AnyOf:
    """Matches when any filter matches (a list of filter strings)."""

    filters: tuple[Filter, ...]

    def match(self, adaptor: Adaptor) -> bool:
        return any(f.match(adaptor) for f in self.filters)


@dataclass(frozen=True)
class _Always:
    def match(self, adaptor: Adaptor) -> bool:
        return True


ALWAYS: Filter = _Always()
"""The filter of the empty string: matches everything."""


# --- scanner -----------------------------------------------------------------------------


class _Tok(enum.Enum):
    EOF = "EOF"
    QUOTED = "Quoted"
    VALUE = "Value"
    FIELD = "Field"
    SEPARATOR = "Separator"
    OPERATOR = "Operator"
    ILLEGAL = "Illegal"


@dataclass(frozen=True)
class _Token:
    kind: _Tok
    pos: int
    text: str
    error: str = ""


_QUOTES = frozenset('/|"')
_OPERATOR_CHARS = frozenset("=!~")
_SEPARATORS = frozenset(",.")
_SIMPLE_ESCAPES = frozenset("abfnrtv\\")


def _is_field_char(c: str) -> bool:
    return c in "-_" or ("a" <= c <= "z") or ("A" <= c <= "Z") or ("0" <= c <= "9")


def _is_value_char(c: str) -> bool:
    return c != "," and not c.isspace() and c.isprintable()


def _scan(text: str) -> list[_Token]:
    """Split ``text`` into tokens; after an operator the next word is a value."""
    tokens: list[_Token] = []
    i, n = 0, len(text)
    value_mode = False
    while True:
        while i < n and text[i].isspace():
            i += 1
        if i >= n:
            tokens.append(_Token(_Tok.EOF, n, ""))
            return tokens
        c, start = text[i], i
        if c == "\0":
            tokens.append(_Token(_Tok.ILLEGAL, start, c, "unexpected null"))
            i += 1
        elif c in _QUOTES:
            i, err = _scan_quoted(text, i)
            kind = _Tok.ILLEGAL if err else _Tok.QUOTED
            tokens.append(_Token(kind, start, text[start:i], err))
            value_mode = False
        elif c in _SEPARATORS:
            tokens.append(_Token(_Tok.SEPARATOR, start, c))
            i += 1
            value_mode = False
        elif c in _OPERATOR_CHARS:
            while i < n and text[i] in _OPERATOR_CHARS:
                i += 1
            tokens.append(_Token(_Tok.OPERATOR, start, text[start:i]))
            value_mode = True
        elif value_mode:
            while i < n and _is_value_char(text[i]):
                i += 1
            if i == start:  # a non-printable character
                i += 1
                tokens.append(_Token(_Tok.ILLEGAL, start, c, "unexpected character"))
            else:
                tokens.append(_Token(_Tok.VALUE, start, text[start:i]))
            value_mode = False
        elif _is_field_char(c):
            while i < n and _is_field_char(text[i]):
                i += 1
            tokens.append(_Token(_Tok.FIELD, start, text[start:i]))
        else:
            tokens.append(_Token(_Tok.ILLEGAL, start, c))
            i += 1


def _scan_quoted(text: str, i: int) -> tuple[int, str]:
    """Scan the quoted literal at ``text[i]``; return the end and an error ("" if legal)."""
    quote, n = text[i], len(text)
    i += 1
    error = ""
    while True:
        if i >= n or text[i] == "\n":
            return i + (1 if i < n else 0), "quoted literal not terminated"
        c = text[i]
        if c == quote:
            return i + 1, error
        if c != "\\":
            i += 1
            continue
        i += 1
        e = text[i] if i < n else ""
        if e in _SIMPLE_ESCAPES or e == quote:
            i += 1
        elif e in "01234567":
            i, ok = _scan_digits(text, i, 8, 3)
            error = error or ("" if ok else "illegal numeric escape sequence")
        elif e in ("x", "u", "U"):
            i, ok = _scan_digits(text, i + 1, 16, {"x": 2, "u": 4, "U": 8}[e])
            error = error or ("" if ok else "illegal numeric escape sequence")
        else:
            error = error or "illegal escape sequence"


def _scan_digits(text: str, i: int, base: int, count: int) -> tuple[int, bool]:
    digits = "01234567" if base == 8 else "0123456789abcdefABCDEF"
    while count > 0 and i < len(text) and text[i] in digits:
        i += 1
        count -= 1
    return i, count == 0


def _unquote(s: str) -> str:
    """Decode a scanned quoted literal (Go string syntax, delimiter ``"``, ``/`` or ``|``).

    Raises ``ValueError`` on a syntax error.
    """
    if len(s) < 2 or s[-1] != s[0]:
        raise ValueError("invalid syntax")
    quote, body = s[0], s[1:-1]
    out = bytearray()
    i, n = 0, len(body)
    simple = {"a": 7, "b": 8, "f": 12, "n": 10, "r": 13, "t": 9, "v": 11, "\\": 92}
    while i < n:
        c = body[i]
        if c == quote or c == "\n":
            raise ValueError("invalid syntax")
        if c != "\\":
            out += c.encode()
            i += 1
            continue
        if i + 1 >= n:
            raise ValueError("invalid syntax")
        e = body[i + 1]
        i += 2
        if e in simple:
            out.append(simple[e])
        elif e == quote:
            out += e.encode()
        elif e in "xuU":
            width = {"x": 2, "u": 4, "U": 8}[e]
            digits = body[i : i + width]
            if len(digits) != width or not all(d in "0123456789abcdefABCDEF" for d in digits):
                raise ValueError("invalid syntax")
            code = int(digits, 16)
            i += width
            if e == "x":
                out.append(code)
            elif code > 0x10FFFF or 0xD800 <= code <= 0xDFFF:
                raise ValueError("invalid syntax")
            else:
                out += chr(code).encode()
        elif e in "01234567":
            digits = body[i - 1 : i + 2]
            if len(digits) != 3 or not all(d in "01234567" for d in digits) or int(digits, 8) > 255:
                raise ValueError("invalid syntax")
            out.append(int(digits, 8))
            i += 2
        else:
            raise ValueError("invalid syntax")
    return out.decode("utf-8", errors="replace")


# --- parser ------------------------------------------------------------------------------


_CONTEXT = 100
"""Characters of the filter quoted on each side of an error's position: a whole filter may be
megabytes, far over what a gRPC status message (trailing metadata, 16 KiB) can carry."""


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens = _scan(text)
        self.i = 0

    def error(self, pos: int, msg: str) -> InvalidArgument:
        t = self.text
        if pos < len(t):
            before, after = t[:pos], t[pos + 1 :]
            if len(before) > _CONTEXT:
                before = "..." + before[-_CONTEXT:]
            if len(after) > _CONTEXT:
                after = after[:_CONTEXT] + "..."
            where = f"[{before} >|{t[pos]}|< {after}]"
        else:
            where = f"[{t}]" if len(t) <= 2 * _CONTEXT else f"[...{t[-_CONTEXT:]}]"
        return InvalidArgument(f"filters: parse error: {where}: {msg}")

    def peek(self) -> _Token:
        return self.tokens[self.i]

    def next(self) -> _Token:
        tok = self.tokens[self.i]
        if tok.kind is not _Tok.EOF:
            self.i += 1
        return tok

    def selectors(self) -> Filter:
        terms: list[Filter] = [self.selector()]
        while True:
            tok = self.peek()
            if tok.kind is _Tok.EOF:
                return All(tuple(terms))
            if tok.kind is _Tok.SEPARATOR and tok.text == ",":
                self.next()
                terms.append(self.selector())
                continue
            raise self.error(tok.pos, f"unexpected input: {tok.text[:1]}")

    def selector(self) -> Selector:
        path = self.fieldpath()
        tok = self.peek()
        if tok.kind is _Tok.EOF or (tok.kind is _Tok.SEPARATOR and tok.text == ","):
            return Selector(path)
        op = self.operator()
        value_tok = self.next()
        if value_tok.kind in (_Tok.VALUE, _Tok.FIELD):
            value = value_tok.text
        elif value_tok.kind is _Tok.QUOTED:
            value = self.unquote(value_tok, allow_alternates=True)
        elif value_tok.kind is _Tok.ILLEGAL and value_tok.error:
            raise self.error(value_tok.pos, value_tok.error)
        else:
            raise self.error(value_tok.pos, "expected value or quoted")
        regexp = None
        if op is Operator.MATCHES:
            try:
                regexp = regexpmod.compile(value)
            except InvalidArgument as exc:
                raise self.error(value_tok.pos, str(exc)) from None
        return Selector(path, op, value, regexp)

    def fieldpath(self) -> tuple[str, ...]:
        parts = [self.field()]
        while (tok := self.peek()).kind is _Tok.SEPARATOR and tok.text == ".":
            self.next()
            parts.append(self.field())
        return tuple(parts)

    def field(self) -> str:
        tok = self.next()
        if tok.kind is _Tok.FIELD:
            return tok.text
        if tok.kind is _Tok.QUOTED:
            return self.unquote(tok, allow_alternates=False)
        if tok.kind is _Tok.ILLEGAL and tok.error:
            raise self.error(tok.pos, tok.error)
        raise self.error(tok.pos, "expected field or quoted")

    def operator(self) -> Operator:
        tok = self.next()
        if tok.kind is _Tok.ILLEGAL and tok.error:
            raise self.error(tok.pos, tok.error)
        if tok.kind is not _Tok.OPERATOR:
            raise self.error(tok.pos, 'expected an operator ("=="|"!="|"~=")')
        for op in (Operator.EQUAL, Operator.NOT_EQUAL, Operator.MATCHES):
            if tok.text == op.value:
                return op
        raise self.error(tok.pos, f"unsupported operator {tok.text!r}")

    def unquote(self, tok: _Token, *, allow_alternates: bool) -> str:
        if not allow_alternates and tok.text[0] != '"':
            raise self.error(tok.pos, "invalid quote encountered")
        try:
            return _unquote(tok.text)
        except ValueError as exc:
            raise self.error(tok.pos, f"unquoting failed: {exc}") from None


def parse(expr: str) -> Filter:
    """Parse one filter string (selectors joined by ``,``, all of which must match).

    The empty string matches everything.  Raises ``errdefs.InvalidArgument`` naming the
    position of the first error.
    """
    if expr == "":
        return ALWAYS
    return _Parser(expr).selectors()


def parse_all(exprs: Sequence[str]) -> Filter:
    """Parse a list of filter strings, any of which may match (OR).

    An empty list matches everything, and so does a list holding an empty string.
    """
    if isinstance(exprs, str):
        raise TypeError("parse_all takes a sequence of filter strings, not a string")
    filters = [parse(e) for e in exprs]
    if not filters or any(f is ALWAYS for f in filters):
        return ALWAYS
    if len(filters) == 1:
        return filters[0]
    return AnyOf(tuple(filters))


# --- adaptors ----------------------------------------------------------------------------


def _leaf(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str | int | float):
        return str(value)
    if isinstance(value, Mapping):
        return "" if value else None
    return None


def _lookup(node: Any, path: tuple[str, ...]) -> str | None:
    if not path:
        return _leaf(node)
    if not isinstance(node, Mapping):
        return None
    # Try the next segment alone, then joined with the following ones: an unquoted label
    # key with dots (labels.com.example.a) names the key "com.example.a".
    for width in range(1, len(path) + 1):
        key = ".".join(path[:width])
        if key in node:
            found = _lookup(node[key], path[width:])
            if found is not None:
                return found
    return None


def adaptor_from_mapping(obj: Mapping[str, Any]) -> Adaptor:
    """An adaptor over plain (nested) dicts, e.g. ``{"name": ..., "labels": {...}}``.

    A path walks nested mappings; a key that contains dots may be written quoted
    (``labels."a.b"``) or unquoted (``labels.a.b``).  Strings, numbers and booleans
    (``"true"``/``"false"``) are values; ``None`` or a missing key is absent; a mapping
    at the end of the path is present (as ``""``) when not empty, as containerd's
    adaptors report ``labels``.
    """

    def adaptor(fieldpath: tuple[str, ...]) -> str | None:
        return _lookup(obj, tuple(fieldpath))

    return adaptor
