"""Image references: parsing and normalisation like Docker's reference package.

``busybox`` → ``docker.io/library/busybox:latest``; ``ghcr.io/o/r@sha256:…`` keeps its digest;
``localhost:5000/x:1`` names a registry by host and port.  Grammar::

    reference  := name [":" tag] ["@" digest]
    name       := [domain "/"] path-component ("/" path-component)*
    domain     := domain-component ("." domain-component)* [":" port]   (or [IPv6]:port)
    path-comp  := [a-z0-9]+ (("." | "_" | "__" | "-"+) [a-z0-9]+)*
    tag        := [A-Za-z0-9_][A-Za-z0-9_.-]{0,127}

The first component is a domain when it contains ``.`` or ``:``, or is ``localhost``;
otherwise the image is on Docker Hub (``docker.io``) and a one-component path gets
``library/``.  Errors are ``InvalidArgument`` with Docker's messages.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import NoReturn

from .. import errdefs

DEFAULT_DOMAIN = "docker.io"
LEGACY_DEFAULT_DOMAIN = "index.docker.io"
OFFICIAL_REPO_PREFIX = "library/"
DEFAULT_TAG = "latest"
NAME_TOTAL_LENGTH_MAX = 255

_ALNUM = r"[a-z0-9]+"
_SEP = r"(?:[._]|__|[-]+)"
_PATH_COMPONENT = rf"{_ALNUM}(?:{_SEP}{_ALNUM})*"
_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_IPV6 = r"\[(?:[a-fA-F0-9:]+)\]"
_DOMAIN = rf"(?:{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*|{_IPV6})(?::[0-9]+)?"
_TAG = r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}"  # Go's \w is ASCII; Python's is Unicode
_DIGEST = r"[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}"
_NAME = rf"(?:{_DOMAIN}/)?{_PATH_COMPONENT}(?:/{_PATH_COMPONENT})*"
# Whole-string patterns, always used with fullmatch: Python's ``$`` (which Go's anchored
# patterns would need) also matches before a trailing newline.
_REFERENCE_RE = re.compile(rf"({_NAME})(?::({_TAG}))?(?:@({_DIGEST}))?")
_ANCHORED_DIGEST = re.compile(_DIGEST)
_HEX64 = re.compile(r"[a-f0-9]{64}")


@dataclass(frozen=True)
class Reference:
    domain: str
    path: str
    tag: str = ""
    digest: str = ""

    @property
    def name(self) -> str:
        """``domain/path`` (containerd's "locator")."""
        return f"{self.domain}/{self.path}"

    locator = name

    @property
    def object(self) -> str:
        """What follows the name: ``tag``, ``tag@digest`` or ``@digest`` (containerd's Spec.Object)."""
        if self.digest:
            return f"{self.tag}@{self.digest}"
        return self.tag

    def __str__(self) -> str:
        s = self.name
        if self.tag:
            s += ":" + self.tag
        if self.digest:
            s += "@" + self.digest
        return s

    def with_default_tag(self) -> Reference:
        if self.tag or self.digest:
            return self
        return Reference(self.domain, self.path, DEFAULT_TAG)

    def docker_ref(self) -> Reference:
        """Docker's ParseDockerRef: a digest wins over a tag; no tag and no digest → ``latest``."""
        if self.digest:
            return Reference(self.domain, self.path, "", self.digest)
        return self.with_default_tag()

    def familiar(self) -> str:
        """The short form Docker shows: ``busybox:latest``, ``user/repo``, ``ghcr.io/o/r:t``."""
        name = self.name
        if self.domain == DEFAULT_DOMAIN:
            name = self.path
            if name.startswith(OFFICIAL_REPO_PREFIX) and "/" not in name[len(OFFICIAL_REPO_PREFIX):]:
                name = name[len(OFFICIAL_REPO_PREFIX):]
        s = name
        if self.tag:
            s += ":" + self.tag
        if self.digest:
            s += "@" + self.digest
        return s


def _split_domain(name: str) -> tuple[str, str]:
    i = name.find("/")
    first = name[:i] if i >= 0 else ""
    if i == -1 or ("." not in first and ":" not in first and first != "localhost" and first.lower() == first):
        domain, rest = DEFAULT_DOMAIN, name
    else:
        domain, rest = first, name[i + 1:]
    if domain == LEGACY_DEFAULT_DOMAIN:
        domain = DEFAULT_DOMAIN
    if domain == DEFAULT_DOMAIN and "/" not in rest:
        rest = OFFICIAL_REPO_PREFIX + rest
    return domain, rest


def parse(s: str) -> Reference:
    """Parse a reference as given (no normalisation); the name must include a domain."""
    m = _REFERENCE_RE.fullmatch(s)
    if not m:
        _explain(s)
    name, tag, dgst = m.group(1), m.group(2) or "", m.group(3) or ""
    if len(name) > NAME_TOTAL_LENGTH_MAX:
        raise errdefs.InvalidArgument(f"invalid reference {s!r}: repository name must not be more than "
                                      f"{NAME_TOTAL_LENGTH_MAX} characters")
    i = name.find("/")
    if i < 0:
        raise errdefs.InvalidArgument(f"invalid reference {s!r}: a fully qualified name needs a registry host "
                                      f"(e.g. docker.io/library/{name})")
    return Reference(name[:i], name[i + 1:], tag, dgst)


def parse_normalized(s: str) -> Reference:
    """Docker's ParseNormalizedNamed: add ``docker.io`` and ``library/`` where implied."""
    if _HEX64.fullmatch(s):
        raise errdefs.InvalidArgument(
            f"invalid repository name ({s}), cannot specify 64-byte hexadecimal strings")
    if not s:
        raise errdefs.InvalidArgument("invalid reference format: empty reference")
    # split off tag/digest before deciding about the domain
    name_part, at, dgst = s.partition("@")
    tag = ""
    slash = name_part.rfind("/")
    colon = name_part.rfind(":")
    if colon > slash:
        name_part, tag = name_part[:colon], name_part[colon + 1:]
    domain, rest = _split_domain(name_part)
    if rest.lower() != rest:
        raise errdefs.InvalidArgument(f"invalid reference format: repository name must be lowercase: {s!r}")
    full = f"{domain}/{rest}" + (f":{tag}" if colon > slash else "") + (f"@{dgst}" if at else "")
    return parse(full)


def normalize(s: str) -> str:
    """``busybox`` → ``docker.io/library/busybox:latest`` (digest references keep only the digest)."""
    return str(parse_normalized(s).docker_ref())


def familiarize(s: str) -> str:
    return parse_normalized(s).with_default_tag().familiar()


def _explain(s: str) -> NoReturn:
    name = s.split("@", 1)[0]
    if any(c.isupper() for c in name.rsplit(":", 1)[0].split("/", 1)[-1]):
        raise errdefs.InvalidArgument(f"invalid reference format: repository name must be lowercase: {s!r}")
    if "@" in s and not _ANCHORED_DIGEST.fullmatch(s.split("@", 1)[1]):
        raise errdefs.InvalidArgument(f"invalid reference format: invalid digest in {s!r}")
    raise errdefs.InvalidArgument(f"invalid reference format: {s!r}")
