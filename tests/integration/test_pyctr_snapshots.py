"""pyctr snapshots diff goes through the client library (client.diff), like every pyctr command."""

from __future__ import annotations

import gzip
import io
import subprocess
import tarfile
from pathlib import Path

import pytest

from .daemon import BIN, Daemon
from .test_issue4_snapshots import snapshot_mounted

pytestmark = pytest.mark.root


def test_pyctr_snapshots_diff_writes_the_change_as_a_layer(daemon: Daemon, busybox_archive: Path,
                                                           tmp_path: Path) -> None:
    daemon.ctr("images", "import", str(busybox_archive))
    top = daemon.ctr("snapshots", "ls").stdout.splitlines()[-1].split()[0]
    daemon.pyctr("snapshots", "prepare", "work", top)
    with snapshot_mounted(daemon, "work", tmp_path / "m") as mnt:
        (mnt / "newfile").write_bytes(b"hello\n")
    r = subprocess.run([str(BIN / "pyctr"), "-a", daemon.address, "snapshots", "diff", "work"], capture_output=True,
                       timeout=60)
    assert r.returncode == 0, r.stderr
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(r.stdout))) as tf:
        member = tf.extractfile("newfile")
        assert member is not None and member.read() == b"hello\n"
    daemon.pyctr("snapshots", "rm", "work")
