"""pycontainerd: a containerd-compatible container engine written in Python.

The daemon speaks containerd's API v1 and the Kubernetes CRI (runtime.v1) over gRPC on a
unix socket, keeps images in a content store with SQLite metadata, unpacks layers into
overlayfs snapshots and runs containers through runc via a small shim process.
"""

import os as _os

# gRPC's fork support (pthread_atfork handlers) restarts its event-engine threads in the
# child of every fork(); since grpcio 1.81 such a thread can crash (SIGSEGV) the child
# before it reaches exec (grpc/grpc#43055).  The daemon spawns shims, mount helpers and
# runc through fork+exec, so a child dying there surfaced as "shim launcher died".  We never
# use gRPC in a forked child, so turn the handlers off before grpc is first imported (a
# value the user set is kept).
_os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")

__version__ = "0.1.0"
