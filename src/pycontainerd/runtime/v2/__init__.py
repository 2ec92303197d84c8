"""Runtime v2: external shim binaries driven over ttrpc, by containerd 1.6's rules.

- ``binary``: runtime name -> shim binary, and the ``start``/``delete`` command lines (pure);
- ``shim``: ``TaskShim``, one connected shim as the task manager's ``Shim`` (task.v2 protobufs);
- ``manager``: ``ShimManager``, which the task manager uses for every runtime its own
  launcher does not serve: launch (``start`` handshake), reconnect (``address`` file),
  cleanup (``delete``), and the ttrpc Events service the shims forward their events to.

This package speaks the shim API with the generated protobuf messages (never grpc); the
import-linter contracts allow it exactly that.
"""

from __future__ import annotations

from .binary import binary_name, resolve_runtime_path, ttrpc_address
from .manager import BinaryLauncher, ForkLauncher, ForkServer, ShimManager
from .shim import TaskShim, runc_options

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
