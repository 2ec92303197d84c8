"""pycontainerd: a containerd-compatible container engine written in Python.

The daemon speaks containerd's API v1 and the Kubernetes CRI (runtime.v1) over gRPC on a
unix socket, keeps images in a content store with SQLite metadata, unpacks layers into
overlayfs snapshots and runs containers through runc via a small shim process.
"""


__version__ = "0.1.0"
