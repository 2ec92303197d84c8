"""THE list of plugins the daemon loads, in one place (no import-time registration)."""

from __future__ import annotations

from ..plugin import Registration


def registrations() -> list[Registration]:
    from ..content import local as content_local
    from ..cri import plugin as cri_plugin
    from ..diff import walking
    from ..metadata import gc
    from ..metadata import plugin as metadata
    from ..runtime import task_plugin
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
    regs.append(metadata.REGISTRATION)
    regs += walking.REGISTRATIONS
    regs += snapshots.REGISTRATIONS
    regs += diff.REGISTRATIONS
    regs += content.REGISTRATIONS
    regs += images.REGISTRATIONS
    regs += leases.REGISTRATIONS
    regs.append(gc.REGISTRATION)
    regs += containers.REGISTRATIONS
    regs += task_plugin.REGISTRATIONS
    regs += tasks.REGISTRATIONS
    regs += namespaces.REGISTRATIONS
    regs += version.REGISTRATIONS
    regs += health.REGISTRATIONS
    regs += introspection.REGISTRATIONS
    regs.append(cri_plugin.REGISTRATION)
    return regs
