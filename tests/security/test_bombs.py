"""Decompression bombs: the daemon's memory stays bounded while it unpacks a layer whatever
its compression ratio (issue 13, finding 4).

A 131 KiB zstd layer (4 GiB of zeros) used to OOM-kill the daemon in a 2 GiB cgroup, and a
4 MB gzip bomb peaked at 1.6 GB RSS: one input chunk was decompressed in one go.  Here a real
daemon unpacks (``ctr images import``, which applies the layer through the daemon's Diff
service) an image whose one layer is a file of 1 GiB of zeros, gzip or zstd, and its peak
RSS (VmHWM, reset through ``/proc/PID/clear_refs`` once idle) must stay within twice its idle
RSS.  The layers are generated streaming: the test itself holds a few MiB.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.images import LayerBlob, OCILayout, build_image, export_archive, layer_media_type
from tests.integration.daemon import Daemon, running_daemon

pytestmark = pytest.mark.root

MiB = 1 << 20
BOMB_SIZE = 1 << 30  # the file of zeros in the layer
_ZEROS = bytes(4 * MiB)


@pytest.fixture
def daemon() -> Iterator[Daemon]:
    if os.geteuid() != 0:
        pytest.skip("needs root")
    if not shutil.which("ctr"):
        pytest.skip("the real ctr (Debian package containerd) is not installed")
    with running_daemon() as d:
        yield d


def _bomb_tar_parts(size: int) -> Iterator[bytes]:
    """A tar holding one regular file ``zeros`` of ``size`` zero bytes, in pieces."""
    ti = tarfile.TarInfo("zeros")
    ti.size, ti.mode, ti.mtime = size, 0o644, 1_704_067_200
    yield ti.tobuf(format=tarfile.PAX_FORMAT)
    left = size
    while left:
        n = min(left, len(_ZEROS))
        yield _ZEROS if n == len(_ZEROS) else bytes(n)
        left -= n
    yield bytes(-size % 512 + 1024)  # padding, then the end-of-archive blocks


def _bomb_layer(layout: OCILayout, compression: str, size: int) -> LayerBlob:
    comp: Any
    if compression == "gzip":
        from isal import isal_zlib

        comp = isal_zlib.compressobj(3, isal_zlib.DEFLATED, 31)
    else:
        import zstandard

        comp = zstandard.ZstdCompressor(level=3).compressobj()
    tar_hash = hashlib.sha256()
    tar_size = 0
    out: list[bytes] = []
    for part in _bomb_tar_parts(size):
        tar_hash.update(part)
        tar_size += len(part)
        out.append(comp.compress(part))
    out.append(comp.flush())
    blob = b"".join(out)
    desc = layout.write_blob(blob, layer_media_type(compression))  # type: ignore[arg-type]
    return LayerBlob(desc, "sha256:" + tar_hash.hexdigest(), tar_size)


def _status_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(f"no {field} in /proc/{pid}/status")


def _unpacked_file(daemon: Daemon) -> Path:
    found = list(daemon.root.glob("io.containerd.snapshotter.v1.*/snapshots/*/fs/zeros"))
    assert len(found) == 1, found
    return found[0]


@pytest.mark.parametrize("compression", ["zstd", "gzip"])
def test_unpacking_a_bomb_layer_keeps_daemon_memory_bounded(daemon: Daemon, tmp_path: Path,
                                                             compression: str) -> None:
    layout = OCILayout(tmp_path / "layout")
    layer = _bomb_layer(layout, compression, BOMB_SIZE)
    assert layer.descriptor.size < 8 * MiB  # a bomb: 1 GiB in a few MiB (zstd: ~100 KiB)
    name = f"docker.io/library/bomb-{compression}:latest"
    img = build_image(tmp_path / "layout", [layer], name=name)
    archive = export_archive(img, tmp_path / "bomb.tar")

    # idle: one round trip first so the daemon has loaded what serving a request needs
    daemon.ctr("images", "ls")
    pid = daemon.pid
    idle_kib = _status_kib(pid, "VmRSS")
    Path(f"/proc/{pid}/clear_refs").write_text("5")  # VmHWM := VmRSS
    daemon.ctr("images", "import", str(archive), timeout=600)
    peak_kib = _status_kib(pid, "VmHWM")

    print(f"{compression} bomb ({layer.descriptor.size} B -> {BOMB_SIZE} B): daemon idle VmRSS "
          f"{idle_kib / 1024:.0f} MiB, peak VmHWM while unpacking {peak_kib / 1024:.0f} MiB")
    assert daemon.proc is not None and daemon.proc.poll() is None, "the daemon died"
    daemon.ctr("version")
    assert name in daemon.ctr("images", "ls", "-q").stdout.split()
    zeros = _unpacked_file(daemon)
    assert zeros.stat().st_size == BOMB_SIZE
    assert peak_kib <= 2 * idle_kib, (
        f"daemon peak RSS {peak_kib / 1024:.0f} MiB while unpacking a {layer.descriptor.size} B "
        f"{compression} layer of 1 GiB zeros exceeds twice its idle RSS ({idle_kib / 1024:.0f} MiB)")
