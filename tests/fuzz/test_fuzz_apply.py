"""Fuzz the tar reader and the layer applier: any byte stream, any entry list, one or two layers.

Properties: applying never raises anything but an ``errdefs`` error (a clear refusal), and
never changes anything outside the root it applies into (a canary directory beside it,
which the generated names and link targets aim at).
"""

from __future__ import annotations

import asyncio
import io
import os
import stat
import tarfile
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from pycontainerd import errdefs
from pycontainerd.diff.apply import apply_layer

ROOT = os.geteuid() == 0
OUT = "@OUT@"  # replaced by the canary directory's absolute path

_COMPONENTS = ["a", "b", "c", "..", ".", "", OUT, ".wh.a", ".wh.b", ".wh..wh..opq", ".wh..", "n" * 255, "ü"]
_component = st.sampled_from(_COMPONENTS)
_path = st.lists(_component, min_size=1, max_size=5).map("/".join)
_link_target = st.one_of(_path, _path.map(lambda p: "/" + p), st.just(OUT), st.just(OUT + "/victim"),
                         st.just("/proc/self"), st.just("../" * 12 + OUT.lstrip("/")))
_entry = st.tuples(
    st.sampled_from(["file", "dir", "symlink", "hardlink", "fifo", "char"]),
    _path,
    _link_target,
    st.integers(min_value=0, max_value=0o7777),
)
_layer = st.lists(_entry, min_size=1, max_size=12)


def _tar(entries: list[tuple[str, str, str, int]], out: Path) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for kind, name, link, mode in entries:
            name = name.replace(OUT, str(out).lstrip("/")) or "x"
            ti = tarfile.TarInfo(name)
            ti.mode, ti.mtime = mode, 1_600_000_000
            data = None
            if kind == "file":
                payload = b"pwned\n"
                ti.size, data = len(payload), io.BytesIO(payload)
            elif kind == "dir":
                ti.type = tarfile.DIRTYPE
            elif kind in ("symlink", "hardlink"):
                ti.type = tarfile.SYMTYPE if kind == "symlink" else tarfile.LNKTYPE
                ti.linkname = link.replace(OUT, str(out).lstrip("/") if not link.startswith(OUT) else str(out))
            elif kind == "fifo":
                ti.type = tarfile.FIFOTYPE
            else:
                ti.type, ti.devmajor, ti.devminor = tarfile.CHRTYPE, 1, 3
            tf.addfile(ti, data)
    return buf.getvalue()


async def _chunks(data: bytes) -> AsyncIterator[bytes]:
    for i in range(0, len(data), 4096):
        yield data[i : i + 4096]


def _snapshot(path: Path) -> dict[str, tuple[int, int, bytes]]:
    out: dict[str, tuple[int, int, bytes]] = {}
    for dirpath, dirnames, filenames in os.walk(path):
        for n in dirnames + filenames:
            p = Path(dirpath) / n
            s = p.lstat()
            data = p.read_bytes() if stat.S_ISREG(s.st_mode) else b""
            out[str(p)] = (s.st_mode, s.st_nlink, data)
    return out


def _apply(data: bytes, root: Path, **kw: object) -> None:
    try:
        asyncio.run(apply_layer(_chunks(data), str(root), **kw))  # type: ignore[arg-type]
    except errdefs.ContainerdError:
        pass  # a refusal is a fine answer; anything else is a bug


def _sandbox() -> tuple[tempfile.TemporaryDirectory[str], Path, Path]:
    td = tempfile.TemporaryDirectory(prefix="pycd-fuzz-")
    base = Path(td.name)
    out = base / "outside"
    out.mkdir()
    (out / "victim").write_bytes(b"victim\n")
    return td, base, out


@given(layers=st.lists(_layer, min_size=1, max_size=2), overlay=st.booleans())
def test_apply_never_escapes(layers: list[list[tuple[str, str, str, int]]], overlay: bool) -> None:
    overlay = overlay and ROOT  # overlay whiteouts are device nodes
    td, base, out = _sandbox()
    with td:
        before = _snapshot(out)
        roots: list[Path] = []
        for i, entries in enumerate(layers):
            root = base / f"layer{i}"
            root.mkdir()
            if overlay:
                _apply(_tar(entries, out), root, whiteouts="overlay", parents=[str(r) for r in reversed(roots)])
            else:
                _apply(_tar(entries, out), root)
            roots.append(root)
        assert _snapshot(out) == before


@given(entries=_layer, flips=st.lists(st.tuples(st.integers(min_value=0, max_value=4095),
                                                  st.integers(min_value=0, max_value=255)), max_size=8))
def test_apply_of_corrupted_tar_is_refused_or_confined(entries: list[tuple[str, str, str, int]],
                                                       flips: list[tuple[int, int]]) -> None:
    td, base, out = _sandbox()
    with td:
        data = bytearray(_tar(entries, out))
        for pos, value in flips:
            if pos < len(data):
                data[pos] = value
        before = _snapshot(out)
        root = base / "root"
        root.mkdir()
        _apply(bytes(data), root)
        assert _snapshot(out) == before


@given(data=st.binary(max_size=4096))
def test_apply_of_random_bytes_never_crashes(data: bytes) -> None:
    td, base, _ = _sandbox()
    with td:
        root = base / "root"
        root.mkdir()
        _apply(data, root)
