"""Moved to ``pycontainerd.config`` (a low layer that domain plugins may import; the daemon may not
be imported by them).  This alias goes once every importer has moved."""

from __future__ import annotations

from ..config import *  # noqa: F403
from ..config import __all__  # noqa: F401
