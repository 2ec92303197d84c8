"""Daemon-level keys through a real daemon: ``oom_score`` is the daemon's own ``oom_score_adj``
(what it forks later inherits it); a score the daemon may not set is an error in its log naming
the key, and the daemon starts anyway (containerd does the same)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.fixtures.procs import wait_for

from .daemon import running_daemon

pytestmark = pytest.mark.root


def _adj(pid: int) -> int:
    return int(Path(f"/proc/{pid}/oom_score_adj").read_text())


def test_oom_score_is_the_daemons_own() -> None:
    with running_daemon("version = 2\noom_score = 300\n") as d:
        assert _adj(d.pid) == 300


def test_an_oom_score_the_daemon_may_not_set_is_logged_naming_the_key() -> None:
    with running_daemon("version = 2\noom_score = -999\n") as d:
        if _adj(d.pid) == -999:  # a machine where root has CAP_SYS_RESOURCE: it worked
            return
        wait_for(lambda: "config key oom_score = -999: cannot write /proc/self/oom_score_adj" in d.log.read_text(),
                 10, "the oom_score error in the log")
        assert _adj(d.pid) != -999
        assert "pycontainerd serving on" in d.log.read_text()  # it started all the same
