"""Fixtures for the differential suite: our daemon and a real containerd, side by side.

Both run for the whole module (module scope), each on its own temp root/state/socket, and
are cleaned up (processes by pid, mounts, temp dirs) even when a test fails.  Root only.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
from collections.abc import Iterator

import pytest

from tests.fixtures.containerd import CONTAINERD_BIN, running_containerd
from tests.integration.daemon import CTR, running_daemon


@dataclasses.dataclass(frozen=True)
class Pair:
    """The sockets of the two daemons under comparison."""

    ours: str
    theirs: str


def _require() -> None:
    if os.geteuid() != 0:
        pytest.fail("the compat suite runs real daemons: mark the test @pytest.mark.root", pytrace=False)
    if not CONTAINERD_BIN.exists() or not shutil.which(CTR):
        pytest.skip("the real containerd (Debian package containerd) is not installed")


@pytest.fixture(scope="module")
def daemons() -> Iterator[Pair]:
    """Our daemon and real containerd, both running, for one module."""
    _require()
    with running_daemon() as ours, running_containerd() as theirs:
        yield Pair(ours=ours.address, theirs=theirs.address)
