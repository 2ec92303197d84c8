"""The content contract suite against the local store and the namespaced metadata store."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import pytest

from pycontainerd.content.local import LocalStore
from pycontainerd.events import Exchange
from pycontainerd.metadata.content import ContentStore
from pycontainerd.metadata.db import Database
from tests.suites import content_suite

Impl = Callable[[Path], Any]


def _run_local(case: Callable[..., Coroutine[Any, Any, None]], tmp: Path) -> None:
    async def new_store() -> LocalStore:
        store = LocalStore(tmp / "content", labels=True)
        await asyncio.to_thread(store.setup_sync)
        return store

    asyncio.run(case(new_store))


def _run_metadata(case: Callable[..., Coroutine[Any, Any, None]], tmp: Path) -> None:
    async def main() -> None:
        db = Database(tmp / "meta.db")
        await db.open()
        exchange = Exchange()
        try:

            async def new_store() -> Any:
                local = LocalStore(tmp / "content")
                await asyncio.to_thread(local.setup_sync)
                return ContentStore(db, local, exchange).namespaced("suite-ns")

            await case(new_store)
        finally:
            await asyncio.to_thread(db.close)

    asyncio.run(main())


IMPLS: dict[str, Callable[[Callable[..., Coroutine[Any, Any, None]], Path], None]] = {
    "local": _run_local,
    "metadata": _run_metadata,
}


@pytest.mark.parametrize("impl", sorted(IMPLS))
@pytest.mark.parametrize("case", content_suite.CASES, ids=lambda c: c.__name__.removeprefix("case_"))
def test_content_contract(impl: str, case: Callable[..., Coroutine[Any, Any, None]], tmp_path: Path) -> None:
    IMPLS[impl](case, tmp_path)
