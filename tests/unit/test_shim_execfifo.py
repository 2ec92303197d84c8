"""Starting a created runc container through its exec FIFO (``shim.execfifo``), as runc 1.0/1.1's
``runc start`` does, and when the shim may (``runc.probe_runtime`` / ``starts_by_fifo``).

The FIFO's writer here stands in for ``runc init``: it opens ``exec.fifo`` for writing, writes
one byte, and its end closes when it execs the user process (or dies)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from pycontainerd.shim import runc
from pycontainerd.shim.execfifo import FIFO_NAME, FifoStart, StartFailed
from pycontainerd.shim.loop import Loop


@pytest.fixture
def loop() -> Iterator[Loop]:
    lp = Loop()
    yield lp
    lp._sel.close()
    os.close(lp._wake_r)
    os.close(lp._wake_w)


def _fifo(root: Path, cid: str = "c1") -> Path:
    (root / cid).mkdir(parents=True)
    path = root / cid / FIFO_NAME
    os.mkfifo(path, 0o622)
    return path


def _open(loop: Loop, root: Path) -> FifoStart:
    release = FifoStart.open(loop, str(root), "c1")
    assert release is not None
    return release


def _spin(loop: Loop, release: FifoStart, rounds: int = 20) -> None:
    for _ in range(rounds):
        if release.done.done():
            return
        loop.run_once(0.01)


def test_released_once_the_init_wrote_and_its_end_closed(loop: Loop, tmp_path: Path) -> None:
    fifo = _fifo(tmp_path)
    release = _open(loop, tmp_path)
    w = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)  # the init, unblocked by our reader
    os.write(w, b"0")
    _spin(loop, release, 5)
    # the byte alone is not the start: runc start reads to EOF, which comes at the exec
    assert not release.done.done()
    assert fifo.exists()
    os.close(w)
    _spin(loop, release)
    assert release.done.done() and release.done.exception() is None
    assert not fifo.exists()  # runc reports "running" from here on


def test_a_writer_that_comes_after_the_reader_is_waited_for(loop: Loop, tmp_path: Path) -> None:
    # no writer at open: no hang-up is reported until one came and went
    fifo = _fifo(tmp_path)
    release = _open(loop, tmp_path)
    _spin(loop, release, 5)
    assert not release.done.done()
    w = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
    os.write(w, b"0")
    os.close(w)
    _spin(loop, release)
    assert release.done.exception() is None
    assert not fifo.exists()


def test_an_init_that_closes_without_writing_is_refused(loop: Loop, tmp_path: Path) -> None:
    fifo = _fifo(tmp_path)
    release = _open(loop, tmp_path)
    os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
    _spin(loop, release)
    exc = release.done.exception()
    assert isinstance(exc, StartFailed)
    assert "cannot start an already running container" in str(exc)
    assert fifo.exists()


def test_an_init_that_died_before_its_start_fails_it(loop: Loop, tmp_path: Path) -> None:
    # the init never opened the FIFO: only its exit (from the reaper) can end the wait
    fifo = _fifo(tmp_path)
    release = _open(loop, tmp_path)
    _spin(loop, release, 5)
    assert not release.done.done()
    release.init_exited()
    exc = release.done.exception()
    assert isinstance(exc, StartFailed)
    assert "container process is already dead" in str(exc)
    assert fifo.exists()


def test_an_init_that_wrote_then_exited_was_started(loop: Loop, tmp_path: Path) -> None:
    # a user process that exited at once (``true``): its exit may be seen before the EOF
    fifo = _fifo(tmp_path)
    release = _open(loop, tmp_path)
    w = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
    os.write(w, b"0")
    os.close(w)
    release.init_exited()  # before the loop saw the FIFO readable
    assert release.done.done() and release.done.exception() is None
    assert not fifo.exists()
    release.init_exited()  # a second report changes nothing


def test_no_fifo_or_not_a_fifo_leaves_it_to_runc_start(loop: Loop, tmp_path: Path) -> None:
    assert FifoStart.open(loop, str(tmp_path), "c1") is None  # not created (or already started)
    (tmp_path / "c1").mkdir()
    (tmp_path / "c1" / FIFO_NAME).write_text("0")
    assert FifoStart.open(loop, str(tmp_path), "c1") is None
    (tmp_path / "c1" / FIFO_NAME).unlink()
    os.mkfifo(tmp_path / "elsewhere")
    os.symlink(tmp_path / "elsewhere", tmp_path / "c1" / FIFO_NAME)
    assert FifoStart.open(loop, str(tmp_path), "c1") is None


# -- which binaries ---------------------------------------------------------------------------


@pytest.fixture
def probed() -> Iterator[None]:
    saved = dict(runc._PROBED)
    runc._PROBED.clear()
    yield
    runc._PROBED.clear()
    runc._PROBED.update(saved)


def _runtime(path: Path, output: str) -> Path:
    path.write_text(f"#!/bin/sh\nprintf '{output}'\n")
    path.chmod(0o755)
    return path


def test_parse_runc_version() -> None:
    out = b"runc version 1.1.5+ds1\ncommit: 1.1.5+ds1-1+deb12u1\nspec: 1.0.2-dev\ngo: go1.19.8\n"
    assert runc.parse_runc_version(out) == (1, 1, 5)
    assert runc.parse_runc_version(b"runc version 1.2.0-rc.1\n") == (1, 2, 0)
    assert runc.parse_runc_version(b"crun version 1.8.1\ncommit: x\n") is None
    assert runc.parse_runc_version(b"") is None


@pytest.mark.usefixtures("probed")
def test_only_a_probed_runc_1_0_or_1_1_starts_by_fifo(tmp_path: Path) -> None:
    old = _runtime(tmp_path / "runc-1.1", "runc version 1.1.12\\ncommit: v1.1.12\\n")
    assert runc.probe_runtime(str(old)) == (1, 1, 12)
    assert runc.starts_by_fifo(str(old))
    # runc that runs the poststart hooks in start (opencontainers/runc#5186), crun, unprobed
    new = _runtime(tmp_path / "runc-new", "runc version 1.5.0\\n")
    assert runc.probe_runtime(str(new)) == (1, 5, 0)
    assert not runc.starts_by_fifo(str(new))
    crun = _runtime(tmp_path / "crun", "crun version 1.8.1\\n")
    assert runc.probe_runtime(str(crun)) is None
    assert not runc.starts_by_fifo(str(crun))
    assert not runc.starts_by_fifo(str(_runtime(tmp_path / "never-probed", "runc version 1.1.0\\n")))
    assert not runc.starts_by_fifo(str(tmp_path / "missing"))


@pytest.mark.usefixtures("probed")
def test_a_replaced_binary_is_unknown_until_probed_again(tmp_path: Path) -> None:
    path = _runtime(tmp_path / "runc", "runc version 1.1.12\\n")
    assert runc.probe_runtime(str(path)) == (1, 1, 12)
    tmp = _runtime(tmp_path / "runc.new", "runc version 1.5.0\\n")
    os.rename(tmp, path)  # an upgrade: another file at the same path
    assert not runc.starts_by_fifo(str(path))


@pytest.mark.usefixtures("probed")
def test_a_runtime_that_does_not_answer_is_unknown(tmp_path: Path) -> None:
    path = tmp_path / "hangs"
    path.write_text("#!/bin/sh\nexec sleep 30\n")
    path.chmod(0o755)
    assert runc.probe_runtime(str(path), timeout=0.2) is None
    assert not runc.starts_by_fifo(str(path))
