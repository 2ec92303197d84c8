"""Values shaped as containerd 1.6's Go ``encoding/json`` writes them in a verbose ``info``.

containerd's CRI marshals its status info (``crictl inspect`` / ``inspectp``) with Go's
``encoding/json`` over the gogo-generated CRI structs, not with protobuf's JSON mapping: field
names are the proto names (``log_path``, ``run_as_user``), every field is ``omitempty`` (zero
scalars, empty lists and maps and unset messages are left out; a set but empty message is
``{}``), enums and 64-bit integers are JSON numbers, bytes base64.  ``message`` does that for
any protobuf message; ``runtime_options`` decodes a record's runtime options the same way
(``null`` without any); ``cni_result`` is go-cni's ``Result`` of a pod's CNI ADD (Go field names:
``Interfaces`` by name with their ``IPConfigs``, ``Mac``, ``Sandbox``; ``DNS``; ``Routes``).
"""

from __future__ import annotations

import base64
from collections.abc import Iterable
from typing import Any

from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import DecodeError, Message

from ..api.runtime.v2.runc.options import oci_pb2
from ..metadata.containers import TypedValue
from .handlers import RUNC_OPTIONS_TYPE, RUNTIME_OPTIONS_KEYS, RUNTIME_OPTIONS_TYPE


def _scalar(fd: FieldDescriptor, v: Any) -> Any:
    if fd.type == FieldDescriptor.TYPE_BYTES:
        return base64.b64encode(v).decode()
    if fd.type == FieldDescriptor.TYPE_ENUM:
        return int(v)
    return v


def _value(fd: FieldDescriptor, v: Any) -> Any:
    if fd.type == FieldDescriptor.TYPE_MESSAGE:
        return message(v)
    return _scalar(fd, v)


def message(msg: Message) -> dict[str, Any]:
    """A message as its gogo-generated Go struct marshals (``json:"<proto name>,omitempty"``)."""
    out: dict[str, Any] = {}
    for fd, v in msg.ListFields():  # exactly the fields omitempty keeps
        if fd.message_type is not None and fd.message_type.GetOptions().map_entry:
            vfd = fd.message_type.fields_by_name["value"]
            out[fd.name] = {str(k): _value(vfd, x) for k, x in v.items()}
        elif fd.is_repeated:
            out[fd.name] = [_value(fd, x) for x in v]
        else:
            out[fd.name] = _value(fd, v)
    return out


def _strings(data: bytes) -> dict[int, str]:
    """The length-delimited fields of a flat protobuf message of strings: number -> value."""
    out: dict[int, str] = {}
    i = 0
    while i < len(data):
        key, i = _varint(data, i)
        if key & 7 != 2:
            raise DecodeError(f"field {key >> 3}: wire type {key & 7}, not a string")
        size, i = _varint(data, i)
        out[key >> 3] = data[i:i + size].decode()
        i += size
    return out


def _varint(data: bytes, i: int) -> tuple[int, int]:
    n = shift = 0
    while True:
        if i >= len(data):
            raise DecodeError("truncated varint")
        b = data[i]
        i += 1
        n |= (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            return n, i


_RUNTIME_OPTIONS_NAMES = {"TypeUrl": "type_url", "ConfigPath": "config_path"}


def runtime_options(opts: TypedValue | None) -> Any:
    """A record's runtime options as containerd's ``runtimeOptions``: runc's ``Options`` or the
    generic ``runtimeoptions.v1.Options`` as their Go structs marshal; None (``null``) without."""
    if opts is None:
        return None
    try:
        if opts.type_url.rsplit("/", 1)[-1] == RUNC_OPTIONS_TYPE:
            return message(oci_pb2.Options.FromString(opts.value))
        if opts.type_url.rsplit("/", 1)[-1] == RUNTIME_OPTIONS_TYPE:
            fields = _strings(opts.value)
            return {_RUNTIME_OPTIONS_NAMES[k]: fields[n] for k, n in RUNTIME_OPTIONS_KEYS.items() if fields.get(n)}
    except (DecodeError, UnicodeDecodeError):
        return None
    return None


def cni_result(attachments: Iterable[tuple[str, Any]]) -> dict[str, Any]:
    """go-cni's ``Result`` from each network's (interface name, ``cni.result.Result``)."""
    interfaces: dict[str, dict[str, Any]] = {}
    dns: list[dict[str, Any]] = []
    routes: list[dict[str, Any]] = []
    for _ifname, res in attachments:
        for iface in res.interfaces:
            interfaces[iface.name] = {"IPConfigs": None, "Mac": iface.mac, "Sandbox": iface.sandbox}
        for ip in res.ips:
            owner = res.interface_of(ip)
            if owner is None or owner.name not in interfaces:
                continue
            entry = interfaces[owner.name]
            entry["IPConfigs"] = [*(entry["IPConfigs"] or []),
                                  {"IP": str(ip.ip), "Gateway": "" if ip.gateway is None else str(ip.gateway)}]
        dns.append(res.dns.to_json())
        for r in res.routes:
            route = {"dst": str(r.dst)}
            if r.gw is not None:
                route["gw"] = str(r.gw)
            routes.append(route)
    return {"Interfaces": interfaces, "DNS": dns, "Routes": routes}
