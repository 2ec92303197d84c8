"""Deleting a bundle in two steps: renamed away at once, files removed later (or after a crash)."""

from __future__ import annotations

from pathlib import Path

from pycontainerd.runtime import bundle as bundlemod


def _bundle(root: Path, ns: str, cid: str) -> Path:
    p = root / ns / cid
    (p / "rootfs").mkdir(parents=True)
    (p / "config.json").write_text("{}")
    return p


def test_move_to_trash_frees_the_id_and_hides_the_bundle(tmp_path: Path) -> None:
    b = _bundle(tmp_path, "ns", "c1")
    trash = bundlemod.move_to_trash(b)
    assert trash is not None and trash.is_dir()
    assert not b.exists()
    assert not (tmp_path / "ns").exists()  # the namespace dir went with its last bundle
    assert list(bundlemod.scan(tmp_path)) == []  # never mistaken for a task
    again = _bundle(tmp_path, "ns", "c1")  # the id is free at once
    assert [(n, c) for n, c, _ in bundlemod.scan(tmp_path)] == [("ns", "c1")]
    second = bundlemod.move_to_trash(again)
    assert second is not None and second != trash
    bundlemod.remove(trash)
    assert not trash.exists()
    assert second.exists()  # the trash dir stays while it holds something
    bundlemod.remove(second)
    assert not (tmp_path / bundlemod.TRASH_DIR).exists()
    assert bundlemod.move_to_trash(tmp_path / "ns" / "gone") is None


def test_clean_trash_removes_what_a_crash_left(tmp_path: Path) -> None:
    keep = _bundle(tmp_path, "ns", "live")
    for cid in ("a", "b"):
        assert bundlemod.move_to_trash(_bundle(tmp_path, "other", cid)) is not None
    bundlemod.clean_trash(tmp_path)
    assert not (tmp_path / bundlemod.TRASH_DIR).exists()
    assert keep.exists()
    bundlemod.clean_trash(tmp_path / "nothing-here")  # no root yet: fine
