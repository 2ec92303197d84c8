"""The CRI log line format: full lines, partial pieces of long lines, output that ends without a newline."""

from __future__ import annotations

import re

from pycontainerd.cri.crilog import format_lines, timestamp

NOW = "2026-01-02T03:04:05.000000006Z"


def test_full_lines_and_a_pending_tail() -> None:
    buf = bytearray(b"one\ntwo\nthr")
    out = format_lines("stdout", buf, 16, eof=False, now=NOW)
    assert out == f"{NOW} stdout F one\n{NOW} stdout F two\n".encode()
    assert buf == b"thr"  # waits for the rest of its line
    assert format_lines("stdout", buf, 16, eof=True, now=NOW) == f"{NOW} stdout F thr\n".encode()
    assert buf == b""


def test_a_long_line_is_cut_into_partial_pieces() -> None:
    buf = bytearray(b"abcdefghij\nxy")
    out = format_lines("stderr", buf, 4, eof=False, now=NOW).decode().splitlines()
    assert out == [f"{NOW} stderr P abcd", f"{NOW} stderr P efgh", f"{NOW} stderr F ij"]
    assert buf == b"xy"


def test_a_line_of_exactly_the_limit_is_full() -> None:
    buf = bytearray(b"abcd\n")
    assert format_lines("stdout", buf, 4, eof=False, now=NOW) == f"{NOW} stdout F abcd\n".encode()


def test_no_limit_keeps_long_lines_whole() -> None:
    buf = bytearray(b"x" * 100 + b"\n")
    assert format_lines("stdout", buf, 0, eof=False, now=NOW) == f"{NOW} stdout F {'x' * 100}\n".encode()
    buf = bytearray(b"y" * 100)
    assert format_lines("stdout", buf, -1, eof=False, now=NOW) == b"" and len(buf) == 100


def test_timestamp_is_gos_rfc3339nano() -> None:
    assert timestamp(1_700_000_000_000_000_123) == "2023-11-14T22:13:20.000000123Z"
    assert timestamp(1_700_000_000_801_596_090) == "2023-11-14T22:13:20.80159609Z"  # as containerd writes it
    assert timestamp(1_700_000_000_000_000_000) == "2023-11-14T22:13:20Z"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,9})?Z", timestamp())
