"""The snapshotter contract suite against overlay and native, bare and behind the metadata store."""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from pycontainerd.events import Exchange
from pycontainerd.metadata.db import Database
from pycontainerd.metadata.snapshots import SnapshotStore
from pycontainerd.snapshots.native import NativeSnapshotter
from pycontainerd.snapshots.overlay import OverlaySnapshotter, overlay_supported

from ..suites.snapshotter_suite import CASES

pytestmark = pytest.mark.root


def _mounts_under(prefix: str) -> list[str]:
    out = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            mp = line.split()[4]
            if mp.startswith(prefix.rstrip("/") + "/"):
                out.append(mp)
    return out


def _cleanup_mounts(prefix: Path) -> list[str]:
    leaked = _mounts_under(str(prefix))
    for mp in sorted(leaked, key=len, reverse=True):
        subprocess.run(["umount", "-l", mp], check=False, capture_output=True)
    return leaked


def _backend(kind: str, root: Path) -> Any:
    if kind == "overlayfs":
        overlay_supported(root)
        return OverlaySnapshotter(root)
    return NativeSnapshotter(root)


async def _run(kind: str, layered: bool, tmp: Path, case: Callable[[Any, Path], Awaitable[None]]) -> None:
    backend = _backend(kind, tmp / "sn")
    work = tmp / "work"
    work.mkdir()
    db: Database | None = None
    try:
        if layered:
            db = Database(tmp / "meta" / "meta.db")
            await db.open()
            store = SnapshotStore(db, kind, backend, Exchange())
            await case(store.namespaced("suite"), work)
        else:
            await case(backend, work)
    finally:
        await backend.close()
        if db is not None:
            await asyncio.to_thread(db.close)


@pytest.mark.parametrize("case", CASES, ids=[c.__name__.removeprefix("case_") for c in CASES])
@pytest.mark.parametrize("layered", [False, True], ids=["bare", "metadata"])
@pytest.mark.parametrize("kind", ["overlayfs", "native"])
def test_snapshotter_contract(kind: str, layered: bool, case: Any, tmp_path: Path) -> None:
    try:
        asyncio.run(_run(kind, layered, tmp_path, case))
    finally:
        leaked = _cleanup_mounts(tmp_path)
    assert not leaked, f"mounts leaked: {leaked}"
