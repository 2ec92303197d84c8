"""Security tests: a failing test's report carries the tail of its daemon's log."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.integration.daemon import Daemon


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    rep = outcome.get_result()  # type: ignore[attr-defined]
    if rep.when == "call" and rep.failed:
        d = getattr(item, "funcargs", {}).get("daemon")
        if isinstance(d, Daemon) and d.log.exists():
            rep.sections.append(("daemon log (last 6000 chars)", d.log.read_text(errors="replace")[-6000:]))
