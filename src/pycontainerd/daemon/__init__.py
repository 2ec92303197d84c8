"""The pycontainerd daemon: configuration, plugin wiring and the gRPC server.

Importing this package (the daemon's entry point ``pycontainerd.daemon.__main__``, or a test
embedding ``Daemon``) turns gRPC's fork handlers off, before ``server`` imports grpc: they
restart gRPC's event-engine threads in the child of every fork(), and since grpcio 1.81 such
a thread can crash (SIGSEGV) the child before it reaches exec (grpc/grpc#43055).  The daemon
spawns shims, mount helpers and runc through fork+exec and never uses gRPC in a forked
child.  A value the user set is kept.  The client library (``import pycontainerd``,
``pycontainerd.client``) leaves the environment alone.
"""

import os as _os

_os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")
