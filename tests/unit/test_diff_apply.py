"""diff.apply: tar parsing, digests, compression, and that no crafted layer escapes the root."""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import io
import os
import stat
import tarfile
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import zstandard

from pycontainerd import errdefs
from pycontainerd.diff.apply import ApplyResult, apply_layer, clean_name, parse_pax, resolve_in_root
from pycontainerd.diff.compare import write_diff
from pycontainerd.diff.compression import Compression

ROOT = os.geteuid() == 0


# -- helpers ------------------------------------------------------------------------------------
def build_tar(entries: list[tuple[str, str, object]], fmt: int = tarfile.PAX_FORMAT) -> bytes:
    """entries: (kind, name, arg): file/data, dir/mode, symlink/target, link/target, fifo/None."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as tf:
        for kind, name, arg in entries:
            ti = tarfile.TarInfo(name)
            ti.mtime = 1_600_000_000
            data = None
            if kind == "file":
                payload = arg if isinstance(arg, bytes) else b""
                ti.size = len(payload)
                ti.mode = 0o644
                data = io.BytesIO(payload)
            elif kind == "dir":
                ti.type = tarfile.DIRTYPE
                ti.mode = int(arg) if isinstance(arg, int) else 0o755
            elif kind == "symlink":
                ti.type = tarfile.SYMTYPE
                ti.linkname = str(arg)
            elif kind == "link":
                ti.type = tarfile.LNKTYPE
                ti.linkname = str(arg)
            elif kind == "fifo":
                ti.type = tarfile.FIFOTYPE
                ti.mode = 0o600
            else:
                raise AssertionError(kind)
            tf.addfile(ti, data)
    return buf.getvalue()


async def _chunks(data: bytes, size: int = 7000) -> AsyncIterator[bytes]:
    for i in range(0, len(data), size):
        yield data[i : i + size]


def apply(data: bytes, root: Path, **kw: object) -> ApplyResult:
    return asyncio.run(apply_layer(_chunks(data), str(root), **kw))  # type: ignore[arg-type]


def snapshot_tree(path: Path) -> dict[str, tuple[int, int, bytes]]:
    out: dict[str, tuple[int, int, bytes]] = {}
    for dirpath, dirnames, filenames in os.walk(path):
        for n in dirnames + filenames:
            p = Path(dirpath) / n
            st = p.lstat()
            data = p.read_bytes() if stat.S_ISREG(st.st_mode) else b""
            if stat.S_ISLNK(st.st_mode):
                data = os.readlink(p).encode()
            out[str(p.relative_to(path))] = (st.st_mode, st.st_nlink, data)
    return out


@pytest.fixture
def sandbox(tmp_path: Path) -> tuple[Path, Path]:
    """(root to apply into, an outside dir with a secret that must never change)."""
    root = tmp_path / "root"
    root.mkdir()
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_bytes(b"do not touch")
    (outside / "victim").write_bytes(b"do not delete")
    return root, outside


# -- pure pieces ---------------------------------------------------------------------------------
def test_clean_name_confines() -> None:
    assert clean_name("../../etc/passwd") == ["etc", "passwd"]
    assert clean_name("/abs/x") == ["abs", "x"]
    assert clean_name("./a/./b/../c/") == ["a", "c"]
    assert clean_name(".") == []
    assert clean_name("..") == []


def test_parse_pax_binary_values() -> None:
    rec = b"SCHILY.xattr.security.capability=\x01\x00\xff\n"
    line = str(len(rec) + 3).encode() + b" " + rec
    assert len(line) == int(line.split(b" ")[0])
    assert parse_pax(line) == {"SCHILY.xattr.security.capability": b"\x01\x00\xff"}
    with pytest.raises(errdefs.InvalidArgument):
        parse_pax(b"99 path=x\n")


def test_resolve_in_root_follows_links_inside(tmp_path: Path) -> None:
    root = tmp_path / "r"
    (root / "usr" / "lib").mkdir(parents=True)
    os.symlink("/usr/lib", root / "lib")
    os.symlink("../../../../..", root / "up")
    os.symlink("loop2", root / "loop1")
    os.symlink("loop1", root / "loop2")
    r = str(root)
    assert resolve_in_root(r, ["lib", "x"]) == f"{r}/usr/lib/x"
    assert resolve_in_root(r, ["up", "etc"]) == f"{r}/etc"
    assert resolve_in_root(r, ["..", "..", "etc"]) == f"{r}/etc"
    with pytest.raises(errdefs.InvalidArgument):
        resolve_in_root(r, ["loop1", "x"])


# -- digests and compression ------------------------------------------------------------------------
def test_digest_is_of_uncompressed_stream_for_every_compression(tmp_path: Path) -> None:
    tar = build_tar([("dir", "d", 0o755), ("file", "d/f", b"hello" * 1000)])
    want = "sha256:" + hashlib.sha256(tar).hexdigest()
    variants = {
        Compression.NONE: tar,
        Compression.GZIP: gzip.compress(tar),
        Compression.ZSTD: zstandard.ZstdCompressor().compress(tar),
    }
    for kind, blob in variants.items():
        root = tmp_path / kind.value
        root.mkdir()
        res = apply(blob, root)
        assert res.digest == want
        assert res.size == len(tar)
        assert res.compression is kind
        assert (root / "d" / "f").read_bytes() == b"hello" * 1000


def test_multi_member_gzip_and_trailing_bytes(tmp_path: Path) -> None:
    tar = build_tar([("file", "a", b"x" * 100)])
    half = len(tar) // 2
    blob = gzip.compress(tar[:half]) + gzip.compress(tar[half:])
    res = apply(blob, tmp_path)
    assert res.digest == "sha256:" + hashlib.sha256(tar).hexdigest()
    assert (tmp_path / "a").read_bytes() == b"x" * 100


def test_truncated_and_garbage_layers_are_invalid(tmp_path: Path) -> None:
    tar = build_tar([("file", "a", os.urandom(200_000))])
    with pytest.raises(errdefs.InvalidArgument):
        apply(gzip.compress(tar)[:-5000], tmp_path / "t1")
    (tmp_path / "t2").mkdir()
    with pytest.raises(errdefs.InvalidArgument):
        apply(b"this is not a tar stream at all" * 100, tmp_path / "t2")
    (tmp_path / "t3").mkdir()
    with pytest.raises(errdefs.InvalidArgument):
        apply(tar[:1024], tmp_path / "t3")  # header + part of the data


def test_gnu_long_names_and_pax_long_names(tmp_path: Path) -> None:
    long = "d/" + "x" * 150 + "/" + "y" * 120
    for fmt in (tarfile.GNU_FORMAT, tarfile.PAX_FORMAT):
        root = tmp_path / str(fmt)
        root.mkdir()
        apply(build_tar([("file", long, b"L"), ("symlink", "s", "t" * 200)], fmt), root)
        assert (root / long).read_bytes() == b"L"
        assert os.readlink(root / "s") == "t" * 200


def test_metadata_is_applied(tmp_path: Path) -> None:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        d = tarfile.TarInfo("dir")
        d.type, d.mode, d.mtime = tarfile.DIRTYPE, 0o1777, 1_500_000_000
        tf.addfile(d)
        f = tarfile.TarInfo("dir/suid")
        f.mode, f.uid, f.gid, f.size, f.mtime = 0o4755, 1234, 5678, 3, 1_400_000_000.5
        f.pax_headers = {"SCHILY.xattr.user.test": "value"}
        tf.addfile(f, io.BytesIO(b"abc"))
        h = tarfile.TarInfo("dir/hard")
        h.type, h.linkname = tarfile.LNKTYPE, "dir/suid"
        tf.addfile(h)
    apply(buf.getvalue(), tmp_path)
    dst = os.lstat(tmp_path / "dir")
    assert stat.S_IMODE(dst.st_mode) == 0o1777
    assert dst.st_mtime_ns == 1_500_000_000 * 10**9  # set after its contents were written
    fst = os.lstat(tmp_path / "dir" / "suid")
    assert fst.st_mtime_ns == 1_400_000_000_500_000_000
    assert fst.st_nlink == 2
    assert os.lstat(tmp_path / "dir" / "hard").st_ino == fst.st_ino
    assert os.getxattr(tmp_path / "dir" / "suid", "user.test") == b"value"
    if ROOT:
        assert (fst.st_uid, fst.st_gid) == (1234, 5678)
        assert stat.S_IMODE(fst.st_mode) == 0o4755  # chmod after chown keeps setuid


def test_native_whiteouts_and_opaque(tmp_path: Path) -> None:
    (tmp_path / "gone").write_bytes(b"1")
    (tmp_path / "dir").mkdir()
    (tmp_path / "dir" / "old1").write_bytes(b"1")
    (tmp_path / "dir" / "sub").mkdir()
    (tmp_path / "keep").write_bytes(b"k")
    tar = build_tar(
        [
            ("file", ".wh.gone", b""),
            ("dir", "dir", 0o755),
            ("file", "dir/.wh..wh..opq", b""),
            ("file", "dir/new", b"n"),
        ]
    )
    apply(tar, tmp_path)
    assert not (tmp_path / "gone").exists()
    assert sorted(p.name for p in (tmp_path / "dir").iterdir()) == ["new"]
    assert (tmp_path / "keep").exists()


@pytest.mark.root  # overlay whiteouts are device nodes
def test_overlay_whiteouts_written_as_devices_and_xattr(tmp_path: Path) -> None:
    upper, lower = tmp_path / "upper", tmp_path / "lower"
    upper.mkdir()
    (lower / "dir").mkdir(parents=True)
    os.chmod(lower / "dir", 0o750)
    tar = build_tar([("file", ".wh.gone", b""), ("file", "dir/.wh..wh..opq", b""), ("file", "dir/x", b"x")])
    apply(tar, upper, whiteouts="overlay", parents=[str(lower)])
    st = os.lstat(upper / "gone")
    assert stat.S_ISCHR(st.st_mode)
    assert st.st_rdev == 0
    assert os.getxattr(upper / "dir", "trusted.overlay.opaque") == b"y"
    # the implied parent took its mode from the lower layer
    assert stat.S_IMODE(os.lstat(upper / "dir").st_mode) == 0o750


# -- malicious layers --------------------------------------------------------------------------------
MALICIOUS: dict[str, list[tuple[str, str, object]]] = {
    "dotdot": [("file", "../../evil", b"x"), ("file", "a/../../../evil2", b"x")],
    "absolute": [("file", "/evil", b"x")],
    "symlink-abs-then-traverse": [("symlink", "lnk", "@OUT@"), ("file", "lnk/secret", b"pwned")],
    "symlink-rel-then-traverse": [("symlink", "lnk", "../../../../../../../../@OUTREL@"), ("file", "lnk/secret", b"p")],
    "symlink-chain": [("symlink", "a", "b"), ("symlink", "b", "@OUT@"), ("file", "a/victim", b"p")],
    "symlink-dir-then-dir-entry": [("symlink", "d", "@OUT@"), ("dir", "d", 0o777), ("file", "d/secret", b"p")],
    "replace-final-symlink": [("symlink", "f", "@OUT@/secret"), ("file", "f", b"p")],
    "whiteout-through-symlink": [("symlink", "lnk", "@OUT@"), ("file", "lnk/.wh.victim", b"")],
    "opaque-through-symlink": [("symlink", "lnk", "@OUT@"), ("file", "lnk/.wh..wh..opq", b"")],
    "whiteout-dotdot-name": [("file", "../.wh.victim", b"")],
}


@pytest.mark.parametrize("case", sorted(MALICIOUS))
@pytest.mark.parametrize("mode", ["remove", pytest.param("overlay", marks=pytest.mark.root)])  # device nodes
def test_malicious_layer_stays_inside_root(case: str, mode: str, sandbox: tuple[Path, Path]) -> None:
    root, outside = sandbox
    before = snapshot_tree(outside.parent)
    entries = [
        (
            k,
            n,
            a.replace("@OUT@", str(outside)).replace("@OUTREL@", str(outside).lstrip("/")) if isinstance(a, str) else a,
        )
        for k, n, a in MALICIOUS[case]
    ]
    apply(build_tar(entries), root, whiteouts=mode)
    after = snapshot_tree(outside.parent)
    changed = {k for k in set(before) | set(after) if before.get(k) != after.get(k) and not k.startswith("root")}
    assert not changed, f"{case} changed paths outside the root: {changed}"


@pytest.mark.parametrize(
    ("entries", "what"),
    [
        ([("file", "x/.wh...", b"")], "whiteout of .."),
        ([("file", ".wh..", b"")], "whiteout of ."),
        ([("file", ".wh.", b"")], "empty whiteout"),
    ],
)
def test_invalid_whiteouts_refused(
    entries: list[tuple[str, str, object]], what: str, sandbox: tuple[Path, Path]
) -> None:
    root, outside = sandbox
    with pytest.raises(errdefs.InvalidArgument):
        apply(build_tar(entries), root)
    assert (outside / "victim").exists(), what


def test_hardlink_targets_are_confined(sandbox: tuple[Path, Path]) -> None:
    root, outside = sandbox
    secret = outside / "secret"
    for linkname in (str(secret), "../../outside/secret", "../outside/secret"):
        with pytest.raises(errdefs.ContainerdError):
            apply(build_tar([("link", "hl", linkname)]), root)
    # via a symlink that points outside: the target resolves inside the root (and is missing)
    with pytest.raises(errdefs.ContainerdError):
        apply(build_tar([("symlink", "s", str(outside)), ("link", "hl2", "s/secret")]), root)
    assert os.lstat(secret).st_nlink == 1
    # a hard link to a symlink links the symlink itself, never its target
    apply(build_tar([("symlink", "sl", str(secret)), ("link", "hl3", "sl")]), root)
    assert os.path.islink(root / "hl3")
    assert os.lstat(secret).st_nlink == 1


def test_absolute_symlink_inside_root_keeps_working(tmp_path: Path) -> None:
    tar = build_tar(
        [
            ("dir", "usr", 0o755),
            ("dir", "usr/lib", 0o755),
            ("symlink", "lib", "/usr/lib"),
            ("file", "lib/libc.so", b"elf"),
        ]
    )
    apply(tar, tmp_path)
    assert (tmp_path / "usr" / "lib" / "libc.so").read_bytes() == b"elf"
    assert os.readlink(tmp_path / "lib") == "/usr/lib"


# -- compare ---------------------------------------------------------------------------------------
def test_write_diff_then_apply_reproduces_upper(tmp_path: Path) -> None:
    lower, upper, target = tmp_path / "lower", tmp_path / "upper", tmp_path / "target"
    for base in (lower, upper, target):
        (base / "etc").mkdir(parents=True)
        (base / "etc" / "keep").write_bytes(b"same")
        os.utime(base / "etc" / "keep", ns=(10**18, 10**18))
        (base / "gone").write_bytes(b"old")
        (base / "dir").mkdir()
        (base / "dir" / "a").write_bytes(b"a")
        (base / "mod").write_bytes(b"before")
    (upper / "gone").unlink()
    (upper / "mod").write_bytes(b"after!")
    (upper / "new").write_bytes(b"new")
    os.symlink("/etc/keep", upper / "link")
    (upper / "dir" / "a").unlink()
    (upper / "dir" / "b").write_bytes(b"b")
    os.link(upper / "new", upper / "new-hard")
    chunks: list[bytes] = []
    write_diff(str(lower), str(upper), chunks.append)
    tar = b"".join(chunks)
    with tarfile.open(fileobj=io.BytesIO(tar)) as tf:
        names = set(tf.getnames())
    assert ".wh.gone" in names
    assert "dir/.wh.a" in names
    assert "etc/keep" not in names
    apply(tar, target)
    assert snapshot_tree(target).keys() == snapshot_tree(upper).keys()
    for rel, (mode, _nlink, data) in snapshot_tree(upper).items():
        tmode, _tn, tdata = snapshot_tree(target)[rel]
        assert (mode, data) == (tmode, tdata), rel
    assert os.lstat(target / "new").st_ino == os.lstat(target / "new-hard").st_ino


# -- reads from lower layers stay inside the image (issue 13, finding 1) ---------------------------
def _two_layers(tmp_path: Path, lower_entries: list[tuple[str, str, object]],
                upper_entries: list[tuple[str, str, object]]) -> tuple[Path, Path]:
    """Apply ``lower_entries`` as a first overlay layer, then ``upper_entries`` on top of it."""
    lower, upper = tmp_path / "lower", tmp_path / "upper"
    lower.mkdir()
    upper.mkdir()
    apply(build_tar(lower_entries), lower, whiteouts="overlay")
    apply(build_tar(upper_entries), upper, whiteouts="overlay", parents=[str(lower)])
    return lower, upper


def _host_secret(tmp_path: Path) -> Path:
    secret = tmp_path / "hostdir" / "shadow"
    secret.parent.mkdir()
    secret.write_bytes(b"root:host-secret\n")
    os.chmod(secret.parent, 0o701)
    return secret


@pytest.mark.root  # overlay layers hold whiteout devices
@pytest.mark.parametrize("link", ["abs", "rel", "chain"])
def test_hardlink_through_lower_symlink_never_copies_a_host_file(link: str, tmp_path: Path) -> None:
    secret = _host_secret(tmp_path)
    target = {"abs": str(secret.parent), "rel": "../" * 30 + str(secret.parent).lstrip("/"), "chain": "e"}[link]
    lower_entries: list[tuple[str, str, object]] = [("symlink", "d", target)]
    if link == "chain":
        lower_entries.append(("symlink", "e", str(secret.parent)))
    with pytest.raises(errdefs.InvalidArgument, match="hard link target"):
        _two_layers(tmp_path, lower_entries, [("link", "x", "d/shadow")])
    upper = tmp_path / "upper"
    found = [p for p in upper.rglob("*") if p.is_file() and b"host-secret" in p.read_bytes()]
    assert found == [], "a host file was copied into the layer"
    assert secret.stat().st_nlink == 1


@pytest.mark.root  # overlay layers hold whiteout devices
def test_hardlink_through_lower_proc_self_link_is_refused(tmp_path: Path) -> None:
    with pytest.raises(errdefs.InvalidArgument, match="hard link target"):
        _two_layers(tmp_path, [("symlink", "p", "/proc/self")], [("link", "env", "p/environ")])
    assert not (tmp_path / "upper" / "env").exists()


@pytest.mark.root  # overlay layers hold whiteout devices
def test_hardlink_through_lower_symlink_resolves_inside_the_image(tmp_path: Path) -> None:
    # d -> ../../../etc in the lower layer climbs to the image's root and lands on its /etc
    _host_secret(tmp_path)
    lower, upper = _two_layers(
        tmp_path,
        [("dir", "etc", 0o755), ("file", "etc/shadow", b"root:image\n"), ("symlink", "d", "../../../../etc")],
        [("link", "x", "d/shadow")],
    )
    assert (upper / "x").read_bytes() == b"root:image\n"
    assert os.path.samefile(upper / "x", upper / "etc" / "shadow")  # copied up where the union has it
    assert (lower / "etc" / "shadow").stat().st_nlink == 1


@pytest.mark.root  # overlay layers hold whiteout devices
def test_copy_up_honours_whiteouts_and_opaque_dirs(tmp_path: Path) -> None:
    l1, l2, upper = tmp_path / "l1", tmp_path / "l2", tmp_path / "upper"
    for p in (l1, l2, upper):
        p.mkdir()
    apply(build_tar([("dir", "a", 0o755), ("file", "a/gone", b"1"), ("file", "a/hidden", b"1"),
                     ("file", "a/kept", b"k")]), l1, whiteouts="overlay")
    apply(build_tar([("file", "a/.wh.gone", b""), ("dir", "b", 0o755), ("file", "b/.wh..wh..opq", b""),
                     ("file", "b/new", b"n")]), l2, whiteouts="overlay", parents=[str(l1)])
    with pytest.raises(errdefs.InvalidArgument):  # deleted by l2: not resurrected
        apply(build_tar([("link", "x", "a/gone")]), upper, whiteouts="overlay", parents=[str(l2), str(l1)])
    apply(build_tar([("link", "y", "a/kept"), ("link", "z", "b/new")]), tmp_path / "upper",
          whiteouts="overlay", parents=[str(l2), str(l1)])
    assert (upper / "y").read_bytes() == b"k"
    assert (upper / "z").read_bytes() == b"n"


@pytest.mark.root  # overlay layers hold whiteout devices
def test_implied_parent_metadata_never_comes_from_the_host(tmp_path: Path) -> None:
    secret = _host_secret(tmp_path)
    (secret.parent / "sub").mkdir(mode=0o701)  # a host dir with a mode unusual enough to notice
    os.chmod(secret.parent / "sub", 0o701)
    _, upper = _two_layers(tmp_path, [("symlink", "d", str(secret.parent))], [("file", "d/sub/x", b"x")])
    assert stat.S_IMODE(os.lstat(upper / "d").st_mode) == 0o755
    assert stat.S_IMODE(os.lstat(upper / "d" / "sub").st_mode) == 0o755
    assert (upper / "d" / "sub" / "x").read_bytes() == b"x"
