"""Top-level test configuration: the shared fixtures plugin and root gating.

Tests marked `root` need real kernel features (mounts, namespaces, cgroups, runc).  Run without
root, they fail with a message saying so rather than vanish as skips (a skipped root test looks
like a passing suite); leave them out on purpose with ``-m "not root"`` (``make unit`` does when
it is not run as root).
"""

from __future__ import annotations

import os

# before anything imports grpc: see pycontainerd/__init__.py (forked children crash otherwise)
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")

import pytest

pytest_plugins = ["tests.fixtures.pytest_plugin"]

NEEDS_ROOT = "needs root: run as root, or deselect with -m 'not root'"


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.get_closest_marker("root") is not None and os.geteuid() != 0:
        pytest.fail(f"{item.nodeid} {NEEDS_ROOT}", pytrace=False)
