"""The exec FIFOs ExecSync and the streaming exec share (cri/execio.py)."""

from __future__ import annotations

import asyncio
import os
import stat
from pathlib import Path

import pytest

from pycontainerd.cri.execio import ExecFifos


def _open_fds() -> set[int]:
    return {int(n) for n in os.listdir("/proc/self/fd")}


def test_fifos_opened_and_closed(tmp_path: Path) -> None:
    async def main() -> None:
        before = _open_fds()
        d = tmp_path / "ctr" / "exec-1"
        (tmp_path / "ctr").mkdir()
        fifos = await ExecFifos.create(d, ["stderr", "stdin", "stdout"])
        assert stat.S_IMODE(d.stat().st_mode) == 0o700
        assert sorted(fifos.paths) == ["stderr", "stdin", "stdout"]
        assert all(stat.S_ISFIFO(os.stat(p).st_mode) for p in fifos.paths.values())
        io = fifos.task_io(terminal=True)
        assert (io.stdin, io.stdout, io.stderr, io.terminal) == (str(d / "stdin"), str(d / "stdout"),
                                                                 str(d / "stderr"), True)
        # stdin: ours to write without a reader; stdout: what a writer puts there reaches the read end
        os.write(fifos.stdin_fd, b"in")
        out = fifos.take_reader("stdout")
        w = os.open(fifos.paths["stdout"], os.O_WRONLY | os.O_NONBLOCK)
        os.write(w, b"hello")
        os.close(w)
        assert os.read(out, 100) == b"hello"
        fifos.release_writers()  # the last writer gone: EOF on the taken read end
        assert os.read(out, 100) == b""
        os.close(out)
        await fifos.close()
        assert not d.exists()
        assert _open_fds() == before

    asyncio.run(main())


def test_only_what_is_asked_and_undone_on_failure(tmp_path: Path) -> None:
    async def main() -> None:
        before = _open_fds()
        fifos = await ExecFifos.create(tmp_path / "e", ["stdout"])
        assert list(fifos.paths) == ["stdout"] and fifos.stdin_fd == -1
        assert fifos.task_io().stdin == "" and fifos.task_io().stderr == ""
        await fifos.close()  # the untaken read end and the held write end too
        assert _open_fds() == before
        (tmp_path / "e2").mkdir()
        os.mkfifo(tmp_path / "e2" / "stderr")  # in the way: mkfifo fails
        with pytest.raises(FileExistsError):
            await ExecFifos.create(tmp_path / "e2", ["stdout", "stderr"])
        assert not (tmp_path / "e2").exists()
        assert _open_fds() == before

    asyncio.run(main())
