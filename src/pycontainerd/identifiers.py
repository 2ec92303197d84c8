"""containerd's rule for identifiers: container ids, image-independent keys, namespaces.

An identifier is one to 76 characters of ASCII letters and digits, in runs joined by
single ``.``, ``_`` or ``-`` separators (``^[A-Za-z0-9]+(?:[._-](?:[A-Za-z0-9]+))*$``).
Such names are safe as file-system path components and in URLs, which is why the
daemon uses them directly as directory names under its root.  Namespace names follow
the same rule.

Violations raise ``errdefs.InvalidArgument`` with containerd's messages, e.g.
``identifier "a..b" must match ^[A-Za-z0-9]+(?:[._-](?:[A-Za-z0-9]+))*$``.
"""

from __future__ import annotations

import re

from .errdefs import InvalidArgument

__all__ = ["MAX_LENGTH", "PATTERN", "is_valid", "validate", "validate_namespace"]

MAX_LENGTH = 76
PATTERN = r"^[A-Za-z0-9]+(?:[._-](?:[A-Za-z0-9]+))*$"

# fullmatch without anchors: Python's ``$`` would also accept a trailing newline.
_RE = re.compile(r"[A-Za-z0-9]+(?:[._-](?:[A-Za-z0-9]+))*")


def validate(s: str) -> None:
    """Raise ``InvalidArgument`` unless ``s`` is a valid identifier."""
    if not s:
        raise InvalidArgument("identifier must not be empty")
    if len(s.encode()) > MAX_LENGTH:
        raise InvalidArgument(
            f"identifier {_go_quote(s)} greater than maximum length ({MAX_LENGTH} characters)"
        )
    if _RE.fullmatch(s) is None:
        raise InvalidArgument(f"identifier {_go_quote(s)} must match {PATTERN}")


def validate_namespace(name: str) -> None:
    """Namespace names follow the identifier rule; the message says it is a namespace."""
    try:
        validate(name)
    except InvalidArgument as exc:
        raise InvalidArgument(f"namespace validation: {exc}") from None


def is_valid(s: str) -> bool:
    return bool(s) and len(s.encode()) <= MAX_LENGTH and _RE.fullmatch(s) is not None


def _go_quote(s: str) -> str:
    """Quote like Go's ``%q`` for the common cases (so messages match containerd's)."""
    out = ['"']
    for c in s:
        if c in '"\\':
            out.append("\\" + c)
        elif c == "\n":
            out.append("\\n")
        elif c == "\t":
            out.append("\\t")
        elif c == "\r":
            out.append("\\r")
        elif not c.isprintable():
            code = ord(c)
            if code < 0x80:
                out.append(f"\\x{code:02x}")
            elif code < 0x10000:
                out.append(f"\\u{code:04x}")
            else:
                out.append(f"\\U{code:08x}")
        else:
            out.append(c)
    out.append('"')
    return "".join(out)
