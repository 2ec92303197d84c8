"""The pycontainerd daemon: configuration, plugin wiring and the gRPC server.

The daemon serves gRPC with its own server (``pycontainerd.rpc``) and does not import grpc.
Importing this package still turns gRPC's fork handlers off, as a safety net should anything
in the process ever load grpc: they restart gRPC's event-engine threads in the child of every
fork(), and since grpcio 1.81 such a thread can crash (SIGSEGV) the child before it reaches
exec (grpc/grpc#43055).  The daemon spawns shims, mount helpers and runc through fork+exec.
A value the user set is kept.  The client library (``import pycontainerd``,
``pycontainerd.client``) leaves the environment alone.
"""

import os as _os

_os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")
