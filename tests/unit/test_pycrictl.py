"""Pure parts of pycrictl and client.cri: the CRI log format, configs, endpoints, formatting."""

from __future__ import annotations

from pathlib import Path

import pytest

from pycontainerd import errdefs
from pycontainerd.cli.pycrictl import _format, images
from pycontainerd.cli.pycrictl.main import build_parser
from pycontainerd.client import cri


def test_parse_log_record() -> None:
    ts = "2024-01-01T00:00:00.123456789Z"
    assert cri.parse_log_record(f"{ts} stdout F hello world".encode()) == (ts, "stdout", False, b"hello world")
    assert cri.parse_log_record(f"{ts} stderr P part".encode()) == (ts, "stderr", True, b"part")
    assert cri.parse_log_record(f"{ts} stdout F ".encode()) == (ts, "stdout", False, b"")
    assert cri.parse_log_record(f"{ts} stdout F".encode()) == (ts, "stdout", False, b"")
    # the old format without a tag is a full line
    assert cri.parse_log_record(f"{ts} stdout no tag here".encode()) == (ts, "stdout", False, b"no tag here")
    with pytest.raises(errdefs.InvalidArgument):
        cri.parse_log_record(b"garbage")


def test_log_parser_joins_partials_per_stream_and_waits_for_newlines() -> None:
    p = cri.LogParser()
    assert p.feed(b"t1 stdout P aa") == []  # no newline yet: the writer may be mid-record
    assert p.feed(b"a\nt2 stderr F err\n") == [cri.LogLine("t2", "stderr", b"err")]
    assert p.feed(b"t3 stdout P bbb\nt4 stdout F ccc\n") == [cri.LogLine("t1", "stdout", b"aaabbbccc")]
    assert p.feed(b"\nnot a record\n") == [cri.LogLine("", "stdout", b"not a record")]
    assert p.feed(b"t5 stdout P tail") == []
    assert p.flush() == [cri.LogLine("t5", "stdout", b"tail")]
    assert list(cri.parse_log(b"t stdout P x\n")) == [cri.LogLine("t", "stdout", b"x")]


def test_normalize_endpoint() -> None:
    assert cri.normalize_endpoint("unix:///run/x.sock") == "unix:///run/x.sock"
    assert cri.normalize_endpoint("/run/x.sock") == "unix:///run/x.sock"
    assert cri.normalize_endpoint("unix:/run/x.sock") == "unix:///run/x.sock"
    with pytest.raises(errdefs.InvalidArgument, match="only unix://"):
        cri.normalize_endpoint("tcp://127.0.0.1:1")
    with pytest.raises(errdefs.InvalidArgument):
        cri.normalize_endpoint("relative.sock")


def test_configs_from_dicts() -> None:
    pod = cri.pod_config_from_dict({"metadata": {"name": "p", "uid": "u", "namespace": "n", "attempt": 2},
                                    "log_directory": "/tmp/l", "linux": {"security_context": {
                                        "namespace_options": {"network": 2}}}})
    assert (pod.metadata.name, pod.metadata.attempt, pod.log_directory) == ("p", 2, "/tmp/l")
    assert pod.linux.security_context.namespace_options.network == 2
    # camelCase works too
    pod = cri.pod_config_from_dict({"metadata": {"name": "p"}, "logDirectory": "/x"})
    assert pod.log_directory == "/x"
    with pytest.raises(errdefs.InvalidArgument, match="no_such"):
        cri.pod_config_from_dict({"metadata": {"name": "p"}, "no_such": 1})
    with pytest.raises(errdefs.InvalidArgument, match=r"metadata\.name"):
        cri.pod_config_from_dict({})
    c = cri.container_config_from_dict({"metadata": {"name": "c"}, "image": {"image": "busybox"},
                                        "command": ["sh"], "envs": [{"key": "A", "value": "1"}]})
    assert list(c.command) == ["sh"] and c.envs[0].key == "A"
    with pytest.raises(errdefs.InvalidArgument, match=r"image\.image"):
        cri.container_config_from_dict({"metadata": {"name": "c"}})


def test_message_to_dict_keeps_defaults() -> None:
    pod = cri.api_pb2.PodSandbox(id="x", state=cri.api_pb2.SANDBOX_READY)
    d = cri.message_to_dict(pod)
    assert d["state"] == "SANDBOX_READY" and d["id"] == "x"


def test_parse_info() -> None:
    assert cri.parse_info({"a": '{"b": 1}', "c": "plain"}) == {"a": {"b": 1}, "c": "plain"}


def test_ago() -> None:
    now = 1_000_000.0
    ns = int(now * 1e9)
    assert _format.ago(ns, now) == "Less than a second ago"
    assert _format.ago(ns - 5 * 10**9, now) == "5 seconds ago"
    assert _format.ago(ns - 60 * 10**9, now) == "About a minute ago"
    assert _format.ago(ns - 150 * 10**9, now) == "2 minutes ago"
    assert _format.ago(ns - 3600 * 10**9, now) == "About an hour ago"
    assert _format.ago(ns - 3 * 86400 * 10**9, now) == "3 days ago"
    assert _format.ago(0, now) == "-"


def test_states_and_trunc() -> None:
    assert _format.trunc("sha256:" + "a" * 64) == "a" * 13
    assert _format.trunc("b" * 64, full=True) == "b" * 64
    assert _format.pick_state("running", cri.CONTAINER_STATES, "CONTAINER_", "c") == cri.api_pb2.CONTAINER_RUNNING
    assert _format.pick_state("NotReady", cri.POD_STATES, "SANDBOX_", "p") == cri.api_pb2.SANDBOX_NOTREADY
    assert _format.pick_state("", cri.POD_STATES, "SANDBOX_", "p") is None
    with pytest.raises(errdefs.InvalidArgument, match="ready, notready"):
        _format.pick_state("up", cri.POD_STATES, "SANDBOX_", "pod")
    assert _format.short_state("SANDBOX_NOTREADY", "SANDBOX_") == "NotReady"
    assert _format.short_state("CONTAINER_EXITED", "CONTAINER_") == "Exited"


def test_image_rows() -> None:
    img = cri.api_pb2.Image(id="sha256:" + "c" * 64, repo_tags=["127.0.0.1:5000/library/busybox:cri"],
                            repo_digests=["127.0.0.1:5000/library/busybox@sha256:" + "d" * 64], size=2048)
    untagged = cri.api_pb2.Image(id="sha256:" + "e" * 64, repo_digests=["r/x@sha256:" + "f" * 64], size=1)
    rows = images.image_rows([img, untagged], digests=True, no_trunc=False)
    assert rows == [["127.0.0.1:5000/library/busybox", "cri", "d" * 13, "c" * 13, "2.0 KiB"],
                    ["r/x", "<none>", "f" * 13, "e" * 13, "1 B"]]


def test_parser_has_crictl_flags() -> None:
    args = build_parser().parse_args(["-r", "unix:///x.sock", "-i", "unix:///y.sock", "-t", "3", "ps", "-a", "-q"])
    assert (args.runtime_endpoint, args.image_endpoint, args.timeout, args.all, args.quiet) == (
        "unix:///x.sock", "unix:///y.sock", 3.0, True, True)
    args = build_parser().parse_args(["exec", "cid", "ls", "-l", "/"])
    assert args.cmd == ["ls", "-l", "/"]
    args = build_parser().parse_args(["logs", "-f", "--tail", "3", "cid"])
    assert (args.follow, args.tail) == (True, 3)


def test_load_config_file(tmp_path: Path) -> None:
    (tmp_path / "p.yaml").write_text("metadata:\n  name: p\n  attempt: 1\n")
    assert cri.load_config_file(tmp_path / "p.yaml") == {"metadata": {"name": "p", "attempt": 1}}
    (tmp_path / "p.json").write_text('{"metadata": {"name": "p"}}')
    assert cri.load_config_file(tmp_path / "p.json") == {"metadata": {"name": "p"}}
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(errdefs.InvalidArgument, match="invalid JSON"):
        cri.load_config_file(tmp_path / "bad.json")
    (tmp_path / "list.yml").write_text("- a\n")
    with pytest.raises(errdefs.InvalidArgument, match="object"):
        cri.load_config_file(tmp_path / "list.yml")
    with pytest.raises(errdefs.NotFound):
        cri.load_config_file(tmp_path / "missing.json")
