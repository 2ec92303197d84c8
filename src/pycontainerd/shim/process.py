"""Process states of the shim's init and exec processes: a pure, table-driven state machine.

Rule 1: every operation on a process first asks ``check(kind, state, op)``; if the table has
no entry the operation is refused with the error kind and message containerd's runc shim
gives (``cannot start a running process``...).  Rule 2: only after the I/O part succeeded
does the caller ``advance`` to the target state.  Exits are observed asynchronously and
always allowed (``exit`` from created/running/paused moves to stopped, and is a no-op when
already stopped).

States::

    created --start--> running --pause--> pausing --paused--> paused --resume--> running
       |                  |                                     |
       +------exit--------+-------------------exit--------------+--> stopped --delete--> deleted
       +--delete--> deleted

Exec processes never pause.  A deleted process is gone: every operation on it is NotFound.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from pycontainerd import errdefs

CREATED = "created"
RUNNING = "running"
PAUSING = "pausing"
PAUSED = "paused"
STOPPED = "stopped"
DELETED = "deleted"

INIT = "init"
EXEC = "exec"

# (kind, state, operation) -> target state (None: allowed, state unchanged)
TRANSITIONS: dict[tuple[str, str, str], str | None] = {}


def _allow(kinds: tuple[str, ...], state: str, op: str, target: str | None) -> None:
    for kind in kinds:
        TRANSITIONS[(kind, state, op)] = target


_BOTH = (INIT, EXEC)
_allow(_BOTH, CREATED, "start", RUNNING)
_allow(_BOTH, CREATED, "delete", DELETED)
_allow(_BOTH, CREATED, "kill", None)
_allow(_BOTH, CREATED, "exit", STOPPED)
_allow(_BOTH, CREATED, "resize", None)
_allow(_BOTH, CREATED, "close_io", None)
_allow((INIT,), CREATED, "update", None)
_allow((INIT,), CREATED, "exec", None)

_allow(_BOTH, RUNNING, "kill", None)
_allow(_BOTH, RUNNING, "exit", STOPPED)
_allow(_BOTH, RUNNING, "resize", None)
_allow(_BOTH, RUNNING, "close_io", None)
_allow((INIT,), RUNNING, "pause", PAUSING)
_allow((INIT,), RUNNING, "update", None)
_allow((INIT,), RUNNING, "exec", None)

_allow((INIT,), PAUSING, "paused", PAUSED)
_allow((INIT,), PAUSING, "pause_failed", RUNNING)
_allow((INIT,), PAUSING, "kill", None)
_allow((INIT,), PAUSING, "exit", STOPPED)
_allow((INIT,), PAUSING, "resize", None)
_allow((INIT,), PAUSING, "close_io", None)

_allow((INIT,), PAUSED, "resume", RUNNING)
_allow((INIT,), PAUSED, "kill", None)
_allow((INIT,), PAUSED, "exit", STOPPED)
_allow((INIT,), PAUSED, "update", None)
_allow((INIT,), PAUSED, "resize", None)
_allow((INIT,), PAUSED, "close_io", None)

_allow(_BOTH, STOPPED, "delete", DELETED)
_allow(_BOTH, STOPPED, "kill", None)  # the caller reports "process already finished"
_allow(_BOTH, STOPPED, "exit", None)
_allow(_BOTH, STOPPED, "close_io", None)

# Refusals that containerd words specially; everything else gets a generic message.
_MESSAGES: dict[tuple[str, str], str] = {
    (CREATED, "pause"): "cannot pause task in created state",
    (CREATED, "resume"): "cannot resume task in created state",
    (RUNNING, "start"): "cannot start a running process",
    (RUNNING, "delete"): "cannot delete a running process",
    (RUNNING, "resume"): "cannot resume a running process",
    (PAUSING, "pause"): "cannot pause a pausing container",
    (PAUSED, "pause"): "cannot pause a paused container",
    (PAUSED, "start"): "cannot start a paused process",
    (PAUSED, "delete"): "cannot delete a paused process",
    (PAUSED, "exec"): "cannot exec in a paused state",
    (STOPPED, "start"): "cannot start a stopped process",
    (STOPPED, "pause"): "cannot pause a stopped container",
    (STOPPED, "resume"): "cannot resume a stopped container",
    (STOPPED, "update"): "cannot update a stopped container",
    (STOPPED, "exec"): "cannot exec in a stopped state",
    (STOPPED, "resize"): "cannot resize a stopped container",
}


def check(kind: str, state: str, op: str) -> str | None:
    """The state ``op`` leads to from ``state`` (None: unchanged); raise if it is refused."""
    key = (kind, state, op)
    if key in TRANSITIONS:
        return TRANSITIONS[key]
    if state == DELETED:
        raise errdefs.NotFound(f"cannot {op.replace('_', ' ')} a deleted process: not found")
    msg = _MESSAGES.get((state, op)) or f"cannot {op.replace('_', ' ')} a {state} {kind} process"
    raise errdefs.FailedPrecondition(msg)


@dataclass
class ProcessRecord:
    """What the shim knows about one process (no I/O handles: those live in the service)."""

    kind: str
    id: str  # container id for init, exec id for execs
    exec_id: str = ""
    state: str = CREATED
    pid: int = 0
    exit_status: int = 0
    exited_at_ns: int = 0
    stdin: str = ""
    stdout: str = ""
    stderr: str = ""
    terminal: bool = False
    history: list[str] = field(default_factory=list)

    def check(self, op: str) -> str | None:
        return check(self.kind, self.state, op)

    def advance(self, op: str) -> None:
        """Apply ``op`` (already checked, its I/O done) and record the transition."""
        target = check(self.kind, self.state, op)
        if target is not None and target != self.state:
            self.history.append(f"{self.state}-{op}->{target}")
            self.state = target

    def exited(self, status: int, at_ns: int) -> bool:
        """Record an exit; False if it was already recorded (a second exit is ignored)."""
        if self.state in (STOPPED, DELETED):
            return False
        self.advance("exit")
        self.exit_status = status
        self.exited_at_ns = at_ns
        return True

    @property
    def public_status(self) -> str:
        return self.state if self.state != DELETED else STOPPED


def wait_status_to_exit_code(status: int) -> int:
    """A waitpid status as the exit code containerd reports (128+signal when signalled)."""
    import os

    if os.WIFEXITED(status):
        return os.WEXITSTATUS(status)
    if os.WIFSIGNALED(status):
        return 128 + os.WTERMSIG(status)
    return 255
