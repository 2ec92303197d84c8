"""Issue 3: kill -9 of the daemon in the middle of a pull loses nothing committed; the next pull completes."""

from __future__ import annotations

import hashlib
import os
import subprocess
import time
from pathlib import Path

import pytest

from tests.fixtures import images
from tests.fixtures.registry import Registry

from .daemon import CTR, Daemon

pytestmark = pytest.mark.root


def blobs_dir(daemon: Daemon) -> Path:
    return daemon.root / "io.containerd.content.v1.content" / "blobs" / "sha256"


def test_kill9_during_pull_keeps_committed_blobs(daemon: Daemon, registry: Registry, tmp_path: Path) -> None:
    # four incompressible layers of 12 MiB: the pull takes long enough to be interrupted
    layers = [[images.f(f"data/blob{i}", os.urandom(12 << 20))] for i in range(4)]
    img = images.build_image(tmp_path / "big", layers, name="docker.io/library/crashy:latest")
    images.push_to_registry(img, registry.url, "library/crashy", "latest")
    ref = f"{registry.host}/library/crashy:latest"

    pull = subprocess.Popen([CTR, "-a", daemon.address, "images", "pull", "--plain-http", ref],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    layer_digests = {d.digest for d in img.layers}
    try:
        deadline = time.monotonic() + 60
        seen: set[str] = set()
        while time.monotonic() < deadline and not seen & layer_digests:
            r = subprocess.run([CTR, "-a", daemon.address, "content", "ls", "-q"], capture_output=True, text=True)
            seen = set(r.stdout.split())
        assert seen & layer_digests, "no layer was committed within 60 s"
        daemon.kill9()  # what the daemon had answered as committed is in `seen`
    finally:
        pull.wait(60)

    daemon.start()
    listed = set(daemon.ctr("content", "ls", "-q").stdout.split())
    assert seen <= listed, f"committed before the crash but lost: {seen - listed}"
    for digest in seen:
        data = (blobs_dir(daemon) / digest.split(":")[1]).read_bytes()
        assert "sha256:" + hashlib.sha256(data).hexdigest() == digest
    # the next pull completes and the image runs
    daemon.ctr("images", "pull", "--plain-http", ref, timeout=300)
    check = daemon.ctr("images", "check").stdout
    assert "complete" in check and "true" in check.splitlines()[-1]
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    daemon.ctr("images", "mount", ref, str(mnt))
    try:
        for i, layer in enumerate(layers):
            assert (mnt / "data" / f"blob{i}").read_bytes() == layer[0].data
    finally:
        daemon.ctr("images", "unmount", str(mnt))
    # no leftover ingests once the pull succeeded
    assert daemon.ctr("content", "active").stdout.strip().splitlines()[1:] == []
