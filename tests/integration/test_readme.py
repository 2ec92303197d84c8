"""The README is a checked document: its ``sh`` blocks run, in order, and every command succeeds.

Blocks preceded by ``<!-- readme-test: skip -->`` are left out (``make demo``, ``make test``,
systemd, a CRI runtime we do not have).  Everything else runs as written, as root, with the
real paths (``/etc/pycontainerd``, ``/run/pycontainerd``, ``/var/lib/pycontainerd``,
``/usr/local/bin``, port 5000) -- but in a throwaway world, so the machine is not touched:

- ``unshare --mount --pid --net --fork``: a private mount table, a private process tree (when
  the script's shell ends, the kernel kills every process left in it: the daemon, shims,
  containers, the registry) and a private network with only ``lo`` (127.0.0.1:5000 is ours);
- ``/etc``, ``/usr/local``, ``/var/lib``, ``/var/log`` and ``/run`` become overlayfs mounts whose
  writes land in a temp dir (copy-on-write: the host's files are read, never written);
  ``/var/lib/pycontainerd`` and ``/run/pycontainerd`` are fresh directories on a real file
  system (the daemon's overlayfs snapshots cannot live on an overlay), and ``/run/systemd`` is
  hidden so ``systemctl`` in the Makefile cannot reach a host systemd;
- ``/tmp`` is a fresh tmpfs (a checkout under ``/tmp`` is bound back at its own path).

What remains shared is the repository checkout (``make`` runs in it; its ``.venv`` must be
installed already, so ``make install`` has nothing to do -- the test refreshes the stamp of an
up-to-date ``.venv`` rather than reinstalling it) and cgroupfs (the containers' cgroups, removed
as they exit).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from .daemon import REPO, unmount_all

pytestmark = pytest.mark.root

README = REPO / "README.md"
SKIP = "<!-- readme-test: skip -->"


def shell_blocks(text: str) -> list[str]:
    """The ```sh blocks of a Markdown text, in order, without those right after the skip marker."""
    blocks = []
    for m in re.finditer(r"^```sh\n(.*?)^```", text, re.M | re.S):
        before = text[:m.start()].rstrip().splitlines()
        if before and before[-1].strip() == SKIP:
            continue
        blocks.append(m.group(1))
    return blocks


def test_shell_blocks_are_found() -> None:
    text = f"a\n```sh\necho 1\n```\n{SKIP}\n```sh\nmake test\n```\n```\nnot sh\n```\n```sh\necho 2\n```\n"
    assert shell_blocks(text) == ["echo 1\n", "echo 2\n"]


SETUP = r"""
set -eu
T="$1"
mount --make-rprivate /
ip link set lo up
for d in etc usr/local var/lib var/log run; do
    n=$(echo "$d" | tr / _)
    mkdir -p "$T/upper/$n" "$T/work/$n"
    mount -t overlay overlay -o "lowerdir=/$d,upperdir=$T/upper/$n,workdir=$T/work/$n" "/$d"
done
mkdir -p /var/lib/pycontainerd /run/pycontainerd /run/systemd "$T/root" "$T/state"
mount --bind "$T/root" /var/lib/pycontainerd
mount --bind "$T/state" /run/pycontainerd
mount -t tmpfs tmpfs /run/systemd
mkdir -p /run/readme-test
mount --bind "$T" /run/readme-test
T=/run/readme-test
# a fresh /tmp; a checkout that lives under /tmp (CI clones anywhere) is bound back at its own
# path, since its .venv's scripts name that path
R=$(realpath "$2")
case "$R" in
    /tmp/*) mkdir -p /run/readme-repo; mount --bind "$R" /run/readme-repo ;;
esac
mount -t tmpfs tmpfs /tmp
case "$R" in
    /tmp/*) mkdir -p "$R"; mount --bind /run/readme-repo "$R" ;;
esac
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
cd "$2"
exec bash -euo pipefail -x "$T/readme.sh"
"""


def test_readme_commands_succeed_in_order() -> None:
    for tool in ("unshare", "ip", "docker-registry", "ctr", "runc"):
        if shutil.which(tool) is None and not Path(f"/usr/bin/{tool}").exists():
            pytest.skip(f"{tool} is not installed (make deps)")
    venv = REPO / ".venv"
    if Path(sys.executable).parent != venv / "bin":
        pytest.skip("the README test runs from the repository's own .venv")
    stamp = venv / ".installed"
    if not stamp.exists() or stamp.stat().st_mtime < (REPO / "pyproject.toml").stat().st_mtime:
        stamp.touch()  # this .venv is the one running this test: `make install` has nothing to do
    blocks = shell_blocks(README.read_text())
    assert len(blocks) >= 5
    base = Path(tempfile.mkdtemp(prefix="pycd-readme-", dir="/tmp"))
    try:
        (base / "readme.sh").write_text("\n".join(blocks))
        (base / "setup.sh").write_text(SETUP)
        r = subprocess.run(["unshare", "--mount", "--pid", "--net", "--fork", "--mount-proc",
                            "bash", str(base / "setup.sh"), str(base), str(REPO)],
                           capture_output=True, text=True, timeout=300,
                           env={k: v for k, v in os.environ.items() if not k.startswith(("CONTAINERD_", "PYCTR_"))})
        log = base / "upper" / "var_log" / "pycontainerd.log"
        daemon_log = log.read_text()[-3000:] if log.exists() else "(no daemon log)"
        assert r.returncode == 0, (f"README commands failed ({r.returncode}):\n{r.stderr[-6000:]}\n"
                                   f"stdout:\n{r.stdout[-3000:]}\ndaemon log:\n{daemon_log}")
        out = r.stdout
        assert out.count("hello\n") >= 2  # pyctr run and ctr run
        assert "Server:" in out
        # and nothing leaked out of the throwaway world
        for path in ("/etc/pycontainerd/config.toml", "/usr/local/bin/pyctr", "/var/lib/pycontainerd-registry",
                     "/etc/systemd/system/pycontainerd.service"):
            assert not Path(path).exists() or path in PRE_EXISTING, f"{path} leaked out of the test"
    finally:
        unmount_all(str(base))
        subprocess.run(["rm", "-rf", "--one-file-system", str(base)], check=False)


PRE_EXISTING = {p for p in ("/etc/pycontainerd/config.toml", "/usr/local/bin/pyctr", "/var/lib/pycontainerd-registry",
                            "/etc/systemd/system/pycontainerd.service") if Path(p).exists()}
