"""What a handler sees of its call: ``ServicerContext``, the subset of grpc.aio's that our
servicers use (metadata, abort, status, server-streaming writes, deadline, cancellation).

The server's per-call object subclasses it (one object per call, no wrapper): this module
only defines the handler-facing surface over attributes the server fills in.
"""

from __future__ import annotations

import asyncio
import binascii
from collections.abc import Callable
from typing import Any

from .status import AbortError, StatusCode

# headers that belong to the transport or to gRPC itself, not to the caller's metadata
_NOT_METADATA = frozenset({"te", "content-type", "grpc-timeout", "grpc-encoding", "grpc-accept-encoding",
                           "grpc-message-type", "content-length", "connection"})


def _decode_bin(value: str) -> bytes:
    # gRPC sends binary values as base64, padding optional
    try:
        return binascii.a2b_base64(value + "=" * (-len(value) % 4))
    except binascii.Error:
        return value.encode()


class ServicerContext:
    """A call's context, as handlers receive it next to the request."""

    # one slotted object per call (the server's subclass adds its own)
    __slots__ = ("_cancelled", "_code", "_deadline", "_details", "_done_callbacks", "_headers", "_metadata", "_peer")

    # filled in by the server
    _headers: list[tuple[str, str]]
    _deadline: float | None  # loop time
    _peer: str
    _code: StatusCode | None
    _details: str | None
    _cancelled: bool
    _done_callbacks: list[Callable[[ServicerContext], Any]] | None
    _metadata: tuple[tuple[str, str | bytes], ...] | None

    def invocation_metadata(self) -> tuple[tuple[str, str | bytes], ...]:
        """The caller's metadata: (key, value) pairs, ``-bin`` values as bytes."""
        md = self._metadata
        if md is None:
            md = self._metadata = tuple(
                (k, _decode_bin(v) if k.endswith("-bin") else v)
                for k, v in self._headers if k[:1] != ":" and k not in _NOT_METADATA)
        return md

    async def abort(self, code: StatusCode, details: str = "") -> None:
        """End the call with ``code`` (raises; never returns)."""
        if code == StatusCode.OK:
            code = StatusCode.UNKNOWN  # grpc refuses to abort with OK
        self._code, self._details = code, details
        raise AbortError(code, details)

    def set_code(self, code: StatusCode) -> None:
        self._code = code

    def set_details(self, details: str) -> None:
        self._details = details

    def code(self) -> StatusCode | None:
        return self._code

    def details(self) -> str | None:
        return self._details

    async def write(self, message: Any) -> None:
        """Send one message of a server-streaming response (waits for flow-control window)."""
        raise NotImplementedError

    def time_remaining(self) -> float | None:
        """Seconds until the caller's deadline (None without one)."""
        if self._deadline is None:
            return None
        return max(0.0, self._deadline - asyncio.get_running_loop().time())

    def cancelled(self) -> bool:
        """True once the caller went away, reset the stream or its deadline passed."""
        return self._cancelled

    def peer(self) -> str:
        return self._peer

    def add_done_callback(self, callback: Callable[[ServicerContext], Any]) -> None:
        """Call ``callback(context)`` once the call has ended, however it ended."""
        if self._done_callbacks is None:
            self._done_callbacks = []
        self._done_callbacks.append(callback)
