"""pycrictl's config file (get/set/list, precedence under the flags), logs --since/--previous, stats' CPU rate."""

from __future__ import annotations

import argparse
import contextlib
import io
import time
from pathlib import Path

import pytest
import yaml

from pycontainerd import errdefs
from pycontainerd.cli.pycrictl import config, logs, stats
from pycontainerd.cli.pycrictl.main import build_parser, main
from pycontainerd.client import cri


def run(argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = 0
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            main(argv)
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else int(exc.code is not None)
    return code, out.getvalue(), err.getvalue()


def test_config_set_get_list(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CRI_CONFIG_FILE", raising=False)
    f = tmp_path / "crictl.yaml"
    c = ["-c", str(f)]
    assert run([*c, "config", "runtime-endpoint", "unix:///run/containerd/containerd.sock"])[0] == 0
    assert run([*c, "config", "--set", "timeout=5,debug=true", "--set", "image-endpoint=/run/i.sock"])[0] == 0
    assert yaml.safe_load(f.read_text()) == {"runtime-endpoint": "unix:///run/containerd/containerd.sock",
                                             "image-endpoint": "/run/i.sock", "timeout": 5, "debug": True}
    assert run([*c, "config", "--get", "timeout"])[1] == "5\n"
    assert run([*c, "config", "runtime-endpoint"])[1] == "unix:///run/containerd/containerd.sock\n"  # KEY alone
    code, out, _ = run([*c, "config", "--list"])
    assert code == 0 and out.splitlines()[0].split() == ["KEY", "VALUE"] and "debug" in out and "true" in out
    f.write_text(f.read_text() + "some-future-key: 1\n")  # keys pycrictl does not know are kept
    assert run([*c, "config", "debug", "false"])[0] == 0
    assert yaml.safe_load(f.read_text())["some-future-key"] == 1


@pytest.mark.parametrize(("argv", "words"), [
    (["config", "runtime-endpont", "x"], "did you mean 'runtime-endpoint'"),
    (["config", "--get", "nope"], "no configuration option named 'nope'"),
    (["config", "timeout", "soon"], "invalid value 'soon' for timeout"),
    (["config", "timeout", "1.5s"], "whole number of seconds"),
    (["config", "debug", "maybe"], "expected true or false"),
    (["config", "runtime-endpoint", "tcp://h:1"], "only unix:// is supported"),
    (["config", "--set", "timeout"], "expected KEY=VALUE"),
    (["config", "--get", "timeout", "--list"], "one of --get"),
])
def test_config_mistakes_are_usage_errors(tmp_path: Path, argv: list[str], words: str) -> None:
    f = tmp_path / "c.yaml"
    code, _, err = run(["-c", str(f), *argv])
    assert code == 2 and words in err and len(err.strip().splitlines()) == 1, err
    assert not f.exists()  # nothing written


def test_config_file_under_the_flags(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CONTAINER_RUNTIME_ENDPOINT", raising=False)
    monkeypatch.delenv("IMAGE_SERVICE_ENDPOINT", raising=False)
    f = tmp_path / "c.yaml"
    f.write_text("runtime-endpoint: unix:///from/file.sock\ntimeout: 7\ndebug: true\ndisable-pull-on-run: true\n")
    args = build_parser().parse_args(["-c", str(f), "ps"])
    config.apply(args)
    assert (args.runtime_endpoint, args.image_endpoint, args.timeout, args.debug, args.disable_pull_on_run) == (
        "unix:///from/file.sock", "", 7.0, True, True)
    args = build_parser().parse_args(["-c", str(f), "-r", "unix:///flag.sock", "-t", "2s", "ps"])
    config.apply(args)
    assert (args.runtime_endpoint, args.timeout, args.debug) == ("unix:///flag.sock", 2.0, True)
    monkeypatch.setenv("CONTAINER_RUNTIME_ENDPOINT", "unix:///env.sock")  # the env var is the flag's
    args = build_parser().parse_args(["-c", str(f), "ps"])
    config.apply(args)
    assert args.runtime_endpoint == "unix:///env.sock"
    # no file at all: pycrictl's defaults
    monkeypatch.delenv("CONTAINER_RUNTIME_ENDPOINT")
    args = build_parser().parse_args(["-c", str(tmp_path / "none.yaml"), "ps"])
    config.apply(args)
    assert (args.runtime_endpoint, args.timeout, args.debug) == (cri.DEFAULT_ENDPOINT, config.DEFAULT_TIMEOUT, False)
    # a file named with -c must be valid
    f.write_text("timeout: [1]\n")
    with pytest.raises(errdefs.InvalidArgument, match="invalid value"):
        config.apply(build_parser().parse_args(["-c", str(f), "ps"]))


def test_config_reads_crictls_file_until_it_has_its_own(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CRI_CONFIG_FILE", raising=False)
    own, theirs = tmp_path / "pycrictl.yaml", tmp_path / "crictl.yaml"
    assert config.chosen_file(None, str(own), str(theirs)) == (own, own)
    theirs.write_text("runtime-endpoint: unix:///run/containerd/containerd.sock\n")
    assert config.chosen_file(None, str(own), str(theirs)) == (theirs, own)  # read crictl's, write ours
    own.write_text("")
    assert config.chosen_file(None, str(own), str(theirs)) == (own, own)
    monkeypatch.setenv("CRI_CONFIG_FILE", str(tmp_path / "env.yaml"))
    assert config.chosen_file(None, str(own), str(theirs)) == (tmp_path / "env.yaml",) * 2
    assert config.chosen_file(str(tmp_path / "flag.yaml"), str(own), str(theirs)) == (tmp_path / "flag.yaml",) * 2


def test_logs_since_and_timestamps() -> None:
    assert logs.timestamp_ns("2024-01-02T03:04:05.123456789Z") == 1704164645123456789
    assert logs.timestamp_ns("2024-01-02T04:04:05.5+01:00") == 1704164645500000000
    assert logs.timestamp_ns("yesterday") is None
    assert logs.since_ns("1704164645.25") == 1704164645250000000  # a Unix time
    assert abs(logs.since_ns("42m") - (time.time_ns() - 42 * 60 * 10**9)) < 5 * 10**9
    assert logs.since_ns("2024-01-02T03:04:05Z") == 1704164645000000000
    assert logs.since_ns("2024-01-02T03:04:05") == logs.timestamp_ns("2024-01-02T03:04:05", local=True)
    with pytest.raises(argparse.ArgumentTypeError, match="invalid --since"):
        logs.since_ns("last tuesday")
    assert run(["logs", "--since", "soon", "cid"])[0] == 2


def test_logs_previous_path() -> None:
    assert logs.previous_log_path("/var/log/pods/ns_p_u/box/2.log", 2, "box") == "/var/log/pods/ns_p_u/box/1.log"
    with pytest.raises(errdefs.NotFound, match="no previous attempt"):
        logs.previous_log_path("/var/log/pods/ns_p_u/box/0.log", 0, "box")


def test_logs_printer_limit_and_since(capsysbinary: pytest.CaptureFixture[bytes]) -> None:
    lines = [cri.LogLine("2024-01-02T03:04:05Z", "stdout", b"old"),
             cri.LogLine("2024-01-02T03:04:06Z", "stdout", b"new"),
             cri.LogLine("2024-01-02T03:04:07Z", "stderr", b"err")]
    logs._Printer(False, "", since=logs.since_ns("2024-01-02T03:04:06Z")).write(lines)
    assert capsysbinary.readouterr() == (b"new\n", b"err\n")
    with pytest.raises(logs._LimitReached):
        logs._Printer(True, "stdout", limit=30).write(lines)
    assert capsysbinary.readouterr().out == b"2024-01-02T03:04:05Z old\n2024-"


def test_stats_cpu_rate_from_two_samples() -> None:
    pb = cri.api_pb2
    before = pb.ContainerStats(cpu=pb.CpuUsage(timestamp=1_000_000_000,
                                               usage_core_nano_seconds=pb.UInt64Value(value=100)))
    after = pb.ContainerStats(cpu=pb.CpuUsage(timestamp=2_000_000_000,
                                              usage_core_nano_seconds=pb.UInt64Value(value=500_000_100)))
    assert stats.cpu_percent(after, before) == "50.00"
    assert stats.cpu_percent(after) == "-"
    after.cpu.usage_nano_cores.value = 250_000_000  # the runtime's own rate wins
    assert stats.cpu_percent(after, before) == "25.00"
