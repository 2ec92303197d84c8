"""Top-level test configuration: the shared fixtures plugin and root gating.

Tests marked `root` need real kernel features (mounts, namespaces, cgroups, runc); they run
only when pytest runs as root and are skipped otherwise — no option needed.
"""

from __future__ import annotations

import os

# before anything imports grpc: see pycontainerd/__init__.py (forked children crash otherwise)
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")

import pytest

pytest_plugins = ["tests.fixtures.pytest_plugin"]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if os.geteuid() == 0:
        return
    skip = pytest.mark.skip(reason="needs root (run the suite as root)")
    for item in items:
        if item.get_closest_marker("root") is not None:
            item.add_marker(skip)
