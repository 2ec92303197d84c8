"""THE list of plugins the daemon loads, in one place (no import-time registration)."""

from __future__ import annotations

from ..plugin import InitContext, Registration, types


async def _init_metadata(ctx: InitContext) -> object:
    return ctx.daemon.db


METADATA = Registration(type=types.METADATA, id="sqlite", init=_init_metadata, requires=(types.CONTENT, types.SNAPSHOT))


def registrations() -> list[Registration]:
    from ..content import local as content_local
    from ..diff import walking
    from ..metadata import gc
    from ..runtime import task_manager
    from ..services import (
        containers,
        content,
        diff,
        events,
        health,
        images,
        introspection,
        leases,
        namespaces,
        snapshots,
        tasks,
        version,
    )
    from ..snapshots import btrfs, native, overlay
    from . import opt

    regs: list[Registration] = [opt.REGISTRATION]  # first: PATH is set before any shim starts
    regs += events.REGISTRATIONS
    regs += content_local.REGISTRATIONS
    regs.append(overlay.REGISTRATION)
    regs.append(native.REGISTRATION)
    regs.append(btrfs.REGISTRATION)
    regs.append(METADATA)
    regs += walking.REGISTRATIONS
    regs += snapshots.REGISTRATIONS
    regs += diff.REGISTRATIONS
    regs += content.REGISTRATIONS
    regs += images.REGISTRATIONS
    regs += leases.REGISTRATIONS
    regs += gc.registrations()
    regs += containers.REGISTRATIONS
    regs += task_manager.REGISTRATIONS
    regs += tasks.REGISTRATIONS
    regs += namespaces.REGISTRATIONS
    regs += version.REGISTRATIONS
    regs += health.REGISTRATIONS
    regs += introspection.REGISTRATIONS
    return regs
