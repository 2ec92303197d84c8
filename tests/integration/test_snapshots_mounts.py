"""pycontainerd.mount: option parsing, ro binds, and deep overlays by both long-option paths."""

from __future__ import annotations

import errno
import subprocess
from pathlib import Path

import pytest

from pycontainerd.mount import Mount, lookup, mount_all, parse_options, read_only, unmount_all
from pycontainerd.mount.deep_overlay import compact_lowerdir
from pycontainerd.mount.deep_overlay import mount as mount_deep_overlay
from pycontainerd.mountopts import MS_BIND, MS_RDONLY, MS_REC

pytestmark = pytest.mark.root


def _cleanup(prefix: Path) -> None:
    with open("/proc/self/mountinfo") as f:
        mps = [line.split()[4] for line in f if line.split()[4].startswith(str(prefix) + "/")]
    for mp in sorted(mps, key=len, reverse=True):
        subprocess.run(["umount", "-l", mp], check=False, capture_output=True)


def test_parse_options_and_read_only() -> None:
    p = parse_options(["ro", "rbind", "nosuid", "rprivate", "index=off", "lowerdir=/a:/b"])
    assert p.flags & MS_RDONLY
    assert p.flags & MS_BIND
    assert p.flags & MS_REC
    assert p.data == ["index=off", "lowerdir=/a:/b"]
    ro = read_only([Mount("overlay", "overlay", ["index=off", "workdir=/w", "upperdir=/u", "lowerdir=/l1:/l2"])])
    assert ro[0].options == ["index=off", "lowerdir=/u:/l1:/l2", "ro"]
    assert compact_lowerdir(["lowerdir=/x/s/1/fs:/x/s/22/fs", "upperdir=/x/s/3/fs"]) == (
        "/x/s",
        ["lowerdir=1/fs:22/fs", "upperdir=/x/s/3/fs"],
    )


def test_ro_bind_is_read_only(tmp_path: Path) -> None:
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.mkdir()
    dst.mkdir()
    try:
        mount_all([Mount("bind", str(src), ["ro", "rbind"])], dst)
        assert lookup(dst).mountpoint == str(dst)
        with pytest.raises(OSError) as exc:
            (dst / "f").write_text("x")
        assert exc.value.errno == errno.EROFS
    finally:
        unmount_all(dst)
        _cleanup(tmp_path)
    assert lookup(dst).mountpoint != str(dst)


@pytest.mark.parametrize("fsapi", [True, False], ids=["fsconfig-lowerdir+", "chdir-helper"])
def test_deep_overlay_beyond_a_page_of_options(fsapi: bool, tmp_path: Path) -> None:
    base = tmp_path / ("long-directory-name-" * 3) / "snapshots"
    lowers = []
    for i in range(70):
        d = base / str(i) / "fs"
        d.mkdir(parents=True)
        (d / f"f{i}").write_text(str(i))
        lowers.append(str(d))
    upper, work, target = tmp_path / "upper", tmp_path / "work", tmp_path / "merged"
    for d in (upper, work, target):
        d.mkdir()
    data = [f"lowerdir={':'.join(reversed(lowers))}", f"upperdir={upper}", f"workdir={work}"]
    assert len(",".join(data)) > 4096
    try:
        mount_deep_overlay("overlay", str(target), 0, data, fsapi=fsapi)
        assert len(list(target.iterdir())) == 70
        (target / "new").write_text("x")
        assert (upper / "new").exists()
    finally:
        unmount_all(target)
        _cleanup(tmp_path)
