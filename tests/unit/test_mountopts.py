"""pycontainerd.mountopts: the mount option table shared by the daemon and the shim."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pycontainerd import errdefs, mountopts
from pycontainerd.mount import mount as daemon_mount
from pycontainerd.mountopts import MS_BIND, MS_NOSUID, MS_PRIVATE, MS_RDONLY, MS_REC, MS_SHARED


def test_parse_flags_propagation_and_data() -> None:
    flags, prop, data = mountopts.parse(["ro", "nosuid", "rbind", "rprivate", "index=off", "lowerdir=/a:/b"])
    assert flags == MS_RDONLY | MS_NOSUID | MS_BIND | MS_REC
    assert prop == MS_PRIVATE | MS_REC
    assert data == ["index=off", "lowerdir=/a:/b"]


def test_parse_applies_words_in_order() -> None:
    assert mountopts.parse(["ro", "rw"])[0] == 0
    assert mountopts.parse(["rw", "ro"])[0] == MS_RDONLY
    assert mountopts.parse(["defaults"]) == (0, 0, [])
    # propagation words accumulate
    assert mountopts.parse(["shared", "rprivate"])[1] == MS_SHARED | MS_PRIVATE | MS_REC


def test_daemon_and_shim_parse_with_the_one_implementation() -> None:
    # the daemon's package and the shim use mount.core's parse_options, over the shared table
    from pycontainerd.mount import core

    assert daemon_mount.parse_options is core.parse_options
    opts = ["rbind", "ro", "nodev", "rslave", "upperdir=/u", "workdir=/w"]
    flags, prop, data = mountopts.parse(opts)
    parsed = core.parse_options(opts)
    assert (parsed.flags, parsed.propagation, parsed.data) == (flags, prop, data)


def test_loop_is_refused() -> None:
    # the shim passed the word through to mount(2) before it used mount.core: refused on both sides now
    with pytest.raises(errdefs.Unimplemented):
        daemon_mount.parse_options(["ro", "loop"])


def test_shim_imports_no_asyncio() -> None:
    # every shim process imports these; asyncio would cost ~10 MiB each; subprocess (deep
    # overlays on old kernels only) and the daemon's mount helpers (mount.mount) are not needed
    code = (
        "import sys\n"
        "import pycontainerd.shim.main, pycontainerd.shim.service, pycontainerd.mount.core\n"
        "print(sorted(m for m in sys.modules if m in ('asyncio', 'subprocess', 'pycontainerd.mount.mount')"
        " or m.startswith('asyncio.')))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert out.stdout.strip() == "[]"


# -- resolve_in_root: a mount target never leaves the mount point -------------------------------
def test_resolve_in_root_clamps_dotdot_and_follows_links_inside(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "a" / "b").mkdir(parents=True)
    (root / "a" / "abs").symlink_to("/etc")
    (root / "a" / "up").symlink_to("../../../..")
    (root / "a" / "rel").symlink_to("b/../x")
    r = str(root)
    assert mountopts.resolve_in_root(r, "") == r
    assert mountopts.resolve_in_root(r, "/") == r
    assert mountopts.resolve_in_root(r, "../../../../tmp/x/mt") == f"{r}/tmp/x/mt"
    assert mountopts.resolve_in_root(r, "/a/b/../../..") == r
    assert mountopts.resolve_in_root(r, "a/./b//c") == f"{r}/a/b/c"
    assert mountopts.resolve_in_root(r, "a/abs/passwd") == f"{r}/etc/passwd"
    assert mountopts.resolve_in_root(r, "a/up/tmp") == f"{r}/tmp"
    assert mountopts.resolve_in_root(r, "a/rel/y") == f"{r}/a/x/y"


def test_resolve_in_root_symlink_loop_is_eloop(tmp_path: Path) -> None:
    (tmp_path / "loop").symlink_to("loop")
    with pytest.raises(OSError) as exc:
        mountopts.resolve_in_root(str(tmp_path), "loop/x")
    assert exc.value.errno == errno.ELOOP


def test_mountpoints_under_deepest_first_and_unescaped(tmp_path: Path) -> None:
    info = tmp_path / "mountinfo"
    info.write_text(
        "1 0 8:1 / / rw - ext4 /dev/sda1 rw\n"
        "2 1 0:5 / /b/rootfs rw - overlay overlay rw\n"
        "3 2 0:6 / /b/rootfs/tmp/x\\040y rw - tmpfs t rw\n"
        "4 1 0:7 / /b/rootfs2 rw - tmpfs t rw\n"
    )
    assert mountopts.mountpoints_under("/b/rootfs", mountinfo=str(info)) == ["/b/rootfs/tmp/x y"]
    assert mountopts.mountpoints_under("/b/rootfs", include_root=True, mountinfo=str(info)) == [
        "/b/rootfs/tmp/x y",
        "/b/rootfs",
    ]


def test_pinned_in_root_names_the_opened_directory(tmp_path: Path) -> None:
    (tmp_path / "root" / "a").mkdir(parents=True)
    with mountopts.pinned_in_root(str(tmp_path / "root"), str(tmp_path / "root" / "a")) as name:
        assert name.startswith("/proc/self/fd/")
        assert os.readlink(name) == str(tmp_path / "root" / "a")
    with mountopts.pinned_in_root(str(tmp_path / "root"), str(tmp_path / "root")) as name:
        assert os.readlink(name) == str(tmp_path / "root")


def test_pinned_in_root_refuses_what_was_swapped_since_the_resolution(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "a").mkdir(parents=True)
    (tmp_path / "outside").mkdir()
    target = mountopts.resolve_in_root(str(root), "a/b")
    # an intermediate directory became a symlink to the host, then the last one did
    os.rmdir(root / "a")
    (root / "a").symlink_to(tmp_path / "outside")
    (tmp_path / "outside" / "b").mkdir()
    with pytest.raises(PermissionError, match="no longer under"), mountopts.pinned_in_root(str(root), target):
        pass
    os.unlink(root / "a")
    (root / "a").mkdir()
    (root / "a" / "b").symlink_to(tmp_path / "outside")
    with pytest.raises(PermissionError), mountopts.pinned_in_root(str(root), target):
        pass

