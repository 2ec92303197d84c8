"""Unit-test helper: run a coroutine against a fresh LocalStore + metadata ContentStore in ``tmp``."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path

from pycontainerd.content.local import LocalStore
from pycontainerd.metadata.content import ContentStore
from pycontainerd.metadata.db import Database


def run_with_stores(tmp: Path, body: Callable[[LocalStore, ContentStore], Awaitable[None]]) -> None:
    async def main() -> None:
        db = Database(tmp / "meta.db")
        await db.open()
        local = LocalStore(tmp / "content")
        await asyncio.to_thread(local.setup_sync)
        try:
            await body(local, ContentStore(db, local, None))
        finally:
            await asyncio.to_thread(db.close)

    asyncio.run(main())
