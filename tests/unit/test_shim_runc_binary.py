"""The shim finds a bare runtime name (``runc``) on PATH once, and again when it moved."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from pycontainerd import errdefs
from pycontainerd.shim import runc
from pycontainerd.shim.loop import Loop
from pycontainerd.shim.reaper import Reaper


def _tool(directory: Path, name: str, body: str = "exit 0") -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(0o755)
    return path


@pytest.fixture(autouse=True)
def _forget() -> None:
    runc._FOUND.clear()


def test_bare_name_is_found_on_path_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first = _tool(tmp_path / "a", "fake-runtime")
    monkeypatch.setenv("PATH", f"{tmp_path / 'a'}:{tmp_path / 'b'}")
    assert runc.resolve_binary("fake-runtime") == str(first)
    # remembered: a later one earlier on PATH is not looked for at every command
    _tool(tmp_path / "b", "fake-runtime")
    monkeypatch.setenv("PATH", f"{tmp_path / 'b'}:{tmp_path / 'a'}")
    assert runc.resolve_binary("fake-runtime") == str(first)
    assert runc.resolve_binary("fake-runtime", again=True) == str(tmp_path / "b" / "fake-runtime")


def test_paths_and_unknown_names_are_left_alone(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    assert runc.resolve_binary("/usr/sbin/runc") == "/usr/sbin/runc"
    assert runc.resolve_binary("./runc") == "./runc"
    assert runc.resolve_binary("no-such-runtime") == "no-such-runtime"


def test_a_runtime_that_moved_is_looked_up_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    old = _tool(tmp_path / "old", "fake-runtime")
    monkeypatch.setenv("PATH", f"{tmp_path / 'old'}:{tmp_path / 'new'}")
    assert runc.resolve_binary("fake-runtime") == str(old)
    old.unlink()
    _tool(tmp_path / "new", "fake-runtime", 'echo "moved $*"')
    loop = Loop()
    reaper = Reaper(loop)
    r = runc.Runc(loop, reaper, binary="fake-runtime", root=str(tmp_path / "root"), log_path=os.devnull)
    out = loop.run_until_complete(loop.spawn(r.run(["state", "x"], log_path=os.devnull)))
    assert out.startswith(b"moved --root")
    assert runc._FOUND["fake-runtime"] == str(tmp_path / "new" / "fake-runtime")


def test_a_runtime_found_nowhere_is_not_found(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    loop = Loop()
    reaper = Reaper(loop)
    r = runc.Runc(loop, reaper, binary="no-such-runtime", root=str(tmp_path), log_path=os.devnull)
    with pytest.raises(errdefs.NotFound, match="no-such-runtime"):
        loop.run_until_complete(loop.spawn(r.run(["state", "x"], log_path=os.devnull)))


def test_the_runtime_inherits_the_current_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Spawned with os.environ's own bytes dict (no per-variable Python in a shim): a
    variable set or removed after import is what the runtime sees."""
    _tool(tmp_path / "bin", "env-runtime", 'echo "x=${PYCD_SPAWN_X-unset} y=${PYCD_SPAWN_Y-unset}"')
    monkeypatch.setenv("PYCD_SPAWN_X", "set after import")
    monkeypatch.setenv("PYCD_SPAWN_Y", "gone")
    monkeypatch.delenv("PYCD_SPAWN_Y")
    loop = Loop()
    reaper = Reaper(loop)
    r = runc.Runc(loop, reaper, binary=str(tmp_path / "bin" / "env-runtime"), root=str(tmp_path / "root"),
                  log_path=os.devnull)
    out = loop.run_until_complete(loop.spawn(r.run(["state", "x"], log_path=os.devnull)))
    assert out.strip() == b"x=set after import y=unset"
