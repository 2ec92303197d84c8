"""Introspection service: which plugins loaded (``ctr plugins ls``) and the server's identity.

``Server`` (the UUID ``ctr version`` prints) has a hand-written codec (``rpc.wire``): an idle
daemon answering ``ctr version`` never imports protobuf (W6, idle PSS); Plugins and PluginInfo
import their generated modules at their first call."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from .. import errdefs, rpc
from ..plugin import InitContext, Plugin, Registration, types
from ..rpc import wire
from .common import DeferredModule, add_servicer

if TYPE_CHECKING:
    from google.rpc import code_pb2, status_pb2

    from ..api.services.introspection.v1 import introspection_pb2
    from ..api.types import platform_pb2
else:  # imported at the first call needing them (W6, idle PSS)
    introspection_pb2 = DeferredModule(
        globals(), "introspection_pb2", "..api.services.introspection.v1.introspection_pb2",
        package="containerd.services.introspection.v1",
    )
    platform_pb2 = DeferredModule(globals(), "platform_pb2", "..api.types.platform_pb2")
    code_pb2 = DeferredModule(globals(), "code_pb2", "google.rpc.code_pb2")
    status_pb2 = DeferredModule(globals(), "status_pb2", "google.rpc.status_pb2")

# containerd.services.introspection.v1.ServerResponse without its deprecations (1.7: none here);
# the request is google.protobuf.Empty
SERVER = wire.FlatCodec(wire.EMPTY, wire.Schema("containerd.services.introspection.v1.ServerResponse",
                                                 (1, "uuid", wire.STRING), (2, "pid", wire.UINT64),
                                                 (3, "pidns", wire.UINT64)))

_ARCH = {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm", "ppc64le": "ppc64le", "s390x": "s390x"}


def host_platform() -> tuple[str, str, str]:
    m = os.uname().machine  # what platform.machine() answers, without loading platform
    return ("linux", _ARCH.get(m, m), "v7" if m == "armv7l" else "")


def _plugin_fields(p: Plugin) -> dict[str, Any]:
    r = p.registration
    return {
        "type": r.type,
        "id": r.id,
        "requires": list(r.requires),
        "capabilities": list(r.capabilities),
        "exports": dict(p.exports),
        "status": p.status,
    }


def _adaptor(fields: dict[str, Any]) -> Any:
    def get(path: tuple[str, ...]) -> str | None:
        if not path:
            return None
        head = path[0]
        if head in ("type", "id", "status") and len(path) == 1:
            return str(fields[head])
        if head == "capabilities" and len(path) == 2:
            return path[1] if path[1] in fields["capabilities"] else None
        if head == "exports" and len(path) == 2:
            val = fields["exports"].get(path[1])
            return None if val is None else str(val)
        if head == "requires" and len(path) == 2:
            return path[1] if path[1] in fields["requires"] else None
        return None

    return get


class IntrospectionService:
    def __init__(self, daemon: Any) -> None:
        self.daemon = daemon

    def _to_pb(self, p: Plugin) -> introspection_pb2.Plugin:
        r = p.registration
        plats = p.platforms or ([host_platform()] if r.type in (types.SNAPSHOT, types.RUNTIME_V2) else [])
        msg = introspection_pb2.Plugin(
            type=r.type,
            id=r.id,
            requires=list(r.requires),
            platforms=[platform_pb2.Platform(os=o, architecture=a, variant=v) for o, a, v in plats],
            exports=dict(p.exports),
            capabilities=list(r.capabilities),
        )
        if p.error is not None:
            code = code_pb2.UNKNOWN
            if isinstance(p.error, errdefs.ContainerdError):
                code = getattr(code_pb2, p.error.code, code_pb2.UNKNOWN)
            msg.init_err.CopyFrom(status_pb2.Status(code=code, message=p.init_error_message))
        return msg

    async def Plugins(
        self, request: introspection_pb2.PluginsRequest, context: Any
    ) -> introspection_pb2.PluginsResponse:
        from .. import filters  # the filter language (and regexp) at the first filtered call: W6, idle PSS
        flt = filters.parse_all(list(request.filters))
        out = [
            self._to_pb(p)
            for p in self.daemon.plugins.plugins
            if flt.match(_adaptor(_plugin_fields(p)))
        ]
        return introspection_pb2.PluginsResponse(plugins=out)

    async def Server(self, request: Any, context: Any) -> dict[str, Any]:
        """Answers ``SERVER``'s ServerResponse fields."""
        pidns = 0
        try:
            pidns = os.stat("/proc/self/ns/pid").st_ino
        except OSError:
            pass
        return {"uuid": self.daemon.uuid, "pid": os.getpid(), "pidns": pidns}

    async def PluginInfo(
        self, request: introspection_pb2.PluginInfoRequest, context: Any
    ) -> introspection_pb2.PluginInfoResponse:
        for p in self.daemon.plugins.plugins:
            if p.registration.type == request.type and (not request.id or p.registration.id == request.id):
                return introspection_pb2.PluginInfoResponse(plugin=self._to_pb(p))
        raise errdefs.NotFound(f"plugin {request.type}.{request.id}: not found")

    def add_to_server(self, server: rpc.Server) -> None:
        add_servicer(server, self, introspection_pb2, "Introspection", {"Server": SERVER})


async def _init(ctx: InitContext) -> IntrospectionService:
    return IntrospectionService(ctx.daemon)


REGISTRATIONS = [Registration(type=types.GRPC, id="introspection", init=_init, requires=("*",))]
