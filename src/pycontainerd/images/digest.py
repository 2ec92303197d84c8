"""Content digests (``algorithm:hex``): validation, hashing, incremental verification."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from typing import Any

from .. import errdefs

ALGORITHMS: dict[str, int] = {"sha256": 64, "sha384": 96, "sha512": 128}
CANONICAL = "sha256"
_HEX = re.compile(r"[a-f0-9]+")


def validate(digest: str) -> tuple[str, str]:
    """Split ``sha256:<hex>`` into (algorithm, hex); InvalidArgument for anything malformed."""
    algo, sep, hexpart = digest.partition(":")
    if not sep or not algo or not hexpart:
        raise errdefs.InvalidArgument(f"invalid digest {digest!r}: expected <algorithm>:<hex>")
    want = ALGORITHMS.get(algo)
    if want is None:
        raise errdefs.InvalidArgument(f"invalid digest {digest!r}: unsupported digest algorithm {algo!r}")
    if len(hexpart) != want or not _HEX.fullmatch(hexpart):
        raise errdefs.InvalidArgument(f"invalid digest {digest!r}: expected {want} lowercase hex characters")
    return algo, hexpart


def is_valid(digest: str) -> bool:
    try:
        validate(digest)
    except errdefs.InvalidArgument:
        return False
    return True


def encoded(digest: str) -> str:
    return validate(digest)[1]


def from_bytes(data: bytes, algorithm: str = CANONICAL) -> str:
    return f"{algorithm}:{hashlib.new(algorithm, data).hexdigest()}"


def sha256_string(s: str) -> str:
    return "sha256:" + hashlib.sha256(s.encode()).hexdigest()


@dataclass
class Verifier:
    """Feeds bytes through the digest's hash and counts them; ``check`` compares at the end."""

    digest: str
    size: int = -1
    _h: Any = field(init=False, repr=False)
    written: int = field(init=False, default=0)

    def __post_init__(self) -> None:
        algo, _ = validate(self.digest)
        self._h = hashlib.new(algo)

    def update(self, data: bytes) -> None:
        self._h.update(data)
        self.written += len(data)
        if self.size >= 0 and self.written > self.size:
            raise errdefs.FailedPrecondition(
                f"content {self.digest}: received more than the expected {self.size} bytes")

    def actual(self) -> str:
        return f"{self.digest.split(':', 1)[0]}:{self._h.hexdigest()}"

    def check(self, what: str = "content") -> None:
        if self.size >= 0 and self.written != self.size:
            raise errdefs.FailedPrecondition(
                f"{what} {self.digest}: size mismatch: got {self.written} bytes, expected {self.size}")
        got = self.actual()
        if got != self.digest:
            raise errdefs.FailedPrecondition(f"{what} {self.digest}: digest mismatch: got {got}")


def verify(data: bytes, digest: str, size: int = -1, what: str = "content") -> None:
    """Raise FailedPrecondition unless ``data`` has exactly ``size`` bytes and hashes to ``digest``."""
    v = Verifier(digest, size)
    if size >= 0 and len(data) > size:
        raise errdefs.FailedPrecondition(
            f"{what} {digest}: size mismatch: got {len(data)} bytes, expected {size}")
    v.update(data)
    v.check(what)
