"""gRPC server metrics with go-grpc-prometheus's names, as containerd exports them.

``grpc_server_started_total`` and ``grpc_server_handled_total`` (by ``grpc_type``,
``grpc_service``, ``grpc_method``, and ``grpc_code`` for handled), ``grpc_server_msg_received_total``
and ``grpc_server_msg_sent_total`` (per message), and with ``[metrics] grpc_histogram``
``grpc_server_handling_seconds`` (Go's default buckets).  ``GRPCMetrics`` is an observer of
the server (``rpc.observer``): counting is a dict lookup and an increment per event, on the loop.
"""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram

from ..rpc.methods import Method
from ..rpc.status import StatusCode

GO_DEFAULT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_LABELS = ("grpc_type", "grpc_service", "grpc_method")


def split_method(full: str) -> tuple[str, str]:
    service, _, method = full.lstrip("/").rpartition("/")
    return service or "unknown", method or full


class _Children:
    """The labelled children of one method, made once: ``labels()`` costs microseconds."""

    __slots__ = ("handled", "hist", "labels", "received", "sent", "started")

    def __init__(self, m: GRPCMetrics, labels: tuple[str, str, str]) -> None:
        self.labels = labels
        self.started = m.started_total.labels(*labels)
        self.sent = m.sent_total.labels(*labels)
        self.received = m.received_total.labels(*labels)
        self.hist = m.seconds.labels(*labels) if m.seconds is not None else None
        self.handled: dict[StatusCode, Any] = {}


class GRPCMetrics:
    def __init__(self, registry: CollectorRegistry, *, histogram: bool) -> None:
        self.started_total = Counter("grpc_server_started", "Total number of RPCs started on the server.",
                               _LABELS, registry=registry)
        self.handled_total = Counter("grpc_server_handled",
                               "Total number of RPCs completed on the server, regardless of success or failure.",
                               (*_LABELS, "grpc_code"), registry=registry)
        self.received_total = Counter("grpc_server_msg_received", "Total number of RPC stream messages received on the "
                                "server.", _LABELS, registry=registry)
        self.sent_total = Counter("grpc_server_msg_sent", "Total number of gRPC stream messages sent by the server.",
                            _LABELS, registry=registry)
        self.seconds: Histogram | None = None
        if histogram:
            self.seconds = Histogram("grpc_server_handling_seconds", "Histogram of response latency (seconds) of "
                                     "gRPC that had been application-level handled by the server.", _LABELS,
                                     buckets=GO_DEFAULT_BUCKETS, registry=registry)
        self._key = id(self)  # this observer's slot in Method.observer_state

    def _children(self, method: Method) -> _Children:
        c: _Children | None = method.observer_state.get(self._key)
        if c is None:
            c = method.observer_state[self._key] = _Children(self, (method.kind, method.service, method.name))
        return c

    # -- rpc.observer.Observer ---------------------------------------------------------------
    def started(self, method: Method) -> None:
        self._children(method).started.inc()

    def msg_received(self, method: Method) -> None:
        self._children(method).received.inc()

    def msg_sent(self, method: Method) -> None:
        self._children(method).sent.inc()

    def handled(self, method: Method, code: StatusCode, seconds: float) -> None:
        c = self._children(method)
        h = c.handled.get(code)
        if h is None:
            h = c.handled[code] = self.handled_total.labels(*c.labels, code.go_name)
        h.inc()
        if c.hist is not None:
            c.hist.observe(seconds)
