"""`make demo`: start pycontainerd (if it is not running), import a locally built busybox image, run it.

Uses the default paths (/run/pycontainerd/pycontainerd.sock, /var/lib/pycontainerd) unless
PYCD_DEMO_ADDRESS is set. The daemon keeps running afterwards; the last lines say how to
use it with the real ctr and how to stop it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.fixtures.images import build_busybox_image, export_archive  # noqa: E402

BIN = Path(sys.executable).parent
ADDRESS = os.environ.get("PYCD_DEMO_ADDRESS", "/run/pycontainerd/pycontainerd.sock")
LOG = Path("/var/log/pycontainerd-demo.log")
IMAGE = "docker.io/library/busybox:latest"


def ctr(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    cmd = ["ctr", "-a", ADDRESS, *args]
    print("$ " + " ".join(cmd), flush=True)
    r = subprocess.run(cmd, text=True)
    if check and r.returncode != 0:
        raise SystemExit(f"demo: `{' '.join(cmd)}` failed with exit code {r.returncode}")
    return r


def daemon_up() -> bool:
    return subprocess.run(["ctr", "-a", ADDRESS, "version"], capture_output=True, timeout=15).returncode == 0


def main() -> None:
    if os.geteuid() != 0:
        raise SystemExit("demo: run as root (containers need mounts, namespaces and cgroups)")
    if not daemon_up():
        print(f"starting pycontainerd on {ADDRESS} (log: {LOG})", flush=True)
        with open(LOG, "ab") as log:
            subprocess.Popen([str(BIN / "pycontainerd"), "--address", ADDRESS], stdout=log, stderr=log,
                             start_new_session=True)
        deadline = time.monotonic() + 30
        while not daemon_up():
            if time.monotonic() > deadline:
                raise SystemExit(f"demo: the daemon did not come up; see {LOG}")
            time.sleep(0.1)
    ctr("version")
    work = Path(tempfile.mkdtemp(prefix="pycd-demo-"))
    try:
        img = build_busybox_image(work / "layout", name=IMAGE)
        archive = export_archive(img, work / "busybox.tar")
        ctr("images", "import", str(archive))
        ctr("images", "ls")
        ctr("run", "--rm", IMAGE, "demo-hello", "sh", "-c",
            'echo "hello from a container run by pycontainerd: $(uname -n), pid $$"')
        subprocess.run([str(BIN / "pyctr"), "-a", ADDRESS, "images", "ls"], check=False)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    pid = subprocess.run(["pgrep", "-f", f"pycontainerd --address {ADDRESS}"], capture_output=True, text=True).stdout
    print()
    print(f"pycontainerd is running on {ADDRESS}. Try:")
    print(f"  ctr -a {ADDRESS} run --rm -t {IMAGE} shell sh")
    print(f"  {BIN}/pyctr -a {ADDRESS} plugins ls")
    if pid.strip():
        print(f"Stop it with: kill {pid.split()[0]}")


if __name__ == "__main__":
    main()
