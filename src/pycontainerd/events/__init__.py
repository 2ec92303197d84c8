"""The event exchange: every service publishes here; Events.Subscribe streams from here."""

from .exchange import Envelope, Exchange

__all__ = ["Envelope", "Exchange"]
