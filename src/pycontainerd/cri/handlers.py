"""Runtime handlers (RuntimeClass): what a pod's ``runtime_handler`` puts on its records and specs.

A handler is ``[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.<name>]`` (``""`` is
``default_runtime_name``).  As containerd 1.6's CRI does, the pod's and its containers' container
records carry the handler's ``runtime_type`` as the runtime name and its ``options`` as the
runtime options (``containerd.runc.v1.Options`` for the runc types, ``runtimeoptions.v1.Options``
for any other type), so the task manager launches that runtime's shim; a ``runtime_path`` goes
with each task create.  The pod's annotations matching ``pod_annotations`` and the container's
matching ``container_annotations`` (Go ``path.Match`` globs) are copied into the OCI spec.

Per handler too, as containerd's CRI: ``base_runtime_spec`` (containerd 1.4+), a JSON OCI spec
read once when the plugin starts (``parse_base_spec``; the caller reads the file), is what the
handler's *containers'* specs start from instead of the CRI default (``from_base``: containerd's
``runtimeSpec`` with a base: its copy, the namespaced cgroup path, then the CRI's own settings on
top, without clearing the base's rlimits, seccomp or AppArmor); the pods' infra specs never use
it (containerd passes no base for them).  ``cni_conf_dir``/``cni_max_conf_num`` (1.5+) give the
handler's pods their own CNI config load, ``snapshotter`` (1.7+) their own snapshotter
(``snapshotter_of``).  Pure: no I/O.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Iterable, Mapping
from typing import Any

from .. import errdefs
from ..api.runtime.v2.runc.options import oci_pb2
from ..config.model import RUNC_TYPES, RuntimeConfig, RuntimeOptions
from ..metadata.containers import TypedValue
from ..oci.spec import DEFAULT_UNIX_ENV, replace_or_append_env

RUNC_OPTIONS_TYPE = "containerd.runc.v1.Options"
RUNTIME_OPTIONS_TYPE = "runtimeoptions.v1.Options"
# the keys of runtimeoptions.v1.Options (a non-runc runtime's options table), proto field numbers
RUNTIME_OPTIONS_KEYS = {"TypeUrl": 1, "ConfigPath": 2}
RUNTIMES_KEY = 'plugins."io.containerd.grpc.v1.cri".containerd.runtimes'
# the parts of a spec the CRI's settings go into: an object (or a list) when the base has them
_OBJECTS = ("process", "root", "linux", "annotations")


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


def runtime_key(handler: str, key: str) -> str:
    """The config key of one handler's option, as an error names it."""
    return f"{RUNTIMES_KEY}.{handler}.{key}"


def parse_base_spec(data: bytes, *, handler: str, path: str) -> dict[str, Any]:
    """A handler's ``base_runtime_spec`` file's content as a spec; InvalidArgument naming the key
    and the file when it is not a JSON object with the runtime-spec's shape (containerd: ``failed
    to load base OCI spec from file``)."""
    where = f"{runtime_key(handler, 'base_runtime_spec')} = {path!r}: failed to load base OCI spec from file"
    try:
        spec = json.loads(data)
    except ValueError as exc:
        raise errdefs.InvalidArgument(f"{where}: not valid JSON: {exc}") from None
    if not isinstance(spec, dict):
        raise errdefs.InvalidArgument(f"{where}: a spec is a JSON object, not {type(spec).__name__}")
    for key in _OBJECTS:
        if key in spec and not isinstance(spec[key], dict):
            raise errdefs.InvalidArgument(f"{where}: {key!r} is not an object")
    if "mounts" in spec and not (isinstance(spec["mounts"], list)
                                 and all(isinstance(m, dict) and isinstance(m.get("destination"), str)
                                         for m in spec["mounts"])):
        raise errdefs.InvalidArgument(f"{where}: 'mounts' is not a list of mounts with a destination")
    for parent, key in (("process", "user"), ("process", "capabilities"), ("process", "env"),
                        ("linux", "namespaces"), ("linux", "resources")):
        value = spec.get(parent, {}).get(key)
        want = list if key in ("env", "namespaces") else dict
        if value is not None and not isinstance(value, want):
            raise errdefs.InvalidArgument(f"{where}: '{parent}.{key}' is not a{'' if want is list else 'n'} "
                                          f"{'list' if want is list else 'object'}")
    return spec


def from_base(base: Mapping[str, Any], namespace: str, container_id: str) -> dict[str, Any]:
    """What a container's spec starts from when its handler has a base spec: a copy of it with
    the cgroup path of the namespace (``oci.WithNamespacedCgroup``), without a ``/run`` mount
    (``oci.WithoutRunMount``), the rootfs at ``rootfs`` and the default PATH, as containerd's CRI
    starts; what the base leaves out that the CRI's settings go into is made empty."""
    spec = copy.deepcopy(dict(base))
    spec.setdefault("ociVersion", "1.0.2-dev")
    proc = spec.setdefault("process", {})
    proc.setdefault("user", {"uid": 0, "gid": 0})
    proc.setdefault("capabilities", {})
    proc["env"] = replace_or_append_env(proc.get("env") or [], DEFAULT_UNIX_ENV)
    proc.setdefault("cwd", "/")
    spec["root"] = {**spec.get("root", {}), "path": "rootfs"}
    spec["mounts"] = [m for m in spec.get("mounts") or [] if m["destination"] != "/run"]
    linux = spec.setdefault("linux", {})
    linux.setdefault("namespaces", [])
    linux["cgroupsPath"] = f"/{namespace}/{container_id}"
    return spec


def snapshotter_of(rt: RuntimeConfig, default: str) -> str:
    """The snapshotter of a handler's pods, containers and images: its own, else the CRI's."""
    return rt.snapshotter or default
