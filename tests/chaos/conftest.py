"""Chaos suites run against real daemons: reuse the integration fixtures."""

from __future__ import annotations

from tests.integration.conftest import daemon, pytest_runtest_makereport, shared_daemon

__all__ = ["daemon", "pytest_runtest_makereport", "shared_daemon"]
