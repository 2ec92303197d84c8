"""mount.core, the daemon's and the shim's one mount implementation: the mount(2) calls made for
each option behaviour (recorded, no root needed), overlay compaction, and the unmount policy.

The shim had its own copy until it moved here; where the two differed, containerd's behaviour
(``mount_linux.go``) is the one kept, and each such case has a test below."""

from __future__ import annotations

import ctypes
import errno
from pathlib import Path
from typing import Any

import pytest

from pycontainerd import errdefs, mountopts
from pycontainerd.mount import core
from pycontainerd.mountopts import (
    MNT_DETACH,
    MS_BIND,
    MS_NOSUID,
    MS_PRIVATE,
    MS_RDONLY,
    MS_REC,
    MS_REMOUNT,
    MS_SLAVE,
    UMOUNT_NOFOLLOW,
)
from pycontainerd.shim import service as shim_service

Call = tuple[str, str, str, int, str]


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> list[Call]:
    """mount(2) replaced by a recorder: (source, target, fstype, flags, data) per call."""
    seen: list[Call] = []

    def record(source: str, target: str, fstype: str, flags: int, data: str) -> None:
        seen.append((source, target, fstype, flags, data))

    monkeypatch.setattr(core, "_raw_mount", record)
    return seen


def test_plain_mount_is_one_call_with_flags_and_data(calls: list[Call]) -> None:
    core.mount_all([core.Mount("tmpfs", "tmpfs", ["nosuid", "size=1m", "mode=755"])], "/t")
    assert calls == [("tmpfs", "/t", "tmpfs", MS_NOSUID, "size=1m,mode=755")]


def test_read_only_bind_is_remounted_read_only_after_the_propagation(calls: list[Call]) -> None:
    # containerd: the mount, then the propagation, then the ro remount (the kernel ignores
    # MS_RDONLY on a bind's first call). The shim's copy remounted before the propagation.
    core.mount_all([core.Mount("bind", "/src", ["rbind", "ro", "rprivate"])], "/t")
    flags = MS_BIND | MS_REC | MS_RDONLY
    assert calls == [
        ("/src", "/t", "bind", flags, ""),
        ("", "/t", "", MS_PRIVATE | MS_REC, ""),
        ("", "/t", "", flags | MS_REMOUNT, ""),
    ]


def test_writable_bind_has_no_remount(calls: list[Call]) -> None:
    core.mount_all([core.Mount("bind", "/src", ["rbind", "rslave"])], "/t")
    assert calls == [("/src", "/t", "bind", MS_BIND | MS_REC, ""), ("", "/t", "", MS_SLAVE | MS_REC, "")]


def test_remount_without_data_skips_the_first_call(calls: list[Call]) -> None:
    # containerd calls mount(2) with the flags only for a new mount or a remount with data;
    # the shim's copy always made that call
    core.mount_all([core.Mount("none", "", ["remount", "ro"])], "/t")
    assert calls == []
    core.mount_all([core.Mount("tmpfs", "", ["remount", "size=2m"])], "/t")
    assert calls == [("", "/t", "tmpfs", MS_REMOUNT, "size=2m")]


def test_loop_is_refused_before_any_call(calls: list[Call]) -> None:
    # the shim's copy handed "loop" to the filesystem as data
    with pytest.raises(errdefs.Unimplemented, match="loop"):
        core.mount_all([core.Mount("ext4", "/img", ["loop", "ro"])], "/t")
    assert calls == []


def test_long_overlay_data_takes_the_deep_overlay_path(calls: list[Call], monkeypatch: pytest.MonkeyPatch) -> None:
    from pycontainerd.mount import deep_overlay

    deep: list[tuple[str, str, int, list[str]]] = []
    monkeypatch.setattr(deep_overlay, "mount",
                        lambda source, target, flags, data: deep.append((source, target, flags, list(data))))
    lowers = ":".join(f"/var/lib/s/snapshots/{i}/fs" for i in range(200))
    core.mount_all([core.Mount("overlay", "overlay", ["ro", f"lowerdir={lowers}"])], "/t")
    assert deep == [("overlay", "/t", MS_RDONLY, [f"lowerdir={lowers}"])]
    assert calls == []
    core.mount_all([core.Mount("overlay", "overlay", ["lowerdir=/a:/b"])], "/t")  # short: mount(2) itself
    assert calls == [("overlay", "/t", "overlay", 0, "lowerdir=/a:/b")]


def test_target_is_resolved_inside_the_mount_point(calls: list[Call], tmp_path: Path) -> None:
    (tmp_path / "etc").mkdir()
    (tmp_path / "link").symlink_to("/etc")  # absolute: followed inside the mount point
    core.mount_all([core.Mount("tmpfs", "t", [], target="../../link")], str(tmp_path))
    [(_, name, _, _, _)] = calls
    assert name.startswith("/proc/self/fd/")  # the opened, checked directory (closed by now)


def test_failed_mount_undoes_the_ones_done(calls: list[Call], monkeypatch: pytest.MonkeyPatch) -> None:
    undone: list[tuple[str, int]] = []
    monkeypatch.setattr(core, "unmount", lambda target, flags=0: undone.append((str(target), flags)))

    def fail_second(source: str, target: str, fstype: str, flags: int, data: str) -> None:
        calls.append((source, target, fstype, flags, data))
        if len(calls) == 2:
            raise OSError(errno.EINVAL, "Invalid argument", target)

    monkeypatch.setattr(core, "_raw_mount", fail_second)
    with pytest.raises(errdefs.InvalidArgument, match="mount tmpfs b"):
        core.mount_all([core.Mount("tmpfs", "a", []), core.Mount("tmpfs", "b", [])], "/t")
    assert undone == [("/t", MNT_DETACH)]


def test_compact_lowerdir_uses_the_common_directory() -> None:
    from pycontainerd.mount import deep_overlay

    data = ["index=off", "lowerdir=/var/lib/s/snapshots/3/fs:/var/lib/s/snapshots/2/fs", "upperdir=/u", "workdir=/w"]
    assert deep_overlay.compact_lowerdir(data) == (
        "/var/lib/s/snapshots",
        ["index=off", "lowerdir=3/fs:2/fs", "upperdir=/u", "workdir=/w"],
    )
    # one lower dir, or none in common: nothing to gain (the shim's copy chdir-ed to a single lower's parent)
    assert deep_overlay.compact_lowerdir(["lowerdir=/x/1/fs"]) == ("", ["lowerdir=/x/1/fs"])
    assert deep_overlay.compact_lowerdir(["lowerdir=/a/fs:/b/fs"]) == ("", ["lowerdir=/a/fs:/b/fs"])


class _FakeLibc:
    """umount2 answering from a script of errnos (0: success)."""

    def __init__(self, answers: list[int]) -> None:
        self.answers = answers
        self.calls: list[tuple[bytes, int]] = []
        self.errno = 0

    def umount2(self, target: bytes, flags: int) -> int:
        self.calls.append((target, flags))
        self.errno = self.answers.pop(0) if self.answers else errno.EINVAL
        return 0 if self.errno == 0 else -1


@pytest.fixture
def fake_umount(monkeypatch: pytest.MonkeyPatch) -> Any:
    def install(answers: list[int]) -> _FakeLibc:
        lib = _FakeLibc(answers)
        monkeypatch.setattr(core, "_libc", lib)
        monkeypatch.setattr(ctypes, "get_errno", lambda: lib.errno)
        monkeypatch.setattr(core, "BUSY_DELAY", 0.0)
        monkeypatch.setattr(mountopts, "mountpoints_under", lambda target, include_root=False: [])
        return lib

    return install


def test_unmount_all_takes_every_stacked_mount(fake_umount: Any) -> None:
    lib = fake_umount([0, 0, errno.EINVAL])
    core.unmount_all("/t")
    assert len(lib.calls) == 3
    assert all(flags & UMOUNT_NOFOLLOW for _, flags in lib.calls)


def test_busy_is_retried_then_reported_never_detached(fake_umount: Any) -> None:
    # containerd's UnmountAll; the shim's copy detached lazily (MNT_DETACH) after 10 tries
    lib = fake_umount([errno.EBUSY] * 200)
    with pytest.raises(errdefs.ContainerdError):
        core.unmount_all("/t")
    assert len(lib.calls) == 1 + core.BUSY_RETRIES
    assert not [flags for _, flags in lib.calls if flags & MNT_DETACH]


def test_busy_then_free_unmounts(fake_umount: Any) -> None:
    lib = fake_umount([errno.EBUSY, errno.EBUSY, 0, errno.EINVAL])
    core.unmount_all("/t")
    assert [c[0] for c in lib.calls] == [b"/t"] * 4


def test_shim_request_mounts_become_mount_records() -> None:
    m = shim_service._mount({"type": "overlay", "source": "overlay", "options": ["ro", "lowerdir=/a"], "target": "x"})
    assert m == core.Mount("overlay", "overlay", ["ro", "lowerdir=/a"], "x")
    assert shim_service._mount({"type": "bind"}) == core.Mount("bind", "", [], "")
