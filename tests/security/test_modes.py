"""A local user who is not root reaches nothing under the daemon's root and state directories.

Issue 13, findings 2 and 3.  With the daemon's root and state under 0755 parents (as
``/var/lib`` and ``/run`` are), a container running with a secret in its environment and a
setuid-root busybox planted in its rootfs, ``nobody`` (``setpriv --reuid 65534 --regid 65534
--clear-groups``) tries to open every file and socket the walk (as root) finds, to list
every directory and to execute the setuid binary through the bundle's ``rootfs`` path
(CVE-2021-41103: that was a local root; busybox drops the privilege itself, but executing it
at all is what must fail: a setuid shell that keeps it, ``bash -p``, is root).  Everything
must fail.  Then the layout an older
version left (0755 plugin directories, 0711 bundles, a 0644 database and blobs) is restored
while the container keeps running, the daemon restarted, and the probe repeated: an upgrade
closes it all.  Containers whose user is not root still run (rootfs access happens in the
container's mount namespace, after pivot_root, so the host-side parents do not matter), and
so do containers in a user namespace (runc mounts their rootfs as the mapped root: their
bundle is 0710 with that root's group, as in containerd).
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures import images
from tests.fixtures.procs import wait_for
from tests.integration.daemon import Daemon, running_daemon

pytestmark = pytest.mark.root

IMAGE = "docker.io/library/busybox:latest"
USER_IMAGE = "docker.io/library/busybox-nobody:latest"  # the same rootfs with USER 65534
SECRET = "pycd-issue13-" + secrets.token_hex(8)
NOBODY = ["setpriv", "--reuid", "65534", "--regid", "65534", "--clear-groups"]

# Run as nobody; reads the paths as JSON on stdin, prints what it managed to do.
PROBE = r"""
import json, os, socket, subprocess, sys
req = json.load(sys.stdin)
out = {"uid": os.getuid(), "euid": os.geteuid(), "read": [], "listed": [], "connected": [], "executed": []}
for p in req["files"]:
    try:
        fd = os.open(p, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_NOCTTY | os.O_CLOEXEC)
    except OSError:
        continue
    os.close(fd)
    out["read"].append(p)
for p in req["dirs"]:
    try:
        os.listdir(p)
    except OSError:
        continue
    out["listed"].append(p)
for p in req["sockets"]:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.connect(p)
    except OSError:
        continue
    finally:
        s.close()
    out["connected"].append(p)
for p in req["execs"]:
    try:
        r = subprocess.run(["busybox", "id"], executable=p, capture_output=True, text=True, timeout=20)
    except OSError:
        continue
    out["executed"].append([p, r.returncode, r.stdout.strip()])
print(json.dumps(out))
"""


def as_nobody(files: list[str], dirs: list[str], sockets: list[str], execs: list[str]) -> dict[str, Any]:
    python = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else sys.executable
    r = subprocess.run([*NOBODY, python, "-I", "-c", PROBE],
                       input=json.dumps({"files": files, "dirs": dirs, "sockets": sockets, "execs": execs}),
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    out: dict[str, Any] = json.loads(r.stdout)
    assert out["uid"] == out["euid"] == 65534
    return out


def walk(tops: list[Path]) -> tuple[list[str], list[str], list[str]]:
    """Every regular file or fifo, directory and socket under ``tops`` (as root, symlinks not
    followed: a symlink in a rootfs points into the host's own /)."""
    files, dirs, socks = [], [], []
    for top in tops:
        for dirpath, dirnames, filenames in os.walk(top):
            dirs.append(dirpath)
            for name in filenames + dirnames:
                p = os.path.join(dirpath, name)
                m = os.lstat(p).st_mode
                if stat.S_ISSOCK(m):
                    socks.append(p)
                elif stat.S_ISREG(m) or stat.S_ISFIFO(m) or stat.S_ISCHR(m) or stat.S_ISBLK(m):
                    files.append(p)
    return files, dirs, socks


def tasks(d: Daemon) -> dict[str, str]:
    rows = d.ctr("tasks", "ls").stdout.splitlines()[1:]
    return {r.split()[0]: r.split()[2] for r in rows if r.strip()}


def remove_container(d: Daemon, cid: str) -> None:
    d.ctr("tasks", "kill", "-s", "SIGKILL", cid, check=False)
    if cid in tasks(d):
        wait_for(lambda: tasks(d).get(cid) in (None, "STOPPED"), 30, f"{cid} to stop")
    d.ctr("tasks", "rm", "-f", cid, check=False)
    d.ctr("containers", "rm", cid, check=False)


@pytest.fixture(scope="module")
def user_archive(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("nobody-image")
    img = images.build_busybox_image(tmp / "layout", name=USER_IMAGE, user="65534")
    return images.export_archive(img, tmp / "busybox-nobody.tar")


@pytest.fixture
def daemon(busybox_archive: Path) -> Iterator[Daemon]:
    if os.geteuid() != 0:
        pytest.skip("needs root")
    for tool in ("ctr", "setpriv", "runc"):
        if not shutil.which(tool):
            pytest.skip(f"{tool} is not installed")
    with running_daemon() as d:
        # root and state under parents everyone may enter (as /var/lib and /run are)
        os.chmod(d.base, 0o755)
        d.ctr("images", "import", str(busybox_archive), timeout=120)
        yield d


def loosen_like_the_old_version(d: Daemon, cid: str) -> None:
    """The modes the code before issue 13 created (the daemon is stopped, the container runs)."""
    for top in (d.root, d.state):
        os.chmod(top, 0o711)
        for child in top.iterdir():
            if child.is_dir() and not child.is_symlink():
                os.chmod(child, 0o755)
    task_dir = d.state / "io.containerd.runtime.v2.task"
    for p in (task_dir, task_dir / "default", task_dir / "default" / cid):
        os.chmod(p, 0o711)
    content = d.root / "io.containerd.content.v1.content"
    for p in (content / "blobs", content / "blobs" / "sha256", content / "ingest"):
        os.chmod(p, 0o755)
    for blob in (content / "blobs" / "sha256").iterdir():
        os.chmod(blob, 0o444)
    db = d.root / "io.containerd.metadata.v1.sqlite"
    for f in db.iterdir():
        os.chmod(f, 0o644)
    os.chmod(d.root / "io.containerd.snapshotter.v1.overlayfs" / "snapshots", 0o755)


def probe_everything(d: Daemon, suid: Path) -> None:
    files, dirs, socks = walk([d.root, d.state])
    # controls: the probe does read, list and execute what nobody may (a silent probe proves nothing)
    control_file = d.base / "config.toml"
    os.chmod(control_file, 0o644)
    out = as_nobody([*files, str(control_file)], [*dirs, str(d.base)], socks, [str(suid), "/bin/true"])
    assert str(control_file) in out["read"] and str(d.base) in out["listed"], out
    assert out["executed"][-1][:2] == ["/bin/true", 0], out
    problems = [f"read {p}" for p in out["read"] if p != str(control_file)]
    problems += [f"listed {p}" for p in out["listed"] if p != str(d.base)]
    problems += [f"connected to {p}" for p in out["connected"]]
    problems += [f"executed {p} (exit {rc}): {o}" for p, rc, o in out["executed"] if p != "/bin/true"]
    assert problems == [], f"nobody got at {len(problems)} things under root/state:\n" + "\n".join(problems)


def test_nobody_reads_lists_and_executes_nothing_under_root_and_state(daemon: Daemon) -> None:
    d = daemon
    cid = f"sec-{secrets.token_hex(4)}"
    d.ctr("run", "-d", "--env", f"SECRET_TOKEN={SECRET}", IMAGE, cid, "sleep", "1000", timeout=60)
    # a container whose output the daemon keeps (pyctr run -d): its log holds the secret too
    d.pyctr("run", "-d", IMAGE, f"{cid}-log", "sh", "-c", f"echo {SECRET}", timeout=60)
    try:
        wait_for(lambda: SECRET in d.pyctr("logs", f"{cid}-log").stdout, 30, "the secret in the kept log")
        assert tasks(d)[cid] == "RUNNING"
        rootfs = d.state / "io.containerd.runtime.v2.task" / "default" / cid / "rootfs"
        wait_for(lambda: (rootfs / "bin" / "busybox").exists(), 30, "the rootfs to be mounted")
        suid = rootfs / "suidbusybox"
        shutil.copyfile(rootfs / "bin" / "busybox", suid)
        os.chown(suid, 0, 0)
        os.chmod(suid, 0o4755)
        # the secret is in the database (what finding 3 is about) ...
        db_dir = d.root / "io.containerd.metadata.v1.sqlite"
        assert any(SECRET.encode() in f.read_bytes() for f in db_dir.iterdir()), "the env is not in meta.db?"
        # ... and nobody reaches it, the blobs, the snapshots, the bundle or the setuid binary
        probe_everything(d, suid)

        # an upgrade from the old layout: the running container's bundle, the database and
        # the blobs are closed when the new daemon starts
        d.stop()
        loosen_like_the_old_version(d, cid)
        with pytest.raises(AssertionError):
            probe_everything(d, suid)  # the old layout is open (the test can tell)
        d.start()
        probe_everything(d, suid)
        assert tasks(d)[cid] == "RUNNING"
        r = d.ctr("tasks", "exec", "--exec-id", "e1", cid, "sh", "-c", "echo $SECRET_TOKEN", timeout=60)
        assert r.stdout.strip() == SECRET
    finally:
        remove_container(d, cid)
        remove_container(d, f"{cid}-log")


def test_containers_whose_user_is_not_root_still_run(daemon: Daemon, user_archive: Path) -> None:
    d = daemon
    d.ctr("images", "import", str(user_archive), timeout=120)
    script = "id -u; grep -c nobody /etc/passwd; ls /bin >/dev/null && echo listed; echo w >/tmp/f && cat /tmp/f"
    # --user on the command line (our pyctr: ctr 1.6 has no --user) ...
    cid = f"sec-{secrets.token_hex(4)}"
    try:
        r = d.pyctr("run", "--rm", "--user", "65534", IMAGE, cid, "sh", "-c", script, check=False, timeout=60)
        assert r.returncode == 0, r.stderr
        assert r.stdout.split() == ["65534", "1", "listed", "w"]
    finally:
        remove_container(d, cid)
    # ... and USER 65534 in the image, with the real ctr
    cid = f"sec-{secrets.token_hex(4)}"
    try:
        r = d.ctr("run", "--rm", USER_IMAGE, cid, "sh", "-c", script, check=False, timeout=60)
        assert r.returncode == 0, r.stderr
        assert r.stdout.split() == ["65534", "1", "listed", "w"]
    finally:
        remove_container(d, cid)
    # ... and a container in a user namespace, whose mapped root must reach its bundle:
    # 0710 with the mapped root's group (containerd's layout), closed to everyone else
    cid = f"sec-{secrets.token_hex(4)}"
    try:
        d.ctr("run", "-d", "--uidmap", "0:100000:65536", "--gidmap", "0:100000:65536", IMAGE, cid,
              "sleep", "1000", timeout=60)
        st = (d.state / "io.containerd.runtime.v2.task" / "default" / cid).stat()
        assert (stat.S_IMODE(st.st_mode), st.st_gid) == (0o710, 100000)
        r = d.ctr("tasks", "exec", "--exec-id", "e1", cid, "sh", "-c", script, timeout=60)
        assert r.stdout.split() == ["0", "1", "listed", "w"]
    finally:
        remove_container(d, cid)
