"""Platform specifiers (``linux/amd64``, ``linux/arm/v7``) and matching, as containerd does it.

``parse`` accepts ``os``, ``arch``, ``os/arch`` and ``os/arch/variant`` and normalises
aliases (``x86_64`` → ``amd64``, ``aarch64`` → ``arm64``, ``armhf`` → ``arm/v7``; an
``arm64`` variant ``v8`` is the default and dropped).  ``only(p)`` matches ``p`` and the
platforms that can run on it, best first: ``arm64`` also runs ``arm/v8..v5``, ``arm/v7``
also runs ``arm/v6`` and ``arm/v5``.  ``ordered`` combines several such matchers, keeping
the order in which they were given as the preference.
"""

from __future__ import annotations

import platform as _platform
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from .. import errdefs
from .models import Platform

_SPEC_RE = re.compile(r"[A-Za-z0-9_-]+")  # fullmatch: no trailing newline
KNOWN_OS = frozenset({
    "aix", "android", "darwin", "dragonfly", "freebsd", "hurd", "illumos", "ios", "js", "linux", "nacl",
    "netbsd", "openbsd", "plan9", "solaris", "windows", "zos",
})
KNOWN_ARCH = frozenset({
    "386", "amd64", "amd64p32", "arm", "armbe", "arm64", "arm64be", "ppc64", "ppc64le", "loong64", "mips",
    "mipsle", "mips64", "mips64le", "mips64p32", "mips64p32le", "ppc", "riscv", "riscv64", "s390", "s390x",
    "sparc", "sparc64", "wasm",
})


def normalize_os(os_: str) -> str:
    os_ = os_.lower()
    return "darwin" if os_ == "macos" else os_


def normalize_arch(arch: str, variant: str) -> tuple[str, str]:
    arch, variant = arch.lower(), variant.lower()
    if arch in ("i386", "i686", "x86", "386"):
        return "386", ""
    if arch in ("x86_64", "x86-64", "amd64"):
        return "amd64", "" if variant in ("v1", "") else variant
    if arch in ("aarch64", "arm64"):
        return "arm64", "" if variant in ("8", "v8", "") else variant
    if arch == "armhf":
        return "arm", "v7"
    if arch == "armel":
        return "arm", "v6"
    if arch == "arm":
        if variant in ("", "7"):
            return "arm", "v7"
        if variant in ("5", "6", "8"):
            return "arm", "v" + variant
        return "arm", variant
    return arch, variant


def normalize(p: Platform) -> Platform:
    arch, variant = normalize_arch(p.architecture, p.variant)
    return Platform(normalize_os(p.os), arch, variant, p.os_version, p.os_features)


def host() -> Platform:
    """The platform this machine runs (linux and the kernel's architecture)."""
    machine = _platform.machine() or "amd64"
    variant = ""
    if machine.startswith("armv"):
        variant = "v" + machine[4:5]
        machine = "arm"
    return normalize(Platform("linux", machine, variant))


def parse(spec: str) -> Platform:
    """``linux/amd64`` → Platform; InvalidArgument for an unknown or malformed specifier."""
    if spec.strip() == "":
        raise errdefs.InvalidArgument("invalid platform \"\": expected os/arch[/variant]")
    parts = spec.split("/")
    for part in parts:
        if not _SPEC_RE.fullmatch(part):
            raise errdefs.InvalidArgument(f"invalid platform {spec!r}: {part!r} is not a valid component")
    h = host()
    if len(parts) == 1:
        word = normalize_os(parts[0])
        if word in KNOWN_OS:
            p = Platform(word, h.architecture, h.variant if word == h.os else "")
            return normalize(p)
        arch, variant = normalize_arch(parts[0], "")
        if arch in KNOWN_ARCH:
            return Platform(h.os, arch, variant)
        raise errdefs.InvalidArgument(f"invalid platform {spec!r}: unknown operating system or architecture")
    if len(parts) > 3:
        raise errdefs.InvalidArgument(f"invalid platform {spec!r}: expected os/arch[/variant]")
    os_ = normalize_os(parts[0])
    if os_ not in KNOWN_OS:
        raise errdefs.InvalidArgument(f"invalid platform {spec!r}: unknown operating system {parts[0]!r}")
    arch, variant = normalize_arch(parts[1], parts[2] if len(parts) == 3 else "")
    if arch not in KNOWN_ARCH:
        raise errdefs.InvalidArgument(f"invalid platform {spec!r}: unknown architecture {parts[1]!r}")
    return Platform(os_, arch, variant)


def format(p: Platform) -> str:
    return str(p)


def _vector(p: Platform) -> list[Platform]:
    out = [p]
    if p.architecture == "arm" and p.variant.startswith("v") and p.variant[1:].isdigit():
        for v in range(int(p.variant[1:]) - 1, 4, -1):
            out.append(Platform(p.os, "arm", f"v{v}", p.os_version))
    elif p.architecture == "arm64":
        out.extend(_vector(Platform(p.os, "arm", p.variant or "v8", p.os_version)))
    return out


@dataclass(frozen=True)
class Matcher:
    """Matches platforms against an ordered list of acceptable ones; ``rank`` orders by preference."""

    accepted: tuple[Platform, ...]
    all: bool = False

    def match(self, p: Platform | None) -> bool:
        return self.all or self.rank(p) is not None

    def rank(self, p: Platform | None) -> int | None:
        """Position of the best acceptable platform ``p`` matches (lower is better), None if none."""
        if p is None:
            return None
        n = normalize(p)
        for i, a in enumerate(self.accepted):
            if (n.os, n.architecture, n.variant) == (a.os, a.architecture, a.variant):
                return i
        return None if not self.all else len(self.accepted)

    def __str__(self) -> str:
        return "all platforms" if self.all else ", ".join(str(a) for a in self.accepted) or "no platform"


def only(p: Platform) -> Matcher:
    return Matcher(tuple(_vector(normalize(p))))


def ordered(ps: Iterable[Platform]) -> Matcher:
    acc: list[Platform] = []
    for p in ps:
        for v in _vector(normalize(p)):
            if v not in acc:
                acc.append(v)
    return Matcher(tuple(acc))


def all_platforms() -> Matcher:
    return Matcher((), all=True)


def default() -> Matcher:
    return only(host())


def matcher_for(specs: Sequence[str] = (), all_: bool = False) -> Matcher:
    """The matcher for CLI flags ``--platform`` (repeatable) and ``--all-platforms``."""
    if all_:
        return all_platforms()
    if not specs:
        return default()
    return ordered(parse(s) for s in specs)
