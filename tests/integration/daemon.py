"""A pycontainerd daemon on a temp root/state/socket, started as a real process.

Also the cleanup every integration test relies on: shims started for the daemon's state
dir are killed by pid, mounts under the temp dir are unmounted (deepest first), the temp
dir removed — whether the test passed or not.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

from tests.fixtures.procs import wait_for

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
CTR = "/usr/bin/ctr"


def mounts_under(prefix: str) -> list[str]:
    out = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            mp = line.split()[4].replace("\\040", " ")
            if mp == prefix or mp.startswith(prefix.rstrip("/") + "/"):
                out.append(mp)
    return out


def unmount_all(prefix: str) -> None:
    for _ in range(3):
        mps = mounts_under(prefix)
        if not mps:
            return
        for mp in sorted(mps, key=len, reverse=True):
            subprocess.run(["umount", "-l", mp], check=False, capture_output=True)


def pids_mentioning(text: str) -> list[int]:
    pids = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit() or int(d.name) == os.getpid():
            continue
        try:
            cmd = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if text in cmd:
            pids.append(int(d.name))
    return pids


def parent_pid(pid: int) -> int:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0
    return int(stat.rsplit(")", 1)[1].split()[1])


def kill_pids(pids: list[int]) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


class Daemon:
    def __init__(self, base: Path, config_text: str = "") -> None:
        self.base = base
        self.root = base / "root"
        self.state = base / "state"
        self.address = str(base / "pycd.sock")
        self.config = base / "config.toml"
        self.log = base / "daemon.log"
        self.config.write_text(config_text or 'version = 2\n')
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def shim_pids(self) -> list[int]:
        """Shim processes of this daemon (not the daemon, not its own launcher child)."""
        own = self.proc.pid if self.proc is not None and self.proc.poll() is None else -1
        return [p for p in pids_mentioning(str(self.base)) if p != own and parent_pid(p) != own]

    def command(self) -> list[str]:
        return [str(BIN / "pycontainerd"), "--config", str(self.config), "--root", str(self.root),
                "--state", str(self.state), "--address", self.address, "--log-level", "debug"]

    def start(self, timeout: float = 30) -> None:
        logf = open(self.log, "ab")  # noqa: SIM115 - handed to the child
        self.proc = subprocess.Popen(self.command(), stdout=logf, stderr=subprocess.STDOUT, start_new_session=True)
        logf.close()
        proc = self.proc

        def serving() -> bool:
            if proc.poll() is not None:
                raise RuntimeError(f"daemon exited with {proc.returncode}:\n{self.log.read_text()[-4000:]}")
            return subprocess.run([CTR, "-a", self.address, "version"], capture_output=True, timeout=10).returncode == 0

        try:
            wait_for(serving, timeout, "the daemon to serve", interval=0.05)
        except TimeoutError as exc:
            raise RuntimeError(f"{exc}:\n{self.log.read_text()[-4000:]}") from None

    def stop(self, timeout: float = 15) -> int | None:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait(5)

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(10)

    def restart(self) -> None:
        self.stop()
        self.start()

    def ctr(self, *args: str, namespace: str = "default", input: bytes | None = None, timeout: float = 120,
            check: bool = True) -> subprocess.CompletedProcess[str]:
        r = subprocess.run([CTR, "-a", self.address, "-n", namespace, *args], input=input.decode() if input else None,
                           capture_output=True, text=True, timeout=timeout)
        if check and r.returncode != 0:
            raise AssertionError(f"ctr {' '.join(args)} failed ({r.returncode}):\n{r.stdout}\n{r.stderr}")
        return r

    def pyctr(self, *args: str, namespace: str = "default", input: str | None = None, timeout: float = 120,
              check: bool = True) -> subprocess.CompletedProcess[str]:
        r = subprocess.run([str(BIN / "pyctr"), "-a", self.address, "-n", namespace, *args], input=input,
                           capture_output=True, text=True, timeout=timeout)
        if check and r.returncode != 0:
            raise AssertionError(f"pyctr {' '.join(args)} failed ({r.returncode}):\n{r.stdout}\n{r.stderr}")
        return r

    def cleanup(self) -> None:
        self.stop()
        # containers this daemon left running: runc's state lives under our state dir
        runc_root = self.state / "runc"
        if runc_root.is_dir():
            for ns_dir in runc_root.iterdir():
                for c in ns_dir.iterdir() if ns_dir.is_dir() else ():
                    subprocess.run(["runc", "--root", str(ns_dir), "delete", "--force", c.name],
                                   capture_output=True, check=False, timeout=30)
        # shims (and their launcher) started for this daemon: their command lines name our state dir
        kill_pids(pids_mentioning(str(self.base)))
        unmount_all(str(self.base))


@contextlib.contextmanager
def running_daemon(config_text: str = "") -> Iterator[Daemon]:
    base = Path(tempfile.mkdtemp(prefix="pycd-", dir="/tmp"))
    d = Daemon(base, config_text)
    try:
        d.start()
        yield d
    finally:
        d.cleanup()
        if not os.environ.get("PYCD_KEEP_TMP"):
            subprocess.run(["rm", "-rf", "--one-file-system", str(base)], check=False)
