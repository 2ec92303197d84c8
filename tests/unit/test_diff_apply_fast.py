"""diff.apply's fast paths: create-first, final-mode creation, skipped chown, blob file source."""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import io
import os
import stat
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from pycontainerd import errdefs
from pycontainerd.diff.apply import ApplyResult, apply_file, apply_layer


def tar_of(*infos: tuple[tarfile.TarInfo, bytes | None]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for ti, data in infos:
            if data is not None:
                ti.size = len(data)
            tf.addfile(ti, io.BytesIO(data) if data is not None else None)
    return buf.getvalue()


def reg(name: str, data: bytes = b"x", mode: int = 0o644, uid: int = 0, gid: int = 0) -> tuple[tarfile.TarInfo, bytes]:
    ti = tarfile.TarInfo(name)
    ti.mode, ti.uid, ti.gid, ti.mtime = mode, uid, gid, 1_600_000_000
    return ti, data


def dirent(name: str, mode: int = 0o755, uid: int = 0, gid: int = 0) -> tuple[tarfile.TarInfo, None]:
    ti = tarfile.TarInfo(name)
    ti.type, ti.mode, ti.uid, ti.gid, ti.mtime = tarfile.DIRTYPE, mode, uid, gid, 1_600_000_000
    return ti, None


def link(name: str, target: str, kind: bytes = tarfile.SYMTYPE) -> tuple[tarfile.TarInfo, None]:
    ti = tarfile.TarInfo(name)
    ti.type, ti.linkname, ti.mtime = kind, target, 1_600_000_000
    return ti, None


def apply_bytes(data: bytes, root: Path, tmp: Path, **kw: object) -> ApplyResult:
    blob = tmp / f"layer-{hashlib.sha256(data).hexdigest()[:12]}"
    blob.write_bytes(data)
    return apply_file(str(blob), str(root), **kw)  # type: ignore[arg-type]


@pytest.fixture
def umask() -> Iterator[None]:
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


@pytest.mark.parametrize("mask", [0o022, 0o077, 0o000])
def test_modes_are_exact_whatever_the_umask(tmp_path: Path, umask: None, mask: int) -> None:
    os.umask(mask)
    root = tmp_path / "root"
    root.mkdir()
    modes = [0o644, 0o755, 0o600, 0o666, 0o777, 0o444, 0o000, 0o4755, 0o2755, 0o1777]
    data = tar_of(dirent("d", 0o750), *[reg(f"d/f{m:o}", b"data", m) for m in modes])
    apply_bytes(data, root, tmp_path)
    for m in modes:
        st = os.lstat(root / "d" / f"f{m:o}")
        assert stat.S_IMODE(st.st_mode) == m, f"{m:o}"
        assert (root / "d" / f"f{m:o}").read_bytes() == b"data"
        assert st.st_mtime_ns == 1_600_000_000 * 10**9
    assert stat.S_IMODE(os.lstat(root / "d").st_mode) == 0o750


@pytest.mark.root  # chown
def test_owner_is_exact_under_a_setgid_parent(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    data = tar_of(
        dirent("sg", 0o2775, uid=0, gid=1234),
        reg("sg/root-file", uid=0, gid=0),
        reg("sg/group-file", uid=0, gid=1234),
        dirent("sg/sub", 0o755, uid=0, gid=0),
        reg("sg/sub/f", uid=0, gid=0),
        link("sg/ln", "root-file"),
        reg("plain", uid=1000, gid=1000),
        reg("plain0"),
    )
    apply_bytes(data, root, tmp_path)

    def owner(p: str) -> tuple[int, int]:
        st = os.lstat(root / p)
        return st.st_uid, st.st_gid

    assert owner("sg") == (0, 1234)
    assert stat.S_IMODE(os.lstat(root / "sg").st_mode) == 0o2775
    assert owner("sg/root-file") == (0, 0)  # not the setgid parent's group
    assert owner("sg/group-file") == (0, 1234)
    assert owner("sg/sub") == (0, 0)
    assert stat.S_IMODE(os.lstat(root / "sg" / "sub").st_mode) == 0o755  # setgid not inherited
    assert owner("sg/sub/f") == (0, 0)
    assert owner("sg/ln") == (0, 0)
    assert owner("plain") == (1000, 1000)
    assert owner("plain0") == (0, 0)


@pytest.mark.root  # chown
def test_existing_directory_gets_the_entry_owner(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "d").mkdir(parents=True)
    os.chown(root / "d", 1000, 1000)
    apply_bytes(tar_of(dirent("d", 0o700), reg("d/f")), root, tmp_path)
    st = os.lstat(root / "d")
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (0, 0, 0o700)


def test_entries_replace_whatever_is_in_the_way(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "was-dir" / "inner").mkdir(parents=True)
    (root / "was-file").write_text("old")
    (root / "was-file2").write_text("old")
    os.symlink("/nowhere", root / "dangling")
    os.symlink("was-file", root / "was-link")
    os.mkfifo(root / "was-fifo")
    data = tar_of(
        reg("was-dir", b"now a file"),
        dirent("was-file"),
        reg("was-file/in", b"inside"),
        reg("dangling", b"replaced the link, not its target"),
        reg("was-link", b"link replaced"),
        link("was-file2", "target"),
        reg("was-fifo", b"fifo replaced"),
        reg("twice", b"first"),
        reg("twice", b"second"),
        link("hl", "twice", tarfile.LNKTYPE),
        reg("hl", b"hard link replaced by a file"),
    )
    apply_bytes(data, root, tmp_path)
    assert (root / "was-dir").read_bytes() == b"now a file"
    assert (root / "was-file" / "in").read_bytes() == b"inside"
    assert (root / "dangling").read_bytes() == b"replaced the link, not its target"
    assert not os.path.lexists("/nowhere")
    assert not (root / "was-link").is_symlink()
    assert (root / "was-file2").is_symlink() and os.readlink(root / "was-file2") == "target"
    assert stat.S_ISREG(os.lstat(root / "was-fifo").st_mode)
    assert (root / "twice").read_bytes() == b"second"
    assert (root / "hl").read_bytes() == b"hard link replaced by a file"
    assert (root / "twice").read_bytes() == b"second"  # the link's target is untouched


def test_hard_link_onto_itself_is_invalid_not_a_crash(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    data = tar_of(reg("a", b"a"), link("a", "a", tarfile.LNKTYPE))
    with pytest.raises(errdefs.InvalidArgument):
        apply_bytes(data, root, tmp_path)


def test_blocking_source_gives_the_same_result_as_chunks(tmp_path: Path) -> None:
    tar = tar_of(dirent("d"), *[reg(f"d/f{i}", os.urandom(i * 37)) for i in range(200)])
    blob = gzip.compress(tar)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    res_file = apply_bytes(blob, tmp_path / "a", tmp_path)

    async def chunks() -> object:
        for i in range(0, len(blob), 4096):
            yield blob[i : i + 4096]

    res_iter = asyncio.run(apply_layer(chunks(), str(tmp_path / "b")))  # type: ignore[arg-type]
    assert res_file.digest == res_iter.digest == "sha256:" + hashlib.sha256(tar).hexdigest()
    assert res_file.size == res_iter.size == len(tar)
    for i in range(200):
        assert (tmp_path / "a" / "d" / f"f{i}").read_bytes() == (tmp_path / "b" / "d" / f"f{i}").read_bytes()


def test_blocking_source_error_stops_the_pipeline(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    blob = gzip.compress(tar_of(reg("ok", b"x" * 100000)))[:-40]  # truncated
    with pytest.raises(errdefs.InvalidArgument):
        apply_bytes(blob, root, tmp_path)

    good = gzip.compress(tar_of(reg("big", os.urandom(1 << 20))))

    class Failing:
        def __init__(self) -> None:
            self.pos = 0

        def read(self, n: int) -> bytes:
            if self.pos >= 3000:
                raise OSError(5, "I/O error")
            self.pos += 1000
            return good[self.pos - 1000 : self.pos]

    with pytest.raises(OSError):
        asyncio.run(apply_layer(Failing(), str(root)))
