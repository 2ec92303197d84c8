"""Where a runtime v2 shim's pieces live, as containerd 1.6 computes them (no protobuf here:
``start`` and ``delete`` import this before anything heavy).

- the shim socket: ``/run/containerd/s/<sha256 hex of Join(containerd address, namespace,
  group)>`` (containerd's ``shim.SocketAddress``; ``ctr shim --id`` computes the same);
- the group: the bundle spec's annotation ``io.containerd.runc.v2.group``, else
  ``io.kubernetes.cri.sandbox-id``, else the container id (containerd's runc v2 shim);
- in the bundle: ``address`` (the socket address), ``shim.pid``, ``options.json`` (runc root,
  binary and cgroup driver from Create, for ``delete`` once the shim is gone), ``log`` (a FIFO
  containerd reads the shim's output from);
- runc's state: ``<Root option, default /run/containerd/runc>/<namespace>``.
"""

from __future__ import annotations

import hashlib
import posixpath
from typing import Any

SOCKET_ROOT = "/run/containerd/s"
DEFAULT_RUNC_ROOT = "/run/containerd/runc"
ADDRESS_FILE = "address"
OPTIONS_FILE = "options.json"
LOG_FIFO = "log"
# the spec annotations that put a container into an existing shim (first one present wins)
GROUP_ANNOTATIONS = ("io.containerd.runc.v2.group", "io.kubernetes.cri.sandbox-id")


def _go_join(*parts: str) -> str:
    """Go's ``filepath.Join``: empty parts dropped, the result cleaned."""
    joined = posixpath.normpath("/".join(p for p in parts if p))
    if joined.startswith("//"):  # posixpath keeps a leading "//", Go's Clean does not
        joined = "/" + joined.lstrip("/")
    return joined


def socket_address(containerd_address: str, namespace: str, group: str, root: str = SOCKET_ROOT) -> str:
    """containerd 1.6 ``shim.SocketAddress``: ``unix:///run/containerd/s/<hex sha256 of
    Join(address, namespace, group)>`` — how ``ctr shim`` and containerd find a shim
    (``root`` other than ``SOCKET_ROOT`` only for the launcher's warm-up rehearsal)."""
    digest = hashlib.sha256(_go_join(containerd_address, namespace, group).encode()).hexdigest()
    return f"unix://{root}/{digest}"


def group_of(spec: dict[str, Any], container_id: str) -> str:
    """The shim group a container joins: its group annotation, else its own id."""
    annotations = spec.get("annotations") or {}
    for key in GROUP_ANNOTATIONS:
        value = annotations.get(key)
        if isinstance(value, str) and value:
            return value
    return container_id
