"""CreateContainer's host mount sources, checked as containerd's CRI does (``make_mount_sources``)."""

from __future__ import annotations

from pathlib import Path

import pytest

from pycontainerd import errdefs
from pycontainerd.api.cri.runtime.v1 import api_pb2 as pb
from pycontainerd.cri.containers import make_mount_sources


def test_a_missing_host_path_is_made_a_directory(tmp_path: Path) -> None:
    there = tmp_path / "there"
    there.write_text("x")
    make_mount_sources([pb.Mount(container_path="/a", host_path=str(tmp_path / "new" / "dir")),
                        pb.Mount(container_path="/b", host_path=str(there))])
    assert (tmp_path / "new" / "dir").is_dir()
    assert there.read_text() == "x"  # an existing file is left as it is


def test_a_host_path_below_a_file_is_refused_naming_it(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    bad = str(tmp_path / "file" / "sub")
    with pytest.raises(errdefs.ContainerdError, match=r"mount '/data': cannot stat its host path: .*file/sub"):
        make_mount_sources([pb.Mount(container_path="/data", host_path=bad)])
    assert not (tmp_path / "file").is_dir()
