"""Runtime v2: external shim binaries driven over ttrpc, by containerd 1.6's rules.

- ``binary``: runtime name -> shim binary, and the ``start``/``delete`` command lines (pure);
- ``shim``: ``TaskShim``, one connected shim as the task manager's ``Shim`` (task.v2 protobufs);
- ``manager``: ``ShimManager``, which the task manager uses for every runtime its own
  launcher does not serve: launch (``start`` handshake), reconnect (``address`` file),
  cleanup (``delete``), and the ttrpc Events service the shims forward their events to.

This package speaks the shim API with the generated protobuf messages (never grpc); the
import-linter contracts allow it exactly that.

The names below load their module on first access (PEP 562): ``binary`` alone is what an
idle daemon needs (``task_plugin``'s deferred shims); ttrpc, the shim API protobufs and the
manager load with the first shim (W6, idle PSS).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .binary import binary_name, resolve_runtime_path, ttrpc_address
    from .manager import BinaryLauncher, ForkLauncher, ForkServer, ShimManager
    from .shim import TaskShim, runc_options

_WHERE = {
    "binary_name": "binary",
    "resolve_runtime_path": "binary",
    "ttrpc_address": "binary",
    "BinaryLauncher": "manager",
    "ForkLauncher": "manager",
    "ForkServer": "manager",
    "ShimManager": "manager",
    "TaskShim": "shim",
    "runc_options": "shim",
}


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


__all__ = [
    "BinaryLauncher",
    "ForkLauncher",
    "ForkServer",
    "ShimManager",
    "TaskShim",
    "binary_name",
    "resolve_runtime_path",
    "runc_options",
    "ttrpc_address",
]
