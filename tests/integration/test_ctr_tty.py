"""``ctr run -t`` driven through tmux, like a person at a terminal, against our daemon.

tmux gives ctr a real terminal; we type with send-keys and read the screen with
capture-pane, polling with a deadline.
"""

from __future__ import annotations

import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fixtures.procs import wait_for
from tests.fixtures.pytest_plugin import PushedImage

from .daemon import CTR, Daemon

pytestmark = pytest.mark.root


@pytest.fixture
def tmux() -> Iterator[str]:
    if not shutil.which("tmux"):
        pytest.skip("tmux is not installed")
    session = f"pycd-{uuid.uuid4().hex[:8]}"
    # the host shell's prompt must not look like the container's busybox prompt ("/ # ")
    subprocess.run(["tmux", "new-session", "-d", "-s", session, "-x", "120", "-y", "30", "env", "PS1=host$ ", "sh"],
                   check=True)
    try:
        yield session
    finally:
        subprocess.run(["tmux", "kill-session", "-t", session], check=False, capture_output=True)


def screen(session: str) -> str:
    return subprocess.run(["tmux", "capture-pane", "-p", "-t", session], capture_output=True, text=True).stdout


def wait_screen(session: str, text: str, timeout: float = 20) -> str:
    def shown() -> str | None:
        s = screen(session)
        return s if text in s else None

    try:
        return wait_for(shown, timeout, f"{text!r} on the screen")
    except TimeoutError as exc:
        raise AssertionError(f"{exc}:\n{screen(session)}") from None


def container_runs(daemon: Daemon, cid: str, argv: list[str]) -> bool:
    """One of the container's processes (``ctr tasks ps``) runs ``argv``."""
    pids = [ln.split()[0] for ln in daemon.ctr("tasks", "ps", cid).stdout.splitlines()[1:] if ln.strip()]
    for pid in pids:
        try:
            if Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[:-1] == [a.encode() for a in argv]:
                return True
        except OSError:
            continue
    return False


def keys(session: str, *k: str) -> None:
    subprocess.run(["tmux", "send-keys", "-t", session, *k], check=True)


def test_ctr_run_t_gives_a_working_shell(daemon: Daemon, pushed_busybox: PushedImage, tmux: str) -> None:
    daemon.ctr("images", "pull", "--plain-http", pushed_busybox.ref, timeout=120)
    keys(tmux, f"{CTR} -a {daemon.address} run --rm -t {pushed_busybox.ref} tty1 sh; echo CTR-EXIT=$?", "Enter")
    wait_screen(tmux, "/ #")
    keys(tmux, "echo $((6*7)) from $(tty)", "Enter")
    s = wait_screen(tmux, "42 from /dev/pts/")
    assert "42 from /dev/pts/0" in s
    # the terminal size reached the container
    keys(tmux, "stty size", "Enter")
    wait_screen(tmux, "30 120")
    keys(tmux, "exit 5", "Enter")
    wait_screen(tmux, "CTR-EXIT=5")
    assert "tty1" not in daemon.ctr("containers", "ls", "-q").stdout.split()


def test_ctr_run_t_ctrl_c_reaches_the_container(daemon: Daemon, pushed_busybox: PushedImage, tmux: str) -> None:
    daemon.ctr("images", "pull", "--plain-http", pushed_busybox.ref, timeout=120)
    keys(tmux, f"{CTR} -a {daemon.address} run --rm -t {pushed_busybox.ref} tty2 sh; echo CTR-EXIT=$?", "Enter")
    wait_screen(tmux, "/ #")
    keys(tmux, "sleep 100", "Enter")
    wait_for(lambda: container_runs(daemon, "tty2", ["sleep", "100"]), 20, "sleep 100 to run in the container")
    keys(tmux, "C-c")
    keys(tmux, "echo after-$((40+2))", "Enter")
    wait_screen(tmux, "after-42")  # the shell got ^C, not killed: it runs the next command
    keys(tmux, "exit", "Enter")
    wait_screen(tmux, "CTR-EXIT=0")
