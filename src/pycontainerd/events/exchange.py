"""In-process publish/subscribe of events, with containerd's filter syntax.

Domain code publishes an event as a topic (``/tasks/exit``) and a payload: a plain dict
shaped like the protobuf event message for that topic (``{"container_id": ..., "pid": ...,
"exit_status": ..., "exited_at": "2024-01-01T00:00:00Z"}``), so domain packages stay free
of protobuf; the Events service turns payloads into ``containerd.events.*`` messages by
topic.  Events forwarded by clients arrive already encoded (``raw``: type URL and bytes)
and are passed through untouched.

Subscribers get their own bounded queue; a subscriber that falls too far behind is
dropped (its stream ends) rather than letting one slow ``ctr events`` stall the daemon.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .. import errdefs, filters, identifiers

log = logging.getLogger("pycontainerd.events")

_QUEUE_LIMIT = 4096


@dataclass(frozen=True)
class Envelope:
    timestamp_ns: int
    namespace: str
    topic: str
    payload: Mapping[str, Any] = field(default_factory=dict)
    raw: tuple[str, bytes] | None = None  # (type_url, value) for events forwarded pre-encoded

    def field(self, path: tuple[str, ...]) -> str | None:
        if not path:
            return None
        head = path[0]
        if head == "namespace":
            return self.namespace
        if head == "topic":
            return self.topic
        if head == "event" and len(path) > 1:
            value: Any = self.payload
            for part in path[1:]:
                if not isinstance(value, Mapping) or part not in value:
                    return None
                value = value[part]
            if isinstance(value, (Mapping, list)):
                return None
            return str(value)
        return None


def validate_topic(topic: str) -> None:
    if not topic or not topic.startswith("/"):
        raise errdefs.InvalidArgument(f"event topic {topic!r} must start with '/'")
    for part in topic[1:].split("/"):
        if not part:
            raise errdefs.InvalidArgument(f"event topic {topic!r} has an empty component")


class Exchange:
    def __init__(self) -> None:
        self._subscribers: set[asyncio.Queue[Envelope | None]] = set()

    def publish(self, namespace: str, topic: str, payload: Mapping[str, Any] | None = None) -> None:
        """Publish from inside the daemon; never blocks."""
        self._deliver(Envelope(time.time_ns(), namespace, topic, dict(payload or {})))

    def forward(self, envelope: Envelope) -> None:
        identifiers.validate(envelope.namespace)
        validate_topic(envelope.topic)
        self._deliver(envelope)

    def _deliver(self, env: Envelope) -> None:
        for q in list(self._subscribers):
            try:
                q.put_nowait(env)
            except asyncio.QueueFull:
                log.warning("dropping slow event subscriber")
                self._subscribers.discard(q)
                # make room for the end-of-stream marker
                with _suppress():
                    q.get_nowait()
                q.put_nowait(None)

    async def subscribe(self, exprs: Sequence[str] = ()) -> AsyncIterator[Envelope]:
        flt = filters.parse_all(list(exprs))
        q: asyncio.Queue[Envelope | None] = asyncio.Queue(_QUEUE_LIMIT)
        self._subscribers.add(q)
        try:
            while True:
                env = await q.get()
                if env is None:
                    return
                if flt.match(env.field):
                    yield env
        finally:
            self._subscribers.discard(q)

    @property
    def subscriber_count(self) -> int:
        return len(self._subscribers)


class _suppress:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> bool:
        return True
