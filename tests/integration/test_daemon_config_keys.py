"""Daemon-level keys through a real daemon: ``oom_score`` is the daemon's own ``oom_score_adj``
(what it forks later inherits it); a score the daemon may not set is an error in its log naming
the key, and the daemon starts anyway (containerd does the same)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.fixtures.images import BuiltImage
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


def test_temp_is_the_tmpdir_of_what_the_daemon_starts(tmp_path: Path, busybox_archive: Path,
                                                      busybox_image: BuiltImage) -> None:
    """The daemon's own environment block cannot show a change made after exec: its shim's does."""
    temp = tmp_path / "ctd-tmp"
    with running_daemon(f'version = 2\ntemp = "{temp}"\n') as d:
        assert temp.is_dir()
        d.ctr("images", "import", str(busybox_archive))
        d.ctr("run", "-d", busybox_image.name, "tmp1", "sleep", "100")
        try:
            shims = d.shim_pids()
            assert shims
            for pid in shims:
                environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
                assert f"TMPDIR={temp}".encode() in environ, pid
        finally:
            d.ctr("tasks", "kill", "-s", "9", "tmp1", check=False)
            wait_for(lambda: "STOPPED" in d.ctr("tasks", "ls", check=False).stdout
                     or "tmp1" not in d.ctr("tasks", "ls", check=False).stdout, 20, "the task to stop")
            d.ctr("tasks", "rm", "tmp1", check=False)
            d.ctr("containers", "rm", "tmp1", check=False)
