"""One-time tokens for streaming URLs (kubelet's request cache, as containerd uses it).

The Exec/Attach/PortForward RPCs store their request here and hand out a URL carrying the
token; the client's first connection consumes it.  A token is good once and for ``ttl``
seconds (containerd: one minute); the cache holds at most ``max_size`` live requests and
refuses a new one when full of unexpired ones (kubelet: "token cache full").  The clock is a
parameter so tests move it instead of waiting.
"""

from __future__ import annotations

import base64
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Generic, TypeVar

from .. import errdefs

T = TypeVar("T")

DEFAULT_TTL = 60.0
DEFAULT_MAX_SIZE = 1000
TOKEN_BYTES = 8  # kubelet's length: 11 URL-safe characters


def new_token() -> str:
    return base64.urlsafe_b64encode(secrets.token_bytes(TOKEN_BYTES)).rstrip(b"=").decode()


class TokenCache(Generic[T]):
    """Requests by token: ``insert`` gives a fresh token, ``consume`` takes it out (once)."""

    def __init__(self, ttl: float = DEFAULT_TTL, max_size: int = DEFAULT_MAX_SIZE,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl = ttl
        self.max_size = max_size
        self._clock = clock
        self._items: OrderedDict[str, tuple[float, T]] = OrderedDict()  # oldest first

    def __len__(self) -> int:
        return len(self._items)

    def _expire(self, now: float) -> None:
        while self._items:
            token, (deadline, _) = next(iter(self._items.items()))
            if deadline > now:
                return
            del self._items[token]

    def insert(self, request: T) -> str:
        now = self._clock()
        self._expire(now)
        if len(self._items) >= self.max_size:
            raise errdefs.ResourceExhausted(
                f"streaming token cache full ({self.max_size} unused requests younger than {self.ttl:g}s)")
        token = new_token()
        while token in self._items:  # 64 random bits: practically never
            token = new_token()
        self._items[token] = (now + self.ttl, request)
        return token

    def consume(self, token: str) -> T | None:
        """The request of ``token`` if it is live; the token is gone afterwards either way."""
        entry = self._items.pop(token, None)
        if entry is None:
            return None
        deadline, request = entry
        if deadline <= self._clock():
            return None
        return request
