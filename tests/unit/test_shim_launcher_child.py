"""What a child of the shim launcher does with the daemon's request (``shim.main``
``read_request``/``answer_request``), in-process: the child reads exactly one frame, answers
it, and claims the shim it is to become (or none)."""

from __future__ import annotations

import json
import os
import shutil
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from pycontainerd.shim import main, protocol


@pytest.fixture
def channel() -> Iterator[tuple[socket.socket, socket.socket]]:
    daemon, launcher = socket.socketpair()
    try:
        yield daemon, launcher
    finally:
        daemon.close()
        launcher.close()


@pytest.fixture
def sockets() -> Iterator[Path]:
    """A socket root short enough for a unix socket path (tmp_path is too deep)."""
    d = tempfile.mkdtemp(prefix="pycd-launch-")
    try:
        yield Path(d) / "s"
    finally:
        shutil.rmtree(d, ignore_errors=True)


def _params(bundle: Path, **extra: object) -> dict[str, object]:
    return {"namespace": "ns", "id": "c1", "address": "/run/pycd-test/d.sock", "bundle": str(bundle),
            "ttrpc_address": "", "options": {}, **extra}


def test_read_request_takes_one_frame_and_leaves_the_next(channel: tuple[socket.socket, socket.socket]) -> None:
    daemon, launcher = channel
    daemon.sendall(protocol.request(1, "start_v2", {"id": "a"}) + protocol.request(2, "start_v2", {"id": "b"}))
    assert main.read_request(launcher) == {"id": 1, "method": "start_v2", "params": {"id": "a"}}
    assert main.read_request(launcher) == {"id": 2, "method": "start_v2", "params": {"id": "b"}}


def test_read_request_of_a_closed_channel_is_a_protocol_error(channel: tuple[socket.socket, socket.socket]) -> None:
    daemon, launcher = channel
    daemon.sendall(protocol.request(1, "start_v2", {"id": "a"})[:6])
    daemon.close()
    with pytest.raises(protocol.ProtocolError):
        main.read_request(launcher)


def test_unknown_method_answers_unimplemented(channel: tuple[socket.socket, socket.socket]) -> None:
    daemon, launcher = channel
    daemon.sendall(protocol.request(5, "start", {}))
    assert main.answer_request(launcher) is None
    [msg] = protocol.Decoder().feed(daemon.recv(65536))
    assert msg["id"] == 5 and msg["error"]["code"] == "UNIMPLEMENTED"


def test_missing_bundle_answers_not_found(tmp_path: Path, channel: tuple[socket.socket, socket.socket]) -> None:
    daemon, launcher = channel
    daemon.sendall(protocol.request(3, "start_v2", _params(tmp_path / "nosuch")))
    assert main.answer_request(launcher, socket_root=str(tmp_path)) is None
    [msg] = protocol.Decoder().feed(daemon.recv(65536))
    assert msg["error"]["code"] == "NOT_FOUND"


@pytest.mark.parametrize("daemon_sends_group", [True, False])
def test_claims_the_group_socket_once(
    tmp_path: Path, sockets: Path, channel: tuple[socket.socket, socket.socket], daemon_sends_group: bool
) -> None:
    """The first request claims the group's socket for this process (its pid answered,
    ``shim.pid`` and ``address`` written); a second container of the group finds the socket
    live and gets pid 0 (ask the shim), with its ``address`` written and nothing to run.  The
    group comes from the request when the daemon sends it, else from the spec."""
    daemon, launcher = channel
    first, second = tmp_path / "b1", tmp_path / "b2"
    for b in (first, second):
        b.mkdir()
        (b / "config.json").write_text(json.dumps({"annotations": {"io.containerd.runc.v2.group": "pod"}}))
    extra = {"group": "pod"} if daemon_sends_group else {}
    daemon.sendall(protocol.request(1, "start_v2", _params(first, **extra)))
    shim = main.answer_request(launcher, socket_root=str(sockets))
    assert shim is not None
    try:
        [msg] = protocol.Decoder().feed(daemon.recv(65536))
        result = msg["result"]
        assert result["pid"] == os.getpid() and result["forked"] is True
        path = result["address"].removeprefix("unix://")
        assert os.path.dirname(path) == str(sockets)
        assert (first / main.PID_FILE).read_text() == str(os.getpid())
        assert (first / main.ADDRESS_FILE).read_text() == result["address"]

        daemon.sendall(protocol.request(2, "start_v2", {**_params(second, **extra), "id": "c2"}))
        assert main.answer_request(launcher, socket_root=str(sockets)) is None
        [msg] = protocol.Decoder().feed(daemon.recv(65536))
        assert msg["result"] == {"address": result["address"], "pid": 0, "forked": False}
        assert (second / main.ADDRESS_FILE).read_text() == result["address"]
    finally:
        shim.abandon()
    assert not os.path.exists(path)
