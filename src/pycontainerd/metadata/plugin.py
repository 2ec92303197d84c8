"""The metadata plugin (``io.containerd.metadata.v1.sqlite``): the database and the
namespaced view of every loaded snapshotter, as containerd's metadata plugin wraps its bolt
database and snapshotters.  The snapshots service and the garbage collector both take the
snapshot stores from here, so neither has to reach into the other."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from ..events import Exchange
from ..plugin import InitContext, Registration, types
from .db import Database
from .snapshots import SnapshotStore


@dataclass(frozen=True)
class Metadata:
    db: Database
    snapshotters: Mapping[str, SnapshotStore]


async def _init(ctx: InitContext) -> Metadata:
    db: Database = ctx.daemon.db
    exchange: Exchange = ctx.daemon.exchange
    backends = ctx.get_all(types.SNAPSHOT)
    return Metadata(db, {name: SnapshotStore(db, name, backend, exchange) for name, backend in backends.items()})


REGISTRATION = Registration(type=types.METADATA, id="sqlite", init=_init, requires=(types.CONTENT, types.SNAPSHOT))
