"""Per-call timing at debug level (what a slow ``ctr run`` spends where): a server observer."""

from __future__ import annotations

import logging

from ..rpc.methods import Method
from ..rpc.status import StatusCode

log = logging.getLogger("pycontainerd.grpc")


class TimingObserver:
    """Logs each call's method, status and duration (``rpc.observer.Observer``)."""

    def started(self, method: Method) -> None:
        pass

    def msg_received(self, method: Method) -> None:
        pass

    def msg_sent(self, method: Method) -> None:
        pass

    def handled(self, method: Method, code: StatusCode, seconds: float) -> None:
        log.debug("rpc %s took %.2f ms (%s)", method.path, seconds * 1000, code.name)
