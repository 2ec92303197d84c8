"""Helpers for the shim integration tests: a busybox rootfs, OCI bundles, FIFOs, cleanup.

The rootfs is built once per session from Debian's busybox-static; each container gets it
as the lower layer of a real overlay mount that the shim performs (``rootfs`` mounts in
``create``), like containerd's overlayfs snapshotter mounts.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from tests.fixtures.procs import wait_for_async

BUSYBOX = "/bin/busybox"
APPLETS = ["sh", "cat", "echo", "true", "false", "sleep", "ls", "ps", "touch", "stty", "tty", "env", "id", "kill"]


def build_rootfs(root: Path) -> Path:
    rootfs = root / "busybox-rootfs"
    (rootfs / "bin").mkdir(parents=True)
    shutil.copy(BUSYBOX, rootfs / "bin" / "busybox")
    for applet in APPLETS:
        os.symlink("busybox", rootfs / "bin" / applet)
    for d in ("proc", "dev", "sys", "tmp", "etc"):
        (rootfs / d).mkdir()
    return rootfs


def base_spec(root: Path) -> dict[str, Any]:
    d = root / "specgen"
    d.mkdir()
    subprocess.run(["runc", "spec"], cwd=d, check=True)
    spec: dict[str, Any] = json.loads((d / "config.json").read_text())
    spec["process"].pop("oomScoreAdj", None)
    spec["root"] = {"path": "rootfs", "readonly": False}
    spec["hostname"] = "shimtest"
    return spec


class Bundle:
    def __init__(self, path: Path, rootfs_lower: Path) -> None:
        self.path = path
        self.upper = path.parent / f"{path.name}-upper"
        self.work = path.parent / f"{path.name}-work"
        self.upper.mkdir()
        self.work.mkdir()
        self.lower = rootfs_lower

    @property
    def rootfs_mounts(self) -> list[dict[str, Any]]:
        return [
            {
                "type": "overlay",
                "source": "overlay",
                "target": "",
                "options": [f"lowerdir={self.lower}", f"upperdir={self.upper}", f"workdir={self.work}"],
            }
        ]

    def fifo(self, name: str) -> str:
        path = self.path / name
        os.mkfifo(path, 0o600)
        return str(path)


def make_bundle(base: Path, spec: dict[str, Any], lower: Path, name: str, args: list[str], **process: Any) -> Bundle:
    path = base / name
    path.mkdir()
    s = json.loads(json.dumps(spec))
    s["process"]["args"] = args
    s["process"]["terminal"] = False
    s["process"].update(process)
    (path / "config.json").write_text(json.dumps(s))
    return Bundle(path, lower)


class FifoReader:
    """Client side of a stdout/stderr FIFO, opened like ctr does (O_RDONLY|O_NONBLOCK)."""

    def __init__(self, path: str) -> None:
        self.fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
        self.data = bytearray()

    def poll(self) -> bool:
        """Read what is there; True at EOF (all writers closed)."""
        while True:
            try:
                chunk = os.read(self.fd, 65536)
            except BlockingIOError:
                return False
            if not chunk:
                return True
            self.data += chunk

    async def read_until_eof(self, timeout: float = 10.0) -> bytes:
        try:
            await wait_for_async(self.poll, timeout, "EOF on the fifo")
        except TimeoutError as exc:
            raise TimeoutError(f"{exc}; got {bytes(self.data)!r}") from None
        return bytes(self.data)

    async def read_until(self, needle: bytes, timeout: float = 10.0) -> bytes:
        def seen() -> bool:
            self.poll()
            return needle in self.data

        try:
            await wait_for_async(seen, timeout, f"{needle!r} on the fifo")
        except TimeoutError as exc:
            raise TimeoutError(f"{exc}; got {bytes(self.data)!r}") from None
        return bytes(self.data)

    def close(self) -> None:
        os.close(self.fd)


async def poll_until(cond: Callable[[], bool | Awaitable[bool]], timeout: float = 10.0, what: str = "") -> None:
    """``wait_for_async`` with this module's defaults."""
    await wait_for_async(cond, timeout, what or repr(cond))


def pid_alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ")[-1].split()[0] != "Z"
    except OSError:
        return False


def mounts_under(path: Path) -> list[str]:
    prefix = str(path)
    with open("/proc/self/mountinfo") as f:
        return [line.split()[4] for line in f if line.split()[4].startswith(prefix)]


def kill_pid(pid: int) -> None:
    try:
        os.kill(pid, 9)
    except ProcessLookupError:
        pass


def cleanup_container(runtime_root: str, container_id: str, shim_pid: int, bundle: Path) -> None:
    """Last-resort cleanup (test failed half-way): container, shim, mounts."""
    subprocess.run(
        ["runc", "--root", runtime_root, "delete", "--force", container_id], capture_output=True, check=False
    )
    if shim_pid:
        kill_pid(shim_pid)
    for m in reversed(mounts_under(bundle)):
        subprocess.run(["umount", "-l", m], capture_output=True, check=False)
