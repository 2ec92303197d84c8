"""Fixtures for integration tests: a real pycontainerd daemon on a temp socket."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator

import pytest

from .daemon import Daemon, running_daemon


def _require_root() -> None:
    if os.geteuid() != 0:  # the daemon needs mounts and runc: the test must be marked root
        pytest.fail("a real daemon needs root: mark the test @pytest.mark.root", pytrace=False)
    if not shutil.which("ctr"):
        pytest.skip("the real ctr (Debian package containerd) is not installed")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """A failing test's report carries the tail of its daemon's log (CI keeps nothing else)."""
    outcome = yield
    rep = outcome.get_result()  # type: ignore[attr-defined]
    if rep.when == "call" and rep.failed:
        for name in ("daemon", "shared_daemon"):
            d = getattr(item, "funcargs", {}).get(name)
            if isinstance(d, Daemon) and d.log.exists():
                rep.sections.append((f"{name} log (last 6000 chars)", d.log.read_text(errors="replace")[-6000:]))


@pytest.fixture
def daemon() -> Iterator[Daemon]:
    """A fresh daemon per test (cheap: ~0.3 s), cleaned up even when the test fails."""
    _require_root()
    with running_daemon() as d:
        yield d
        if os.environ.get("PYCD_SHOW_LOG"):
            print(d.log.read_text())


@pytest.fixture(scope="module")
def shared_daemon() -> Iterator[Daemon]:
    """One daemon for a module's read-mostly tests."""
    _require_root()
    with running_daemon() as d:
        yield d
