"""Runtime handlers (RuntimeClass): what a pod's ``runtime_handler`` puts on its records and specs.

A handler is ``[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.<name>]`` (``""`` is
``default_runtime_name``).  As containerd 1.6's CRI does, the pod's and its containers' container
records carry the handler's ``runtime_type`` as the runtime name and its ``options`` as the
runtime options (``containerd.runc.v1.Options`` for the runc types, ``runtimeoptions.v1.Options``
for any other type), so the task manager launches that runtime's shim; a ``runtime_path`` goes
with each task create.  The pod's annotations matching ``pod_annotations`` and the container's
matching ``container_annotations`` (Go ``path.Match`` globs) are copied into the OCI spec.
Pure: no I/O.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

from ..api.runtime.v2.runc.options import oci_pb2
from ..config.model import RUNC_TYPES, RuntimeConfig, RuntimeOptions
from ..metadata.containers import TypedValue

RUNC_OPTIONS_TYPE = "containerd.runc.v1.Options"
RUNTIME_OPTIONS_TYPE = "runtimeoptions.v1.Options"
# the keys of runtimeoptions.v1.Options (a non-runc runtime's options table), proto field numbers
RUNTIME_OPTIONS_KEYS = {"TypeUrl": 1, "ConfigPath": 2}


def runtime_options(rt: RuntimeConfig) -> TypedValue | None:
    """The record's runtime options for a handler: None when its ``options`` table sets nothing."""
    if rt.runtime_type in RUNC_TYPES:
        o = rt.options
        if o == RuntimeOptions():
            return None
        msg = oci_pb2.Options(binary_name=o.binary_name, root=o.root, systemd_cgroup=o.systemd_cgroup,
                              no_pivot_root=o.no_pivot_root, no_new_keyring=o.no_new_keyring,
                              io_uid=o.io_uid, io_gid=o.io_gid)
        return TypedValue(RUNC_OPTIONS_TYPE, msg.SerializeToString())
    extra = rt.options.extra
    if not any(extra.get(k) for k in RUNTIME_OPTIONS_KEYS):
        return None
    out = bytearray()
    for key, number in RUNTIME_OPTIONS_KEYS.items():
        value = str(extra.get(key) or "").encode()
        if value:
            out += bytes([number << 3 | 2]) + _varint(len(value)) + value
    return TypedValue(RUNTIME_OPTIONS_TYPE, bytes(out))


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _glob_regex(pattern: str) -> re.Pattern[str] | None:
    """Go's ``path.Match`` pattern as a regular expression; None for a malformed pattern (no match)."""
    out, i, n = [], 0, len(pattern)
    while i < n:
        ch = pattern[i]
        if ch == "*":
            out.append("[^/]*")
        elif ch == "?":
            out.append("[^/]")
        elif ch == "\\":
            i += 1
            if i >= n:
                return None
            out.append(re.escape(pattern[i]))
        elif ch == "[":
            j = i + 1
            cls = []
            if j < n and pattern[j] == "^":
                cls.append("^")
                j += 1
            start = j
            while j < n and (pattern[j] != "]" or j == start):
                c = pattern[j]
                if c == "\\":
                    j += 1
                    if j >= n:
                        return None
                    cls.append(re.escape(pattern[j]))
                elif c == "-":
                    cls.append("-")
                else:
                    cls.append(re.escape(c))
                j += 1
            if j >= n or j == start:
                return None
            out.append("[" + "".join(cls) + "]")
            i = j
        else:
            out.append(re.escape(ch))
        i += 1
    try:
        return re.compile("".join(out), re.DOTALL)
    except re.error:
        return None


def passthrough(annotations: Mapping[str, str], patterns: Iterable[str]) -> dict[str, str]:
    """The annotations whose key matches one of the handler's patterns (containerd's
    ``getPassthroughAnnotations``; ``*`` does not cross a ``/``)."""
    regexes = [r for r in (_glob_regex(p) for p in patterns) if r is not None]
    return {k: v for k, v in annotations.items() if any(r.fullmatch(k) for r in regexes)}
