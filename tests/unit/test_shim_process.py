"""The shim's process state table."""

from __future__ import annotations

import os

import pytest

from pycontainerd import errdefs
from pycontainerd.shim import process as ps


def test_init_lifecycle() -> None:
    rec = ps.ProcessRecord(ps.INIT, "c")
    rec.advance("start")
    rec.advance("pause")
    assert rec.state == ps.PAUSING
    rec.advance("paused")
    rec.advance("resume")
    assert rec.exited(137, 5)
    assert not rec.exited(0, 6)  # a second exit is ignored
    assert (rec.state, rec.exit_status, rec.exited_at_ns) == (ps.STOPPED, 137, 5)
    rec.advance("delete")
    assert rec.public_status == ps.STOPPED
    assert rec.history == [
        "created-start->running",
        "running-pause->pausing",
        "pausing-paused->paused",
        "paused-resume->running",
        "running-exit->stopped",
        "stopped-delete->deleted",
    ]


@pytest.mark.parametrize(
    ("kind", "state", "op", "message"),
    [
        (ps.INIT, ps.RUNNING, "start", "cannot start a running process"),
        (ps.INIT, ps.RUNNING, "delete", "cannot delete a running process"),
        (ps.INIT, ps.CREATED, "pause", "cannot pause task in created state"),
        (ps.INIT, ps.PAUSED, "pause", "cannot pause a paused container"),
        (ps.INIT, ps.STOPPED, "start", "cannot start a stopped process"),
        (ps.INIT, ps.STOPPED, "exec", "cannot exec in a stopped state"),
        (ps.EXEC, ps.RUNNING, "delete", "cannot delete a running process"),
    ],
)
def test_refusals_carry_containerd_messages(kind: str, state: str, op: str, message: str) -> None:
    with pytest.raises(errdefs.FailedPrecondition, match=message):
        ps.check(kind, state, op)


def test_exec_cannot_pause_and_deleted_is_not_found() -> None:
    with pytest.raises(errdefs.FailedPrecondition):
        ps.check(ps.EXEC, ps.RUNNING, "pause")
    with pytest.raises(errdefs.NotFound):
        ps.check(ps.INIT, ps.DELETED, "kill")


def test_created_process_may_exit_and_be_deleted() -> None:
    assert ps.check(ps.INIT, ps.CREATED, "exit") == ps.STOPPED
    assert ps.check(ps.EXEC, ps.CREATED, "delete") == ps.DELETED


def test_wait_status_to_exit_code() -> None:
    assert ps.wait_status_to_exit_code(3 << 8) == 3
    assert ps.wait_status_to_exit_code(9) == 137  # killed by SIGKILL
    assert os.WIFSIGNALED(9)
