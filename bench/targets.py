"""The two daemons under test, driven through the same real `ctr`.

A `Target` is a daemon on a socket: either started here on its own temp root/state/socket
(pycontainerd via `.venv/bin/pycontainerd`, containerd via the test fixture) or an existing one
given by `--ours-socket` / `--containerd-socket` (then its pid is found from the socket).
Both use the overlayfs snapshotter and /usr/sbin/runc.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

from tests.fixtures.containerd import (
    IP_FORWARD,
    Containerd,
    CriOptions,
    cni_conflist,
    cri_config,
    remove_iptables_rules,
)
from tests.fixtures.procs import (
    children_of,
    kill_pids,
    pids_mentioning,
    processes_using,
    pss_kib,
    remove_tree,
    stop_process,
    unmount_all,
    wait_for,
)

CTR = "/usr/bin/ctr"
NAMESPACE = "bench"
REPO = Path(__file__).resolve().parents[1]


class CtrError(RuntimeError):
    """A ctr command failed; the message carries its exit code and stderr."""


class Target:
    """A daemon under test. `key` is "ours" or "containerd"; `prefix` keeps container ids apart
    (both daemons share cgroup paths /<ns>/<id> and possibly the runc root)."""

    def __init__(self, key: str, label: str, address: str, prefix: str, base: Path | None = None) -> None:
        self.key = key
        self.base = base  # the temp dir we started it in (None for --*-socket daemons)
        self.label = label
        self.address = address
        self.prefix = prefix
        self.daemon_pid: int | None = None
        self.start_error: str | None = None
        self.cri: CriOptions | None = None  # the CRI plugin's options when it is on

    # -- ctr ------------------------------------------------------------------------------------

    def ctr(self, *args: str, timeout: float = 600, check: bool = True,
            namespace: str = NAMESPACE) -> subprocess.CompletedProcess[str]:
        r = subprocess.run([CTR, "-a", self.address, "-n", namespace, *args], capture_output=True, text=True,
                           timeout=timeout, stdin=subprocess.DEVNULL)
        if check and r.returncode != 0:
            raise CtrError(f"ctr {' '.join(args)} → exit {r.returncode}: {(r.stderr or r.stdout).strip()[-600:]}")
        return r

    def timed(self, *args: str, timeout: float = 600) -> float:
        t0 = time.perf_counter()
        self.ctr(*args, timeout=timeout)
        return time.perf_counter() - t0

    def popen(self, *args: str) -> subprocess.Popen[str]:
        return subprocess.Popen([CTR, "-a", self.address, "-n", NAMESPACE, *args], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True)

    # -- processes ------------------------------------------------------------------------------

    def shim_pids(self) -> list[int]:
        """Shims and helpers (e.g. pycontainerd's shim launcher) of this daemon, not containers."""
        exclude = (self.daemon_pid,) if self.daemon_pid else ()
        if self.base is not None:
            return processes_using(str(self.base), also=(self.address,), exclude=exclude)
        return [p for p in pids_mentioning(self.address) if p not in exclude]

    def task_shim_pids(self) -> list[int]:
        """Processes living in a task bundle dir (shims of live or dying tasks)."""
        if self.base is None:
            return self.shim_pids()
        return processes_using(str(self.base / "state" / "io.containerd.runtime.v2.task"))

    def pss_mib(self) -> tuple[float, int]:
        """PSS (MiB) of the daemon + all its shims, and how many shims were counted."""
        shims = self.shim_pids()
        pids = ([self.daemon_pid] if self.daemon_pid else []) + shims
        return sum(pss_kib(p) for p in pids) / 1024, len(shims)

    # -- state ----------------------------------------------------------------------------------

    def task_ids(self) -> list[tuple[str, str]]:
        out = []
        for line in self.ctr("tasks", "ls", timeout=60).stdout.splitlines()[1:]:
            parts = line.split()
            if len(parts) >= 3:
                out.append((parts[0], parts[2]))
        return out

    def reset(self, keep_images: Sequence[str] = ()) -> None:
        """Remove every task, container and image (except `keep_images`) in the bench namespace,
        prune content and leftover snapshots. Best effort, then verified by the callers."""
        tasks = self.task_ids()
        procs = [self.popen("tasks", "kill", "-s", "SIGKILL", "-a", tid) for tid, st in tasks if st != "STOPPED"]
        for p in procs:
            p.communicate(timeout=60)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and any(st not in ("STOPPED",) for _, st in self.task_ids()):
            time.sleep(0.05)
        for tid, _ in self.task_ids():
            self.ctr("tasks", "rm", "-f", tid, check=False, timeout=60)
        ids = self.ctr("containers", "ls", "-q", timeout=60).stdout.split()
        for chunk in _chunks(ids, 25):
            self.ctr("containers", "rm", *chunk, check=False, timeout=120)
        images = [i for i in self.ctr("images", "ls", "-q", timeout=60).stdout.split() if i not in keep_images]
        if images:
            self.ctr("images", "rm", "--sync", *images, check=False, timeout=300)
        self.ctr("content", "prune", "references", check=False, timeout=300)
        self._remove_orphan_snapshots(keep_images)

    def _remove_orphan_snapshots(self, keep_images: Sequence[str]) -> None:
        if keep_images:
            return  # unpacked layers of kept images are needed; GC handles the rest
        for _ in range(100):
            rows = [ln.split() for ln in self.ctr("snapshots", "ls", check=False).stdout.splitlines()[1:]]
            rows = [r for r in rows if r]
            if not rows:
                return
            parents = {r[1] for r in rows if len(r) >= 3}
            leaves = [r[0] for r in rows if r[0] not in parents]
            if not leaves:
                return
            self.ctr("snapshots", "rm", *leaves, check=False)

    def start(self) -> None:
        raise NotImplementedError

    def close(self) -> None:
        pass


def _chunks(xs: Sequence[str], n: int) -> Iterator[list[str]]:
    for i in range(0, len(xs), n):
        yield list(xs[i:i + n])


def pid_listening_on(path: str) -> int | None:
    """The pid holding the listening unix socket `path` (for --*-socket daemons)."""
    inodes = set()
    with contextlib.suppress(OSError), open("/proc/net/unix") as fh:
        for line in fh.readlines()[1:]:
            parts = line.split()
            if len(parts) >= 8 and parts[7] == path:
                inodes.add(parts[6])
    if not inodes:
        return None
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        fd_dir = f"/proc/{entry}/fd"
        try:
            for fd in os.listdir(fd_dir):
                with contextlib.suppress(OSError):
                    link = os.readlink(f"{fd_dir}/{fd}")
                    if link.startswith("socket:[") and link[8:-1] in inodes:
                        return int(entry)
        except OSError:
            continue
    return None


class ExternalTarget(Target):
    def start(self) -> None:
        self.daemon_pid = pid_listening_on(self.address)
        self.ctr("version", timeout=30)


def daemon_env() -> dict[str, str]:
    """The daemon's environment: ours, less PYTHONDONTWRITEBYTECODE (set in some shells and CI
    images). An installed daemon runs from its compiled bytecode; without it every start
    recompiles the sources and the idle daemon holds ~2 MiB more, which no user would see."""
    return {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}


class OursTarget(Target):
    """pycontainerd started as `.venv/bin/pycontainerd --root R --state S --address A --config C`;
    with `cri` its CRI plugin is on, configured as the containerd fixture configures containerd's
    (same sandbox image, registries and CNI conflist: bridge + host-local on a network of its own)."""

    def __init__(self, cri: CriOptions | None = None) -> None:
        base = Path(tempfile.mkdtemp(prefix="pycd-bench-ours-", dir="/tmp"))
        super().__init__("ours", "pycontainerd", str(base / "pycd.sock"), "a", base)
        self.base: Path = base
        self.config = self.base / "config.toml"
        self.cri = cri.resolved() if cri is not None else None
        if self.cri is None:
            self.config.write_text('version = 2\ndisabled_plugins = ["io.containerd.grpc.v1.cri"]\n')
        else:
            (base / "net.d").mkdir()
            (base / "net.d" / "10-pycd.conflist").write_text(json.dumps(cni_conflist(self.cri, base / "cni-ipam")))
            self.config.write_text("version = 2\n" + cri_config(base, self.cri, "overlayfs"))
        self.log = self.base / "daemon.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self._ip_forward: str | None = None

    def start(self) -> None:
        with contextlib.suppress(OSError):
            self._ip_forward = IP_FORWARD.read_text()  # the bridge plugin (isGateway) turns it on
        exe = Path(sys.executable).parent / "pycontainerd"
        if not exe.exists():
            exe = REPO / ".venv" / "bin" / "pycontainerd"
        logf = open(self.log, "ab")  # noqa: SIM115 - handed to the child
        self.proc = subprocess.Popen([str(exe), "--root", str(self.base / "root"), "--state", str(self.base / "state"),
                                      "--address", self.address, "--config", str(self.config)]
                                     + (["--log-level", os.environ["PYCD_BENCH_LOG_LEVEL"]]
                                        if os.environ.get("PYCD_BENCH_LOG_LEVEL") else []),
                                     stdout=logf, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                     start_new_session=True, env=daemon_env())
        logf.close()
        self.daemon_pid = self.proc.pid
        proc = self.proc

        def up() -> bool:
            if proc.poll() is not None:
                raise RuntimeError(f"pycontainerd exited with {proc.returncode}: "
                                   f"{self.log.read_text(errors='replace')[-1500:]}")
            return os.path.exists(self.address) and self.ctr("version", check=False, timeout=10).returncode == 0

        wait_for(up, 60, "pycontainerd to answer `ctr version`", interval=0.05)

    def close(self) -> None:
        shims = self.shim_pids()
        kill_pids([c for s in shims for c in children_of(s)])
        kill_pids(shims)
        if self.proc is not None:
            stop_process(self.proc)
        if self.cri is not None:  # what the CNI plugins left on the host (the pods were removed first)
            remove_iptables_rules(self.cri.network_name)
            subprocess.run(["ip", "link", "del", self.cri.bridge], capture_output=True, check=False, timeout=30)
            if self._ip_forward is not None:
                with contextlib.suppress(OSError):
                    IP_FORWARD.write_text(self._ip_forward)
        unmount_all(str(self.base))
        if not os.environ.get("PYCD_KEEP_TMP") and not unmount_all(str(self.base)):
            remove_tree(self.base)


class ContainerdTarget(Target):
    def __init__(self, cri: CriOptions | None = None) -> None:
        base = Path(tempfile.mkdtemp(prefix="pycd-bench-ctrd-", dir="/tmp"))
        self.c = Containerd(base, cri=cri)
        self.cri = self.c.cri
        super().__init__("containerd", "containerd", self.c.address, "b", base)
        self.base: Path = base

    def start(self) -> None:
        self.c.start()
        self.daemon_pid = self.c.pid

    def close(self) -> None:
        self.c.cleanup()
        if not os.environ.get("PYCD_KEEP_TMP") and not unmount_all(str(self.base)):
            remove_tree(self.base)
