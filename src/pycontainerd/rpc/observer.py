"""Per-call hooks of the server (metrics, debug timing) instead of interceptors.

An observer is told when a call starts, each message received and sent, and how the call
ended with its duration.  Hooks run on the event loop, inline in the call's path: they must
be cheap and must not raise (an exception is logged and the call goes on).  A server without
observers pays nothing for them.
"""

from __future__ import annotations

from typing import Protocol

from .methods import Method
from .status import StatusCode


class Observer(Protocol):
    def started(self, method: Method) -> None: ...

    def msg_received(self, method: Method) -> None: ...

    def msg_sent(self, method: Method) -> None: ...

    def handled(self, method: Method, code: StatusCode, seconds: float) -> None: ...
