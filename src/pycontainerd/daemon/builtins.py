"""THE list of plugins the daemon loads, in one place (no import-time registration)."""

from __future__ import annotations

from ..plugin import InitContext, Registration, types


async def _init_metadata(ctx: InitContext) -> object:
    return ctx.daemon.db


METADATA = Registration(type=types.METADATA, id="sqlite", init=_init_metadata, requires=(types.CONTENT, types.SNAPSHOT))


def registrations() -> list[Registration]:
    from ..content import local as content_local
    from ..services import content, events, health, images, introspection, leases, namespaces, version

    regs: list[Registration] = []
    regs += events.REGISTRATIONS
    regs += content_local.REGISTRATIONS
    regs.append(METADATA)
    regs += content.REGISTRATIONS
    regs += images.REGISTRATIONS
    regs += leases.REGISTRATIONS
    regs += namespaces.REGISTRATIONS
    regs += version.REGISTRATIONS
    regs += health.REGISTRATIONS
    regs += introspection.REGISTRATIONS
    return regs
