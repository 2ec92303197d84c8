"""pprof's ``profile.proto`` written by hand (gzip-compressed), so ``go tool pprof`` reads our profiles.

The message (github.com/google/pprof/proto/profile.proto) is small: a string table (entry 0
is ``""``), value types, samples (location ids leaf first, one value per sample type,
labels), locations (one line each here: Python has no inlining), functions (name, file,
first line).  ``ProfileBuilder`` interns strings, functions and locations; ``encode``
writes the wire format with a few lines of varint code instead of a generated module.

A stack here is a tuple of ``Frame`` (function, file, line), leaf first.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

__all__ = ["Frame", "ProfileBuilder"]


@dataclass(frozen=True)
class Frame:
    function: str
    filename: str
    line: int
    first_line: int = 0


def _varint(value: int) -> bytes:
    if value < 0:
        value += 1 << 64  # int64 negatives: ten bytes, two's complement
    out = bytearray()
    while True:
        b = value & 0x7F
        value >>= 7
        if value:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _key(field_no: int, wire: int) -> bytes:
    return _varint((field_no << 3) | wire)


def _int(field_no: int, value: int) -> bytes:
    return _key(field_no, 0) + _varint(value) if value else b""


def _bytes(field_no: int, data: bytes) -> bytes:
    return _key(field_no, 2) + _varint(len(data)) + data


def _packed(field_no: int, values: Iterable[int]) -> bytes:
    body = b"".join(_varint(v) for v in values)
    return _bytes(field_no, body) if body else b""


@dataclass
class _Sample:
    locations: list[int]
    values: list[int]
    labels: list[tuple[int, int]] = field(default_factory=list)  # (key, str) string indexes


class ProfileBuilder:
    """Collects samples; ``encode()`` gives the gzipped profile."""

    def __init__(self, sample_types: Sequence[tuple[str, str]], *, period_type: tuple[str, str] | None = None,
                 period: int = 0, duration_ns: int = 0, comments: Sequence[str] = ()) -> None:
        self._strings: dict[str, int] = {"": 0}
        self._functions: dict[tuple[str, str, int], int] = {}
        self._locations: dict[tuple[int, int], int] = {}
        self._samples: list[_Sample] = []
        self._by_stack: dict[tuple[tuple[Frame, ...], tuple[tuple[str, str], ...]], _Sample] = {}
        self.sample_types = [(self._s(t), self._s(u)) for t, u in sample_types]
        self.period_type = (self._s(period_type[0]), self._s(period_type[1])) if period_type else None
        self.period = period
        self.duration_ns = duration_ns
        self.time_ns = time.time_ns()
        self.comments = [self._s(c) for c in comments]

    def _s(self, text: str) -> int:
        idx = self._strings.get(text)
        if idx is None:
            idx = self._strings[text] = len(self._strings)
        return idx

    def _location(self, frame: Frame) -> int:
        fkey = (frame.function, frame.filename, frame.first_line)
        fid = self._functions.get(fkey)
        if fid is None:
            fid = self._functions[fkey] = len(self._functions) + 1
        lkey = (fid, frame.line)
        lid = self._locations.get(lkey)
        if lid is None:
            lid = self._locations[lkey] = len(self._locations) + 1
        return lid

    def add(self, stack: Sequence[Frame], values: Sequence[int], labels: dict[str, str] | None = None) -> None:
        """Add values to the sample of ``stack`` (leaf first) and ``labels`` (summed when repeated)."""
        lab = tuple(sorted((labels or {}).items()))
        key = (tuple(stack), lab)
        sample = self._by_stack.get(key)
        if sample is None:
            sample = _Sample([self._location(f) for f in stack], [0] * len(self.sample_types),
                             [(self._s(k), self._s(v)) for k, v in lab])
            self._by_stack[key] = sample
            self._samples.append(sample)
        for i, v in enumerate(values):
            sample.values[i] += v

    def encode_raw(self) -> bytes:
        out = bytearray()
        for t, u in self.sample_types:
            out += _bytes(1, _int(1, t) + _int(2, u))
        for s in self._samples:
            body = _packed(1, s.locations) + _packed(2, s.values)
            for k, v in s.labels:
                body += _bytes(3, _int(1, k) + _int(2, v))
            out += _bytes(2, body)
        for (fid, line), lid in self._locations.items():
            out += _bytes(4, _int(1, lid) + _bytes(4, _int(1, fid) + _int(2, line)))
        for (name, filename, first), fid in self._functions.items():
            n = self._s(name)
            f = self._s(filename)
            out += _bytes(5, _int(1, fid) + _int(2, n) + _int(3, n) + _int(4, f) + _int(5, first))
        # the string table last: interning above may have added entries
        for text in self._strings:
            out += _bytes(6, text.encode("utf-8", "replace"))
        out += _int(9, self.time_ns) + _int(10, self.duration_ns)
        if self.period_type is not None:
            out += _bytes(11, _int(1, self.period_type[0]) + _int(2, self.period_type[1]))
        out += _int(12, self.period)
        for c in self.comments:
            out += _int(13, c)
        return bytes(out)

    def encode(self) -> bytes:
        import gzip  # on the first profile asked for, not at start-up

        return gzip.compress(self.encode_raw(), compresslevel=6)
