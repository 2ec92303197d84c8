"""No tracebacks, ever: every subcommand of pyctr and pycrictl under a matrix of bad input.

Each leaf command (``pyctr images import``, ``pycrictl inspectp`` ...) found by walking the
argparse tree is run with: an unknown flag, no arguments, unknown ids, a reference to a
registry nobody serves, missing files and directories; against a live daemon, a dead socket
(the file exists, nobody listens: connection refused) and no daemon at all (no such path).
Every run must end with one of the documented exit codes, never 70 (internal error), and no
"Traceback" on stderr; against a dead or missing daemon a command that needs the daemon must
answer at once (exit 3, well under the 10 s connect timeout) with the hint how to start it.

The runs happen in-process (``main(argv)`` with stdout/stderr captured): an exception escaping
``main`` is a traceback a user would have seen.  A few cases need a real process and are run
as one: a closed stdout pipe, and the examples quoted in issue 15.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from pycontainerd.cli.pycrictl import main as crictl_main
from pycontainerd.cli.pyctr import main as ctr_main

from .daemon import BIN

pytestmark = pytest.mark.root

ALLOWED = {0, 1, 2, 3, 4, 5}
MISSING_FILE = "/missing-dir/missing.tar"
DEAD_REF = "127.0.0.1:1/nosuch:latest"  # a registry nobody serves: refused at once, no network


def leaves(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], Any]]:
    """(command words, parser) of every leaf command; aliases are skipped (same parser)."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            seen: set[int] = set()
            for name, sub in action.choices.items():
                if id(sub) in seen:
                    continue
                seen.add(id(sub))
                yield from leaves(sub, (*path, name))
            return
    yield path, parser


def positionals(parser: Any, value: str) -> list[str]:
    out: list[str] = []
    for a in parser._actions:
        if a.option_strings or isinstance(a, argparse._SubParsersAction) or a.dest == "help":
            continue
        if a.choices:
            out.append(sorted(a.choices)[0])
        elif a.nargs == argparse.REMAINDER:
            out.append("true")
        else:
            out.append(value)
    return out


def talks_to_registry(parser: Any) -> bool:
    return any("--plain-http" in a.option_strings for a in parser._actions)


def run_inprocess(main: Callable[[list[str]], None], argv: list[str]) -> tuple[int, str, str, float]:
    out, err = io.StringIO(), io.StringIO()
    start = time.monotonic()
    code: Any = 0
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            main(argv)
        except SystemExit as exc:
            code = exc.code
        except BaseException as exc:  # a traceback the user would have seen
            raise AssertionError(f"{argv}: {type(exc).__name__}: {exc}") from exc
    if code is None:
        code = 0
    if not isinstance(code, int):
        err.write(str(code))
        code = 1
    return code, out.getvalue(), err.getvalue(), time.monotonic() - start


@pytest.fixture(scope="module")
def dead_socket(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A socket file nobody listens on: connect() is refused."""
    path = str(tmp_path_factory.mktemp("dead") / "dead.sock")
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(path)
    s.close()
    return path


def _cases(prog: str, parser: argparse.ArgumentParser) -> list[tuple[str, list[str], bool]]:
    """(case name, argv after the global flags, needs the daemon) for every leaf."""
    cases = []
    for words, p in leaves(parser):
        w = list(words)
        if words == ("completion",):
            continue
        cases.append((f"{' '.join(w)}: unknown flag", [*w, "--no-such-flag"], False))
        needs_args = any(not a.option_strings and a.nargs in (None, "+") and a.dest != "help"
                         and not isinstance(a, argparse._SubParsersAction) for a in p._actions)
        if needs_args:
            cases.append((f"{' '.join(w)}: no arguments", w, False))
        values = [DEAD_REF, MISSING_FILE] if talks_to_registry(p) else ["nosuch-0123456789", MISSING_FILE, DEAD_REF]
        for v in values:
            cases.append((f"{' '.join(w)} {v}", [*w, *positionals(p, v)], True))
        if any("--output" in a.option_strings for a in p._actions):  # -o json|yaml on list/info commands
            required = [a for a in p._actions if not a.option_strings and a.nargs in (None, "+")
                        and a.dest != "help" and not isinstance(a, argparse._SubParsersAction)]
            for fmt in ("json", "yaml", "bogus"):
                cases.append((f"{' '.join(w)} -o {fmt}", [*w, "-o", fmt, *["nosuch-0123456789"] * len(required)],
                              fmt != "bogus"))
    return cases


def _check(label: str, code: int, err: str) -> str | None:
    if "Traceback" in err or code not in ALLOWED:
        return f"{label}: exit {code}: {err.strip()[-600:]}"
    if code != 0 and not err.strip():
        return f"{label}: exit {code} without a word on stderr"
    return None


@pytest.mark.parametrize("prog", ["pyctr", "pycrictl"])
def test_every_subcommand_without_a_traceback(prog: str, shared_daemon: Any, dead_socket: str,
                                              tmp_path: Path) -> None:
    if prog == "pyctr":
        main, parser = ctr_main.main, ctr_main.build_parser(["--help"])
        live = ["-a", shared_daemon.address, "--timeout", "3s", "--connect-timeout", "2s"]
        dead = ["-a", dead_socket, "--connect-timeout", "5s"]
        gone = ["-a", str(tmp_path / "no-such.sock"), "--connect-timeout", "5s"]
    else:
        main, parser = crictl_main.main, crictl_main.build_parser()
        live = ["-r", f"unix://{shared_daemon.address}", "-t", "2s"]
        dead = ["-r", f"unix://{dead_socket}", "-t", "5s"]
        gone = ["-r", f"unix://{tmp_path / 'no-such.sock'}", "-t", "5s"]
    problems: list[str] = []
    runs = 0
    cwd = os.getcwd()
    os.chdir(tmp_path)  # commands that write files (export, fetch-object) write here, never in the repo
    try:
        for label, argv, needs_daemon in _cases(prog, parser):
            targets = [("live", live)] + ([("dead socket", dead), ("no daemon", gone)] if needs_daemon else [])
            for target, flags in targets:
                code, _out, err, took = run_inprocess(main, [*flags, *argv])
                runs += 1
                bad = _check(f"{prog} [{target}] {label}", code, err)
                if bad:
                    problems.append(bad)
                elif target != "live" and code not in (2, 4) and (
                        code != 3 or took > 3.0 or "cannot reach" not in err):
                    problems.append(f"{prog} [{target}] {label}: exit {code} after {took:.1f}s: {err.strip()}")
    finally:
        os.chdir(cwd)
    assert runs > 100
    assert not problems, f"{len(problems)} of {runs} runs:\n" + "\n".join(problems)


def test_the_issue_examples_fail_in_one_line(shared_daemon: Any, tmp_path: Path) -> None:
    pyctr = [str(BIN / "pyctr"), "-a", shared_daemon.address]
    for args, code, words in [
        (["images", "import", str(tmp_path / "MISSING.tar")], 4, "MISSING.tar: No such file"),
        (["images", "export", "/missing-dir/x.tar", "docker.io/library/busybox:latest"], 4, "/missing-dir"),
        (["run", "--env-file", "/missing.env", "--rm", "docker.io/library/busybox:latest", "x", "true"], 4,
         "/missing.env: No such file"),
        (["--timeout", "1s", "events"], 5, "timed out after 1s"),
        (["imags", "ls"], 2, "did you mean 'images'"),
    ]:
        r = subprocess.run([*pyctr, *args], capture_output=True, text=True, timeout=60)
        assert r.returncode == code, (args, r.stderr)
        assert words in r.stderr and len(r.stderr.strip().splitlines()) == 1, (args, r.stderr)


@pytest.mark.parametrize("args", [["images", "ls"], ["plugins", "ls"], ["version"], ["namespaces", "ls"]])
def test_a_closed_pipe_exits_quietly(shared_daemon: Any, args: list[str]) -> None:
    rfd, wfd = os.pipe()
    os.close(rfd)  # like `| head -1` having exited: the first write gets EPIPE
    try:
        r = subprocess.run([str(BIN / "pyctr"), "-a", shared_daemon.address, *args], stdout=wfd,
                           stderr=subprocess.PIPE, text=True, timeout=60)
    finally:
        os.close(wfd)
    assert r.stderr == ""
    assert r.returncode == 141


def test_dead_daemon_is_reported_at_once(dead_socket: str) -> None:
    start = time.monotonic()
    r = subprocess.run([str(BIN / "pyctr"), "-a", dead_socket, "images", "ls"], capture_output=True, text=True,
                       timeout=60)
    took = time.monotonic() - start
    assert r.returncode == 3, r.stderr
    assert "connection refused" in r.stderr and "pycontainerd" in r.stderr and "CONTAINERD_ADDRESS" in r.stderr
    assert took < 3.0, f"took {took:.1f}s"  # ctr answers in milliseconds; the old pyctr waited 10 s
