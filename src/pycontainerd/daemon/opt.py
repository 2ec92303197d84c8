"""``io.containerd.internal.v1.opt``: the directory ``ctr install`` unpacks binaries into.

containerd's ``opt`` plugin exports ``path`` (``[plugins."io.containerd.internal.v1.opt"]
path``, here ``/opt/pycontainerd`` by default); ``ctr install`` asks the Introspection
service for it and unpacks an image's ``bin/`` (and with ``--libs`` ``lib/``) there.  The
plugin puts ``<path>/bin`` first on the daemon's ``PATH`` and ``<path>/lib`` on its
``LD_LIBRARY_PATH``, so a runtime (``BinaryName``) or tool installed from an image is found
by the daemon and by the shims it starts after that.
"""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path

from .. import errdefs
from ..plugin import InitContext, Registration, types

log = logging.getLogger("pycontainerd.opt")


def _prepend(var: str, entry: str) -> None:
    parts = [p for p in os.environ.get(var, "").split(os.pathsep) if p and p != entry]
    os.environ[var] = os.pathsep.join([entry, *parts])


def _prepare(path: Path) -> None:
    for d in (path, path / "bin", path / "lib"):
        d.mkdir(mode=0o711, exist_ok=True)


async def _init(ctx: InitContext) -> Path:
    raw = ctx.daemon.config.opt.path
    if not raw or not os.path.isabs(raw):
        raise errdefs.InvalidArgument(
            f'config key plugins."io.containerd.internal.v1.opt".path: {raw!r} must be an absolute path'
        )
    path = Path(raw)
    try:
        await asyncio.to_thread(_prepare, path)
    except OSError as exc:
        raise errdefs.from_oserror(exc, f"opt directory {path}") from exc
    _prepend("PATH", str(path / "bin"))
    _prepend("LD_LIBRARY_PATH", str(path / "lib"))
    ctx.exports["path"] = str(path)
    log.info("opt: %s/bin and %s/lib added to the daemon's PATH and LD_LIBRARY_PATH", path, path)
    return path


REGISTRATION = Registration(type=types.INTERNAL, id="opt", init=_init)
